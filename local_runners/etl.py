"""Local Glue: run the job script of a ``StartJobRun`` request on the local SparkSession.

The request is the Glue ``StartJobRun`` body (``JobName``, ``Arguments``); the job itself is
the ``CreateJob`` body registered at bootstrap (``ctx.glue_jobs``), whose
``Command.ScriptLocation`` is the script. The script runs in-process, as ``__main__``, with
``sys.argv`` built the way Glue builds it. When the run has an ``--output_uri`` (our own
scripts' convention) the output directory appears only when the run succeeds: the script
writes into a temporary sibling that is renamed into place, and the ``_report/`` it writes
there becomes the output's ``Report``. Other scripts run with their arguments as given
(``Report`` is then empty).

``etl.runner`` picks how the script runs: ``spark`` (plain PySpark), ``glue-compat`` (the
``awsglue`` GlueContext/DynamicFrame/Job/transforms emulated over PySpark, see
``local_runners.glue_compat``), ``glue-container`` (AWS's Glue image through Docker, see
``local_runners.glue_container``) or ``auto``: glue-compat when the script imports from
awsglue.context, .job, .dynamicframe or .transforms, else spark.
"""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import secrets
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir
from local_runners import glue_compat
from local_runners.spark_session import (get_spark, interrupt_count, stop_spark,
                                         stop_spark_in_background)

# The runner that stands for etl.runner: auto / spark (glue-compat when the script uses
# awsglue's GlueContext, Job, DynamicFrame or transforms).
SPARK, GLUE_COMPAT, GLUE_CONTAINER = "spark", "glue-compat", "glue-container"


class _LogWriter(io.TextIOBase):
    """A text stream that sends each complete line to a logger (and keeps the last lines)."""

    def __init__(self, log, level: int):
        self._log, self._level, self._buf = log, level, ""
        self.lines: list[str] = []

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = ""

    def _emit(self, line: str) -> None:
        if line.strip():
            self.lines.append(line)
            self._log.log(self._level, "%s", line)


@contextlib.contextmanager
def _script_argv(argv: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _read_report(out_dir: Path) -> dict[str, dict[str, int]]:
    """The per-split counts the script wrote under ``_report/`` (JSON lines)."""
    report: dict[str, dict[str, int]] = {}
    for part in sorted((out_dir / "_report").glob("part-*.json")):
        for line in part.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                report[row.pop("split")] = row
    return report


def root_cause(text: str) -> str | None:
    """The first cause in a Spark/Py4J error's text: the last ``Caused by:`` line (the
    root of a Java exception chain), else what a failed task reported (``Lost task ...
    (executor N): <error>``); None when the text has neither."""
    causes = [line.strip()[len("Caused by:"):].strip() for line in text.splitlines()
              if line.strip().startswith("Caused by:")]
    if causes:
        return causes[-1]
    for line in text.splitlines():
        if "Lost task" in line and "): " in line:
            return line.split("): ", 1)[1].strip()
    return None


def _first_line(exc: BaseException) -> str:
    try:
        lines = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 — str() of a Py4J error asks the JVM
        return "(no message)"
    return lines[0] if lines else ""


def _caused_by_interrupt(exc: BaseException, interrupts_before: int) -> bool:
    """True when a Ctrl-C arrived while the script ran (Spark's SIGINT handler counts
    them) or a KeyboardInterrupt is among the exception's causes."""
    if interrupt_count() > interrupts_before:
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def registered_glue_job(name: str, ctx: StageContext) -> dict[str, Any]:
    """The Glue job (CreateJob body) a StartJobRun request names, as registered at setup."""
    job = ctx.glue_jobs.get(name)
    if job is None:
        known = ", ".join(sorted(ctx.glue_jobs)) or "none"
        raise StepFailed(ctx.step, f"Glue job '{name}' is not defined", field="JobName",
                         expected=f"one of the registered jobs ({known})",
                         hint="the job is created from the etl section of the config")
    return job


def select_runner(configured: str, script: Path) -> str:
    """``etl.runner`` for ``script``: ``auto`` becomes glue-compat when the script imports
    from awsglue.context, awsglue.job, awsglue.dynamicframe or awsglue.transforms (found
    with ``ast``), else spark."""
    if configured != "auto":
        return configured
    try:
        source = script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return SPARK
    return GLUE_COMPAT if glue_compat.uses_glue_api(source) else SPARK


def _bookmark_warning(arguments: dict[str, Any], ctx: StageContext) -> None:
    option = arguments.get("--job-bookmark-option")
    if option and option != "job-bookmark-disable":
        ctx.log.warning("--job-bookmark-option %s: job bookmarks are not kept locally; "
                        "every local run reads all of its input (as job-bookmark-disable)",
                        option)


SECONDS_PER_MINUTE = 60.0  # the unit of a Glue job's Timeout (tests shorten it)


class _Timeout:
    """A Glue job's Timeout: when it passes, the run's Spark jobs are cancelled (the script
    then fails, and the run is reported as TIMEOUT)."""

    def __init__(self, minutes: float, spark: Any, ctx: StageContext):
        self.fired = False
        self._spark, self._ctx = spark, ctx
        self._timer = threading.Timer(float(minutes) * SECONDS_PER_MINUTE, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        self._ctx.log.error("the job ran longer than its Timeout: cancelling its Spark jobs")
        try:
            self._spark.sparkContext.cancelAllJobs()
        except Exception as e:  # noqa: BLE001 - the session may be stopping already
            self._ctx.log.warning("cancelling the Spark jobs failed: %s", e)

    def cancel(self) -> None:
        self._timer.cancel()


class LocalEtlRunner(StageRunner):
    kind = "etl"

    def __init__(self, path_resolver: glue_compat.Resolver | None = None):
        # How glue-compat scripts' paths are read and written (default: plain paths and
        # file:// URIs; s3:// fails, naming the path). The emulator backend will install
        # one that maps s3:// to its buckets.
        self.path_resolver = path_resolver

    def _script(self, job: dict[str, Any], ctx: StageContext) -> Path:
        location = (job.get("Command") or {}).get("ScriptLocation")
        if not location:
            raise StepFailed(ctx.step, f"Glue job '{job.get('Name')}' has no script",
                             field="Command.ScriptLocation", expected="a file:// URI")
        script = uris.local_path(location)
        if not script.is_file():
            raise StepFailed(ctx.step, "the Glue job script does not exist", file=str(script),
                             field="Command.ScriptLocation")
        return script

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = request.get("JobName")
        job = registered_glue_job(name, ctx)
        script = self._script(job, ctx)
        runner = select_runner(ctx.config.etl.runner, script)
        arguments = {**(job.get("DefaultArguments") or {}), **(request.get("Arguments") or {})}
        output_uri = arguments.get("--output_uri")
        out_dir = uris.local_path(output_uri) if output_uri else None
        if out_dir is not None and out_dir.exists():
            raise StepFailed(ctx.step, "the ETL output already exists; refusing to overwrite it",
                             file=str(out_dir), hint="earlier runs are never modified")
        if runner in (GLUE_COMPAT, GLUE_CONTAINER):
            _bookmark_warning(arguments, ctx)

        run_id = "jr_" + secrets.token_hex(32)
        started = _now()
        t0 = time.monotonic()
        ctx.log.info("Glue job %s run %s: script %s (runner %s)", name, run_id, script, runner)
        report: dict[str, dict[str, int]] = {}
        where = "Glue container" if runner == GLUE_CONTAINER \
            else f"Spark {ctx.config.etl.spark_master}"
        timeout = request.get("Timeout") or job.get("Timeout")
        with ctx.progress.task(f"Glue job {name} ({where})", total=None):
            # the script's getOrCreate() picks this session up (the container has its own)
            spark = None if runner == GLUE_CONTAINER else get_spark(ctx.config)
            timer = _Timeout(timeout, spark, ctx) if spark is not None and timeout else None
            try:
                if out_dir is None:
                    self._run_interruptible(script, name, run_id, arguments, runner, spark,
                                            ctx)
                else:
                    with atomic_dir(out_dir) as tmp:
                        run_args = {**arguments, "--output_uri": uris.file_uri(tmp)}
                        # stop Spark before atomic_dir removes the temporary output on
                        # Ctrl-C: no task may still be writing into it
                        self._run_interruptible(script, name, run_id, run_args, runner,
                                                spark, ctx)
                        report = _read_report(tmp)
            except (StepFailed, HarnessError) as e:  # HarnessError: atomic_dir refusing, etc.
                if timer is not None and timer.fired:
                    raise StepFailed(ctx.step, f"Glue job {name} run {run_id} TIMEOUT: it "
                                     f"ran longer than its Timeout of {timeout} minutes; its "
                                     "Spark jobs were cancelled",
                                     hint="raise etl.timeout_minutes (the job's Timeout)"
                                     ) from None
                if isinstance(e, StepFailed):
                    raise
                raise StepFailed(ctx.step, e.message) from None
            finally:
                if timer is not None:
                    timer.cancel()
                if spark is not None and not ctx.config.etl.keep_spark:
                    # the JVM's memory back while the next step starts
                    stop_spark_in_background()
        seconds = time.monotonic() - t0
        for split, counts in report.items():
            ctx.log.info("split %s: %s", split, counts)
        out = {
            "Id": run_id,
            "JobName": name,
            "JobRunState": "SUCCEEDED",
            "Arguments": dict(request.get("Arguments") or {}),
            "StartedOn": started.isoformat(),
            "CompletedOn": _now().isoformat(),
            "ExecutionTime": int(round(seconds)),
            "GlueVersion": job.get("GlueVersion"),
        }
        if output_uri:
            out["OutputUri"] = output_uri
        out["Report"] = report
        return out

    def _run_interruptible(self, script: Path, name: str, run_id: str,
                           arguments: dict[str, str], runner: str, spark: Any,
                           ctx: StageContext) -> None:
        if runner == GLUE_CONTAINER:
            self._run_container(script, name, run_id, arguments, ctx)
            return
        try:
            if runner == GLUE_COMPAT:
                self._run_compat(script, name, run_id, arguments, spark, ctx)
            else:
                self._run_script(script, name, run_id, arguments, ctx)
        except KeyboardInterrupt:
            ctx.log.warning("Glue job %s run %s interrupted; stopping Spark", name, run_id)
            stop_spark()
            raise

    def _run_container(self, script: Path, name: str, run_id: str,
                       arguments: dict[str, str], ctx: StageContext) -> None:
        """The script in AWS's Glue image (Docker): its output goes to the step log; the
        container is stopped and removed on Ctrl-C, and always removed."""
        from local_runners.glue_container import GlueContainerRun

        cfg = ctx.config
        job = ctx.glue_jobs.get(name) or {}
        emulator = cfg.cloud.endpoint_url if cfg.backend == "emulator" else None
        GlueContainerRun(script, name, run_id, arguments, step=ctx.step, step_log=ctx.log,
                         glue_version=job.get("GlueVersion") or cfg.etl.glue_version,
                         spark_master=cfg.etl.spark_master,
                         shuffle_partitions=cfg.etl.shuffle_partitions,
                         region=cfg.cloud.region, emulator_endpoint=emulator,
                         progress=ctx.progress).run()

    def _run_compat(self, script: Path, name: str, run_id: str, arguments: dict[str, str],
                    spark: Any, ctx: StageContext) -> None:
        """The script with awsglue's context, job, dynamicframe and transforms modules
        replaced by the compatibility layer. A script that never calls job.commit() still
        succeeds, as on Glue (bookmarks off); the step log says so."""
        with glue_compat.installed(spark, self.path_resolver, log=ctx.log) as rt:
            self._run_script(script, name, run_id, arguments, ctx)
        if rt.commits == 0:
            ctx.log.warning("Glue script %s never called job.commit(): Glue does not fail "
                            "the run for that, but with job bookmarks enabled the bookmark "
                            "would not advance", script.name)

    def _run_script(self, script: Path, name: str, run_id: str, arguments: dict[str, str],
                    ctx: StageContext) -> None:
        argv = [str(script), "--JOB_NAME", name, "--JOB_RUN_ID", run_id]
        for key, value in arguments.items():
            argv += [key if key.startswith("--") else f"--{key}", str(value)]
        out, err = _LogWriter(ctx.log, 20), _LogWriter(ctx.log, 30)
        interrupts = interrupt_count()
        try:
            with _script_argv(argv), contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err):
                runpy.run_path(str(script), run_name="__main__")
        except KeyboardInterrupt:
            raise
        except (SystemExit, Exception) as e:
            if _caused_by_interrupt(e, interrupts):
                # the interrupt surfaced as another error: a Py4JError because the same
                # Ctrl-C or SIGTERM tore down the JVM or its Python workers, or a script
                # that caught the KeyboardInterrupt and failed or exited. Not chained: the
                # text of a Py4J error is read from the JVM, which is about to be stopped.
                ctx.log.warning("Glue script %s ended by the interrupt with %s: %s",
                                script.name, type(e).__name__, _first_line(e))
                raise KeyboardInterrupt(f"Glue job {name} interrupted") from None
            if not isinstance(e, SystemExit):
                ctx.log.exception("Glue script failed")
                text = str(e).strip()
                first = text.splitlines()[0] if text else ""
                cause = root_cause(text)
                why = f" (first cause: {cause})" if cause and cause not in first else ""
                raise StepFailed(ctx.step, f"the Glue script {script.name} failed: "
                                 f"{type(e).__name__}: {first}{why}",
                                 file=str(script)) from e
            if e.code not in (0, None):
                raise StepFailed(ctx.step, f"the Glue script {script.name} exited with "
                                 f"code {e.code}: " + " | ".join(err.lines[-3:]),
                                 file=str(script)) from None
        finally:
            out.flush()
            err.flush()
