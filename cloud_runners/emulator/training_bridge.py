"""The compute bridge for training: an emulated SageMaker ``CreateTrainingJob`` runs the
training script locally, on the emulated S3.

``TrainingBridge.install(emulator)`` wraps moto's ``SageMakerModelBackend.create_training_job``
(moto's server runs in this process). moto creates every training job ``Completed`` at
once, with made-up metrics (``train:progress``) and a ``test:dcg`` MetricDefinition
written over the request's. The bridge keeps moto's job object (``DescribeTrainingJob``
builds its answer from the object's attributes: ``BaseObject.gen_response_object``
camel-cases ``__dict__``, ``None`` values left out) and sets those attributes itself:

- at once: ``TrainingJobStatus`` ``InProgress`` (``SecondaryStatus`` ``Starting``), no
  ``ModelArtifacts``/``FinalMetricDataList``/``TrainingEndTime`` yet, and the request's
  own ``AlgorithmSpecification`` back;
- a worker thread downloads ``HyperParameters.sagemaker_submit_directory``
  (``sourcedir.tar.gz``) and every input channel's S3 prefix into a temporary directory
  (``cloud_runners.s3_staging``, one per job),
  runs ``local_runners.train.LocalTrainingRunner`` on the very request with only the URIs
  turned into ``file://`` URIs of that directory, and uploads ``model.tar.gz`` and
  ``output.tar.gz`` to ``<S3OutputPath>/<TrainingJobName>/output/`` (where SageMaker puts
  them);
- then ``Completed`` with ``ModelArtifacts.S3ModelArtifacts`` and the local run's real
  ``FinalMetricDataList``, or ``Failed`` with the runner's error (local paths turned back
  into the S3 URIs) as ``FailureReason``, or ``Stopped`` when the emulator stops while it
  runs (the script is interrupted and the process state it changed restored: ``workers``).

A channel whose S3 prefix is empty is left out of the download, so the runner reports it
("no data for channel ...") as it does locally.

What the patch relies on in moto is fingerprinted in ``FINGERPRINTS``; ``check()`` names
what changed and ``install()`` refuses to patch then
(``tests/cloud_runners/emulator/test_training_bridge.py``).
"""
from __future__ import annotations

import copy
import datetime as dt
import inspect
import json
import logging
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from cloud_runners.emulator.bridge import Bridge, bound_request, runner_error, utcnow
from cloud_runners.emulator.moto_gaps import check_fingerprints, resolve_attr
from cloud_runners.s3_staging import OBJECT, PREFIX, S3Staging
from harness import uris
from harness.errors import HarnessError
from harness.stages import StageContext

LOG = logging.getLogger("mlharness.emulator.training")
# The local runner changes process-wide state while the script runs (os.environ, argv,
# cwd, stdout): one training job at a time; others stay InProgress ("Training") meanwhile.
_RUNNER_LOCK = threading.Lock()

_MODELS = "moto.sagemaker.models"
# sha256 (first 16 hex) of the moto code the bridge depends on, from moto 5.2.5.
FINGERPRINTS = {
    # wrapped; its keyword arguments are the request's fields, snake_case
    f"{_MODELS}.SageMakerModelBackend.create_training_job": "28e33b84f7b4fdf5",
    # the attributes the bridge sets (training_job_status, secondary_status,
    # model_artifacts, final_metric_data_list, algorithm_specification, ...)
    f"{_MODELS}.FakeTrainingJob.__init__": "74031841b1bda9ea",
    # DescribeTrainingJob = the job's response_object = its camel-cased __dict__
    f"{_MODELS}.SageMakerModelBackend.describe_training_job": "c78ae1d18ef98dc3",
    f"{_MODELS}.FakeTrainingJob.response_object": "0126c234fdcf95b2",
    f"{_MODELS}.BaseObject.gen_response_object": "dfa69faba40843bb",
}


def check() -> list[str]:
    """What the bridge relies on in moto and no longer finds as it was (empty: all good)."""
    return check_fingerprints(FINGERPRINTS, "the training bridge", resolve_attr)


def _metric_time(value: Any) -> Any:
    """The runner's ISO 8601 timestamps as datetimes (moto serialises those)."""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _stopped(job: Any) -> None:
    """The job was stopped before it completed: ``Stopped``, as StopTrainingJob leaves it."""
    if job.training_job_status == "InProgress":
        job.training_end_time = job.last_modified_time = utcnow()
        job.secondary_status = "Stopped"
        job.training_job_status = "Stopped"


def _decoded(value: Any) -> Any:
    """A hyperparameter as the training toolkit reads it: JSON-decoded when it is JSON."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _encoded(value: str, like: Any) -> str:
    """``value`` encoded the way the original hyperparameter was (JSON or plain text)."""
    return json.dumps(value) if isinstance(like, str) and like.startswith('"') else value


def stage_training_job(body: dict[str, Any], hyperparameters: str, staging: S3Staging
                       ) -> tuple[dict[str, Any], str, Path]:
    """``body`` -- a ``CreateTrainingJob`` request, or a tuning job's
    ``TrainingJobDefinition`` (its hyperparameters are in the field ``hyperparameters``)
    -- with only its S3 URIs turned into ``file://`` URIs of ``staging``: the code package
    (``sagemaker_submit_directory``) and each channel's prefix downloaded, the output path
    an empty local folder (hyperparameters naming a place under it, ``model_dir``, follow
    it). Returns (that body, the S3 output path, the local output folder)."""
    hps = dict(body.get(hyperparameters) or {})
    output_path = (body.get("OutputDataConfig") or {}).get("S3OutputPath")
    if not output_path:
        raise HarnessError("the training job has no OutputDataConfig.S3OutputPath",
                           field="OutputDataConfig.S3OutputPath", expected="an s3:// URI")
    local = copy.deepcopy(body)
    # Values are JSON-encoded, as the SageMaker SDK sends them ("\"s3://...\""); each is
    # decoded to be read and encoded again when rewritten.
    submit = _decoded(hps.get("sagemaker_submit_directory"))
    if isinstance(submit, str) and submit.startswith("s3://"):
        # A missing package is left to the runner, which names it (as S3, here).
        code = staging.download(submit, f"code/{submit.rsplit('/', 1)[-1]}",
                                kind=OBJECT, required=False)
        local[hyperparameters]["sagemaker_submit_directory"] = _encoded(
            uris.file_uri(code), hps["sagemaker_submit_directory"])
    out_uri = staging.local_uri("output", output_path)
    out_dir = staging.path("output")
    out_dir.mkdir()
    local["OutputDataConfig"] = {**local["OutputDataConfig"], "S3OutputPath": out_uri}
    # Other hyperparameters naming the output location (model_dir) follow it.
    for key, raw in hps.items():
        value = _decoded(raw)
        if key != "sagemaker_submit_directory" and isinstance(value, str) \
                and value.startswith(output_path.rstrip("/") + "/"):
            local[hyperparameters][key] = _encoded(
                out_uri + value[len(output_path.rstrip("/")):], raw)
    for i, channel in enumerate(local.get("InputDataConfig") or []):
        try:
            source = channel["DataSource"]["S3DataSource"]
            remote = source["S3Uri"]
        except (KeyError, TypeError):
            continue  # the runner names the malformed channel
        # An empty prefix is left out: the runner reports "no data for channel".
        cname = channel.get("ChannelName", "channel")
        target = staging.download(remote, f"data/{i}-{cname}", kind=PREFIX, required=False)
        source["S3Uri"] = uris.file_uri(target)
    return local, output_path, out_dir


class TrainingBridge(Bridge):
    """Run emulated SageMaker training jobs with the local training runner (module doc)."""

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        self.refuse_changed_moto(check(), "the training bridge",
                                 "cloud_runners/emulator/training_bridge.py")
        from moto.sagemaker.models import SageMakerModelBackend

        self._emulator = emulator
        bridge = self
        original = SageMakerModelBackend.create_training_job
        signature = inspect.signature(original)

        def create_training_job(backend, *args, **kwargs):
            # moto writes its own MetricDefinitions into the request: keep ours.
            request = bound_request(signature, backend, args, kwargs)
            job = original(backend, *args, **kwargs)
            job.algorithm_specification = copy.deepcopy(request.get("AlgorithmSpecification"))
            job.model_artifacts = None
            job.final_metric_data_list = None
            job.training_end_time = None
            job.secondary_status = "Starting"
            job.secondary_status_transitions = []
            job.training_job_status = "InProgress"
            bridge.workers.start(f"training-bridge-{job.training_job_name[:24]}",
                                 lambda: bridge._run(job, request),
                                 on_stopped=lambda: _stopped(job))
            return job

        create_training_job.__wrapped__ = original  # type: ignore[attr-defined]
        SageMakerModelBackend.create_training_job = create_training_job

        def uninstall() -> None:
            SageMakerModelBackend.create_training_job = original
            self.stop_jobs()

        return uninstall

    # -- one training job ---------------------------------------------------------------------

    def _run(self, job: Any, request: dict[str, Any]) -> None:
        staging: S3Staging | None = None
        try:
            staging = S3Staging(self._emulator.client("s3"), prefix="mlharness-training-",
                                dir=self.workdir)
            with staging:
                result = self._execute(job, request, staging)
        except Exception as e:
            if self.stop_requested():
                return  # the stop made it fail: Stopped, not Failed (Workers)
            LOG.error("training job %s failed:\n%s", job.training_job_name,
                      traceback.format_exc())
            job.failure_reason = runner_error(e, staging)
            job.training_end_time = job.last_modified_time = utcnow()
            job.secondary_status = "Failed"
            job.training_job_status = "Failed"
        else:
            job.model_artifacts = result["ModelArtifacts"]
            job.final_metric_data_list = [
                {**m, "Timestamp": _metric_time(m.get("Timestamp"))}
                for m in result.get("FinalMetricDataList", [])]
            job.training_time_in_seconds = result.get("TrainingTimeInSeconds")
            job.billable_time_in_seconds = result.get("TrainingTimeInSeconds")
            job.training_end_time = job.last_modified_time = utcnow()
            job.secondary_status = "Completed"
            job.training_job_status = "Completed"

    def _execute(self, job: Any, request: dict[str, Any], staging: S3Staging
                 ) -> dict[str, Any]:
        from local_runners.train import LocalTrainingRunner

        name = request["TrainingJobName"]
        job.secondary_status = "Downloading"
        local, output_path, out_dir = stage_training_job(request, "HyperParameters", staging)
        ctx = StageContext(run_id=name, step="train", config=self.cfg,
                           log=logging.getLogger(f"mlharness.emulator.training.{name}"),
                           announce=lambda m: None)
        job.secondary_status = "Training"
        with _RUNNER_LOCK:
            # no TensorFlow prewarm: the emulator keeps its process as it was
            result = LocalTrainingRunner(prewarm=False).run(local, ctx)
        job.secondary_status = "Uploading"
        job_out = out_dir / name / "output"
        remote_out = uris.join(output_path, name, "output")
        for archive in ("model.tar.gz", "output.tar.gz"):
            staging.upload(job_out / archive, uris.join(remote_out, archive))
        result["ModelArtifacts"] = {"S3ModelArtifacts": uris.join(remote_out, "model.tar.gz")}
        return result
