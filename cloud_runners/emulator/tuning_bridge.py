"""The compute bridge for tuning: an emulated SageMaker ``CreateHyperParameterTuningJob``
runs its trials for real with the local tuner (Optuna), on the emulated S3.

``TuningBridge.install(emulator)`` patches moto (its server runs in this process); the
function it returns undoes every patch:

- ``SageMakerModelBackend.create_hyper_parameter_tuning_job`` is wrapped. moto creates
  every tuning job ``Completed`` at once, with a made-up best training job
  (``FakeTrainingJobName``). The bridge keeps moto's job object (``DescribeHyperParameter
  TuningJob`` is its ``describe()``, built from its attributes) and sets those attributes
  itself: ``InProgress`` at once, with no end time, best training job or made-up
  counters; a worker thread downloads the ``TrainingJobDefinition``'s code package
  (``sagemaker_submit_directory``) and every channel's S3 prefix into a temporary
  directory (``cloud_runners.s3_staging``: one per tuning job, staged the way the
  training bridge stages a training job), runs ``local_runners.tune.LocalTuningRunner``
  on the very request with only the URIs turned into ``file://`` URIs of that directory
  (its trial records in that directory too, not in ``runs_dir``). As each trial ends it
  is listed and counted (``TrainingJobStatusCounters``, ``ObjectiveStatusCounters``) and a
  completed trial's ``model.tar.gz`` and ``output.tar.gz`` are uploaded to
  ``<S3OutputPath>/<trial>/output/``, where SageMaker puts a tuning job's training jobs'
  artifacts (so a stopped tuning job keeps its finished trials' models); then ``Completed`` with
  the real ``BestTrainingJob``, counters and consumed seconds, or ``Failed`` with the
  tuner's error (S3 locations, not temporary folders) as ``FailureReason``, or
  ``Stopped`` (below).
- ``ListTrainingJobsForHyperParameterTuningJob`` (moto 5.2.5 lacks it) lists the trials
  (``StatusEquals``, ``SortBy``, ``SortOrder``, ``MaxResults``/``NextToken``); while the
  tuning job runs, those that have ended (SageMaker lists running ones too).
- ``StopHyperParameterTuningJob`` (moto lacks it too) answers at once, the job
  ``Stopping``; its worker is stopped (``Workers.request_stop``: the tuner stops its
  running trials' processes) and the job is ``Stopped`` when it has, its finished trials
  listed and their models in S3. The emulator stopping stops it the same way.

The trials are training jobs of the tuner, not of moto: ``DescribeTrainingJob`` does
not know them (ListTrainingJobsForHyperParameterTuningJob does). A ``WarmStartConfig``'s
parents are tuning jobs this emulator ran: their trials seed the search, as locally
(``local_runners.tuning_warm_start``). ``TrainingJobDefinitions`` (several algorithms) is
refused.

What the patch relies on in moto is fingerprinted in ``FINGERPRINTS``; ``check()`` names
what changed and ``install()`` refuses to patch then
(``tests/cloud_runners/emulator/test_tuning_bridge.py``).
"""
from __future__ import annotations

import copy
import datetime as dt
import inspect
import logging
import time
import traceback
from typing import Any, Callable

from cloud_runners.emulator.bridge import Bridge, bound_request, runner_error, utcnow
from cloud_runners.emulator.moto_gaps import check_fingerprints, resolve_attr
from cloud_runners.emulator.training_bridge import stage_training_job
from cloud_runners.s3_staging import S3Staging
from harness import uris
from harness.errors import HarnessError
from harness.stages import StageContext

LOG = logging.getLogger("mlharness.emulator.tuning")

_MODELS = "moto.sagemaker.models"
_RESPONSES = "moto.sagemaker.responses"
# sha256 (first 16 hex) of the moto code the bridge depends on, from moto 5.2.5.
FINGERPRINTS = {
    # wrapped; its keyword arguments are the request's fields, snake_case; it keeps the
    # job in ``hyper_parameter_tuning_jobs``
    f"{_MODELS}.SageMakerModelBackend.create_hyper_parameter_tuning_job": "ee5e9c07749b6616",
    # the attributes the bridge sets (hyper_parameter_tuning_job_status, best_training_job,
    # training_job_status_counters, hyper_parameter_tuning_end_time, ...)
    f"{_MODELS}.HyperParameterTuningJob.__init__": "fe4d3d76d9bbff25",
    # DescribeHyperParameterTuningJob = the job's describe() = those attributes
    f"{_MODELS}.HyperParameterTuningJob.describe": "1cf458f64dce8e1e",
    f"{_MODELS}.SageMakerModelBackend.describe_hyper_parameter_tuning_job": "e5af7ce73b55b969",
    f"{_RESPONSES}.SageMakerResponse.describe_hyper_parameter_tuning_job": "3aff685d2b3a7639",
}
# The API actions moto lacks, which the bridge adds to its SageMaker handler.
ADDED_ACTIONS = ("list_training_jobs_for_hyper_parameter_tuning_job",
                 "stop_hyper_parameter_tuning_job")
SORT_KEYS = {"Name": lambda t: t.get("TrainingJobName", ""),
             "CreationTime": lambda t: t.get("CreationTime") or dt.datetime.min,
             "Status": lambda t: t.get("TrainingJobStatus", ""),
             "FinalObjectiveMetricValue": lambda t: (
                 (t.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value"))}
_TIMES = ("CreationTime", "TrainingStartTime", "TrainingEndTime")


def check() -> list[str]:
    """What the bridge relies on in moto and no longer finds as it was (empty: all good)."""
    problems = check_fingerprints(FINGERPRINTS, "the tuning bridge", resolve_attr)
    try:
        from moto.sagemaker.responses import SageMakerResponse
    except ImportError as e:  # pragma: no cover
        return [*problems, f"{_RESPONSES}: cannot import ({e})"]
    for action in ADDED_ACTIONS:
        added = vars(SageMakerResponse).get(action)
        if added is not None and not getattr(added, "mlharness_bridge", False):
            problems.append(f"{_RESPONSES}.SageMakerResponse.{action}: moto has it now "
                            "(review the bridge's own)")
    return problems


def worker_name(tuning_job: str) -> str:
    return f"tuning-bridge-{tuning_job}"


def _trial(summary: dict[str, Any], arn_prefix: str) -> dict[str, Any]:
    """A trial's summary as SageMaker gives it: datetimes, the emulator's ARN."""
    out = dict(summary)
    for key in _TIMES:
        if isinstance(out.get(key), str):
            out[key] = dt.datetime.fromisoformat(out[key])
    out["TrainingJobArn"] = f"{arn_prefix}:training-job/{out['TrainingJobName']}"
    return out


def _stopped(job: Any) -> None:
    """The tuning job was stopped before it ended: ``Stopped``."""
    if job.hyper_parameter_tuning_job_status in ("InProgress", "Stopping"):
        job.hyper_parameter_tuning_end_time = job.last_modified_time = utcnow()
        job.hyper_parameter_tuning_job_status = "Stopped"


def _parent(backend: Any, name: str) -> Any:
    """A tuning job the emulator ran, for a warm start (its trials and best job): a
    ``local_runners.tuning_warm_start.ParentJob``, None when there is none."""
    from local_runners.tuning_warm_start import ParentJob

    job = backend.hyper_parameter_tuning_jobs.get(name)
    if job is None:
        return None
    doc = {**job.describe(), "TrainingJobSummaries": list(getattr(job, "bridge_trials", []))}
    return ParentJob.from_describe(doc, "the emulator")


class TuningBridge(Bridge):
    """Run emulated SageMaker tuning jobs with the local tuner (module doc)."""

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        self.refuse_changed_moto(check(), "the tuning bridge",
                                 "cloud_runners/emulator/tuning_bridge.py")
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        self._emulator = emulator
        bridge = self
        original = SageMakerModelBackend.create_hyper_parameter_tuning_job
        signature = inspect.signature(original)

        def create_hyper_parameter_tuning_job(backend, *args, **kwargs):
            request = bound_request(signature, backend, args, kwargs)
            arn = original(backend, *args, **kwargs)
            job = backend.hyper_parameter_tuning_jobs[request["HyperParameterTuningJobName"]]
            bridge._created(job)
            bridge.workers.start(worker_name(job.hyper_parameter_tuning_job_name),
                                 lambda: bridge._run(job, request, backend),
                                 on_stopped=lambda: _stopped(job))
            return arn

        def list_training_jobs_for_hyper_parameter_tuning_job(response):
            return bridge._list_trials(response)

        def stop_hyper_parameter_tuning_job(response):
            return bridge._stop(response)

        create_hyper_parameter_tuning_job.__wrapped__ = original  # type: ignore[attr-defined]
        for added in (list_training_jobs_for_hyper_parameter_tuning_job,
                      stop_hyper_parameter_tuning_job):
            added.mlharness_bridge = True  # type: ignore[attr-defined]  (not moto's: check())
        SageMakerModelBackend.create_hyper_parameter_tuning_job = \
            create_hyper_parameter_tuning_job
        SageMakerResponse.list_training_jobs_for_hyper_parameter_tuning_job = \
            list_training_jobs_for_hyper_parameter_tuning_job
        SageMakerResponse.stop_hyper_parameter_tuning_job = stop_hyper_parameter_tuning_job

        def uninstall() -> None:
            SageMakerModelBackend.create_hyper_parameter_tuning_job = original
            for action in ADDED_ACTIONS:
                if getattr(vars(SageMakerResponse).get(action), "mlharness_bridge", False):
                    delattr(SageMakerResponse, action)
            self.stop_jobs()

        return uninstall

    @staticmethod
    def _created(job: Any) -> None:
        """moto's made-up outcome gone: the job runs."""
        job.best_training_job = None
        job.OverallBestTrainingJob = None
        job.hyper_parameter_tuning_end_time = None
        job.tuning_job_completion_details = None
        job.consumed_resources = None
        job.failure_reason = None
        job.training_job_status_counters = {"Completed": 0, "InProgress": 0,
                                            "RetryableError": 0, "NonRetryableError": 0,
                                            "Stopped": 0}
        job.objective_status_counters = {"Succeeded": 0, "Pending": 0, "Failed": 0}
        job.bridge_trials = []
        job.hyper_parameter_tuning_job_status = "InProgress"

    # -- the API actions moto lacks -----------------------------------------------------------

    @staticmethod
    def _job(response: Any) -> Any:
        from moto.sagemaker.exceptions import ResourceNotFound

        name = response._get_param("HyperParameterTuningJobName")
        job = response.sagemaker_backend.hyper_parameter_tuning_jobs.get(name)
        if job is None:
            raise ResourceNotFound(
                message=f"Could not find hyper parameter tuning job '{name}'.")
        return job

    def _list_trials(self, response: Any) -> Any:
        from moto.core.responses import ActionResult
        from moto.sagemaker.exceptions import ValidationError

        trials = list(getattr(self._job(response), "bridge_trials", []))
        status = response._get_param("StatusEquals")
        if status:
            trials = [t for t in trials if t.get("TrainingJobStatus") == status]
        sort_by = response._get_param("SortBy") or "Name"
        if sort_by not in SORT_KEYS:
            raise ValidationError(message=f"SortBy {sort_by!r} is not one of "
                                  + ", ".join(SORT_KEYS))
        descending = response._get_param("SortOrder") == "Descending"
        key = SORT_KEYS[sort_by]
        # trials without an objective value come last either way
        ranked = sorted((t for t in trials if key(t) is not None), key=key, reverse=descending)
        trials = ranked + [t for t in trials if key(t) is None]
        try:
            start = int(response._get_param("NextToken") or 0)
            size = int(response._get_param("MaxResults") or 100)
        except ValueError:
            raise ValidationError(message="NextToken or MaxResults is not valid") from None
        out: dict[str, Any] = {"TrainingJobSummaries": trials[start:start + size]}
        if start + size < len(trials):
            out["NextToken"] = str(start + size)
        return ActionResult(out)

    def _stop(self, response: Any) -> Any:
        from moto.core.responses import EmptyResult
        from moto.sagemaker.exceptions import ValidationError

        job = self._job(response)
        name = job.hyper_parameter_tuning_job_name
        if job.hyper_parameter_tuning_job_status != "InProgress":
            raise ValidationError(message=f"The hyperparameter tuning job {name} is "
                                  f"{job.hyper_parameter_tuning_job_status}: only a job "
                                  "InProgress can be stopped.")
        job.last_modified_time = utcnow()
        job.hyper_parameter_tuning_job_status = "Stopping"
        if not self.workers.request_stop(worker_name(name)):
            _stopped(job)  # its worker had just ended its work
        return EmptyResult()

    # -- one tuning job -----------------------------------------------------------------------

    def _run(self, job: Any, request: dict[str, Any], backend: Any) -> None:
        staging: S3Staging | None = None
        t0 = time.monotonic()
        try:
            staging = S3Staging(self._emulator.client("s3"), prefix="mlharness-tuning-",
                                dir=self.workdir)
            with staging:
                result = self._execute(job, request, staging, backend)
        except Exception as e:
            if self.stop_requested():
                return  # the stop made it fail: Stopped, not Failed (Workers)
            LOG.error("tuning job %s failed:\n%s", job.hyper_parameter_tuning_job_name,
                      traceback.format_exc())
            if isinstance(e, HarnessError) and staging is not None \
                    and str(staging.root) in (e.hint or ""):
                e.hint = None  # the trials' records it names went with the scratch folder
            job.failure_reason = runner_error(e, staging)
            job.hyper_parameter_tuning_end_time = job.last_modified_time = utcnow()
            job.hyper_parameter_tuning_job_status = "Failed"
            return
        arn_prefix = job.arn.rsplit(":", 1)[0]
        trials = [_trial(s, arn_prefix) for s in result.get("TrainingJobSummaries") or []]
        job.bridge_trials = trials
        job.training_job_status_counters = result["TrainingJobStatusCounters"]
        job.objective_status_counters = result["ObjectiveStatusCounters"]
        job.best_training_job = _trial(result["BestTrainingJob"], arn_prefix)
        if result.get("OverallBestTrainingJob"):  # a warm start from identical jobs
            job.OverallBestTrainingJob = _trial(result["OverallBestTrainingJob"], arn_prefix)
        job.consumed_resources = {"RuntimeInSeconds": int(round(time.monotonic() - t0))}
        job.hyper_parameter_tuning_end_time = job.last_modified_time = utcnow()
        job.hyper_parameter_tuning_job_status = "Completed"

    def _execute(self, job: Any, request: dict[str, Any], staging: S3Staging, backend: Any
                 ) -> dict[str, Any]:
        from local_runners.tune import LocalTuningRunner

        name = request["HyperParameterTuningJobName"]
        definition = request.get("TrainingJobDefinition")
        if not isinstance(definition, dict):
            raise HarnessError("the tuning job has no TrainingJobDefinition",
                               field="TrainingJobDefinition",
                               expected="one training job definition (the emulator does not "
                               "run TrainingJobDefinitions, several algorithms)")
        local_definition, output_path, out_dir = stage_training_job(
            definition, "StaticHyperParameters", staging)
        local = {**copy.deepcopy(request), "TrainingJobDefinition": local_definition}
        # The trials' records stay in the staging folder: runs_dir holds runs only.
        cfg = self.cfg.model_copy(deep=True)
        cfg.runs_dir = str(staging.path("records"))
        log = logging.getLogger(f"mlharness.emulator.tuning.{name}")
        ctx = StageContext(run_id=name, step="tune", config=cfg, log=log,
                           announce=lambda m: log.info("%s", m))
        arn_prefix = job.arn.rsplit(":", 1)[0]
        uploaded: set[str] = set()

        def upload(trial: str) -> None:
            for archive in ("model.tar.gz", "output.tar.gz"):
                path = out_dir / trial / "output" / archive
                if path.is_file():
                    staging.upload(path, uris.join(output_path, trial, "output", archive))
            uploaded.add(trial)

        def on_trial(summary: dict[str, Any], counters: dict[str, int]) -> None:
            # as SageMaker: a finished trial is listed, counted and its model in S3 at once
            if summary.get("TrainingJobStatus") == "Completed":
                upload(summary["TrainingJobName"])
            job.bridge_trials = [*job.bridge_trials, _trial(summary, arn_prefix)]
            job.training_job_status_counters = counters
            job.objective_status_counters = {
                "Succeeded": sum(t.get("ObjectiveStatus") == "Succeeded"
                                 for t in job.bridge_trials),
                "Pending": counters["InProgress"],
                "Failed": sum(t.get("ObjectiveStatus") == "Failed" for t in job.bridge_trials)}
            job.last_modified_time = utcnow()

        runner = LocalTuningRunner(parents=lambda parent: _parent(backend, parent),
                                   parents_where="the emulator's tuning jobs",
                                   on_trial=on_trial)
        result = runner.run(local, ctx)
        for summary in result.get("TrainingJobSummaries") or []:
            if summary["TrainingJobName"] not in uploaded:
                upload(summary["TrainingJobName"])
        return result
