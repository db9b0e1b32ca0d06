"""One trial of a local tuning job: a real training job, run in a child process.

A trial is named as SageMaker names it (``<tuning job>-<NNN>-<8 hex>``); its
``CreateTrainingJob`` request is the tuning job's ``TrainingJobDefinition`` with the
static hyperparameters, the trial's values (strings) and ``_tuning_objective_metric``
(what SageMaker passes every trial). ``python -m local_runners.train_trial`` runs it with
the local trainer, in a process group of its own, with ``OMP_NUM_THREADS`` /
``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` set so that parallel trials share
the cores instead of oversubscribing them (TensorFlow reads these variables).

Its log is read line by line as it comes: each line goes to the trial's ``log.txt`` and
the step log, and the objective metric's regex (its ``MetricDefinitions`` entry, as
SageMaker applies it) is searched in it. The n-th objective value is reported to Optuna
as step n (the epoch, for a script that prints the metric once per epoch); when the
pruner says so the process gets SIGTERM, then SIGKILL after a grace period, and the
trial is Stopped (never after its last epoch's value: that would save nothing and lose a
finished model). A finished trial whose log never matched the regex has no objective.
"""
from __future__ import annotations

import collections
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

from harness import uris
from harness.metrics import MetricParser
from harness.progress import TableHandle, NullTable
from harness.stages import StageContext
from harness.storage import read_json, write_json_atomic
from harness.steps.tuning import OBJECTIVE_HYPERPARAMETER
from local_runners.train_process import decode_value

PROJECT_ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
                    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
LOG_TAIL = 10
# The fields of a TrainingJobDefinition that a CreateTrainingJob request has too.
DEFINITION_FIELDS = ("AlgorithmSpecification", "RoleArn", "InputDataConfig",
                     "OutputDataConfig", "ResourceConfig", "StoppingCondition", "VpcConfig",
                     "EnableNetworkIsolation", "EnableInterContainerTrafficEncryption",
                     "EnableManagedSpotTraining", "CheckpointConfig", "RetryStrategy",
                     "Environment")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def trial_name(tuning_job: str, number: int) -> str:
    """SageMaker's name of a tuning job's training job: ``<tuning job>-<NNN>-<8 hex>``."""
    return f"{tuning_job}-{number:03d}-{secrets.token_hex(4)}"


def training_request(definition: dict[str, Any], name: str, tuned: dict[str, str],
                     objective: str, tags: list[Any]) -> dict[str, Any]:
    """The trial's CreateTrainingJob request (the tuning job's tags go to every trial)."""
    body: dict[str, Any] = {"TrainingJobName": name}
    body.update({k: definition[k] for k in DEFINITION_FIELDS if k in definition})
    body["HyperParameters"] = {**{k: str(v) for k, v in
                                  (definition.get("StaticHyperParameters") or {}).items()},
                               **tuned, OBJECTIVE_HYPERPARAMETER: objective}
    if tags:
        body["Tags"] = list(tags)
    return body


def threads_per_trial(parallel: int) -> int:
    """The cores of this process divided among the parallel trials (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, parallel))


def child_environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({v: str(threads) for v in THREAD_VARIABLES})
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_processes(procs: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM to each process group, SIGKILL to what is left after ``grace_s``."""
    try:
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    finally:
        for proc in procs:
            _signal_group(proc, signal.SIGKILL)  # the script's own children too
            proc.wait()


class ChildProcesses:
    """The running trials' processes; ``stop_all`` ends them and refuses new ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen | None:
        with self._lock:
            if self.stopping:
                return None
            proc = subprocess.Popen(argv, env=env, cwd=str(PROJECT_ROOT),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace",
                                    start_new_session=True)  # Ctrl-C reaches the tuner only
            self._procs.add(proc)
            return proc

    def forget(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop_all(self, grace_s: float) -> None:
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        stop_processes(procs, grace_s)


@dataclass
class TrialResult:
    number: int
    name: str
    tuned: dict[str, str]
    status: str = "Failed"            # Completed | Failed | Stopped (TrainingJobStatus)
    objective: float | None = None    # the objective metric's last value
    values: list[float] = field(default_factory=list)  # every value, in order
    failure: str | None = None        # FailureReason
    stopped_early: int | None = None  # the objective step (epoch) it was stopped at
    interrupted: bool = False
    started: float = 0.0
    ended: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)  # DescribeTrainingJob, if completed

    @property
    def objective_status(self) -> str:
        return "Succeeded" if self.objective is not None else "Failed"


def short_value(v: str) -> str:
    """A hyperparameter value for a person, as the script gets it (decoded as the training
    toolkit decodes it: a categorical '"relu"' -> relu): 4 significant digits."""
    v = str(decode_value(v))
    try:
        return f"{float(v):.4g}" if not v.lstrip("-").isdigit() else v
    except ValueError:
        return v


def describe_params(tuned: dict[str, str]) -> str:
    return " ".join(f"{k}={short_value(v)}" for k, v in sorted(tuned.items()))


STYLE = {"Completed": None, "Stopped": "yellow", "Failed": "red"}


class TrialRunner:
    """Runs trials of one tuning job (each call in a thread of its own)."""

    def __init__(self, *, ctx: StageContext, tuning_job: str, tuning_arn: str,
                 objective: dict[str, str], records: Path, children: ChildProcesses,
                 threads: int, prunes: bool, grace_s: float, epochs: int | None,
                 table: TableHandle | None = None):
        self.ctx = ctx
        self.table = table or NullTable()  # the live table of trials (one row each)
        self.tuning_job, self.tuning_arn = tuning_job, tuning_arn
        self.objective = objective  # {"Name", "Regex"}
        self.records = records
        self.children = children
        self.env = child_environment(threads)
        self.prunes = prunes
        self.grace_s = grace_s
        self.epochs = epochs

    def run(self, number: int, name: str, tuned: dict[str, str], request: dict[str, Any],
            trial: optuna.trial.Trial) -> TrialResult:
        result = TrialResult(number, name, tuned, started=time.time())
        folder = self.records / name
        folder.mkdir(parents=True, exist_ok=False)
        write_json_atomic(folder / "request.json", request)
        label = f"{name} {describe_params(tuned)}"
        given = str(decode_value(tuned.get("epochs", "")))  # categorical: '"3"'
        epochs = int(given) if given.isdigit() else self.epochs
        self.table.row(name, {"trial": f"{number:03d}", "status": "InProgress",
                              "epoch": f"0/{epochs or '?'}",
                              **{k: short_value(v) for k, v in tuned.items()}})
        try:
            self._execute(result, folder, request, trial, epochs)
        except Exception as e:  # the tuner's own failure with this trial: the trial fails
            result.status, result.failure = "Failed", f"{type(e).__name__}: {e}"
            self.ctx.log.exception("trial %s", name)
        result.ended = result.ended or time.time()
        self._record(result, folder)
        self.table.row(name, self.cells(result))
        self.ctx.log.info("%s", self._line(result, label))
        return result

    def cells(self, result: TrialResult) -> dict[str, Any]:
        """The trial's row when it ended: status, objective, why it ended early."""
        note = ""
        if result.stopped_early is not None:
            note = f"stopped early at epoch {result.stopped_early}"
        elif result.interrupted:
            note = "interrupted"
        elif result.failure:
            note = result.failure.splitlines()[0][:80]
        return {"status": result.status, "note": note, "_style": STYLE.get(result.status),
                "objective": (f"{result.objective:.4f}"
                              if result.objective is not None else "-")}

    # -- the child process ------------------------------------------------------------

    def _execute(self, result: TrialResult, folder: Path, request: dict[str, Any],
                 trial: optuna.trial.Trial, epochs: int | None) -> None:
        parser = MetricParser([self.objective])
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        argv = [sys.executable, "-m", "local_runners.train_trial",
                str(folder / "request.json"), str(folder / "output.json")]
        proc = self.children.start(argv, self.env)
        if proc is None:  # the tuning job is being interrupted
            result.status, result.interrupted = "Stopped", True
            result.failure = "the tuning job was interrupted before this trial started"
            return
        killer: threading.Timer | None = None
        try:
            with (folder / "log.txt").open("w", encoding="utf-8", buffering=1) as log:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    line = raw.rstrip("\r\n")
                    log.write(line + "\n")
                    self.ctx.log.info("[%s] %s", result.name, line)
                    tail.append(line)
                    if killer is not None:
                        continue  # stopping: the rest is log only
                    for _, value in parser.feed(line):
                        result.values.append(value)
                        trial.report(value, step=len(result.values))
                        self.table.row(result.name, {
                            "epoch": f"{len(result.values)}/{epochs or '?'}",
                            "objective": f"{value:.4f}"})
                        # stopping after the last epoch would save nothing and lose a model
                        last = epochs is not None and len(result.values) >= epochs
                        if self.prunes and not last and trial.should_prune():
                            result.stopped_early = len(result.values)
                            self.ctx.log.info("trial %s: stopping it early at objective "
                                              "step %d", result.name, result.stopped_early)
                            _signal_group(proc, signal.SIGTERM)
                            killer = threading.Timer(
                                self.grace_s, _signal_group, (proc, signal.SIGKILL))
                            killer.daemon = True
                            killer.start()
                            break
            code = proc.wait()
        finally:
            if killer is not None:
                killer.cancel()
            if proc.poll() is None:
                stop_processes([proc], self.grace_s)
            else:
                _signal_group(proc, signal.SIGKILL)  # what the script left running
            self.children.forget(proc)
        result.ended = time.time()
        self._outcome(result, code, folder, list(tail), request)

    def _outcome(self, result: TrialResult, code: int, folder: Path, tail: list[str],
                 request: dict[str, Any]) -> None:
        try:
            job = read_json(folder / "output.json")
        except Exception:  # killed before it wrote one
            job = {}
        job = job if isinstance(job, dict) else {}
        completed = code == 0 and job.get("TrainingJobStatus") == "Completed"
        if completed and result.stopped_early is not None:  # it finished before the stop
            self.ctx.log.info("trial %s completed before the stop took effect", result.name)
            result.stopped_early = None
        if not completed and (result.stopped_early is not None or self.children.stopping):
            result.status = "Stopped"
            result.interrupted = result.stopped_early is None
            result.failure = (f"stopped early at objective step {result.stopped_early}"
                              if result.stopped_early is not None
                              else "stopped: the tuning job was interrupted")
            self._discard_partial(request, result.name)
        elif not completed:
            result.status = "Failed"
            result.failure = job.get("FailureReason") or (
                f"the training process exited with code {code}; its last log lines:\n  "
                + "\n  ".join(tail))
            self._discard_partial(request, result.name)
        else:
            result.status, result.job = "Completed", job
            if not result.values:
                result.failure = (
                    f"the objective metric {self.objective['Name']}: its regex "
                    f"{self.objective['Regex']!r} matched no line of the log of training job "
                    f"{result.name}; the log's last lines:\n  " + "\n  ".join(tail))
        if result.values and result.status != "Failed":  # a failed job has no objective
            result.objective = result.values[-1]

    @staticmethod
    def _discard_partial(request: dict[str, Any], name: str) -> None:
        """A killed trainer may leave its temporary job folder; it never becomes a job."""
        try:
            out = uris.local_path(request["OutputDataConfig"]["S3OutputPath"])
        except Exception:
            return
        for tmp in out.glob(f".{name}.tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)

    # -- records and messages --------------------------------------------------------

    def summary(self, result: TrialResult, objective_type: str) -> dict[str, Any]:
        """The trial as ListTrainingJobsForHyperParameterTuningJob lists it."""
        out: dict[str, Any] = {
            "TrainingJobName": result.name,
            "TrainingJobArn": f"arn:aws:sagemaker:local:000000000000:training-job/"
                              f"{result.name}",
            "TuningJobName": self.tuning_job,
            "CreationTime": iso(result.started),
            "TrainingStartTime": iso(result.started),
            "TrainingEndTime": iso(result.ended),
            "TrainingTimeInSeconds": round(result.ended - result.started, 3),
            "TrainingJobStatus": result.status,
            "TunedHyperParameters": dict(result.tuned),
            "ObjectiveStatus": result.objective_status,
        }
        if result.objective is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": objective_type, "MetricName": self.objective["Name"],
                "Value": result.objective}
        if result.failure:
            out["FailureReason"] = result.failure
        return out

    def _record(self, result: TrialResult, folder: Path) -> None:
        # the trainer's own start and end times when it finished, the process's otherwise
        doc = {"TrainingStartTime": iso(result.started), "TrainingEndTime": iso(result.ended),
               **result.job, "TrainingJobName": result.name,
               "TrainingJobStatus": result.status, "TuningJobArn": self.tuning_arn,
               "TunedHyperParameters": dict(result.tuned),
               "ObjectiveStatus": result.objective_status,
               "ObjectiveMetric": self.objective["Name"],
               "ObjectiveValues": [{"Step": i + 1, "Value": v}
                                   for i, v in enumerate(result.values)]}
        if result.objective is not None:
            doc["FinalObjectiveValue"] = result.objective
        if result.failure:
            doc["FailureReason"] = result.failure
        if result.stopped_early is not None:
            doc["StoppedEarlyAtStep"] = result.stopped_early
        write_json_atomic(folder / "output.json", doc)

    def _line(self, result: TrialResult, label: str) -> str:
        if result.objective is not None:
            value = f"{self.objective['Name']}={result.objective:.4f}"
        else:
            value = f"no {self.objective['Name']}"
        status = result.status
        if result.stopped_early is not None:
            status += f" (stopped early at epoch {result.stopped_early})"
        elif result.interrupted:
            status += " (interrupted)"
        elif result.failure and result.status == "Failed":
            status += ": " + result.failure.splitlines()[0]
        elif result.failure:
            status += ", objective failed"
        return f"trial {label}  {value}  {status}"
