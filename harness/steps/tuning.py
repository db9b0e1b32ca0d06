"""``TuningStep``: a SageMaker hyperparameter tuning job
(``sagemaker:createHyperParameterTuningJob.sync``).

Its request is the ``CreateHyperParameterTuningJob`` body: the tuning configuration
(strategy, objective, resource limits, parameter ranges, early stopping, random seed) and a
``TrainingJobDefinition`` built by the training step it tunes (the same request builder:
static hyperparameters, ``MetricDefinitions``, channels, resources). The training step is a
template here; it is not a state of its own.

Its output has the shape of ``DescribeHyperParameterTuningJob``; ``best_model_data()``
is the best training job's ``model.tar.gz`` (SageMaker writes it under the training
output path, in a folder named after the job), which feeds evaluation and ``CreateModel``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from harness.errors import ConfigError
from harness.steps.base import BuildContext, CodeAsset, Step
from harness.steps.sagemaker_job import name_prefix, resource_name
from harness.steps.training import TrainingStep, json_hyperparameter

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
OBJECTIVE_TYPES = ("Maximize", "Minimize")
SCALING_TYPES = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
EARLY_STOPPING = ("Off", "Auto")
WARM_START_TYPES = ("IdenticalDataAndAlgorithm", "TransferLearning")
# What SageMaker passes every trial of a tuning job (and the local tuner does too).
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"
TUNING_NAME_LENGTH = 32  # HyperParameterTuningJobName: at most 32 characters


@dataclass(frozen=True)
class ContinuousParameter:
    """A real-valued range, as the SageMaker SDK's ``ContinuousParameter``."""

    min_value: float
    max_value: float
    scaling_type: str = "Auto"


@dataclass(frozen=True)
class IntegerParameter:
    """An integer range, as the SageMaker SDK's ``IntegerParameter``."""

    min_value: int
    max_value: int
    scaling_type: str = "Auto"


@dataclass(frozen=True)
class CategoricalParameter:
    """A set of values, as the SageMaker SDK's ``CategoricalParameter``."""

    values: Sequence[Any]


def _number(value: Any, where: str, integer: bool) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not math.isfinite(value):
        raise ConfigError("a range bound is a finite number", field=where,
                          expected="an integer" if integer else "a number", got=value)
    return value


def checked_ranges(ranges: Mapping[str, Any], where: str) -> dict[str, list[dict[str, Any]]]:
    """``ParameterRanges`` of the request; a bad range is a ConfigError before any trial."""
    out: dict[str, list[dict[str, Any]]] = {"IntegerParameterRanges": [],
                                            "ContinuousParameterRanges": [],
                                            "CategoricalParameterRanges": []}
    if not ranges:
        raise ConfigError("a tuning job needs at least one parameter range", field=where,
                          expected="{name: ContinuousParameter | IntegerParameter | "
                          "CategoricalParameter}")
    for name, rng in ranges.items():
        at = f"{where}.{name}"
        if isinstance(rng, CategoricalParameter):
            # the SDK's HyperparameterTuner for a Framework estimator sends
            # CategoricalParameter.as_json_range: each value str()-ed, then json.dumps-ed
            # ('relu' -> '"relu"', 32 -> '"32"', True -> '"True"'), as its static
            # hyperparameters are; the trial gets the chosen text verbatim and the training
            # toolkit json.loads it back ("relu", "32")
            values = [json.dumps(str(v), ensure_ascii=False) for v in rng.values]
            if not values or len(set(values)) != len(values):
                raise ConfigError("a categorical range needs distinct values", field=at,
                                  got=list(rng.values))
            out["CategoricalParameterRanges"].append({"Name": name, "Values": values})
            continue
        if not isinstance(rng, (ContinuousParameter, IntegerParameter)):
            raise ConfigError("not a parameter range", field=at, got=rng,
                              expected="ContinuousParameter, IntegerParameter or "
                              "CategoricalParameter")
        integer = isinstance(rng, IntegerParameter)
        low = _number(rng.min_value, f"{at}.min_value", integer)
        high = _number(rng.max_value, f"{at}.max_value", integer)
        if low > high:
            raise ConfigError("the range's minimum is above its maximum", field=at,
                              expected=f"min_value <= max_value", got=(low, high))
        if rng.scaling_type not in SCALING_TYPES:
            raise ConfigError("unknown scaling type", field=f"{at}.scaling_type",
                              expected=" | ".join(SCALING_TYPES), got=rng.scaling_type)
        if rng.scaling_type == "Logarithmic" and low <= 0:
            raise ConfigError("a logarithmic range needs a minimum above 0", field=at,
                              got=low)
        if rng.scaling_type == "ReverseLogarithmic" and (integer or not 0 <= low <= high < 1):
            raise ConfigError("a reverse logarithmic range is continuous within [0, 1)",
                              field=at, got=(low, high))
        kind = "IntegerParameterRanges" if integer else "ContinuousParameterRanges"
        out[kind].append({"Name": name, "MinValue": str(low), "MaxValue": str(high),
                          "ScalingType": rng.scaling_type})
    return out


def tuned_text(value: Any) -> str:
    """A tuned value as the training script gets it: a categorical one is JSON-encoded in
    the request ('"relu"'), decoded as the training toolkit decodes it."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            pass
    return "" if value is None else str(value)


def _short(value: Any) -> str:
    """A tuned value as a person reads it: 0.00892718030435363 -> 0.008927, '"relu"' ->
    relu."""
    value = tuned_text(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return str(value) if number.is_integer() and "." not in str(value) else f"{number:.4g}"


class TuningStep(Step):
    kind = "tuning"
    title = "SageMaker hyperparameter tuning job"
    local_runner = "local_runners.tune:LocalTuningRunner"
    cacheable = True
    emulator_bridge = "cloud_runners.emulator.tuning_bridge:TuningBridge"
    resource = "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
    result_fields = ("HyperParameterTuningJobName", "HyperParameterTuningJobStatus",
                     "BestTrainingJob", "TrainingJobStatusCounters")

    def __init__(self, state_id: str, *, training: TrainingStep, job_name: str,
                 objective_metric: str, parameter_ranges: Mapping[str, Any],
                 objective_type: str = "Maximize", strategy: str = "Bayesian",
                 max_jobs: int = 4, max_parallel_jobs: int = 1,
                 early_stopping: str = "Off", random_seed: int | None = None,
                 warm_start_parents: Sequence[str] = (),
                 warm_start_type: str = "IdenticalDataAndAlgorithm",
                 comment: str | None = None):
        super().__init__(state_id, comment=comment)
        if not isinstance(training, TrainingStep):
            raise ConfigError("a tuning step tunes a training step", field=f"{state_id}.training",
                              expected="a harness.steps.TrainingStep (its template)",
                              got=type(training).__name__)
        self.training = training
        self.job_name = resource_name(job_name, f"{state_id}.job_name", TUNING_NAME_LENGTH)
        metrics = [d["Name"] for d in training.metric_definitions]
        if objective_metric not in metrics:
            raise ConfigError("the objective is not one of the training job's metrics",
                              field=f"{state_id}.objective_metric",
                              expected="one of " + (", ".join(metrics) or "(none defined)"),
                              got=objective_metric)
        self.objective_metric = objective_metric
        for field, value, allowed in (("objective_type", objective_type, OBJECTIVE_TYPES),
                                      ("strategy", strategy, STRATEGIES),
                                      ("early_stopping", early_stopping, EARLY_STOPPING)):
            if value not in allowed:
                raise ConfigError(f"unknown {field.replace('_', ' ')}",
                                  field=f"{state_id}.{field}", expected=" | ".join(allowed),
                                  got=value)
        self.objective_type, self.strategy = objective_type, strategy
        self.early_stopping = early_stopping
        for field, value in (("max_jobs", max_jobs), ("max_parallel_jobs", max_parallel_jobs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError("a limit of training jobs is a positive integer",
                                  field=f"{state_id}.{field}", got=value)
        self.max_jobs, self.max_parallel_jobs = max_jobs, max_parallel_jobs
        if random_seed is not None and (isinstance(random_seed, bool)
                                        or not isinstance(random_seed, int)):
            raise ConfigError("the random seed is an integer", field=f"{state_id}.random_seed",
                              got=random_seed)
        self.random_seed = random_seed
        self.ranges = checked_ranges(parameter_ranges, f"{state_id}.parameter_ranges")
        tuned = {r["Name"] for rs in self.ranges.values() for r in rs}
        if strategy == "Grid" and (self.ranges["IntegerParameterRanges"]
                                   or self.ranges["ContinuousParameterRanges"]):
            raise ConfigError("a grid search takes categorical ranges only (as SageMaker's)",
                              field=f"{state_id}.parameter_ranges",
                              expected="CategoricalParameter ranges")
        if strategy == "Hyperband" and early_stopping != "Off":
            raise ConfigError("Hyperband stops trials itself", field=f"{state_id}.early_stopping",
                              expected="Off with strategy Hyperband")
        self.tuned = sorted(tuned)
        self.warm_start_parents = [str(p) for p in warm_start_parents]
        if len(self.warm_start_parents) > 5:
            raise ConfigError("a tuning job warm-starts from at most 5 parents",
                              field=f"{state_id}.warm_start_parents", got=self.warm_start_parents)
        if len(set(self.warm_start_parents)) != len(self.warm_start_parents):
            raise ConfigError("a parent tuning job is named twice",
                              field=f"{state_id}.warm_start_parents", got=self.warm_start_parents)
        if warm_start_type not in WARM_START_TYPES:
            raise ConfigError("unknown warm start type", field=f"{state_id}.warm_start_type",
                              expected=" | ".join(WARM_START_TYPES), got=warm_start_type)
        self.warm_start_type = warm_start_type

    def code(self) -> list[CodeAsset]:
        return self.training.code()

    def request(self, ctx: BuildContext) -> dict[str, Any]:
        body = self.training.request(ctx)
        static = {k: v for k, v in body["HyperParameters"].items() if k not in self.tuned}
        # JSON-encoded like every static hyperparameter (the SDK's Framework estimators);
        # integer and continuous ranges' values go unencoded (numbers are JSON already)
        static["model_dir"] = json_hyperparameter(
            f"{body['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{self.job_name}/model")
        config: dict[str, Any] = {
            "Strategy": self.strategy,
            "HyperParameterTuningJobObjective": {"Type": self.objective_type,
                                                 "MetricName": self.objective_metric},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": self.max_jobs,
                               "MaxParallelTrainingJobs": self.max_parallel_jobs},
            "ParameterRanges": {kind: rs for kind, rs in self.ranges.items() if rs},
        }
        if self.strategy != "Hyperband":
            config["TrainingJobEarlyStoppingType"] = self.early_stopping
        else:
            config["StrategyConfig"] = {"HyperbandStrategyConfig": {}}
        if self.random_seed is not None:
            config["RandomSeed"] = self.random_seed
        definition = {k: body[k] for k in ("AlgorithmSpecification", "RoleArn",
                                           "InputDataConfig", "OutputDataConfig",
                                           "ResourceConfig", "StoppingCondition") if k in body}
        definition["StaticHyperParameters"] = static
        request: dict[str, Any] = {"HyperParameterTuningJobName": self.job_name,
                                   "HyperParameterTuningJobConfig": config,
                                   "TrainingJobDefinition": definition,
                                   "Tags": body.get("Tags", [])}
        if self.warm_start_parents:
            request["WarmStartConfig"] = {
                "ParentHyperParameterTuningJobs": [
                    {"HyperParameterTuningJobName": p} for p in self.warm_start_parents],
                "WarmStartType": self.warm_start_type}
        return request

    def best_training_job(self) -> str:
        """The best trial's training job name (a placeholder until the step ran)."""
        return self.output()["BestTrainingJob"]["TrainingJobName"]

    def best_model_data(self) -> str:
        """The best trial's model.tar.gz: ``<output path>/<best job>/output/model.tar.gz``,
        where SageMaker writes a training job's model."""
        return (f"{self.training.output_path.rstrip('/')}/{self.best_training_job()}"
                "/output/model.tar.gz")

    def state_comment(self) -> str:
        return (f"{self.comment} ({self.strategy}, {self.max_jobs} trials, "
                f"{self.objective_type.lower()} {self.objective_metric})")

    def facts(self, output: dict[str, Any]) -> dict[str, Any]:
        best = output.get("BestTrainingJob") or {}
        counters = output.get("TrainingJobStatusCounters") or {}
        final = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        return {"best trial": best.get("TrainingJobName"),
                "best hyperparameters": ", ".join(
                    f"{k}={tuned_text(v)}"
                    for k, v in sorted((best.get("TunedHyperParameters") or {}).items())),
                final.get("MetricName") or "objective": final.get("Value"),
                "trials": ", ".join(f"{k} {v}" for k, v in counters.items() if v)}

    def headline(self, output: dict[str, Any]) -> dict[str, float]:
        final = ((output.get("BestTrainingJob") or {})
                 .get("FinalHyperParameterTuningJobObjectiveMetric") or {})
        value = final.get("Value")
        return {f"tuning {final.get('MetricName')}": value} if value is not None else {}

    @classmethod
    def table(cls, output: dict[str, Any]) -> tuple[list[str], list[list[Any]]] | None:
        """The trials: name, tuned values, objective, status, seconds (best first)."""
        trials = output.get("TrainingJobSummaries") or []
        if not trials:
            return None
        best = (output.get("BestTrainingJob") or {}).get("TrainingJobName")
        names = sorted({k for t in trials for k in (t.get("TunedHyperParameters") or {})})
        final = [((t.get("FinalHyperParameterTuningJobObjectiveMetric") or {})) for t in trials]
        metric = next((f.get("MetricName") for f in final if f.get("MetricName")), "objective")
        rows = []
        for t, f in zip(trials, final):
            hps = t.get("TunedHyperParameters") or {}
            status = t.get("TrainingJobStatus", "")
            if status == "Stopped":
                status += " (early)"
            if t.get("TrainingJobName") == best:
                status += " - best"
            rows.append([t.get("TrainingJobName", ""), *[_short(hps.get(n)) for n in names],
                         f.get("Value"), status, t.get("TrainingTimeInSeconds")])
        return ["trial", *names, metric, "status", "seconds"], rows

    def creates(self, request: dict[str, Any]) -> list[tuple[str, str]]:
        rc = self.training
        return [("tuning job", f"{request['HyperParameterTuningJobName']} (up to "
                               f"{self.max_jobs} training jobs, {self.max_parallel_jobs} at a "
                               f"time, {rc.instance_count} x {rc.instance_type} each)")]

    def name_prefixes(self) -> dict[str, str]:
        return {"tuning-job": name_prefix(self.job_name),
                "training-job": name_prefix(self.job_name)}

    def cost(self, pricing) -> list:
        rc = self.training
        return [pricing.instances(f"SageMaker tuning {name_prefix(self.job_name)} "
                                  f"({self.max_jobs} trials)", "training", rc.instance_type,
                                  rc.instance_count, rc.expected_hours * self.max_jobs,
                                  field=f"{self.state_id}.max_jobs")]
