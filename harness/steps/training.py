"""``TrainingStep``: a SageMaker training job in framework script mode
(``sagemaker:createTrainingJob.sync``).

Its parameters are those of ``CreateTrainingJob``: the job name, the entry point and
source dir (packed as ``sourcedir.tar.gz`` beside the run's data, as the SageMaker SDK
uploads it), hyperparameters, channels, the output path, instance type and count,
metric definitions (the regexes SageMaker applies to the job's log). The local runner
executes the very request the cloud gets, with ``file://`` URIs.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

from harness.errors import ConfigError
from harness.placeholders import Placeholder
from harness.steps.base import (
    BuildContext,
    CodeAsset,
    Step,
    absolute,
)
from harness.steps.sagemaker_job import SageMakerJob, resource_name

CONTENT_TYPE = "application/x-parquet"
# The channel whose files are split between instances on a multi-instance job.
TRAIN_CHANNEL = "train"
# Hyperparameter names the SageMaker containers reserve.
RESERVED_PREFIX = "sagemaker_"


def checked_metric_definitions(defs: Any, where: str) -> list[dict[str, str]]:
    out = []
    for i, d in enumerate(defs or []):
        if isinstance(d, Mapping):
            name, regex = d.get("Name"), d.get("Regex")
        else:  # a pydantic MetricDefinition
            name, regex = getattr(d, "Name", None), getattr(d, "Regex", None)
        if not isinstance(name, str) or not isinstance(regex, str):
            raise ConfigError("a metric definition has a Name and a Regex",
                              field=f"{where}[{i}]", expected='{"Name": ..., "Regex": ...}',
                              got=d)
        try:
            groups = re.compile(regex).groups
        except re.error as e:
            raise ConfigError(f"not a regular expression: {e}", field=f"{where}[{i}].Regex",
                              got=regex) from None
        if groups < 1:
            raise ConfigError("the regex needs one capture group for the value",
                              field=f"{where}[{i}].Regex", got=regex)
        out.append({"Name": name, "Regex": regex})
    return out


def channel(name: str, uri: str, content_type: str = CONTENT_TYPE,
            distribution: str = "FullyReplicated") -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": distribution}},
        "ContentType": content_type,
        "InputMode": "File",
    }


def hyperparameter_strings(hps: Mapping[str, Any], where: str) -> dict[str, str]:
    """SageMaker takes hyperparameters as strings; a placeholder becomes its text."""
    out: dict[str, str] = {}
    for key, value in (hps or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigError("a hyperparameter needs a name", field=where, got=key)
        if key.startswith(RESERVED_PREFIX):
            raise ConfigError("hyperparameters starting 'sagemaker_' are set by the harness",
                              field=f"{where}.{key}", expected="another name")
        if isinstance(value, (dict, list, tuple)) or value is None:
            raise ConfigError("a hyperparameter is a string, number or placeholder",
                              field=f"{where}.{key}", got=value)
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def json_hyperparameter(value: Any) -> str:
    """A hyperparameter as the SageMaker SDK sends it for a framework estimator: every
    value ``json.dumps``-ed (``2`` -> ``"2"``, ``"train.py"`` -> ``'"train.py"'``, True ->
    ``"true"``); a placeholder as its text (the SDK's pipeline variables). The training
    toolkit decodes each with ``json.loads``."""
    if isinstance(value, Placeholder):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def json_hyperparameters(hps: Mapping[str, Any]) -> dict[str, str]:
    return {k: json_hyperparameter(v) for k, v in hps.items()}


class TrainingStep(SageMakerJob, Step):
    kind = "training"
    title = "SageMaker training job (script mode)"
    local_runner = "local_runners.train:LocalTrainingRunner"
    cacheable = True
    emulator_bridge = "cloud_runners.emulator.training_bridge:TrainingBridge"
    job_use = "training"
    name_field = "TrainingJobName"
    resource = "arn:aws:states:::sagemaker:createTrainingJob.sync"
    result_fields = ("TrainingJobName", "ModelArtifacts", "FinalMetricDataList")

    def __init__(self, state_id: str, *, job_name: str, source_dir: str | Path,
                 entry_point: str, output_path: str, inputs: Mapping[str, str],
                 hyperparameters: Mapping[str, Any] | None = None,
                 metric_definitions: Any = (), instance_type: str = "ml.m5.xlarge",
                 instance_count: int = 1, volume_size_gb: int = 10,
                 max_runtime_s: int = 3600, framework: str = "tensorflow",
                 framework_version: str = "2.19", py_version: str = "py312",
                 image_uri: str | None = None, expected_hours: float = 0.25,
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        self.job_name = resource_name(job_name, f"{state_id}.job_name")
        self.source_dir = absolute(source_dir, f"{state_id}.source_dir", directory=True)
        if not (self.source_dir / entry_point).is_file():
            raise ConfigError("the entry point is not in the source dir",
                              file=str(self.source_dir / entry_point),
                              field=f"{state_id}.entry_point",
                              expected="a file at the top of source_dir")
        self.entry_point = entry_point
        self.output_path = output_path
        if not inputs:
            raise ConfigError("a training job needs at least one channel",
                              field=f"{state_id}.inputs", expected="{channel name: URI}")
        self.inputs = dict(inputs)
        self.hyperparameters = hyperparameter_strings(hyperparameters or {},
                                                      f"{state_id}.hyperparameters")
        self.hyperparameter_values = dict(hyperparameters or {})  # typed, for the request
        self.metric_definitions = checked_metric_definitions(
            metric_definitions, f"{state_id}.metric_definitions")
        self._set_job(state_id, instance_type=instance_type, instance_count=instance_count,
                      volume_size_gb=volume_size_gb, max_runtime_s=max_runtime_s,
                      framework=framework, framework_version=framework_version,
                      py_version=py_version, image_uri=image_uri,
                      expected_hours=expected_hours)

    @property
    def _source_asset(self) -> CodeAsset:
        return CodeAsset(self.source_dir, f"{self.state_id}/sourcedir.tar.gz", "tar")

    def code(self) -> list[CodeAsset]:
        return [self._source_asset]

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        hps: dict[str, Any] = dict(self.hyperparameter_values)
        hps["sagemaker_program"] = self.entry_point
        hps["sagemaker_submit_directory"] = self._source_asset.uri
        hps["model_dir"] = f"{self.output_path.rstrip('/')}/{self.job_name}/model"
        if self.instance_count > 1:
            # What the SageMaker SDK sends for distribution={"multi_worker_mirrored_
            # strategy": {"enabled": True}}: the TensorFlow container then sets TF_CONFIG.
            hps["sagemaker_multi_worker_mirrored_strategy_enabled"] = True
        hps = json_hyperparameters(hps)  # as the SDK's Framework estimators send them
        body: dict[str, Any] = {
            "TrainingJobName": self.job_name,
            "AlgorithmSpecification": {"TrainingImage": self.image(ctx),
                                       "TrainingInputMode": "File",
                                       "MetricDefinitions": list(self.metric_definitions)},
            "HyperParameters": hps,
            "InputDataConfig": [channel(name, uri, distribution=self._distribution(name))
                                for name, uri in self.inputs.items()],
            "OutputDataConfig": {"S3OutputPath": self.output_path},
            "ResourceConfig": {"InstanceType": self.instance_type,
                               "InstanceCount": self.instance_count,
                               "VolumeSizeInGB": self.volume_size_gb},
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_runtime_s},
            "Tags": list(ctx.tags),
        }
        if ctx.role:
            body["RoleArn"] = ctx.role
        return body

    def _distribution(self, channel_name: str) -> str:
        """With several instances each gets its own part of the training files
        (ShardedByS3Key: instance i of N downloads objects i, i+N, ...), as every worker
        of MultiWorkerMirroredStrategy trains on different batches; validation and test
        stay whole on every instance (each evaluates its share of batches of the same
        files, the metrics are summed over the workers)."""
        if self.instance_count > 1 and channel_name == TRAIN_CHANNEL:
            return "ShardedByS3Key"
        return "FullyReplicated"

    def state_comment(self) -> str:
        return f"{self.comment} ({self.entry_point})"

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": (output.get("ModelArtifacts") or {}).get("S3ModelArtifacts")}
        for m in output.get("FinalMetricDataList") or []:
            out[m.get("MetricName")] = m.get("Value")
        return out
