"""Hosting, as SageMaker does it, in three step kinds (``CreateModel``,
``CreateEndpointConfig``, ``CreateEndpoint``): ``ModelStep``, ``EndpointConfigStep``,
``EndpointStep``.

Locally the model and the endpoint config are registered for the run and the endpoint
is a model server on 127.0.0.1 serving the model's ``ModelDataUrl`` (the server is chosen
by ``deploy.server``: the embedded one, or the TF Serving container). In the state machine
the endpoint step is ``createEndpoint`` followed by a ``describeEndpoint`` poll until it
is ``InService`` (Step Functions has no ``.sync`` for endpoints).
"""
from __future__ import annotations

from typing import Any, Mapping

from harness.errors import ConfigError
from harness.placeholders import asl_parameters
from harness.steps.base import BuildContext, Step, selector, task_state
from harness.steps.sagemaker_job import name_prefix, resource_name


def serving_environment(model_name: str, max_batch_size: int = 0,
                        batch_timeout_micros: int = 1000) -> dict[str, str]:
    """The SageMaker TensorFlow serving container's environment: the served model's name
    and TF Serving's batching knobs (``max_batch_size`` 0 = off)."""
    env = {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": model_name}
    if max_batch_size > 0:
        env.update(SAGEMAKER_TFS_ENABLE_BATCHING="true",
                   SAGEMAKER_TFS_MAX_BATCH_SIZE=str(max_batch_size),
                   SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS=str(batch_timeout_micros))
    return env


class ModelStep(Step):
    kind = "model"
    title = "SageMaker model"
    local_runner = "local_runners.create_model:LocalModelRunner"
    resource = "arn:aws:states:::sagemaker:createModel"
    result_fields = ("ModelArn",)

    def __init__(self, state_id: str, *, model_name: str, model_data: str,
                 environment: Mapping[str, str] | None = None,
                 image_uri: str | None = None, framework: str = "tensorflow",
                 framework_version: str = "2.19", instance_type: str = "ml.m5.large",
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.model_name = resource_name(model_name, f"{state_id}.model_name")
        self.model_data = model_data
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self.image_uri = image_uri
        self.framework = framework
        self.framework_version = framework_version
        self.instance_type = instance_type

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        image = self.image_uri or ctx.images.image(self.framework, self.framework_version,
                                                   "inference", self.instance_type)
        body: dict[str, Any] = {
            "ModelName": self.model_name,
            "PrimaryContainer": {"Image": image, "ModelDataUrl": self.model_data,
                                 "Environment": dict(self.environment)},
        }
        if ctx.role:
            body["ExecutionRoleArn"] = ctx.role
        body["Tags"] = list(ctx.tags)
        return body

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"model": output.get("ModelArn")}

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("model", request["ModelName"])]

    def name_prefixes(self) -> dict[str, str]:
        return {"model": name_prefix(self.model_name)}


class EndpointConfigStep(Step):
    kind = "endpoint-config"
    title = "SageMaker endpoint config"
    local_runner = "local_runners.endpoint_config:LocalEndpointConfigRunner"
    resource = "arn:aws:states:::sagemaker:createEndpointConfig"
    result_fields = ("EndpointConfigArn",)

    def __init__(self, state_id: str, *, endpoint_config_name: str, model_name: str,
                 initial_instance_count: int = 1, instance_type: str = "ml.m5.large",
                 variant_name: str = "AllTraffic", data_capture_percent: float = 0,
                 data_capture_uri: str | None = None, comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.endpoint_config_name = resource_name(endpoint_config_name,
                                                  f"{state_id}.endpoint_config_name")
        self.model_name = str(model_name)
        if not 0 <= data_capture_percent <= 100:
            raise ConfigError("bad sampling percentage", field=f"{state_id}.data_capture_percent",
                              expected="0..100", got=data_capture_percent)
        if data_capture_percent > 0 and not data_capture_uri:
            raise ConfigError("data capture needs a destination",
                              field=f"{state_id}.data_capture_uri", expected="a storage URI")
        self.initial_instance_count = initial_instance_count
        self.instance_type = instance_type
        self.variant_name = variant_name
        self.data_capture_percent = data_capture_percent
        self.data_capture_uri = data_capture_uri

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        body: dict[str, Any] = {
            "EndpointConfigName": self.endpoint_config_name,
            "ProductionVariants": [{"VariantName": self.variant_name,
                                    "ModelName": self.model_name,
                                    "InitialInstanceCount": self.initial_instance_count,
                                    "InstanceType": self.instance_type}],
        }
        if self.data_capture_percent > 0:
            body["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": int(round(self.data_capture_percent)),
                "DestinationS3Uri": self.data_capture_uri,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
            }
        body["Tags"] = list(ctx.tags)
        return body

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        return {"endpoint config": output.get("EndpointConfigArn")}

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("endpoint config", request["EndpointConfigName"])]

    def name_prefixes(self) -> dict[str, str]:
        return {"endpoint-config": name_prefix(self.endpoint_config_name)}

    def cost(self, pricing: Any) -> list[Any]:
        # The endpoint config says which instances an endpoint created from it runs.
        return [pricing.endpoint(f"SageMaker endpoint ({name_prefix(self.endpoint_config_name)})",
                                 self.instance_type, self.initial_instance_count,
                                 field=f"{self.state_id}.instance_type")]


class EndpointStep(Step):
    kind = "endpoint"
    title = "SageMaker endpoint"
    local_runner = "local_runners.endpoint:LocalEndpointRunner"
    emulator_bridge = "cloud_runners.emulator.hosting_bridge:HostingBridge"
    result_fields = ("EndpointName", "EndpointStatus")

    def __init__(self, state_id: str, *, endpoint_name: str, endpoint_config_name: str,
                 poll_seconds: int | None = None, comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.endpoint_name = resource_name(endpoint_name, f"{state_id}.endpoint_name")
        self.endpoint_config_name = str(endpoint_config_name)
        # None: the backend's interval (cloud.poll_seconds; 1 s on the emulator).
        self.poll_seconds = None if poll_seconds is None else max(1, int(poll_seconds))

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        return {"EndpointName": self.endpoint_name,
                "EndpointConfigName": self.endpoint_config_name,
                "Tags": list(ctx.tags)}

    def state_names(self) -> list[str]:
        s = self.state_id
        return [s, f"{s}-wait", f"{s}-describe", f"{s}-in-service", f"{s}-failed"]

    def states(self, ctx: BuildContext, next_state: str) -> dict[str, dict[str, Any]]:
        create, wait, describe, ready, failed = self.state_names()
        return {
            create: task_state("arn:aws:states:::sagemaker:createEndpoint",
                               self.parameters(ctx), self.result_key, wait,
                               f"{self.comment} (request-response: polled below)",
                               selector(["EndpointArn"])),
            wait: {"Type": "Wait", "Seconds": self.poll_seconds or max(1, ctx.poll_seconds),
                   "Next": describe},
            describe: task_state(
                "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint",
                asl_parameters({"EndpointName": self.endpoint_name},
                               f"{self.state_id}.describe"), self.result_key, ready,
                "endpoint status", selector(self.result_fields)),
            ready: {"Type": "Choice", "Choices": [
                {"Variable": f"$.{self.result_key}.EndpointStatus",
                 "StringEquals": "InService", "Next": next_state},
                {"Variable": f"$.{self.result_key}.EndpointStatus",
                 "StringEquals": "Failed", "Next": failed}],
                "Default": wait},
            failed: {"Type": "Fail", "Error": "EndpointFailed",
                     "CausePath": f"States.Format('endpoint {{}} failed to come InService', "
                                  f"$.{self.result_key}.EndpointName)"},
        }

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        out = {"endpoint": output.get("EndpointName")}
        if output.get("EndpointUrl"):
            out["url"] = output["EndpointUrl"]
        return out

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        return [("endpoint", f"{request['EndpointName']} (billed per hour until "
                             "`harness cloud teardown`)")]

    def name_prefixes(self) -> dict[str, str]:
        return {"endpoint": name_prefix(self.endpoint_name)}
