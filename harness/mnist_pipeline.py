"""The default pipeline (``make local-run``): MNIST from raw digits to a served model.

Written with the pipeline API like any user's pipeline; ``pipeline.yaml`` feeds its
parameters. Nothing else in the tree knows these steps.

    prepare (client)  obtain MNIST, split it, raw Parquet (uploaded to S3 in the cloud)
    etl               Glue job: glue_etl/mnist_etl.py normalises the pixels (Spark)
    train             SageMaker TensorFlow training job: model/train.py (script mode)
      or tune         with tune.enabled: a tuning job over that training job (Optuna
                      locally); its best trial's model goes on
    evaluate          SageMaker Processing job: model/evaluate.py -> evaluation.json
    gate              continue only if evaluation.json's metric meets the threshold
    model, endpoint-config, endpoint    SageMaker hosting
    infer (client)    the test split through the endpoint, equal to the evaluation
"""
from __future__ import annotations

from typing import Any

from harness.config import PROJECT_ROOT, PipelineConfig, TrainConfig, TuneConfig
from harness.errors import ConfigError
from harness.steps import (
    EndpointConfigStep,
    EndpointStep,
    Gate,
    GlueStartJobRunStep,
    InferenceStep,
    ModelStep,
    PrepareDataStep,
    ProcessingInput,
    ProcessingOutput,
    ProcessingStep,
    CategoricalParameter,
    ContinuousParameter,
    IntegerParameter,
    Step,
    TrainingStep,
    TuningStep,
    serving_environment,
)
from harness.workflow import Workflow, run_path

SPLITS = ("train", "validation", "test")
CONTAINER = "/opt/ml/processing"


def check_hyperparameters(t: TrainConfig, values: dict[str, Any] | None = None,
                          where: str = "train.hyperparameters") -> None:
    """The default training script's hyperparameters, checked with the script's own rules
    (model/hyperparameters.py) before the run starts; another script checks its own."""
    defaults = TrainConfig.model_fields
    if (t.source_dir, t.entry_point) != (defaults["source_dir"].default,
                                         defaults["entry_point"].default):
        return
    from model.hyperparameters import check

    problems = check(t.hyperparameters if values is None else values)
    if problems:
        raise ConfigError("; ".join(problems), field=where,
                          expected="values model/train.py accepts")


def tuning_step(u: TuneConfig, train: TrainingStep, t: TrainConfig) -> TuningStep:
    """The tuning job of ``tune:`` over the training step; the default script's ranges are
    checked with its own rules at both ends before any trial."""
    ranges: dict[str, Any] = {}
    for name, r in u.parameter_ranges.items():
        where = f"tune.parameter_ranges.{name}"
        if r.type == "categorical":
            if not r.values:
                raise ConfigError("a categorical range lists its values", field=where,
                                  expected="values: [a, b, ...]")
            ranges[name] = CategoricalParameter(r.values)
            bounds = list(r.values)
        else:
            if r.min_value is None or r.max_value is None:
                raise ConfigError("a range has a min_value and a max_value", field=where)
            cls = IntegerParameter if r.type == "integer" else ContinuousParameter
            low, high = ((int(r.min_value), int(r.max_value)) if r.type == "integer"
                         else (r.min_value, r.max_value))
            if r.type == "integer" and (low != r.min_value or high != r.max_value):
                raise ConfigError("an integer range has integer bounds", field=where,
                                  got=(r.min_value, r.max_value))
            ranges[name] = cls(low, high, r.scaling_type)
            bounds = [low, high]
        for value in bounds:
            check_hyperparameters(t, {**t.hyperparameters, name: value}, where)
    return TuningStep(
        "tune", training=train, job_name=u.job_name, objective_metric=u.objective_metric,
        objective_type=u.objective_type, parameter_ranges=ranges, strategy=u.strategy,
        max_jobs=u.max_jobs, max_parallel_jobs=u.max_parallel_jobs,
        early_stopping=u.early_stopping, random_seed=u.random_seed,
        warm_start_parents=u.warm_start_parents, warm_start_type=u.warm_start_type,
        comment="tunes model/train.py's hyperparameters")


def build(cfg: PipelineConfig) -> Workflow:
    d, e, t, v, h = cfg.data, cfg.etl, cfg.train, cfg.evaluate, cfg.deploy
    check_hyperparameters(t)
    raw, processed = run_path("data", "raw"), run_path("data", "processed")

    prepare = PrepareDataStep(
        "prepare", output_uri=raw, source=d.source, seed=d.seed,
        validation_fraction=d.validation_fraction, test_fraction=d.test_fraction,
        cache_dir=d.cache_dir, mirrors=d.download_mirrors,
        download_timeout_s=d.download_timeout_s, min_test_per_class=d.min_test_per_class,
        label_column=d.label_column)
    shape = {"image_height": prepare.output()["ImageHeight"],
             "image_width": prepare.output()["ImageWidth"],
             "num_classes": prepare.output()["NumClasses"]}

    etl = GlueStartJobRunStep(
        "etl", job_name=e.job_name, script=PROJECT_ROOT / e.script,
        glue_version=e.glue_version, worker_type=e.worker_type,
        number_of_workers=e.number_of_workers, timeout_minutes=e.timeout_minutes,
        default_arguments={"--conf": f"spark.sql.shuffle.partitions={e.shuffle_partitions}"},
        # the data prepare uploaded (a run started by the drift monitor reuses the
        # monitored run's: harness.steps.start_execution)
        arguments={"--raw_uri": prepare.output()["RawUri"], "--output_uri": processed,
                   **{f"--{k}": value for k, value in shape.items()},
                   "--rows_per_file": e.rows_per_file},
        comment="the glue_etl script normalises the raw data")

    train = TrainingStep(
        "train", job_name=t.job_name, source_dir=PROJECT_ROOT / t.source_dir,
        entry_point=t.entry_point, output_path=run_path("training"),
        inputs={split: f"{processed}/{split}" for split in SPLITS},
        hyperparameters={**t.hyperparameters, **shape},
        metric_definitions=t.metric_definitions, instance_type=t.instance_type,
        instance_count=t.instance_count, volume_size_gb=t.volume_size_gb,
        max_runtime_s=t.max_runtime_s, framework_version=t.framework_version,
        py_version=t.py_version)
    model_data = train.output()["ModelArtifacts"]["S3ModelArtifacts"]
    learn: Step = train
    if cfg.tune.enabled:  # the tuning job's best trial is evaluated and deployed
        learn = tuning_step(cfg.tune, train, t)
        model_data = learn.best_model_data()

    evaluate = ProcessingStep(
        "evaluate", job_name=v.job_name, code="evaluate.py",
        source_dir=PROJECT_ROOT / t.source_dir,
        inputs=[ProcessingInput(model_data, f"{CONTAINER}/input/model", "model"),
                ProcessingInput(f"{processed}/test", f"{CONTAINER}/input/test", "test")],
        outputs=[ProcessingOutput(f"{CONTAINER}/evaluation", run_path("evaluation"),
                                  "evaluation")],
        arguments=["--model", f"{CONTAINER}/input/model", "--test", f"{CONTAINER}/input/test",
                   "--output", f"{CONTAINER}/evaluation"],
        instance_type=v.instance_type, framework_version=t.framework_version,
        py_version=t.py_version, comment="model/evaluate.py on the test split")

    gate = Gate("gate", json_uri=run_path("evaluation", "evaluation.json"),
                metric=f"metrics.{v.metric}", threshold=v.threshold, direction=v.direction,
                retry_from=learn)

    model = ModelStep(
        "model", model_name=h.model_name, model_data=model_data,
        environment=serving_environment(h.model_name, h.max_batch_size,
                                        h.batch_timeout_micros),
        framework_version=t.framework_version, instance_type=h.instance_type)
    config = EndpointConfigStep(
        "endpoint-config", endpoint_config_name=f"{h.model_name}-config",
        model_name=model.model_name, initial_instance_count=h.initial_instance_count,
        instance_type=h.instance_type, data_capture_percent=h.data_capture_percent,
        data_capture_uri=run_path("capture"))
    endpoint = EndpointStep(
        "endpoint", endpoint_name=f"{h.model_name}-endpoint",
        endpoint_config_name=config.endpoint_config_name)

    infer = InferenceStep(
        "infer", endpoint=endpoint, test_data_uri=f"{processed}/test",
        output_uri=run_path("inference"), batch_size=cfg.infer.batch_size,
        expected_accuracy=gate.output()["Body"]["metrics"]["accuracy"])

    return Workflow("mnist", prepare >> etl >> learn >> evaluate >> gate >> model >> config
                    >> endpoint >> infer,
                    comment="mlharness MNIST pipeline: Glue ETL -> SageMaker training -> "
                    "evaluation -> gate -> model, endpoint config, endpoint")
