"""Every step's request, built once.

The cloud runner sends these bodies to AWS (or the ASL carries them as ``Parameters``);
the local runner executes the very same bodies with ``file://`` URIs. Parity is by
construction: only the layout's base URI and the container images differ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import uris
from harness.config import PipelineConfig


@dataclass(frozen=True)
class Layout:
    """Where a run's data and code live, under one base URI (file:// or s3://)."""

    base: str

    @property
    def raw(self) -> str:
        return uris.join(self.base, "data", "raw")

    @property
    def processed(self) -> str:
        return uris.join(self.base, "data", "processed")

    def processed_split(self, split: str) -> str:
        return uris.join(self.processed, split)

    @property
    def code(self) -> str:
        return uris.join(self.base, "code")

    @property
    def sourcedir(self) -> str:
        return uris.join(self.code, "sourcedir.tar.gz")

    def glue_script(self, cfg: PipelineConfig) -> str:
        return uris.join(self.code, "glue", cfg.etl.script.rsplit("/", 1)[-1])

    @property
    def training(self) -> str:
        return uris.join(self.base, "training")

    @property
    def evaluation(self) -> str:
        return uris.join(self.base, "evaluation")

    @property
    def inference(self) -> str:
        return uris.join(self.base, "inference")

    @property
    def capture(self) -> str:
        return uris.join(self.base, "capture")


@dataclass(frozen=True)
class Names:
    """Resource names: every one carries the run id, so re-running never collides."""

    cfg: PipelineConfig
    run_id: str

    def _name(self, prefix: str) -> str:
        return f"{prefix}-{self.run_id}"[:63]

    @property
    def glue_job(self) -> str:
        return self.cfg.etl.job_name

    @property
    def training_job(self) -> str:
        return self._name(self.cfg.train.job_name)

    @property
    def model(self) -> str:
        return self._name(self.cfg.deploy.model_name)

    @property
    def endpoint_config(self) -> str:
        return self._name(self.cfg.deploy.model_name + "-config")

    @property
    def endpoint(self) -> str:
        return self._name(self.cfg.deploy.model_name + "-endpoint")


PROJECT_TAG = "mlharness:project"
RUN_TAG = "mlharness:run"


def resource_tags(cfg: PipelineConfig, names: Names) -> list[dict[str, str]]:
    """Tags on every resource a run creates: teardown finds the project's resources by
    ``mlharness:project``; ``mlharness:run`` says which run made them."""
    return [{"Key": PROJECT_TAG, "Value": cfg.cloud.stack_name},
            {"Key": RUN_TAG, "Value": names.run_id}]


def prepare_request(cfg: PipelineConfig, layout: Layout) -> dict[str, Any]:
    d = cfg.data
    return {
        "Source": d.source,
        "CacheDir": d.cache_dir,
        "Mirrors": list(d.download_mirrors),
        "DownloadTimeoutSeconds": d.download_timeout_s,
        "Seed": d.seed,
        "ValidationFraction": d.validation_fraction,
        "TestFraction": d.test_fraction,
        "OutputUri": layout.raw,
    }


def glue_job_definition(cfg: PipelineConfig, layout: Layout, role: str | None = None
                        ) -> dict[str, Any]:
    """The Glue ``CreateJob`` request (made once, at bootstrap)."""
    body: dict[str, Any] = {
        "Name": cfg.etl.job_name,
        "Command": {"Name": "glueetl", "ScriptLocation": layout.glue_script(cfg),
                    "PythonVersion": "3"},
        "GlueVersion": cfg.etl.glue_version,
        "WorkerType": cfg.etl.worker_type,
        "NumberOfWorkers": cfg.etl.number_of_workers,
        "DefaultArguments": {"--job-language": "python",
                             "--conf": f"spark.sql.shuffle.partitions={cfg.etl.shuffle_partitions}"},
    }
    if role:
        body["Role"] = role
    return body


def etl_request(cfg: PipelineConfig, layout: Layout, prepared: dict[str, Any]) -> dict[str, Any]:
    """Glue ``StartJobRun``: arguments are strings keyed ``--name``."""
    return {
        "JobName": cfg.etl.job_name,
        "Arguments": {
            "--raw_uri": prepared["RawUri"],
            "--output_uri": layout.processed,
            "--image_height": str(prepared["ImageHeight"]),
            "--image_width": str(prepared["ImageWidth"]),
            "--num_classes": str(prepared["NumClasses"]),
        },
    }


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": "FullyReplicated"}},
        "ContentType": "application/x-parquet",
        "InputMode": "File",
    }


def training_request(cfg: PipelineConfig, layout: Layout, names: Names, prepared: dict[str, Any],
                     image: str, role: str | None = None, processed: str | None = None
                     ) -> dict[str, Any]:
    """SageMaker ``CreateTrainingJob`` in TensorFlow script mode.

    The image shape and class count come from the data (the prepare step's output);
    ``processed`` is the ETL output (default: this run's layout).
    """
    t = cfg.train
    processed = processed or layout.processed
    hps = {k: str(v) for k, v in t.hyperparameters.items()}
    hps["image_height"] = str(prepared["ImageHeight"])
    hps["image_width"] = str(prepared["ImageWidth"])
    hps["num_classes"] = str(prepared["NumClasses"])
    hps["sagemaker_program"] = t.entry_point
    hps["sagemaker_submit_directory"] = layout.sourcedir
    hps["model_dir"] = uris.join(layout.training, names.training_job, "model")
    if t.instance_count > 1:
        # What the SageMaker SDK sends for distribution={"multi_worker_mirrored_strategy":
        # {"enabled": True}}: the TensorFlow container then sets TF_CONFIG on every host
        # and model/train.py trains under MultiWorkerMirroredStrategy.
        hps["sagemaker_multi_worker_mirrored_strategy_enabled"] = "true"
    body: dict[str, Any] = {
        "TrainingJobName": names.training_job,
        "AlgorithmSpecification": {
            "TrainingImage": image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [m.model_dump() for m in t.metric_definitions],
        },
        "HyperParameters": hps,
        "InputDataConfig": [_channel(c, uris.join(processed, c))
                            for c in ("train", "validation", "test")],
        "OutputDataConfig": {"S3OutputPath": layout.training},
        "ResourceConfig": {"InstanceType": t.instance_type, "InstanceCount": t.instance_count,
                           "VolumeSizeInGB": t.volume_size_gb},
        "StoppingCondition": {"MaxRuntimeInSeconds": t.max_runtime_s},
        "Tags": resource_tags(cfg, names),
    }
    if role:
        body["RoleArn"] = role
    return body


def evaluate_request(cfg: PipelineConfig, layout: Layout, trained: dict[str, Any],
                     processed: str | None = None) -> dict[str, Any]:
    return {
        "ModelArtifacts": trained["ModelArtifacts"]["S3ModelArtifacts"],
        "TestDataUri": uris.join(processed or layout.processed, "test"),
        "OutputUri": layout.evaluation,
        "Metric": cfg.evaluate.metric,
        "Threshold": cfg.evaluate.threshold,
    }


def serving_environment(cfg: PipelineConfig) -> dict[str, str]:
    """The SageMaker TensorFlow serving container's environment (its batching knobs)."""
    d = cfg.deploy
    env = {"SAGEMAKER_TFS_DEFAULT_MODEL_NAME": d.model_name}
    if d.max_batch_size > 0:
        env.update(SAGEMAKER_TFS_ENABLE_BATCHING="true",
                   SAGEMAKER_TFS_MAX_BATCH_SIZE=str(d.max_batch_size),
                   SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS=str(d.batch_timeout_micros))
    return env


def hosting_requests(cfg: PipelineConfig, names: Names, model_data_url: str, image: str,
                     role: str | None = None, capture_uri: str | None = None
                     ) -> dict[str, Any]:
    """SageMaker ``CreateModel`` / ``CreateEndpointConfig`` / ``CreateEndpoint``.

    ``capture_uri``: where data capture writes when ``deploy.data_capture_percent`` > 0.
    """
    d = cfg.deploy
    model: dict[str, Any] = {
        "ModelName": names.model,
        "PrimaryContainer": {"Image": image, "ModelDataUrl": model_data_url,
                             "Environment": serving_environment(cfg)},
    }
    if role:
        model["ExecutionRoleArn"] = role
    model["Tags"] = resource_tags(cfg, names)
    config: dict[str, Any] = {
        "EndpointConfigName": names.endpoint_config,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": names.model,
                                "InitialInstanceCount": d.initial_instance_count,
                                "InstanceType": d.instance_type}],
    }
    if d.data_capture_percent > 0 and capture_uri:
        config["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": int(round(d.data_capture_percent)),
            "DestinationS3Uri": capture_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
        }
    config["Tags"] = resource_tags(cfg, names)
    return {
        "CreateModel": model,
        "CreateEndpointConfig": config,
        "CreateEndpoint": {"EndpointName": names.endpoint,
                           "EndpointConfigName": names.endpoint_config,
                           "Tags": resource_tags(cfg, names)},
    }


def infer_request(cfg: PipelineConfig, layout: Layout, deployed: dict[str, Any],
                  processed: str | None = None) -> dict[str, Any]:
    return {
        "EndpointName": deployed["EndpointName"],
        "Endpoint": deployed,
        "TestDataUri": uris.join(processed or layout.processed, "test"),
        "OutputUri": layout.inference,
        "BatchSize": cfg.infer.batch_size,
    }
