"""``WarmStartConfig`` for the local tuner: the parent tuning jobs' trials seed the study.

SageMaker starts a warm-start tuning job from the results of up to five earlier tuning jobs
(``ParentHyperParameterTuningJobs``): their training jobs inform the search, and for
``IdenticalDataAndAlgorithm`` the best of the new job and of its parents is reported as
``OverallBestTrainingJob``. The local tuner does the same with Optuna: every parent trial
that completed with an objective value and whose values lie in the new ranges becomes a
finished trial of the new study (``optuna.trial.create_trial`` with its objective and its
per-epoch values), so TPE starts from them instead of from random trials, and the median
early-stopping rule compares new trials with them too.

The rules SageMaker documents, checked before any trial runs (a mistake is a clear error
naming the parent and the field):

- 1 to 5 parents, each a finished tuning job (``Completed`` or ``Stopped``) that can be
  found: locally, a ``tune`` step of a run in the runs folder (``runs_parents``); on the
  emulator, a tuning job the emulator ran;
- the same objective metric and direction;
- ``IdenticalDataAndAlgorithm``: the same training image and the same hyperparameters
  (static plus tuned: a hyperparameter may move from tuned to static or back, none may
  appear or disappear); ``TransferLearning`` allows changes to both.

A parent trial is skipped (and counted, with the reason) when it has no objective value
or one of its values lies outside the new ranges; a hyperparameter tuned now but static
in the parent takes the parent's static value.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from harness.errors import HarnessError
from harness.steps.tuning import OBJECTIVE_HYPERPARAMETER, WARM_START_TYPES
from local_runners.tuning_space import Range

MAX_PARENTS = 5
FIELD = "WarmStartConfig"


@dataclass
class ParentTrial:
    name: str
    tuned: dict[str, str]
    status: str                      # TrainingJobStatus
    objective: float | None = None
    values: list[float] = field(default_factory=list)  # the objective per epoch


@dataclass
class ParentJob:
    """What warm start needs of a finished tuning job (its Describe output)."""

    name: str
    status: str
    metric: str
    objective_type: str
    image: str | None
    static: dict[str, str]
    tuned_names: set[str]
    trials: list[ParentTrial]
    best: dict[str, Any] | None      # its BestTrainingJob summary
    where: str                       # where it was found, for messages

    @classmethod
    def from_describe(cls, doc: dict[str, Any], where: str,
                      values: Callable[[str], list[float]] = lambda _name: []
                      ) -> "ParentJob":
        """From DescribeHyperParameterTuningJob plus the trial summaries (the local
        tuner's output has both; ``values(trial)`` gives a trial's per-epoch values)."""
        config = doc.get("HyperParameterTuningJobConfig") or {}
        objective = config.get("HyperParameterTuningJobObjective") or {}
        definition = doc.get("TrainingJobDefinition") or {}
        algorithm = definition.get("AlgorithmSpecification") or {}
        ranges = config.get("ParameterRanges") or {}
        tuned_names = {r.get("Name") for kind in ranges.values() if isinstance(kind, list)
                       for r in kind if isinstance(r, dict)}
        trials = []
        for s in doc.get("TrainingJobSummaries") or []:
            metric = s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
            trials.append(ParentTrial(
                name=s.get("TrainingJobName", "?"),
                tuned={k: str(v) for k, v in (s.get("TunedHyperParameters") or {}).items()},
                status=s.get("TrainingJobStatus", "?"), objective=metric.get("Value"),
                values=values(s.get("TrainingJobName", ""))))
        return cls(name=doc.get("HyperParameterTuningJobName", "?"),
                   status=doc.get("HyperParameterTuningJobStatus", "?"),
                   metric=objective.get("MetricName", "?"),
                   objective_type=objective.get("Type", "?"),
                   image=algorithm.get("TrainingImage"),
                   static={k: str(v) for k, v in
                           (definition.get("StaticHyperParameters") or {}).items()
                           if k != OBJECTIVE_HYPERPARAMETER},
                   tuned_names={n for n in tuned_names if isinstance(n, str)},
                   trials=trials, best=doc.get("BestTrainingJob"), where=where)


Resolver = Callable[[str], "ParentJob | None"]


def runs_parents(runs_dir: Path) -> Resolver:
    """Find a parent tuning job among the local runs: the ``output.json`` of a step with a
    ``trials/`` folder (a tuning step) whose job has that name."""
    def resolve(name: str) -> ParentJob | None:
        if not runs_dir.is_dir():
            return None
        for output in sorted(runs_dir.glob("*/steps/*/output.json"), reverse=True):
            trials = output.parent / "trials"
            if not trials.is_dir():
                continue
            try:
                doc = json.loads(output.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if not isinstance(doc, dict) or doc.get("HyperParameterTuningJobName") != name:
                continue
            return ParentJob.from_describe(doc, str(output.parent),
                                           lambda trial: _trial_values(trials / trial))
        return None
    return resolve


def _trial_values(folder: Path) -> list[float]:
    try:
        doc = json.loads((folder / "output.json").read_text(encoding="utf-8"))
        return [float(v["Value"]) for v in doc.get("ObjectiveValues") or []]
    except (OSError, ValueError, TypeError, KeyError):
        return []


def _bad(problem: str, field: str, got: Any = None, expected: str | None = None
         ) -> HarnessError:
    return HarnessError(problem, field=f"{FIELD}.{field}" if field else FIELD, got=got,
                        expected=expected)


def parents(request: dict[str, Any], resolve: Resolver, where: str) -> list[ParentJob]:
    """The request's parent tuning jobs, found and checked (module doc); none without a
    ``WarmStartConfig``."""
    warm = request.get(FIELD)
    if not warm:
        return []
    if not isinstance(warm, dict):
        raise _bad("WarmStartConfig is an object", "", warm,
                   "{ParentHyperParameterTuningJobs: [...], WarmStartType: ...}")
    kind = warm.get("WarmStartType")
    if kind not in WARM_START_TYPES:
        raise _bad("unknown warm start type", "WarmStartType", kind,
                   " | ".join(WARM_START_TYPES))
    listed = warm.get("ParentHyperParameterTuningJobs")
    if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_PARENTS:
        raise _bad(f"a warm start names 1 to {MAX_PARENTS} parent tuning jobs",
                   "ParentHyperParameterTuningJobs", listed)
    names = [p.get("HyperParameterTuningJobName") if isinstance(p, dict) else None
             for p in listed]
    if len(set(names)) != len(names):
        raise _bad("a parent tuning job is named twice", "ParentHyperParameterTuningJobs",
                   names)
    config = request["HyperParameterTuningJobConfig"]
    objective = config["HyperParameterTuningJobObjective"]
    definition = request["TrainingJobDefinition"]
    static = {k for k in (definition.get("StaticHyperParameters") or {})
              if k != OBJECTIVE_HYPERPARAMETER}
    tuned = {r.get("Name") for rs in (config.get("ParameterRanges") or {}).values()
             if isinstance(rs, list) for r in rs if isinstance(r, dict)}
    image = (definition.get("AlgorithmSpecification") or {}).get("TrainingImage")
    found = []
    for i, name in enumerate(names):
        at = f"ParentHyperParameterTuningJobs[{i}].HyperParameterTuningJobName"
        if not isinstance(name, str) or not name:
            raise _bad("a parent tuning job needs a name", at, name)
        parent = resolve(name)
        if parent is None:
            raise _bad(f"parent tuning job {name!r} not found in {where}", at, name,
                       "the name of a finished tuning job (`harness show RUN --step tune` "
                       "prints it as HyperParameterTuningJobName)")
        if parent.status not in ("Completed", "Stopped"):
            raise _bad(f"parent tuning job {name} is {parent.status}", at, parent.status,
                       "a Completed or Stopped tuning job")
        if (parent.metric, parent.objective_type) != (objective.get("MetricName"),
                                                      objective.get("Type")):
            raise _bad(f"parent tuning job {name} has another objective", at,
                       f"{parent.objective_type} {parent.metric}",
                       f"{objective.get('Type')} {objective.get('MetricName')} (the same "
                       "objective metric and direction)")
        if kind == "IdenticalDataAndAlgorithm":
            if parent.image != image:
                raise _bad(f"parent tuning job {name} used another training image", at,
                           parent.image, f"{image} (or WarmStartType TransferLearning)")
            theirs, ours = parent.static.keys() | parent.tuned_names, static | tuned
            if theirs != ours:
                raise _bad(f"parent tuning job {name} has other hyperparameters", at,
                           sorted(theirs ^ ours),
                           "the same static and tuned hyperparameters, in any mix (or "
                           "WarmStartType TransferLearning)")
        found.append(parent)
    return found


@dataclass
class Seeding:
    seeded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def describe(self) -> str:
        text = f"{self.seeded} parent trial(s) seed the search"
        if self.skipped:
            text += "; skipped: " + ", ".join(f"{n} {why}" for why, n in
                                              sorted(self.skipped.items()))
        return text


def _param(r: Range, text: str) -> tuple[str, Any, optuna.distributions.BaseDistribution
                                          ] | None:
    """The Optuna parameter ``Range.suggest`` would have made for the value ``text``
    (None: not a value of the range)."""
    if r.kind == "Categorical":
        return ((r.name, text, optuna.distributions.CategoricalDistribution(list(r.values)))
                if text in r.values else None)
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or not r.low <= value <= r.high:
        return None
    if r.kind == "Integer":
        if value != int(value):
            return None
        return (r.name, int(value), optuna.distributions.IntDistribution(
            int(r.low), int(r.high), log=r.scale == "Logarithmic"))
    if r.scale == "ReverseLogarithmic":
        return (f"1-{r.name}", 1 - value,
                optuna.distributions.FloatDistribution(1 - r.high, 1 - r.low, log=True))
    return (r.name, value, optuna.distributions.FloatDistribution(
        r.low, r.high, log=r.scale == "Logarithmic"))


def seed(study: optuna.Study, space: list[Range], found: list[ParentJob]) -> Seeding:
    """Add the parents' usable trials to ``study`` as finished trials."""
    out = Seeding()
    for parent in found:
        for trial in parent.trials:
            if trial.status != "Completed" or trial.objective is None:
                out.skip("without an objective value")
                continue
            params, dists = {}, {}
            for r in space:
                text = trial.tuned.get(r.name, parent.static.get(r.name))
                made = None if text is None else _param(r, text)
                if made is None:
                    break
                params[made[0]], dists[made[0]] = made[1], made[2]
            else:
                study.add_trial(optuna.trial.create_trial(
                    params=params, distributions=dists, value=float(trial.objective),
                    intermediate_values={i + 1: v for i, v in enumerate(trial.values)},
                    user_attrs={"parent_tuning_job": parent.name,
                                "training_job": trial.name}))
                out.seeded += 1
                continue
            out.skip("outside the new ranges")
    return out


def overall_best(best: dict[str, Any], found: list[ParentJob], objective_type: str
                 ) -> dict[str, Any]:
    """``OverallBestTrainingJob``: the best of this job's best and its parents' bests."""
    sign = 1 if objective_type == "Maximize" else -1
    candidates = [best] + [p.best for p in found if isinstance(p.best, dict)]

    def score(summary: dict[str, Any]) -> float:
        value = (summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        return sign * float(value) if value is not None else -math.inf
    return max(candidates, key=score)
