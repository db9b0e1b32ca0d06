"""The ``sagemaker`` Endpoint: a SageMaker real-time endpoint, reached with InvokeEndpoint.

Two ways to get one:
- ``SageMakerEndpoint(name, sm, runtime, requests=trio)``: ``start()`` sends the
  CreateModel / CreateEndpointConfig / CreateEndpoint trio (``harness.steps.hosting``) and waits
  for ``InService``; ``stop()`` deletes what it created (an endpoint costs money while it
  exists). (A pipeline's own endpoint is created by its state machine and lives until
  ``harness cloud teardown``.)
- ``SageMakerEndpoint(name, sm, runtime)``: an existing endpoint; ``start()`` only checks
  that it is ``InService``; ``stop()`` leaves it alone.

The client is the shared ``EndpointClient`` over ``SageMakerRuntimeTransport``: the same TF
Serving request bodies as the local servers, answered by the SageMaker TF serving container.
"""
from __future__ import annotations

from typing import Any, Callable

from botocore.exceptions import ClientError

from cloud_runners import aws
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from harness.endpoints import Endpoint
from harness.errors import StepFailed
from harness.inference_client import EndpointClient
from harness.progress import Progress

TERMINAL = ("InService", "Failed", "OutOfService", "Deleting")
API_SAGEMAKER_RUNTIME = "sagemaker-runtime"


class SageMakerEndpoint(Endpoint):
    kind = "sagemaker"

    def __init__(self, endpoint_name: str, sagemaker: Any, runtime: Any,
                 requests: dict[str, Any] | None = None, poll_seconds: float = 30.0,
                 on_status: Callable[[str], None] | None = None, step: str = "deploy",
                 log: Any = None):
        """``sagemaker``/``runtime``: boto3 clients; ``requests``: the hosting trio to
        create (None: attach to an existing endpoint); ``on_status`` is called with each
        new EndpointStatus while waiting."""
        served = ((requests or {}).get("CreateModel", {}).get("PrimaryContainer", {})
                  .get("Environment") or {}).get("SAGEMAKER_TFS_DEFAULT_MODEL_NAME")
        super().__init__(served or endpoint_name)
        self.endpoint_name = endpoint_name
        self.sm, self.runtime = sagemaker, runtime
        self.requests = requests
        self.poll_seconds = poll_seconds
        self.on_status = on_status
        self.step = step
        self.log = log
        self.created: list[tuple[str, str]] = []     # (kind, name), in creation order
        self._description: dict[str, Any] | None = None

    def _call(self, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
        return aws.aws_call(self.step, f"SageMaker {what}", fn, **kw)

    def _create(self) -> None:
        model = self.requests["CreateModel"]
        config = self.requests["CreateEndpointConfig"]
        endpoint = self.requests["CreateEndpoint"]
        self._call(f"CreateModel {model['ModelName']}", self.sm.create_model, **model)
        self.created.append(("model", model["ModelName"]))
        if self.log:
            self.log.info("model %s created (image %s, data %s)", model["ModelName"],
                          model["PrimaryContainer"].get("Image"),
                          model["PrimaryContainer"].get("ModelDataUrl"))
        self._call(f"CreateEndpointConfig {config['EndpointConfigName']}",
                   self.sm.create_endpoint_config, **config)
        self.created.append(("endpoint-config", config["EndpointConfigName"]))
        self._call(f"CreateEndpoint {self.endpoint_name}", self.sm.create_endpoint, **endpoint)
        self.created.append(("endpoint", self.endpoint_name))
        if self.log:
            self.log.info("endpoint %s created; waiting for InService", self.endpoint_name)

    def start(self, timeout: float | None = None, progress: Progress | None = None
              ) -> "SageMakerEndpoint":
        """Create (if given the trio) and wait for InService; the status shows on
        ``progress`` (and goes to ``on_status``)."""
        if progress is None:
            return self._start(timeout, None)
        with progress.task(f"endpoint {self.endpoint_name}", total=None) as task:
            return self._start(timeout, task)

    def _start(self, timeout: float | None, task) -> "SageMakerEndpoint":
        if self.requests is not None and not self.created:
            self._create()
        seen: list[str] = []

        def on_update(answer: dict[str, Any]) -> None:
            status = answer.get("EndpointStatus", "?")
            if not seen or seen[-1] != status:
                seen.append(status)
                if self.on_status:
                    self.on_status(status)
                if task is not None:
                    task.update(description=f"  endpoint {self.endpoint_name}: {status}")

        answer = aws.poll(
            lambda: self._call(f"DescribeEndpoint {self.endpoint_name}",
                               self.sm.describe_endpoint, EndpointName=self.endpoint_name),
            lambda a: a.get("EndpointStatus") in TERMINAL, self.poll_seconds, on_update,
            timeout=timeout, what=f"endpoint {self.endpoint_name}")
        self._description = aws.jsonable(answer)
        status = self._description.get("EndpointStatus")
        if status != "InService":
            raise StepFailed(self.step, f"endpoint {self.endpoint_name} {status}: "
                             f"{self._description.get('FailureReason') or '(no failure reason)'}",
                             hint="the endpoint still exists and may cost money: run "
                             "`harness cloud teardown`; its logs are in CloudWatch under "
                             f"/aws/sagemaker/Endpoints/{self.endpoint_name}")
        return self

    def stop(self) -> None:
        """Delete what ``start()`` created (newest first); an attached endpoint is left."""
        deleters = {"endpoint": ("delete_endpoint", "EndpointName"),
                    "endpoint-config": ("delete_endpoint_config", "EndpointConfigName"),
                    "model": ("delete_model", "ModelName")}
        while self.created:
            kind, name = self.created.pop()
            method, key = deleters[kind]
            try:
                getattr(self.sm, method)(**{key: name})
            except ClientError as e:
                if "Could not find" not in str(e):
                    raise
        self._description = None

    def client(self) -> EndpointClient:
        return EndpointClient(SageMakerRuntimeTransport(self.runtime, self.endpoint_name),
                              self.endpoint_name)

    def describe(self) -> dict[str, Any]:
        if self._description is None:
            return {"EndpointName": self.endpoint_name, "EndpointStatus": "OutOfService",
                    "EndpointApi": API_SAGEMAKER_RUNTIME, "Server": self.kind}
        out = {**self._description, "EndpointApi": API_SAGEMAKER_RUNTIME, "Server": self.kind}
        if self.requests is not None:
            out["ModelName"] = self.requests["CreateModel"]["ModelName"]
            out["ServedModelName"] = self.model_name
        return out
