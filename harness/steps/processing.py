"""``ProcessingStep``: a SageMaker Processing job (``sagemaker:createProcessingJob.sync``).

Work that must run on AWS's side but is not a Glue or a training job (evaluating a model,
checking drift) runs as a processing job: a script in a container, with inputs copied
from S3 to local paths (``/opt/ml/processing/...``) and outputs uploaded from local paths
when the job ends. The step's parameters are those of ``CreateProcessingJob``; the code
(one script, or a folder with it) is staged beside the run's data and arrives as the
``code`` input. Locally the same request runs with ``file://`` URIs
(``local_runners.processing``); on the emulator a bridge runs it on the emulated S3.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from harness.errors import ConfigError
from harness.steps.base import (
    BuildContext,
    CodeAsset,
    Step,
    absolute,
)
from harness.steps.sagemaker_job import SageMakerJob, resource_name

PROCESSING_ROOT = "/opt/ml/processing"
CODE_PATH = f"{PROCESSING_ROOT}/input/code"


def _container_path(path: str, where: str) -> str:
    p = PurePosixPath(path)
    if not p.is_absolute() or not str(p).startswith(PROCESSING_ROOT + "/") or ".." in p.parts:
        raise ConfigError("a processing job's local path lives under /opt/ml/processing",
                          field=where, expected="/opt/ml/processing/<name>", got=path)
    return str(p)


@dataclass(frozen=True)
class ProcessingInput:
    """An S3 object or prefix copied to ``destination`` in the container before it starts."""

    source: str
    destination: str
    input_name: str


@dataclass(frozen=True)
class ProcessingOutput:
    """A container folder uploaded to ``destination`` (an S3 prefix) when the job ends."""

    source: str
    destination: str
    output_name: str


class ProcessingStep(SageMakerJob, Step):
    kind = "processing"
    title = "SageMaker processing job"
    local_runner = "local_runners.processing:LocalProcessingRunner"
    cacheable = True
    emulator_bridge = "cloud_runners.emulator.processing_bridge:ProcessingBridge"
    job_use = "processing"
    name_field = "ProcessingJobName"
    resource = "arn:aws:states:::sagemaker:createProcessingJob.sync"
    result_fields = ("ProcessingJobName", "ProcessingJobArn", "ProcessingJobStatus",
                     "ProcessingOutputConfig")

    def __init__(self, state_id: str, *, job_name: str, code: str | Path,
                 source_dir: str | Path | None = None,
                 inputs: Sequence[ProcessingInput] = (),
                 outputs: Sequence[ProcessingOutput] = (),
                 arguments: Sequence[Any] = (), environment: Mapping[str, Any] | None = None,
                 instance_type: str = "ml.m5.xlarge", instance_count: int = 1,
                 volume_size_gb: int = 10, max_runtime_s: int = 3600,
                 framework: str = "tensorflow", framework_version: str = "2.19",
                 py_version: str = "py312", image_uri: str | None = None,
                 expected_hours: float = 0.1, comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.job_name = resource_name(job_name, f"{state_id}.job_name")
        if source_dir is not None:
            self.source_dir: Path | None = absolute(source_dir, f"{state_id}.source_dir",
                                                    directory=True)
            script = self.source_dir / code
            if not script.is_file():
                raise ConfigError("the processing code is not in the source dir",
                                  file=str(script), field=f"{state_id}.code",
                                  expected="a file inside source_dir")
            self.code_path = str(PurePosixPath(Path(code).as_posix()))
            self.script = script
        else:
            self.source_dir = None
            self.script = absolute(code, f"{state_id}.code")
            self.code_path = self.script.name
        names = [i.input_name for i in inputs] + ["code"]
        if len(set(names)) != len(names):
            raise ConfigError("processing input names must be unique ('code' is the code's)",
                              field=f"{state_id}.inputs", got=names)
        self.inputs = [ProcessingInput(i.source, _container_path(
            i.destination, f"{state_id}.inputs[{i.input_name}].destination"), i.input_name)
            for i in inputs]
        self.outputs = [ProcessingOutput(_container_path(
            o.source, f"{state_id}.outputs[{o.output_name}].source"), o.destination,
            o.output_name) for o in outputs]
        self.arguments = [str(a) for a in arguments]
        self.environment = {str(k): str(v) for k, v in (environment or {}).items()}
        self._set_job(state_id, instance_type=instance_type, instance_count=instance_count,
                      volume_size_gb=volume_size_gb, max_runtime_s=max_runtime_s,
                      framework=framework, framework_version=framework_version,
                      py_version=py_version, image_uri=image_uri,
                      expected_hours=expected_hours)

    @property
    def _code_asset(self) -> CodeAsset:
        if self.source_dir is not None:
            return CodeAsset(self.source_dir, f"{self.state_id}", "dir")
        return CodeAsset(self.script, f"{self.state_id}/{self.script.name}", "file")

    def code(self) -> list[CodeAsset]:
        return [self._code_asset]

    def _code_prefix(self) -> str:
        uri = self._code_asset.uri
        return uri if self.source_dir is not None else uri.rsplit("/", 1)[0]

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        def s3_input(name: str, uri: str, local: str) -> dict[str, Any]:
            return {"InputName": name, "S3Input": {
                "S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix",
                "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}

        app: dict[str, Any] = {"ImageUri": self.image(ctx), "ContainerEntrypoint": [
            "python3", f"{CODE_PATH}/{self.code_path}"]}
        if self.arguments:
            app["ContainerArguments"] = list(self.arguments)
        body: dict[str, Any] = {
            "ProcessingJobName": self.job_name,
            "AppSpecification": app,
            "ProcessingInputs": [s3_input("code", self._code_prefix(), CODE_PATH)]
            + [s3_input(i.input_name, i.source, i.destination) for i in self.inputs],
            "ProcessingOutputConfig": {"Outputs": [
                {"OutputName": o.output_name, "S3Output": {
                    "S3Uri": o.destination, "LocalPath": o.source,
                    "S3UploadMode": "EndOfJob"}} for o in self.outputs]},
            "ProcessingResources": {"ClusterConfig": {
                "InstanceCount": self.instance_count, "InstanceType": self.instance_type,
                "VolumeSizeInGB": self.volume_size_gb}},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_s},
        }
        if self.environment:
            body["Environment"] = dict(self.environment)
        if ctx.role:
            body["RoleArn"] = ctx.role
        body["Tags"] = list(ctx.tags)
        return body

    def state_comment(self) -> str:
        return f"{self.comment} ({self.code_path})"

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        outs = (output.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        return {o.get("OutputName"): (o.get("S3Output") or {}).get("S3Uri") for o in outs}
