"""The compute bridge: when the emulated Glue job run starts, the local ETL runner does
the work, on the emulated S3.

``GlueBridge.install(emulator)`` wraps moto's ``FakeJob.start_job_run`` (moto's server runs
in this process). Each new run reports ``RUNNING`` while a worker thread:

1. downloads the job's script (``Command.ScriptLocation``) and every ``s3://`` argument
   that names data in the emulated S3 (an object, or objects under a prefix: the run's
   inputs, e.g. ``--raw_uri`` or a walkthrough job's ``--SOURCE_PATH``) into a temporary
   directory (``cloud_runners.s3_staging``: one per job run),
2. runs ``local_runners.etl.LocalEtlRunner`` on the very ``StartJobRun`` request (the
   job's ``DefaultArguments`` merged the way Glue merges them), with those S3 URIs turned
   into ``file://`` URIs of that directory, and every other ``s3://`` argument (where the
   job writes: ``--output_uri``, ``--OUTPUT_PATH``, ``--TempDir``) into an empty folder
   of it,
3. uploads what the job wrote into those folders to their S3 URIs (``--output_uri`` must
   have been written),

then reports ``SUCCEEDED``, or ``FAILED`` with the runner's error (naming the S3
locations, not the temporary directory) as ``ErrorMessage``, or ``STOPPED`` when the
emulator stops while it runs (``workers``; the Spark jobs are cancelled).
"""
from __future__ import annotations

import copy
import logging
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from cloud_runners.emulator.workers import STOP_GRACE_S, Workers
from cloud_runners.s3_staging import S3Staging, error_text
from harness import uris
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.stages import GLUE_JOBS, StageContext

LOG = logging.getLogger("mlharness.emulator.bridge")


class Bridge:
    """What every compute bridge shares: the config its runners get, a scratch folder,
    the worker threads that run its jobs (``cloud_runners.emulator.workers``: stopped
    when the emulator stops), and the refusal to patch a changed moto."""

    def __init__(self, cfg: PipelineConfig | None = None, *,
                 workdir: str | Path | None = None):
        self.cfg = cfg or PipelineConfig()
        self.workdir = Path(workdir) if workdir else None
        self.workers = Workers()
        self._emulator: Any = None

    @property
    def threads(self) -> list[threading.Thread]:
        return self.workers.threads

    def join(self, timeout: float | None = 300) -> list[str]:
        """Wait for the jobs to end (``timeout`` seconds in all); those still running."""
        return self.workers.join(timeout)

    def stop_jobs(self, grace_s: float = STOP_GRACE_S) -> list[str]:
        """Stop the jobs still running (the emulator is stopping); their names."""
        return self.workers.stop(self.on_stop, grace_s)

    def on_stop(self) -> None:
        """What else interrupts this bridge's jobs when they are stopped (see Workers)."""

    def stop_requested(self) -> bool:
        """Whether the job of the calling worker thread is being stopped."""
        return self.workers.stop_requested()

    @staticmethod
    def refuse_changed_moto(problems: list[str], who: str, module_file: str) -> None:
        if problems:
            from cloud_runners.emulator.moto_gaps import MotoGapsError
            raise MotoGapsError(f"moto changed under {who} ({module_file}): "
                                + "; ".join(problems))


def request_field(snake: str) -> str:
    """A moto backend argument's request field name: ``training_job_name`` ->
    ``TrainingJobName``."""
    return "".join(w[:1].upper() + w[1:] for w in snake.split("_"))


def bound_request(signature: Any, backend: Any, args: tuple, kwargs: dict) -> dict[str, Any]:
    """The AWS request of an intercepted moto backend call: its arguments (copied) under
    their request field names, the unset ones left out."""
    bound = signature.bind(backend, *args, **kwargs)
    return {request_field(k): copy.deepcopy(v) for k, v in bound.arguments.items()
            if k != "self" and v is not None}


def runner_error(e: BaseException, staging: S3Staging | None) -> str:
    """The runner's error as AWS would report it: naming S3 locations, not temp paths."""
    return staging.error_message(e) if staging is not None else error_text(e)


class GlueBridge(Bridge):
    """Run emulated Glue job runs with the local ETL runner (see the module doc)."""

    # -- install / uninstall ------------------------------------------------------------------

    def install(self, emulator: Any) -> Callable[[], None]:
        from moto.glue.models import FakeJob, FakeJobRun

        self._emulator = emulator
        bridge = self
        original = FakeJob.start_job_run

        class BridgedJobRun(FakeJobRun):
            """A job run whose state is the bridge's, not moto's timed transitions."""

            bridge_state = "RUNNING"
            bridge_error: str | None = None

            @property
            def status(self) -> str:  # type: ignore[override]
                return self.bridge_state

            @status.setter
            def status(self, value: str) -> None:
                self.bridge_state = value

            def advance(self) -> None:
                pass

            def as_dict(self) -> dict[str, Any]:
                out = super().as_dict()
                if self.bridge_error:
                    out["ErrorMessage"] = self.bridge_error
                if getattr(self, "execution_time", None) is not None:
                    out["ExecutionTime"] = self.execution_time
                return out

        def start_job_run(job, *args, **kwargs):
            run_id = original(job, *args, **kwargs)
            run = next(r for r in job.job_runs if r.job_run_id == run_id)
            run.__class__ = BridgedJobRun
            run.bridge_state = "RUNNING"
            bridge.workers.start(f"glue-bridge-{run_id[:12]}", lambda: bridge._run(job, run),
                                 on_stopped=lambda: bridge._stopped(run))
            return run_id

        FakeJob.start_job_run = start_job_run

        def uninstall() -> None:
            FakeJob.start_job_run = original
            self.stop_jobs()

        return uninstall

    def on_stop(self) -> None:
        """A job run blocked in a Spark action gets its JobStopped when the action returns:
        cancel the Spark jobs (the ETL's session is this process's; the emulator is
        stopping, so every run of it stops)."""
        pyspark = sys.modules.get("pyspark")
        context = getattr(getattr(pyspark, "SparkContext", None), "_active_spark_context",
                          None)
        if context is not None:
            try:
                context.cancelAllJobs()
            except Exception:  # noqa: BLE001 - the thread still gets its JobStopped
                LOG.warning("cancelling the Spark jobs failed:\n%s", traceback.format_exc())

    @staticmethod
    def _stopped(run: Any) -> None:
        if run.bridge_state == "RUNNING":
            run.completed_on = run.modified_on = utcnow()
            run.bridge_state = "STOPPED"

    # -- one job run --------------------------------------------------------------------------

    def _run(self, job: Any, run: Any) -> None:
        # One staging area per job run: runs of the same job execute on separate threads.
        staging: S3Staging | None = None
        try:
            staging = S3Staging(self._emulator.client("s3"), prefix="mlharness-glue-",
                                dir=self.workdir)
            with staging:
                self._execute(job, run, staging)
        except Exception as e:
            if self.stop_requested():
                return  # the stop made it fail: STOPPED, not FAILED (Workers)
            LOG.error("Glue job run %s failed:\n%s", run.job_run_id, traceback.format_exc())
            run.bridge_error = runner_error(e, staging)
            run.completed_on = run.modified_on = utcnow()
            run.bridge_state = "FAILED"
        else:
            run.completed_on = run.modified_on = utcnow()
            run.bridge_state = "SUCCEEDED"

    def _execute(self, job: Any, run: Any, staging: S3Staging) -> None:
        from local_runners.etl import LocalEtlRunner

        arguments = dict(run.arguments or {})  # moto merged DefaultArguments already
        script_uri = (job.command or {}).get("ScriptLocation", "")
        # Errors name the S3 locations, as on AWS, not the staging folder.
        script = staging.download(script_uri, f"code/{script_uri.rsplit('/', 1)[-1]}",
                                  kind="object")
        local_args, outputs = stage_arguments(arguments, staging)
        ctx = StageContext(
            run_id=run.job_run_id, step="etl", config=self.cfg,
            log=logging.getLogger(f"mlharness.emulator.glue.{job.name}"),
            announce=lambda m: None,
            registry={GLUE_JOBS: {job.name: {
                "Name": job.name,
                "Command": {**(job.command or {}), "ScriptLocation": uris.file_uri(script)}}}})
        t0 = time.monotonic()
        LocalEtlRunner().run({"JobName": job.name, "Arguments": local_args}, ctx)
        run.execution_time = int(round(time.monotonic() - t0))
        for key, (name, uri) in outputs.items():
            if staging.path(name).exists():
                staging.upload(staging.path(name), uri)
            elif key == "--output_uri":
                raise HarnessError("the job wrote nothing to its output", file=uri)


def stage_arguments(arguments: dict[str, Any], staging: S3Staging
                    ) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    """The job run's arguments with each ``s3://`` value as a ``file://`` URI of the
    staging folder: data that is there downloaded (inputs), other locations an empty
    folder to upload afterwards (outputs: argument -> (staging name, S3 URI))."""
    local = dict(arguments)
    outputs: dict[str, tuple[str, str]] = {}
    for i, (key, value) in enumerate(sorted(arguments.items())):
        if not (isinstance(value, str) and value.startswith("s3://")):
            continue
        name = f"arg{i}-{key.strip('-').replace('/', '_')}"
        kind = None if key == "--output_uri" else staging.kind(value)
        if kind is None:  # where the job writes
            local[key] = staging.local_uri(name, value)
            outputs[key] = (name, value)
        else:
            path = staging.download(value, name, kind=kind)
            local[key] = uris.file_uri(path)
    return local, outputs


def utcnow():
    from moto.core.utils import utcnow

    return utcnow()
