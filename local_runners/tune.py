"""Local backend for ``tuning``: execute a SageMaker ``CreateHyperParameterTuningJob``
request for real, with Optuna.

Every trial is a real training job (``local_runners.tuning_trial``): the tuning job's
``TrainingJobDefinition`` with the trial's hyperparameters, run by the local trainer in a
child process, its log read as it comes for the objective metric. ``ResourceLimits`` say
how many trials run (``MaxNumberOfTrainingJobs``) and how many at once
(``MaxParallelTrainingJobs``); the strategy, scaling types and early stopping map to
Optuna as ``local_runners.tuning_space`` describes.

A trial that fails is counted (``NonRetryableError``) and its log kept; the tuning job
fails only when no trial completed with an objective value. Ctrl-C stops the running
trials' processes (their records say Stopped), keeps the finished trials' records and
re-raises.

Records: ``runs/<run id>/steps/<step>/trials/<training job>/`` -- ``request.json`` (the
CreateTrainingJob request), ``output.json`` (DescribeTrainingJob plus the trial's tuned
values and objective series) and ``log.txt`` (its log) -- beside the step's own
input.json, output.json and log.txt. Each trial's artifacts are where SageMaker puts a
training job's: ``<S3OutputPath>/<training job>/output/model.tar.gz`` (completed trials).

The output has the shape of ``DescribeHyperParameterTuningJob``, plus
``TrainingJobSummaries`` as ``ListTrainingJobsForHyperParameterTuningJob`` lists them.
The best trial is the best completed one (a stopped trial has no model locally).
"""
from __future__ import annotations

import contextlib
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna

from harness.errors import HarnessError, StepFailed
from harness.runs import RunStore
from harness.stages import StageContext, StageRunner, required_field
from harness.steps.tuning import tuned_text
from local_runners.tuning_plot import plot_trials
from local_runners.tuning_space import Range, search_space, strategy
from local_runners.tuning_trial import (ChildProcesses, TrialResult, TrialRunner, iso,
                                        threads_per_trial, trial_name, training_request)
from local_runners.tuning_warm_start import (ParentJob, Resolver, overall_best, parents,
                                             runs_parents, seed)

ARN = "arn:aws:sagemaker:local:000000000000:hyper-parameter-tuning-job/{}"
EXPECTED = "a CreateHyperParameterTuningJob request (harness.steps.TuningStep)"


def _required(request: dict[str, Any], *path: str) -> Any:
    return required_field(request, *path, what="the tuning request", expected=EXPECTED)


def trial_records(ctx: StageContext) -> Path:
    """``runs/<run id>/steps/<step>/trials``: the step's folder, as the executor lays it
    out (``RunStore.step_dir``)."""
    return RunStore(ctx.config.runs_path()).step_dir(ctx.run_id, ctx.step) / "trials"


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (study created, trial finished) stay off the console."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def counters(results: list[TrialResult], running: int) -> dict[str, int]:
    """``TrainingJobStatusCounters`` of the trials so far (a failed trial is not retried:
    NonRetryableError)."""
    statuses = [r.status for r in results]
    return {"Completed": statuses.count("Completed"), "InProgress": running,
            "RetryableError": 0, "NonRetryableError": statuses.count("Failed"),
            "Stopped": statuses.count("Stopped")}


def best_trial(results: list[TrialResult], objective_type: str) -> TrialResult | None:
    """The best trial that completed with an objective value (a tie: the earlier one)."""
    ranked = [r for r in results if r.status == "Completed" and r.objective is not None]
    if not ranked:
        return None
    sign = 1 if objective_type == "Maximize" else -1
    return max(ranked, key=lambda r: (sign * r.objective, -r.number))


class LocalTuningRunner(StageRunner):
    kind = "tune"
    stop_grace_s = 10.0  # SIGTERM -> SIGKILL for a stopped trial (SageMaker allows 120 s)
    poll_s = 0.2

    def __init__(self, parents: Resolver | None = None, parents_where: str | None = None,
                 on_trial: Callable[[dict[str, Any], dict[str, int]], None] | None = None):
        # where WarmStartConfig's parent tuning jobs are found: the runs folder by default
        self.parents, self.parents_where = parents, parents_where
        # called as each trial ends, with its summary (as ListTrainingJobsForHyperParameter
        # TuningJob lists it) and the job's TrainingJobStatusCounters at that moment
        self.on_trial = on_trial

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = _required(request, "HyperParameterTuningJobName")
        config = _required(request, "HyperParameterTuningJobConfig")
        definition = _required(request, "TrainingJobDefinition")
        _required(request, "TrainingJobDefinition", "OutputDataConfig", "S3OutputPath")
        objective_type = _required(request, "HyperParameterTuningJobConfig",
                                   "HyperParameterTuningJobObjective", "Type")
        if objective_type not in ("Maximize", "Minimize"):
            raise HarnessError("unknown objective type",
                               field="HyperParameterTuningJobConfig."
                               "HyperParameterTuningJobObjective.Type",
                               expected="Maximize | Minimize", got=objective_type)
        objective = self._objective(config, definition)
        parallel = _required(request, "HyperParameterTuningJobConfig", "ResourceLimits",
                             "MaxParallelTrainingJobs")
        if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
            raise HarnessError("MaxParallelTrainingJobs is a positive integer",
                               field="HyperParameterTuningJobConfig.ResourceLimits."
                               "MaxParallelTrainingJobs", got=parallel)
        static = definition.get("StaticHyperParameters") or {}
        space = search_space(config)
        epochs = self._epochs(static, space)
        plan = strategy(config, space, epochs)
        parallel = min(parallel, plan.trials)
        found = self._parents(request, ctx)
        records = trial_records(ctx)
        records.mkdir(parents=True, exist_ok=True)
        threads = threads_per_trial(parallel)
        trials = TrialRunner(ctx=ctx, tuning_job=name, tuning_arn=ARN.format(name),
                             objective=objective, records=records, children=ChildProcesses(),
                             threads=threads, prunes=plan.prunes, grace_s=self.stop_grace_s,
                             epochs=epochs)
        ctx.announce(f"tuning job {name}: {plan.trials} training jobs, {parallel} at a time "
                     f"({threads} thread{'s' if threads > 1 else ''} each), "
                     f"{config.get('Strategy', 'Bayesian')}, "
                     f"{objective_type.lower()} {objective['Name']}; trials in {records}")
        created = time.time()
        columns = ["trial", *[r.name for r in space], "epoch", "objective", "status", "note"]
        title = f"tuning job {name}: {objective_type.lower()} {objective['Name']}"
        with _quiet_optuna(), ctx.progress.table(title, columns) as table:
            trials.table = table
            study = optuna.create_study(
                study_name=name, sampler=plan.sampler, pruner=plan.pruner,
                direction="maximize" if objective_type == "Maximize" else "minimize")
            if found:
                seeding = seed(study, space, found)
                ctx.announce(f"tuning job {name}: warm start from "
                             f"{', '.join(p.name for p in found)}: {seeding.describe()}")
            results = self._optimize(study, trials, space, request, objective["Name"],
                                     plan.trials, parallel, ctx)
        ended = time.time()
        out = self._describe(request, trials, results, objective_type, created, ended,
                             records, ctx)
        if found:
            out["WarmStartConfig"] = request["WarmStartConfig"]
            if request["WarmStartConfig"].get("WarmStartType") == "IdenticalDataAndAlgorithm":
                out["OverallBestTrainingJob"] = overall_best(out["BestTrainingJob"], found,
                                                             objective_type)
        return out

    def _parents(self, request: dict[str, Any], ctx: StageContext) -> list[ParentJob]:
        if self.parents is not None:
            return parents(request, self.parents, self.parents_where or "the emulator")
        runs = ctx.config.runs_path()
        return parents(request, runs_parents(runs), f"the runs folder {runs}")

    # -- the request ---------------------------------------------------------------------

    @staticmethod
    def _objective(config: dict[str, Any], definition: dict[str, Any]) -> dict[str, str]:
        metric = _required(config, "HyperParameterTuningJobObjective", "MetricName")
        defs = (definition.get("AlgorithmSpecification") or {}).get("MetricDefinitions") or []
        found = [d for d in defs if isinstance(d, dict) and d.get("Name") == metric]
        if not found:
            raise HarnessError("the objective metric has no metric definition",
                               field="TrainingJobDefinition.AlgorithmSpecification."
                               "MetricDefinitions",
                               expected=f"a definition named {metric!r} (its regex finds the "
                               "objective in the training log)",
                               got=[d.get("Name") for d in defs if isinstance(d, dict)])
        return {"Name": metric, "Regex": found[0].get("Regex")}

    @staticmethod
    def _epochs(static: dict[str, Any], space: list[Range]) -> int | None:
        tuned = next((r for r in space if r.name == "epochs" and r.kind == "Integer"), None)
        try:
            return int(tuned.high) if tuned else int(static.get("epochs"))
        except (TypeError, ValueError):
            return None

    # -- the trials ----------------------------------------------------------------------

    def _optimize(self, study: optuna.Study, trials: TrialRunner, space: list[Range],
                  request: dict[str, Any], metric: str, count: int, parallel: int,
                  ctx: StageContext) -> list[TrialResult]:
        """Ask Optuna for each trial's values, run up to ``parallel`` trials at a time, tell
        it the outcomes; on Ctrl-C stop the running trials and re-raise."""
        name = request["HyperParameterTuningJobName"]
        definition = request["TrainingJobDefinition"]
        objective_type = request["HyperParameterTuningJobConfig"][
            "HyperParameterTuningJobObjective"]["Type"]
        results: list[TrialResult] = []
        pending: dict[Future, optuna.trial.Trial] = {}
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"{name}-trial")
        started = 0
        with ctx.progress.task(f"tune {name}", total=count) as overall:
            try:
                while started < count or pending:
                    while started < count and len(pending) < parallel:
                        started += 1
                        trial = study.ask()
                        tuned = {r.name: r.suggest(trial) for r in space}
                        job = trial_name(name, started)
                        body = training_request(definition, job, tuned, metric,
                                                request.get("Tags") or [])
                        pending[pool.submit(trials.run, started, job, tuned, body,
                                            trial)] = trial
                    done, _ = wait(pending, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                    for future in done:
                        trial = pending.pop(future)
                        result = future.result()
                        self._tell(study, trial, result)
                        results.append(result)
                        overall.advance(1)
                        self._mark_best(trials, results, objective_type)
                        if self.on_trial is not None:
                            self.on_trial(trials.summary(result, objective_type),
                                          counters(results, running=len(pending)))
            except BaseException as e:  # Ctrl-C, a termination signal, the tuner's own bug
                trials.children.stop_all(self.stop_grace_s)
                pool.shutdown(wait=True, cancel_futures=True)
                late = [f.result() for f in pending
                        if not f.cancelled() and f.exception() is None]
                stopped = sum(r.interrupted for r in late)
                what = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped"
                ctx.announce(f"tuning job {name} {what}: {len(results) + len(late) - stopped} "
                             f"trial(s) finished, {stopped} running one(s) stopped; records "
                             f"in {trials.records}")
                raise
            pool.shutdown(wait=True)
        return results

    @staticmethod
    def _mark_best(trials: TrialRunner, results: list[TrialResult], objective_type: str
                   ) -> None:
        """The best trial so far stands out in the live table."""
        best = best_trial(results, objective_type)
        for r in results:
            if r.status != "Completed" or r.objective is None:
                continue
            trials.table.row(r.name, {"_style": "bold green" if r is best else None,
                                      "trial": f"{r.number:03d}" + (" ★" if r is best else "")})

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.trial.Trial, result: TrialResult) -> None:
        if result.status == "Completed" and result.objective is not None:
            study.tell(trial, result.objective)
        elif result.status == "Stopped" and result.values:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)

    # -- the output ----------------------------------------------------------------------

    def _describe(self, request: dict[str, Any], trials: TrialRunner,
                  results: list[TrialResult], objective_type: str, created: float,
                  ended: float, records: Path, ctx: StageContext) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        best = best_trial(results, objective_type)
        if best is None:
            last = results[-1]
            raise StepFailed(ctx.step, f"tuning job {name} failed: none of its {len(results)} "
                             f"training jobs completed with an objective value; the last, "
                             f"{last.name} ({last.status}): {last.failure}",
                             hint=f"each trial's log: {records}/<training job>/log.txt")
        summaries = [trials.summary(r, objective_type)
                     for r in sorted(results, key=lambda r: r.number)]
        plot = plot_trials(summaries, objective_type, records.parent / "trials.png")
        ctx.log.info("objective per trial and best so far: %s", plot)
        values = ", ".join(f"{k}={tuned_text(v)}" for k, v in sorted(best.tuned.items()))
        ctx.announce(f"tuning job {name}: best {best.name} "
                     f"{trials.objective['Name']}={best.objective:.4f} ({values})")
        return {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": ARN.format(name),
            "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
            "TrainingJobDefinition": request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": "Completed",
            "CreationTime": iso(created),
            "HyperParameterTuningEndTime": iso(ended),
            "LastModifiedTime": iso(ended),
            "TrainingJobStatusCounters": counters(results, running=0),
            "ObjectiveStatusCounters": {
                "Succeeded": sum(r.objective is not None for r in results), "Pending": 0,
                "Failed": sum(r.objective is None for r in results)},
            "BestTrainingJob": trials.summary(best, objective_type),
            "TrainingJobSummaries": summaries,
        }
