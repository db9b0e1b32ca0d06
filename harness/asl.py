"""Compile the pipeline definition to Amazon States Language (Step Functions).

The Task states carry the very request bodies the local runners execute: the compiler
calls the same builders (``harness.requests`` via ``harness.pipeline.STEPS``) with
symbolic values, and turns every string that holds a symbol into a JSONPath reference
(``"Key.$": "$.Path"``) or a ``States.Format`` intrinsic. The execution input carries
the run id, the bucket, the run's prefix, the data's shape and the hyperparameters.

In the cloud the ``prepare`` step runs on the client (obtain the data, upload it); the
evaluation gate reads the training job's ``test:accuracy`` metric (``FinalMetricDataList``)
and the ``infer`` step is the client calling the endpoint once it is InService.
"""
from __future__ import annotations

import re
from typing import Any

from harness.config import PipelineConfig
from harness.errors import ConfigError
from harness.pipeline import STEPS, BuildContext
from harness.requests import Layout, Names, training_request

_TOKEN = re.compile(r"⟦([^⟧]+)⟧")

# Gate metric (config) -> the training job's metric carrying it in the cloud.
GATE_METRICS = {"accuracy": "test:accuracy"}

# Errors worth retrying with backoff: throttling and transient service faults.
RETRYABLE = ["ThrottlingException", "Glue.ThrottlingException",
             "Glue.InternalServiceException", "Glue.ConcurrentRunsExceededException",
             "SageMaker.ThrottlingException", "SageMaker.InternalFailure",
             "States.Timeout"]

INPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "mlharness pipeline execution input",
    "type": "object",
    "required": ["RunId", "Bucket", "Prefix", "Data", "HyperParameters"],
    "properties": {
        "RunId": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,40}$"},
        "Bucket": {"type": "string", "minLength": 3, "maxLength": 63},
        "Prefix": {"type": "string", "description": "the run's key prefix, no slashes at the ends"},
        "Data": {
            "type": "object",
            "required": ["ImageHeight", "ImageWidth", "NumClasses"],
            "properties": {k: {"type": "string", "pattern": "^[0-9]+$"}
                           for k in ("ImageHeight", "ImageWidth", "NumClasses")},
        },
        "HyperParameters": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def ref(path: str) -> str:
    """A symbolic value: the JSONPath ``path`` of the state input."""
    return f"⟦{path}⟧"


def _format_literal(text: str) -> str:
    # States.Format escapes: \ ' { } must be backslash-escaped in the template.
    return re.sub(r"([\\'{}])", r"\\\1", text)


def _symbolic_value(text: str) -> str | None:
    """JSONPath or intrinsic for a string holding symbols; None for a plain string."""
    tokens = _TOKEN.findall(text)
    if not tokens:
        return None
    if _TOKEN.fullmatch(text):
        return tokens[0]
    template = "".join("{}" if i % 2 else _format_literal(part)
                       for i, part in enumerate(_TOKEN.split(text)))
    return f"States.Format('{template}', {', '.join(tokens)})"


def parameters(body: Any) -> Any:
    """Turn a request body with symbols into ASL ``Parameters``."""
    if isinstance(body, dict):
        out: dict[str, Any] = {}
        for key, value in body.items():
            if isinstance(value, str) and (sym := _symbolic_value(value)) is not None:
                out[f"{key}.$"] = sym
            else:
                out[key] = parameters(value)
        return out
    if isinstance(body, list):
        if any(isinstance(v, str) and _TOKEN.search(v) for v in body):
            raise ValueError("a symbolic value inside a list cannot be expressed in Parameters")
        return [parameters(v) for v in body]
    return body


def symbolic_requests(cfg: PipelineConfig, images: dict[str, str], role: str | None
                      ) -> dict[str, dict[str, Any]]:
    """Each cloud step's request body, built by the pipeline's own builders."""
    layout = Layout(f"s3://{ref('$.Bucket')}/{ref('$.Prefix')}")
    build = BuildContext(cfg=cfg, layout=layout, names=Names(cfg, ref("$.RunId")),
                         images=images, role=role)
    build.outputs["prepare"] = {
        "RawUri": layout.raw, "ImageHeight": ref("$.Data.ImageHeight"),
        "ImageWidth": ref("$.Data.ImageWidth"), "NumClasses": ref("$.Data.NumClasses")}
    build.outputs["etl"] = {"OutputUri": layout.processed}
    build.outputs["train"] = {"ModelArtifacts": {
        "S3ModelArtifacts": ref("$.Training.ModelArtifacts.S3ModelArtifacts")}}
    steps = {s.name: s for s in STEPS}
    bodies = {name: steps[name].build(build) for name in ("etl", "train", "deploy")}
    # Hyperparameters come whole from the execution input (see execution_input).
    bodies["train"]["HyperParameters"] = ref("$.HyperParameters")
    return bodies


def execution_input(cfg: PipelineConfig, *, run_id: str, bucket: str, prefix: str,
                    prepared: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    """The input of one execution; hyperparameters from the same training builder."""
    layout = Layout(f"s3://{bucket}/{prefix}")
    body = training_request(cfg, layout, Names(cfg, run_id), prepared, images["training"])
    return {
        "RunId": run_id, "Bucket": bucket, "Prefix": prefix,
        "Data": {k: str(prepared[k]) for k in ("ImageHeight", "ImageWidth", "NumClasses")},
        "HyperParameters": body["HyperParameters"],
    }


def _task(resource: str, params: dict[str, Any], result_path: str, nxt: str,
          comment: str, **extra: Any) -> dict[str, Any]:
    state = {"Type": "Task", "Comment": comment, "Resource": resource, "Parameters": params,
             "ResultPath": result_path, **extra,
             "Retry": [{"ErrorEquals": RETRYABLE, "IntervalSeconds": 10, "MaxAttempts": 4,
                        "BackoffRate": 2.0, "MaxDelaySeconds": 120, "JitterStrategy": "FULL"}],
             "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.Error",
                        "Next": "PipelineFailed"}],
             "Next": nxt}
    return state


def compile_state_machine(cfg: PipelineConfig, images: dict[str, str], role: str | None = None,
                          endpoint_poll_s: int = 30) -> dict[str, Any]:
    """The ASL definition of the pipeline (``json.dumps`` it for CreateStateMachine)."""
    metric = GATE_METRICS.get(cfg.evaluate.metric)
    if metric is None:
        raise ConfigError(f"the cloud gate cannot read '{cfg.evaluate.metric}'",
                          field="evaluate.metric", expected="one of " + ", ".join(GATE_METRICS))
    bodies = symbolic_requests(cfg, images, role)
    hosting = bodies["deploy"]
    threshold = cfg.evaluate.threshold
    states: dict[str, Any] = {
        "RunEtl": _task("arn:aws:states:::glue:startJobRun.sync", parameters(bodies["etl"]),
                        "$.Etl", "Train", "Glue job: the glue_etl script normalises the raw data",
                        ResultSelector={"JobRunState.$": "$.JobRunState", "Id.$": "$.Id"}),
        "Train": _task("arn:aws:states:::sagemaker:createTrainingJob.sync",
                       parameters(bodies["train"]), "$.Training", "ReadGateMetric",
                       "SageMaker TensorFlow training job (script mode)",
                       ResultSelector={
                           "TrainingJobName.$": "$.TrainingJobName",
                           "ModelArtifacts.$": "$.ModelArtifacts",
                           "FinalMetricDataList.$": "$.FinalMetricDataList"}),
        "ReadGateMetric": {
            "Type": "Pass", "Comment": f"pick {metric} from the training job's final metrics",
            "Parameters": {"Values.$": "$.Training.FinalMetricDataList"
                           f"[?(@.MetricName == '{metric}')].Value"},
            "ResultPath": "$.Gate", "Next": "GateValue"},
        "GateValue": {
            "Type": "Pass", "Parameters": {"Value.$": "States.ArrayGetItem($.Gate.Values, 0)"},
            "ResultPath": "$.Gate", "Next": "Gate"},
        "Gate": {
            "Type": "Choice", "Comment": f"deploy only when {metric} >= {threshold}",
            "Choices": [{"And": [{"Variable": "$.Gate.Value", "IsNumeric": True},
                                 {"Variable": "$.Gate.Value",
                                  "NumericGreaterThanEquals": threshold}],
                         "Next": "CreateModel"}],
            "Default": "BelowThreshold"},
        "BelowThreshold": {
            "Type": "Fail", "Error": "ModelBelowThreshold",
            "CausePath": f"States.Format('model below threshold: {metric} = {{}}, "
                         f"threshold {threshold}; nothing was deployed', $.Gate.Value)"},
        "CreateModel": _task("arn:aws:states:::sagemaker:createModel",
                             parameters(hosting["CreateModel"]), "$.Model",
                             "CreateEndpointConfig", "SageMaker model from model.tar.gz",
                             ResultSelector={"ModelArn.$": "$.ModelArn"}),
        "CreateEndpointConfig": _task("arn:aws:states:::sagemaker:createEndpointConfig",
                                      parameters(hosting["CreateEndpointConfig"]),
                                      "$.EndpointConfig", "CreateEndpoint", "endpoint config",
                                      ResultSelector={"EndpointConfigArn.$": "$.EndpointConfigArn"}),
        "CreateEndpoint": _task("arn:aws:states:::sagemaker:createEndpoint",
                                parameters(hosting["CreateEndpoint"]), "$.EndpointCreated",
                                "WaitForEndpoint", "endpoint (request-response: poll below)",
                                ResultSelector={"EndpointArn.$": "$.EndpointArn"}),
        "WaitForEndpoint": {"Type": "Wait", "Seconds": endpoint_poll_s,
                            "Next": "DescribeEndpoint"},
        "DescribeEndpoint": _task(
            "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint",
            parameters({"EndpointName": hosting["CreateEndpoint"]["EndpointName"]}),
            "$.Endpoint", "EndpointInService?", "endpoint status",
            ResultSelector={"EndpointName.$": "$.EndpointName",
                            "EndpointStatus.$": "$.EndpointStatus"}),
        "EndpointInService?": {
            "Type": "Choice",
            "Choices": [
                {"Variable": "$.Endpoint.EndpointStatus", "StringEquals": "InService",
                 "Next": "Deployed"},
                {"Variable": "$.Endpoint.EndpointStatus", "StringEquals": "Failed",
                 "Next": "EndpointFailed"}],
            "Default": "WaitForEndpoint"},
        "EndpointFailed": {
            "Type": "Fail", "Error": "EndpointFailed",
            "CausePath": "States.Format('endpoint {} failed to come InService', "
                         "$.Endpoint.EndpointName)"},
        "Deployed": {"Type": "Succeed"},
        # A fixed custom error name (names starting "States." are reserved), the caught
        # error's name and cause in the cause.
        "PipelineFailed": {"Type": "Fail", "Error": "PipelineStepFailed",
                           "CausePath": "States.Format('{}: {}', $.Error.Error, "
                                        "$.Error.Cause)"},
    }
    return {
        "Comment": "mlharness MNIST pipeline: Glue ETL -> SageMaker training -> gate -> "
                   "model, endpoint config, endpoint (compiled by harness.asl)",
        "StartAt": "RunEtl",
        "TimeoutSeconds": cfg.train.max_runtime_s + 3 * 3600,
        "States": states,
    }
