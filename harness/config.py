"""Pipeline configuration: one YAML file, validated with pydantic.

A wrong field gets a message that names the file, the field and the allowed values.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import ConfigError

Backend = Literal["local", "emulator", "cloud"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "pipeline.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    source: str = Field("auto", description="auto | download | fixture | a directory or URI "
                        "holding *-idx3-ubyte[.gz] / *-idx1-ubyte[.gz] files")
    cache_dir: str = "~/.cache/mlharness/mnist"
    download_mirrors: list[str] = [
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ]
    download_timeout_s: float = Field(10.0, gt=0)
    seed: int = 42
    validation_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)
    # The gate judges the model on the test split: fewer examples of a class than this
    # and the run stops before any work (0 turns the check off).
    min_test_per_class: int = Field(10, ge=0)
    label_column: str | None = Field(None, min_length=1, description="the column holding the "
                                     "class labels in a Parquet source (default: label) or a "
                                     "CSV source with a header row (default: the first "
                                     "column); a CSV file without a header has its label first")


class EtlConfig(_Section):
    job_name: str = "mnist-etl"
    script: str = "glue_etl/mnist_etl.py"
    glue_version: Literal["5.0", "5.1"] = "5.1"
    spark_master: str = Field("local[2]", description="local[N], or spark://HOST:PORT of a "
                              "standalone cluster (see the README: every worker must see the "
                              "runs folder at the same path)")
    # A standalone cluster's workers connect back to the driver: on one machine loopback
    # is enough; with workers on other hosts, set driver_host to an address they reach.
    driver_host: str = "127.0.0.1"
    driver_bind_address: str = "127.0.0.1"
    executor_memory: str | None = Field(None, pattern=r"^[0-9]+[kmgt]$",
                                        description="spark.executor.memory, e.g. 2g")
    executor_cores: int | None = Field(None, ge=1)
    cores_max: int | None = Field(None, ge=1, description="spark.cores.max: the cores the "
                                  "job may take on a standalone cluster")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="more Spark settings "
                                       "(spark.* keys), applied last")
    timeout_minutes: int = Field(60, ge=1, description="the Glue job's Timeout: a run "
                                 "still going after it stops (JobRunState TIMEOUT)")
    keep_spark: bool = Field(False, description="keep the local Spark session after the ETL "
                             "step (default: stopped, its JVM's memory returned)")
    shuffle_partitions: int = Field(4, ge=1)
    rows_per_file: int = Field(10_000, ge=1, description="the most rows the ETL writes to "
                               "one Parquet part file (Spark's maxRecordsPerFile): a split "
                               "is many files of bounded size, which training streams and "
                               "SageMaker can shard across instances (ShardedByS3Key)")
    worker_type: Literal["G.1X", "G.2X", "G.4X", "G.8X", "G.025X"] = "G.1X"
    number_of_workers: int = Field(2, ge=2)
    runner: Literal["auto", "spark", "glue-compat", "glue-container"] = Field(
        "auto", description="how the local backend runs the job script: spark (plain "
        "PySpark), glue-compat (awsglue GlueContext/DynamicFrame/Job/transforms emulated "
        "over PySpark), glue-container (AWS's Glue image through Docker); auto = "
        "glue-compat when the script imports awsglue.context, .job, .dynamicframe or "
        ".transforms, else spark")


class MetricDefinition(_Section):
    Name: str
    Regex: str

    @field_validator("Regex")
    @classmethod
    def _one_group(cls, v: str) -> str:
        import re
        try:
            if re.compile(v).groups < 1:
                raise ValueError("needs one capture group for the value")
        except re.error as e:
            raise ValueError(f"not a regular expression: {e}") from None
        return v


class TrainConfig(_Section):
    job_name: str = "mnist-train"
    source_dir: str = "model"
    entry_point: str = "train.py"
    framework_version: Literal["2.19"] = "2.19"
    py_version: Literal["py312"] = "py312"
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = Field(1, ge=1)
    volume_size_gb: int = Field(10, ge=1)
    max_runtime_s: int = Field(3600, ge=60)
    hyperparameters: dict[str, int | float | str] = {
        "epochs": 6, "batch_size": 128, "learning_rate": 0.003, "seed": 42, "shift": 0.1,
    }
    metric_definitions: list[MetricDefinition] = [
        MetricDefinition(Name="train:loss", Regex=r"train_loss=([0-9.eE+-]+)"),
        MetricDefinition(Name="train:accuracy", Regex=r"train_accuracy=([0-9.eE+-]+)"),
        MetricDefinition(Name="validation:loss", Regex=r"val_loss=([0-9.eE+-]+)"),
        MetricDefinition(Name="validation:accuracy", Regex=r"val_accuracy=([0-9.eE+-]+)"),
        MetricDefinition(Name="test:accuracy", Regex=r"test_accuracy=([0-9.eE+-]+)"),
    ]


class RangeConfig(_Section):
    """One hyperparameter range of the tuning job (SageMaker's ParameterRanges)."""

    type: Literal["continuous", "integer", "categorical"]
    min_value: float | None = None
    max_value: float | None = None
    scaling_type: Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"] = "Auto"
    values: list[int | float | str] = []


class TuneConfig(_Section):
    """Hyperparameter tuning (a SageMaker tuning job, Optuna locally): when enabled it
    replaces the training step, and its best trial's model is evaluated and deployed."""

    enabled: bool = False
    job_name: str = Field("mnist-tune", description="at most 10 characters: a tuning job's "
                          "name is at most 32 with the run id")
    objective_metric: str = "validation:accuracy"
    objective_type: Literal["Maximize", "Minimize"] = "Maximize"
    strategy: Literal["Bayesian", "Random", "Grid", "Hyperband"] = "Bayesian"
    max_jobs: int = Field(4, ge=1)
    max_parallel_jobs: int = Field(2, ge=1)
    early_stopping: Literal["Off", "Auto"] = "Off"
    random_seed: int | None = 42
    # WarmStartConfig: earlier tuning jobs (their names, `harness show RUN --step tune`)
    # whose trials seed this one's search
    warm_start_parents: list[str] = Field(default_factory=list, max_length=5)
    warm_start_type: Literal["IdenticalDataAndAlgorithm", "TransferLearning"] = \
        "IdenticalDataAndAlgorithm"

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "Off" if v is False else v  # YAML reads a bare Off as false

    parameter_ranges: dict[str, RangeConfig] = {
        "learning_rate": RangeConfig(type="continuous", min_value=0.001, max_value=0.01,
                                     scaling_type="Logarithmic"),
        "batch_size": RangeConfig(type="integer", min_value=64, max_value=256),
    }


class EvaluateConfig(_Section):
    # The evaluation runs as a SageMaker Processing job (model/evaluate.py); the gate
    # reads one metric of its evaluation.json.
    job_name: str = "mnist-evaluate"
    metric: Literal["accuracy", "loss", "macro_precision", "macro_recall"] = "accuracy"
    threshold: float = 0.95
    direction: Literal[">=", "<="] = ">="
    instance_type: str = "ml.m5.xlarge"


class DeployConfig(_Section):
    model_name: str = "mnist"
    instance_type: str = "ml.m5.large"
    initial_instance_count: int = Field(1, ge=1)
    # Which model server the local deploy starts (harness/endpoints.py): the embedded
    # server, or the official TF Serving image through the Docker SDK (needs an engine).
    server: Literal["embedded", "tf-serving-container"] = "embedded"
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    keep_serving: bool = False
    # TF Serving's batching knobs; they travel as the SageMaker TF serving container's
    # SAGEMAKER_TFS_* environment in CreateModel, which the embedded server reads too.
    max_batch_size: int = Field(128, ge=0, description="0 turns micro-batching off")
    batch_timeout_micros: int = Field(1000, ge=0)
    # DataCaptureConfig of CreateEndpointConfig: 0 = off, else the sampled percentage.
    data_capture_percent: float = Field(100, ge=0, le=100)


class InferConfig(_Section):
    # SageMaker real-time InvokeEndpoint takes at most 6 MB per request: ~700 MNIST
    # images as JSON; 500 keeps the local and cloud paths the same.
    batch_size: int = Field(100, ge=1, le=500)


class MonitorConfig(_Section):
    """Drift monitoring of the endpoint's captured traffic (`harness monitor`): a
    two-sample Kolmogorov-Smirnov test per feature and a chi-square test of the predicted
    classes, Bonferroni-corrected across them (Model Monitor's Robust comparison)."""

    significance_level: float = Field(0.05, gt=0, lt=1)
    comparison_method: Literal["Robust", "Simple"] = "Robust"
    # Robust: how far past the test's critical distance a feature must be (0: the test
    # decides); Simple: the largest CDF distance tolerated
    comparison_threshold: float = Field(0.0, ge=0, le=1)
    min_completeness: float = Field(0.99, ge=0, le=1)   # well-formed capture records
    datatype_check_threshold: float = Field(0.0, ge=0, le=1)  # non-finite values tolerated


class CacheConfig(_Section):
    """The local step cache (harness.step_cache): a step whose request, inputs and code
    match a finished step of an earlier run is reused from it (`--no-cache`,
    `--no-cache-step STEP`)."""

    enabled: bool = True
    skip_steps: list[str] = []


class CloudConfig(_Section):
    """Where the cloud backend runs; credentials come from the AWS environment, never here."""

    region: str = "us-east-1"
    profile: str | None = None
    stack_name: str = "mlharness"
    bucket: str | None = Field(None, description="default: the bucket the stack created")
    prefix: str = "mlharness/runs"
    endpoint_url: str | None = Field(None, description="an emulator's URL (moto, LocalStack)")
    poll_seconds: float = Field(30.0, gt=0)


class PipelineConfig(_Section):
    backend: Backend = "local"
    # The pipeline to run: "package.module:attr" or "path/to/file.py:attr", where attr is
    # a harness.workflow.Workflow or a function (config) -> Workflow.
    pipeline: str = "harness.mnist_pipeline:build"
    runs_dir: str = "runs"
    data: DataConfig = DataConfig()
    etl: EtlConfig = EtlConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    deploy: DeployConfig = DeployConfig()
    infer: InferConfig = InferConfig()
    monitor: MonitorConfig = MonitorConfig()
    cache: CacheConfig = CacheConfig()
    cloud: CloudConfig = CloudConfig()

    def runs_path(self) -> Path:
        p = Path(os.path.expanduser(self.runs_dir))
        return p if p.is_absolute() else PROJECT_ROOT / p


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    ctx = err.get("ctx") or {}
    if err["type"] == "literal_error":
        msg = f"allowed values are {ctx.get('expected')}"
    elif err["type"] == "extra_forbidden":
        msg = "unknown field"
    return f"field '{field}': {msg} (got {err.get('input')!r})"


def _allowed_fields(loc: tuple) -> list[str]:
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def parse_config(data: dict[str, Any], source: str = "<config>") -> PipelineConfig:
    """Validate a dict; raise ConfigError naming the source, the field and allowed values."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of sections", file=source,
                          expected="sections such as data:, etl:, train:", got=type(data).__name__)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            line = _describe(err)
            if err["type"] == "extra_forbidden":
                allowed = _allowed_fields(err["loc"])
                if allowed:
                    line += f"; allowed fields: {', '.join(allowed)}"
            lines.append(line)
        raise ConfigError("invalid configuration: " + "; ".join(lines), file=source) from None


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply a ``section.field=value`` override (value parsed as YAML)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ConfigError("an override names a field as section.field", field=dotted,
                          expected="e.g. evaluate.threshold (no empty parts)")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section", field=dotted,
                              expected=f"'{part}' to be a mapping of fields", got=node)
    node[parts[-1]] = value


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None
                ) -> PipelineConfig:
    """Load the YAML file (default: pipeline.yaml at the project root) plus overrides."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None or DEFAULT_CONFIG.exists():
        cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
        source = str(cfg_path)
        try:
            text = cfg_path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read the configuration file ({e.strerror})",
                              file=source) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"not UTF-8 text (byte {e.start} cannot be decoded)",
                              file=source, expected="a YAML file in UTF-8") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}", file=source) from None
        if not isinstance(data, dict):
            raise ConfigError("the configuration must be a mapping of sections", file=source,
                              expected="sections such as data:, etl:, train:",
                              got=type(data).__name__)
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return parse_config(data, source)


def stored_config(run_dir: Path, runs_path: Path, overrides: dict[str, Any]) -> PipelineConfig:
    """A run's own configuration (its ``config.json``: data source, pipeline, every value)
    in the runs folder ``runs_path``, with ``overrides`` (dotted fields) applied: what a
    resumed or a retraining run starts from. A run from before configurations were stored
    gets the defaults with the overrides."""
    from harness.storage import read_json

    stored = run_dir / "config.json"
    if not stored.exists():
        return load_config(None, {**overrides, "runs_dir": str(runs_path)})
    data = read_json(stored)
    if not isinstance(data, dict):
        raise ConfigError("not a stored configuration", file=str(stored),
                          expected="a JSON object")
    data["runs_dir"] = str(runs_path)
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return parse_config(data, str(stored))
