"""Local Glue: run the job script of a ``StartJobRun`` request on the local SparkSession.

The request is the Glue ``StartJobRun`` body (``JobName``, ``Arguments``); the job itself is
the ``CreateJob`` body registered at bootstrap (``ctx.glue_jobs``), whose
``Command.ScriptLocation`` is the script. The script runs in-process, as ``__main__``, with
``sys.argv`` built the way Glue builds it. The output directory appears only when the run
succeeds: the script writes into a temporary sibling that is renamed into place.
"""
from __future__ import annotations

import contextlib
import io
import json
import runpy
import secrets
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from harness import uris
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext, StageRunner
from harness.storage import atomic_dir
from local_runners.spark_session import get_spark, interrupt_count, stop_spark


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


class LocalEtlRunner(StageRunner):
    kind = "etl"


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
        arguments = {**(job.get("DefaultArguments") or {}), **(request.get("Arguments") or {})}
        output_uri = arguments.get("--output_uri")
        if not output_uri:
            raise StepFailed(ctx.step, "the job run has no output location",
                             field="Arguments.--output_uri", expected="a file:// URI")
        out_dir = uris.local_path(output_uri)
        if out_dir.exists():
            raise StepFailed(ctx.step, "the ETL output already exists; refusing to overwrite it",
                             file=str(out_dir), hint="earlier runs are never modified")

        run_id = "jr_" + secrets.token_hex(32)
        started = _now()
        t0 = time.monotonic()
        ctx.log.info("Glue job %s run %s: script %s", name, run_id, script)
        with ctx.progress.task(f"Glue job {name} (local Spark)", total=None):
            get_spark(ctx.config)  # the script's getOrCreate() picks this session up
            try:
                with atomic_dir(out_dir) as tmp:
                    run_args = {**arguments, "--output_uri": uris.file_uri(tmp)}
                    try:
                        self._run_script(script, name, run_id, run_args, ctx)
                    except KeyboardInterrupt:
                        # stop Spark before atomic_dir removes the temporary output: no
                        # task may still be writing into it
                        ctx.log.warning("Glue job %s run %s interrupted; stopping Spark",
                                        name, run_id)
                        stop_spark()
                        raise
                    report = _read_report(tmp)
            except StepFailed:
                raise
            except HarnessError as e:  # atomic_dir refusing, etc.
                raise StepFailed(ctx.step, e.message) from None
        seconds = time.monotonic() - t0
        for split, counts in report.items():
            ctx.log.info("split %s: %s", split, counts)
        return {
            "Id": run_id,
            "JobName": name,
            "JobRunState": "SUCCEEDED",
            "Arguments": dict(request.get("Arguments") or {}),
            "StartedOn": started.isoformat(),
            "CompletedOn": _now().isoformat(),
            "ExecutionTime": int(round(seconds)),
            "GlueVersion": job.get("GlueVersion"),
            "OutputUri": output_uri,
            "Report": report,
        }

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
                detail = str(e).strip().splitlines()
                raise StepFailed(ctx.step, f"the Glue script {script.name} failed: "
                                 f"{type(e).__name__}: {detail[0] if detail else ''}",
                                 file=str(script)) from e
            if e.code not in (0, None):
                raise StepFailed(ctx.step, f"the Glue script {script.name} exited with "
                                 f"code {e.code}: " + " | ".join(err.lines[-3:]),
                                 file=str(script)) from None
        finally:
            out.flush()
            err.flush()
