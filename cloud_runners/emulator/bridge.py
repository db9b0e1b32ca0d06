"""The compute bridge: when the emulated Glue job run starts, the local ETL runner does
the work, on the emulated S3.

``GlueBridge.install(emulator)`` wraps moto's ``FakeJob.start_job_run`` (moto's server runs
in this process). Each new run reports ``RUNNING`` while a worker thread:

1. downloads the job's script (``Command.ScriptLocation``) and the run's ``--raw_uri``
   prefix from the emulated S3 into a temporary directory (``cloud_runners.s3_staging``:
   one per job run),
2. runs ``local_runners.etl.LocalEtlRunner`` on the very ``StartJobRun`` request (the
   job's ``DefaultArguments`` merged the way Glue merges them), with the S3 URIs turned
   into ``file://`` URIs of that directory,
3. uploads the Parquet output to the run's ``--output_uri`` prefix,

then reports ``SUCCEEDED``, or ``FAILED`` with the runner's error (naming the S3
locations, not the temporary directory) as ``ErrorMessage``.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from cloud_runners.s3_staging import S3Staging, error_text
from harness import uris
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.stages import GLUE_JOBS, StageContext

LOG = logging.getLogger("mlharness.emulator.bridge")


class Bridge:
    """What every compute bridge shares: the config its runners get, a scratch folder,
    the worker threads it waits for, and the refusal to patch a changed moto."""

    def __init__(self, cfg: PipelineConfig | None = None, *,
                 workdir: str | Path | None = None):
        self.cfg = cfg or PipelineConfig()
        self.workdir = Path(workdir) if workdir else None
        self.threads: list[threading.Thread] = []
        self._emulator: Any = None

    def join(self, timeout: float | None = 300) -> None:
        for t in list(self.threads):
            t.join(timeout)

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
            thread = threading.Thread(target=bridge._run, args=(job, run),
                                      name=f"glue-bridge-{run_id[:12]}", daemon=True)
            bridge.threads.append(thread)
            thread.start()
            return run_id

        FakeJob.start_job_run = start_job_run

        def uninstall() -> None:
            FakeJob.start_job_run = original
            self.join()

        return uninstall

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
        raw_uri, output_uri = arguments.get("--raw_uri"), arguments.get("--output_uri")
        if not raw_uri or not output_uri:
            raise HarnessError("the job run lacks --raw_uri or --output_uri",
                               field="Arguments", expected="s3:// URIs")
        raw_dir = staging.download(raw_uri, "raw", kind="prefix")
        local_args = {**arguments, "--raw_uri": uris.file_uri(raw_dir),
                      "--output_uri": staging.local_uri("processed", output_uri)}
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
        staging.upload(staging.path("processed"), output_uri)


def utcnow():
    from moto.core.utils import utcnow

    return utcnow()
