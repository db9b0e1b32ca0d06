"""The compute bridge for processing: an emulated SageMaker ``CreateProcessingJob`` runs the
job's script locally, on the emulated S3.

``ProcessingBridge.install(emulator)`` wraps moto's ``SageMakerModelBackend.
create_processing_job`` (moto's server runs in this process). moto creates every
processing job ``Completed`` at once, with a ``ProcessingEndTime``, and its response
handler drops ``Environment`` and ``ProcessingResources`` on the way to the backend. The
bridge keeps moto's job object (``DescribeProcessingJob`` is its camel-cased ``__dict__``,
``None`` values left out) and sets its attributes itself:

- at once: ``ProcessingJobStatus`` ``InProgress``, no end time, and the request's
  ``Environment`` and ``ProcessingResources`` (read by a thin wrapper around moto's
  ``SageMakerResponse.create_processing_job``, which has the whole request);
- a worker thread downloads every input's ``S3Uri`` (an object, or the objects of a
  prefix) from the emulated S3 into a temporary directory (``cloud_runners.s3_staging``,
  one per job), runs ``local_runners.processing.LocalProcessingRunner`` on the very
  request with only the URIs turned into ``file://`` URIs of that directory, and uploads
  each output's folder to its ``S3Uri``;
- then ``Completed`` (with ``ProcessingStartTime``/``ProcessingEndTime`` and the
  container's ``ExitMessage``), or ``Failed`` with the runner's error as
  ``FailureReason`` (naming S3 locations and container paths, not temporary folders;
  at most 1 KB, as on AWS), or ``Stopped`` when the emulator stops while it runs (its
  thread and the processes it started are stopped: ``workers``; they carry the job's ARN
  in ``MLHARNESS_EMULATOR_JOB``). Nothing is uploaded for a failed or stopped job.

An input with nothing at its S3 location is left out of the download, so the runner
reports it ("input '...' not found", naming the S3 URI).

What the patch relies on in moto is fingerprinted in ``FINGERPRINTS``; ``check()`` names
what changed and ``install()`` refuses to patch then
(``tests/cloud_runners/emulator/test_processing_bridge.py``).
"""
from __future__ import annotations

import copy
import inspect
import logging
import threading
import traceback
from typing import Any, Callable

from cloud_runners.emulator.bridge import Bridge, bound_request, runner_error, utcnow
from cloud_runners.emulator.moto_gaps import check_fingerprints, resolve_attr
from cloud_runners.emulator.workers import MARKER_VARIABLE
from cloud_runners.s3_staging import OBJECT, PREFIX, S3Staging
from harness import uris

LOG = logging.getLogger("mlharness.emulator.processing")
FAILURE_REASON_CHARS = 1024  # DescribeProcessingJob's limit

_MODELS = "moto.sagemaker.models"
_RESPONSES = "moto.sagemaker.responses"
# sha256 (first 16 hex) of the moto code the bridge depends on, from moto 5.2.5.
FINGERPRINTS = {
    # wrapped; its keyword arguments are the request's fields, snake_case
    f"{_MODELS}.SageMakerModelBackend.create_processing_job": "7b7eed2a2e5bd0e4",
    # wrapped: has the whole request, passes the backend all but Environment and
    # ProcessingResources
    f"{_RESPONSES}.SageMakerResponse.create_processing_job": "6a2c57749ae87ea1",
    # the attributes the bridge sets (processing_job_status, processing_end_time, ...)
    f"{_MODELS}.FakeProcessingJob.__init__": "34f6956dd374e389",
    # DescribeProcessingJob = the job's response_object = its camel-cased __dict__
    f"{_RESPONSES}.SageMakerResponse.describe_processing_job": "f71a2d96f5f700fa",
    f"{_MODELS}.SageMakerModelBackend.describe_processing_job": "811df8b5bf496f00",
    f"{_MODELS}.FakeProcessingJob.response_object": "9fa0881053ba4758",
    f"{_MODELS}.BaseObject.gen_response_object": "dfa69faba40843bb",
}
# The fields moto's response handler does not pass to the backend.
_DROPPED_FIELDS = ("Environment", "ProcessingResources")


def check() -> list[str]:
    """What the bridge relies on in moto and no longer finds as it was (empty: all good)."""
    return check_fingerprints(FINGERPRINTS, "the processing bridge", resolve_attr)


def _stopped(job: Any) -> None:
    """The job was stopped before it completed: ``Stopped``, as StopProcessingJob leaves it
    (nothing is uploaded)."""
    if job.processing_job_status == "InProgress":
        job.processing_end_time = job.last_modified_time = utcnow()
        job.processing_job_status = "Stopped"


class ProcessingBridge(Bridge):
    """Run emulated SageMaker processing jobs with the local processing runner (module doc)."""

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        self.refuse_changed_moto(check(), "the processing bridge",
                                 "cloud_runners/emulator/processing_bridge.py")
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        self._emulator = emulator
        bridge = self
        original_create = SageMakerModelBackend.create_processing_job
        original_handler = SageMakerResponse.create_processing_job
        signature = inspect.signature(original_create)
        dropped = threading.local()  # the handler's request fields, for the backend call

        def create_processing_job_handler(response):
            dropped.fields = {k: response._get_param(k) for k in _DROPPED_FIELDS}
            try:
                return original_handler(response)
            finally:
                dropped.fields = None

        def create_processing_job(backend, *args, **kwargs):
            request = bound_request(signature, backend, args, kwargs)
            request.update({k: copy.deepcopy(v)
                            for k, v in (getattr(dropped, "fields", None) or {}).items()
                            if v is not None})
            job = original_create(backend, *args, **kwargs)
            job.environment = request.get("Environment")
            job.processing_resources = request.get("ProcessingResources")
            job.processing_start_time = None
            job.processing_end_time = None
            job.failure_reason = None
            job.exit_message = None
            job.processing_job_status = "InProgress"
            bridge.workers.start(f"processing-bridge-{job.processing_job_name[:24]}",
                                 lambda: bridge._run(job, request),
                                 on_stopped=lambda: _stopped(job),
                                 marker=job.arn)
            return job

        create_processing_job.__wrapped__ = original_create  # type: ignore[attr-defined]
        create_processing_job_handler.__wrapped__ = original_handler  # type: ignore[attr-defined]
        SageMakerModelBackend.create_processing_job = create_processing_job
        SageMakerResponse.create_processing_job = create_processing_job_handler

        def uninstall() -> None:
            SageMakerModelBackend.create_processing_job = original_create
            SageMakerResponse.create_processing_job = original_handler
            self.stop_jobs()

        return uninstall

    # -- one processing job -------------------------------------------------------------------

    def _run(self, job: Any, request: dict[str, Any]) -> None:
        staging: S3Staging | None = None
        job.processing_start_time = job.last_modified_time = utcnow()
        try:
            staging = S3Staging(self._emulator.client("s3"), prefix="mlharness-processing-",
                                dir=self.workdir)
            with staging:
                result = self._execute(request, staging, job.arn)
        except Exception as e:
            if self.stop_requested():
                return  # the stop made it fail: Stopped, not Failed (Workers)
            LOG.error("processing job %s failed:\n%s", job.processing_job_name,
                      traceback.format_exc())
            job.failure_reason = runner_error(e, staging)[:FAILURE_REASON_CHARS]
            job.processing_end_time = job.last_modified_time = utcnow()
            job.processing_job_status = "Failed"
        else:
            job.exit_message = result.get("ExitMessage") or None
            job.processing_end_time = job.last_modified_time = utcnow()
            job.processing_job_status = "Completed"

    def _execute(self, request: dict[str, Any], staging: S3Staging, marker: str
                 ) -> dict[str, Any]:
        from harness.stages import StageContext
        from local_runners.processing import LocalProcessingRunner

        name = request["ProcessingJobName"]
        local = copy.deepcopy(request)
        # What the job's processes carry, to be found when the job is stopped (Workers).
        local["Environment"] = {**(local.get("Environment") or {}), MARKER_VARIABLE: marker}
        for i, item in enumerate(local.get("ProcessingInputs") or []):
            source = item.get("S3Input") if isinstance(item, dict) else None
            remote = source.get("S3Uri") if isinstance(source, dict) else None
            if not isinstance(remote, str) or not remote.startswith("s3://"):
                continue  # the runner names the malformed input
            folder = f"inputs/{i}-{item.get('InputName', 'input')}"
            kind = staging.kind(remote)
            if kind == OBJECT:  # S3Prefix semantics: the object lands under its own name
                target = staging.download(remote, f"{folder}/{remote.rsplit('/', 1)[-1]}",
                                          kind=OBJECT)
            else:  # a prefix; or nothing there, which the runner reports (as S3)
                target = staging.download(remote, folder, kind=PREFIX, required=False)
            source["S3Uri"] = uris.file_uri(target)
        uploads = []
        outputs = (local.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        for i, item in enumerate(outputs):
            target = item.get("S3Output") if isinstance(item, dict) else None
            remote = target.get("S3Uri") if isinstance(target, dict) else None
            if not isinstance(remote, str) or not remote.startswith("s3://"):
                continue
            folder = f"outputs/{i}-{item.get('OutputName', 'output')}"
            target["S3Uri"] = staging.local_uri(folder, remote)
            uploads.append((staging.path(folder), remote))

        ctx = StageContext(run_id=name, step="processing", config=self.cfg,
                           log=logging.getLogger(f"mlharness.emulator.processing.{name}"),
                           announce=lambda m: None)
        result = LocalProcessingRunner().run(local, ctx)
        for folder, remote in uploads:  # S3UploadMode EndOfJob
            staging.upload(folder, remote)
        return result
