"""A ``CreateHyperParameterTuningJob`` configuration in Optuna's terms: the search space
of its ``ParameterRanges`` and the sampler and pruner of its strategy.

Ranges (the request's values are strings):

- ``IntegerParameterRanges`` -> ``suggest_int``, ``ContinuousParameterRanges`` ->
  ``suggest_float``, ``CategoricalParameterRanges`` -> ``suggest_categorical`` over the
  value strings;
- ``ScalingType``: ``Logarithmic`` -> ``log=True``; ``Linear`` -> a linear scale;
  ``ReverseLogarithmic`` -> ``1 - x`` sampled on a log scale (fine steps near 1, for a
  momentum of 0.9 .. 0.999); ``Auto`` -> a log scale when the range spans at least two
  orders of magnitude (``max / min >= 100``) and ``min > 0``, else linear.
  SageMaker does not publish its own Auto rule; this one puts ``1e-4 .. 1e-1`` on a log
  scale and ``32 .. 256`` on a linear one.

Strategy (``Strategy``, ``RandomSeed``, ``TrainingJobEarlyStoppingType``):

- ``Bayesian`` -> ``TPESampler(seed)`` whose first ``max(3, min(10, jobs // 3))`` trials
  are random (Optuna's default of 10 would make a small tuning job random throughout);
- ``Random`` -> ``RandomSampler(seed)``;
- ``Grid`` -> ``GridSampler`` over the categorical values: as many trials as the grid has
  points, at most ``MaxNumberOfTrainingJobs``;
- ``Hyperband`` -> ``RandomSampler(seed)`` with ``HyperbandPruner`` (resources are
  epochs: ``MinResource`` / ``MaxResource`` of ``HyperbandStrategyConfig`` when given,
  else 1 and the ``epochs`` hyperparameter, or the top of its range when it is tuned);
- ``TrainingJobEarlyStoppingType: Auto`` -> ``MedianPruner`` (see ``median_pruner``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from harness.errors import HarnessError

AUTO_LOG_SPAN = 100.0  # Auto: log scale from two orders of magnitude on (and min > 0)
MEDIAN_WARMUP_STEPS = 2  # the first objective value of a trial never stops it
CONFIG = "HyperParameterTuningJobConfig"


def _bad(problem: str, field: str, got: Any = None, expected: str | None = None) -> HarnessError:
    return HarnessError(problem, field=f"{CONFIG}.{field}", got=got,
                        expected=expected or "a CreateHyperParameterTuningJob request "
                        "(harness.steps.TuningStep)")


def _parse(text: Any, integer: bool, field: str) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except (TypeError, ValueError):
        raise _bad("a range bound is a number written as a string", field, text,
                   "an integer such as \"32\"" if integer else "a number such as \"0.001\""
                   ) from None
    if not math.isfinite(value):
        raise _bad("a range bound is a finite number", field, text)
    return value


@dataclass(frozen=True)
class Range:
    """One tuned hyperparameter: ``scale`` is Linear, Logarithmic or ReverseLogarithmic
    (``Auto`` resolved), ``values`` the categorical choices."""

    name: str
    kind: str  # Integer | Continuous | Categorical
    low: float = 0.0
    high: float = 0.0
    scale: str = "Linear"
    values: tuple[str, ...] = ()

    def suggest(self, trial: optuna.trial.BaseTrial) -> str:
        """The trial's value, as the string SageMaker passes the training job."""
        if self.kind == "Categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.kind == "Integer":
            return str(trial.suggest_int(self.name, int(self.low), int(self.high),
                                         log=self.scale == "Logarithmic"))
        if self.scale == "ReverseLogarithmic":
            # 1 - x on a log scale; Optuna sees the parameter as "1-<name>"
            rest = trial.suggest_float(f"1-{self.name}", 1 - self.high, 1 - self.low, log=True)
            return repr(min(max(1 - rest, self.low), self.high))
        return repr(trial.suggest_float(self.name, self.low, self.high,
                                        log=self.scale == "Logarithmic"))


def auto_scale(low: float, high: float) -> str:
    """``Auto``: Logarithmic when ``min > 0`` and ``max / min >= 100``, else Linear."""
    return "Logarithmic" if low > 0 and high / low >= AUTO_LOG_SPAN else "Linear"


def search_space(config: dict[str, Any]) -> list[Range]:
    """The ``ParameterRanges`` of a tuning configuration, checked."""
    ranges = config.get("ParameterRanges")
    if not isinstance(ranges, dict):
        raise _bad("the tuning configuration lacks ParameterRanges", "ParameterRanges")
    out: list[Range] = []
    for kind in ("Integer", "Continuous", "Categorical"):
        key = f"{kind}ParameterRanges"
        for i, rng in enumerate(ranges.get(key) or []):
            field = f"ParameterRanges.{key}[{i}]"
            name = rng.get("Name") if isinstance(rng, dict) else None
            if not isinstance(name, str) or not name:
                raise _bad("a parameter range needs a Name", field, rng)
            if kind == "Categorical":
                values = rng.get("Values")
                if not isinstance(values, list) or not values:
                    raise _bad("a categorical range needs values", f"{field}.Values", values)
                out.append(Range(name, kind, values=tuple(str(v) for v in values)))
                continue
            integer = kind == "Integer"
            low = _parse(rng.get("MinValue"), integer, f"{field}.MinValue")
            high = _parse(rng.get("MaxValue"), integer, f"{field}.MaxValue")
            if low > high:
                raise _bad("the range's minimum is above its maximum", field, (low, high))
            scale = rng.get("ScalingType", "Auto")
            if scale == "Auto":
                scale = auto_scale(low, high)
            if scale not in ("Linear", "Logarithmic", "ReverseLogarithmic"):
                raise _bad("unknown scaling type", f"{field}.ScalingType", scale,
                           "Auto | Linear | Logarithmic | ReverseLogarithmic")
            if scale == "Logarithmic" and low <= 0:
                raise _bad("a logarithmic range needs a minimum above 0", field, low)
            if scale == "ReverseLogarithmic" and (integer or not 0 <= low <= high < 1):
                raise _bad("a reverse logarithmic range is continuous within [0, 1)", field,
                           (low, high))
            out.append(Range(name, kind, low, high, scale))
    if not out:
        raise _bad("a tuning job needs at least one parameter range", "ParameterRanges")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise _bad("a hyperparameter is tuned by two ranges", "ParameterRanges", names)
    return out


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell: the tuner runs as many trials as the grid has
    points itself, so the sampler does not end the study (``study.stop()`` works only
    inside ``study.optimize``)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_size(space: list[Range]) -> int:
    return math.prod(len(r.values) for r in space)


def median_pruner(max_jobs: int) -> optuna.pruners.MedianPruner:
    """Early stopping ``Auto``: a trial stops when its best objective value so far is worse
    than the median of the completed trials' values at the same epoch.

    It compares only once ``max(2, min(5, jobs // 4))`` trials have completed (a median
    of one trial is that trial; a quarter of the budget at most runs unchecked), and from
    a trial's second objective value (epoch) on: the first epoch says little.
    """
    return optuna.pruners.MedianPruner(n_startup_trials=max(2, min(5, max_jobs // 4)),
                                       n_warmup_steps=MEDIAN_WARMUP_STEPS)


@dataclass
class Strategy:
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    trials: int        # how many training jobs the tuning job runs
    prunes: bool       # whether trials may be stopped early


def strategy(config: dict[str, Any], space: list[Range], epochs: int | None) -> Strategy:
    """Sampler, pruner and trial count of the tuning configuration (``epochs``: a trial's
    epochs, at most, if known: Hyperband's largest resource)."""
    name = config.get("Strategy", "Bayesian")
    seed = config.get("RandomSeed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("the random seed is an integer", "RandomSeed", seed)
    limits = config.get("ResourceLimits") or {}
    jobs = limits.get("MaxNumberOfTrainingJobs")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise _bad("MaxNumberOfTrainingJobs is a positive integer",
                   "ResourceLimits.MaxNumberOfTrainingJobs", jobs)
    early = config.get("TrainingJobEarlyStoppingType", "Off")
    if early not in ("Off", "Auto"):
        raise _bad("unknown early stopping type", "TrainingJobEarlyStoppingType", early,
                   "Off | Auto")
    pruner: optuna.pruners.BasePruner = (median_pruner(jobs) if early == "Auto"
                                         else optuna.pruners.NopPruner())
    if name == "Bayesian":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(3, min(10, jobs // 3)))
    elif name == "Random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif name == "Grid":
        if any(r.kind != "Categorical" for r in space):
            raise _bad("a grid search takes categorical ranges only", "ParameterRanges",
                       [r.name for r in space if r.kind != "Categorical"])
        sampler = GridSampler({r.name: list(r.values) for r in space},
                                              seed=seed)
        jobs = min(jobs, grid_size(space))
    elif name == "Hyperband":
        hb = (config.get("StrategyConfig") or {}).get("HyperbandStrategyConfig") or {}
        low = hb.get("MinResource", 1)
        high = hb.get("MaxResource", epochs or "auto")
        sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner = optuna.pruners.HyperbandPruner(min_resource=low, max_resource=high)
    else:
        raise _bad("unknown strategy", "Strategy", name, "Bayesian | Random | Grid | Hyperband")
    return Strategy(sampler, pruner, jobs,
                    prunes=not isinstance(pruner, optuna.pruners.NopPruner))
