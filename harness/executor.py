"""The local backend: walks a workflow's steps in this process and records every step.

For each step: build its request (``Step.request``), resolve the placeholders against
the run's state document (the same document the state machine carries), hand it to the
step kind's local runner, record input, output, log and timings, and ask the step what
comes next (a gate stops the run below its threshold). Failures leave a record naming
the step and the reason, and the command that resumes the run. A resumed run is a new
run that reuses the earlier run's outputs for the steps before the resume point; the
earlier run is only read, never written.
"""
from __future__ import annotations

import contextlib
import logging
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import uris
from harness.backends import Backend, load
from harness.config import PipelineConfig
from harness.errors import ConfigError, GateFailed, HarnessError, Interrupted, StepFailed
from harness.placeholders import BASE_URI_KEY, CODE_URI_KEY, RUN_ID_KEY, code_uri_of, resolve
from harness.progress import NullProgress, Progress
from harness.report import write_report_safely
from harness.runs import RunRecord, RunStore, StepRecord, new_run_id, now_iso
from harness.stages import StageContext, StageRunner
from harness.step_cache import StepCache, link_reused_files, rebased, step_key
from harness.steps.base import Step
from harness.storage import write_json_atomic
from harness.tags import resource_tags


@dataclass
class RunResult:
    """A finished run: its record, summary and folder; what it left serving."""

    record: RunRecord
    summary: dict[str, Any]
    run_dir: Path
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def close(self) -> None:
        """Stop what the run left serving (the endpoint)."""
        self.resources.close()

    def output(self, step: str) -> dict[str, Any]:
        """A step's output (``KeyError`` names the steps that have one)."""
        if step not in self.outputs:
            raise KeyError(f"no output of step {step!r}; steps with one: "
                           + ", ".join(self.outputs))
        return self.outputs[step]

    def input(self, step: str) -> Any:
        rec = self.record.step(step)
        from harness.storage import read_json
        return read_json(self.run_dir / rec.input) if rec.input else None

    def __enter__(self) -> "RunResult":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


INTERRUPTED = "interrupted (Ctrl-C or a termination signal)"


def step_logger(run_id: str, step: str, path: Path) -> logging.Logger:
    logger = logging.getLogger(f"harness.run.{run_id}.{step}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def runner(target: str | None, step: Step, backend: str) -> StageRunner:
    if not target:
        raise ConfigError(f"step '{step.state_id}' ({step.kind}) has no runner for the "
                          f"{backend} backend", field=step.state_id)
    return load(target)()


def summarize(wf, record: RunRecord, outputs: dict[str, dict[str, Any]], run_dir: Path,
              wall_s: float) -> dict[str, Any]:
    """The run summary, from what each step kind says of its output."""
    steps, metrics = [], {}
    for s in wf.steps:
        rec = record.step(s.state_id)
        out = outputs.get(s.state_id)
        facts = s.facts(out) if out is not None else {}
        steps.append({"name": s.state_id, "kind": s.kind, "status": rec.status,
                      "seconds": rec.duration_s, "facts": facts})
        if out is not None:
            for name, value in s.headline(out).items():
                metrics[name if name not in metrics else f"{s.state_id} {name}"] = value
    urls = [st["facts"]["url"] for st in steps if st["facts"].get("url")]
    return {
        "run_id": record.run_id,
        "workflow": record.workflow,
        "status": record.status,
        "backend": record.backend,
        "resumed_from": record.resumed_from,
        "run_dir": str(run_dir),
        "metrics": metrics,
        "steps": steps,
        "endpoint_url": urls[0] if urls else None,
        "wall_seconds": round(wall_s, 3),
    }


class RunRecorder:
    """Runs steps with their runners and keeps the record: input, output, log, timings.
    Shared by the local backend and the client-side steps of the cloud backends."""

    def __init__(self, cfg: PipelineConfig, store: RunStore, *,
                 progress: Progress | None = None,
                 announce: Callable[[str], None] = print,
                 on_step: Callable[[StepRecord], None] | None = None):
        self.cfg = cfg
        self.store = store
        self.progress = progress or NullProgress()
        self.announce = announce
        self.on_step = on_step or (lambda rec: None)

    def context(self, run_id: str, step: Step, logger: logging.Logger,
                resources: contextlib.ExitStack, registry: dict[str, dict[str, Any]]
                ) -> StageContext:
        def announce(msg: str) -> None:
            logger.info(msg)
            self.announce(msg)

        return StageContext(run_id=run_id, step=step.state_id, config=self.cfg, log=logger,
                            progress=self.progress, resources=resources, announce=announce,
                            registry=registry)

    def save(self, record: RunRecord, rec: StepRecord | None = None) -> None:
        self.store.save(record)
        if rec is not None:
            self.on_step(rec)

    def reuse(self, record: RunRecord, step: Step, earlier: tuple[Any, dict[str, Any]],
              resume: str | None, resources: contextlib.ExitStack,
              registry: dict[str, dict[str, Any]]) -> dict[str, Any]:
        request, output = earlier
        rec = record.step(step.state_id)
        rec.status, rec.reused_from = "REUSED", resume
        step_dir = self.store.step_dir(record.run_id, step.state_id)
        write_json_atomic(step_dir / "input.json", request)
        write_json_atomic(step_dir / "output.json", output)
        rec.input = str(Path("steps", step.state_id, "input.json"))
        rec.output = str(Path("steps", step.state_id, "output.json"))
        logger = logging.getLogger(f"harness.run.{record.run_id}.{step.state_id}")
        runner(step.local_runner, step, "local").replay(
            request, output, self.context(record.run_id, step, logger, resources, registry))
        self.save(record, rec)
        return output

    def run_step(self, record: RunRecord, step: Step, build, doc: dict[str, Any],
                 resources: contextlib.ExitStack, registry: dict[str, dict[str, Any]],
                 target: str | None) -> dict[str, Any]:
        """Resolve the step's request against ``doc``, run it with ``target``'s runner,
        record everything; the output."""
        rec = record.step(step.state_id)
        step_dir = self.store.step_dir(record.run_id, step.state_id)
        step_dir.mkdir(parents=True, exist_ok=True)
        rec.status, rec.started = "RUNNING", now_iso()
        rec.log = str(Path("steps", step.state_id, "log.txt"))
        self.store.save(record)
        request = resolve(step.request(build), doc, step.state_id)
        write_json_atomic(step_dir / "input.json", request)
        rec.input = str(Path("steps", step.state_id, "input.json"))
        self.save(record, rec)
        logger = step_logger(record.run_id, step.state_id, step_dir / "log.txt")
        ctx = self.context(record.run_id, step, logger, resources, registry)
        t0 = time.perf_counter()
        try:
            output = runner(target, step, record.backend).run(request, ctx)
        except BaseException:
            logger.exception("step %s failed", step.state_id)
            rec.duration_s = round(time.perf_counter() - t0, 3)
            raise
        finally:
            close_logger(logger)
        rec.duration_s = round(time.perf_counter() - t0, 3)
        write_json_atomic(step_dir / "output.json", output)
        rec.output = str(Path("steps", step.state_id, "output.json"))
        rec.status, rec.ended = "SUCCEEDED", now_iso()
        self.save(record, rec)
        return output

    def fail(self, wf, record: RunRecord, exc: BaseException, current: str | None,
             resume_command: Callable[[str], str] | None) -> None:
        """Record the failure (or the interruption): the step, the error, how to resume;
        let go of the run's lock."""
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            record.mark_interrupted(INTERRUPTED)
            if record.failed_step is None and current is not None:
                record.failed_step = current
            if resume_command is not None and record.failed_step is not None:
                record.resume_command = resume_command(record.failed_step)
            self.store.save(record)
            self.store.release(record.run_id)
            return
        failed = next((s for s in record.steps if s.status == "RUNNING"), None)
        if failed is None and current is not None:
            failed = record.step(current)  # e.g. a gate that stopped the run
        record.status = "FAILED"
        record.ended = now_iso()
        record.error = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
        if failed is not None:
            if failed.status in ("RUNNING", "SUCCEEDED", "FAILED"):
                failed.status = "FAILED"
                failed.ended = failed.ended or now_iso()
                failed.error = failed.error or record.error
            record.failed_step = failed.name
            if resume_command is not None:
                record.resume_command = resume_command(wf.step(failed.name).resume_step().state_id)
        self.store.save(record)
        self.store.release(record.run_id)

    def finish(self, record: RunRecord) -> None:
        """The run succeeded: say so in the record and let go of its lock."""
        record.status = "SUCCEEDED"
        record.ended = now_iso()
        self.store.save(record)
        self.store.release(record.run_id)


def raise_with_record(exc: BaseException, record: RunRecord) -> None:
    """Re-raise a run's failure as a HarnessError that carries the record."""
    if isinstance(exc, KeyboardInterrupt):
        where = f" at step '{record.failed_step}'" if record.failed_step else ""
        said = record.error if record.error and record.error != INTERRUPTED else None
        err = Interrupted(f"run {record.run_id} was interrupted{where}"
                          + (f" ({said})" if said else ""))
        err.run_record = record  # type: ignore[attr-defined]
        raise err from None
    if isinstance(exc, HarnessError) and not isinstance(exc, (StepFailed, GateFailed)):
        err = StepFailed(record.failed_step or "setup", str(exc))
        err.run_record = record  # type: ignore[attr-defined]
        raise err from exc
    if isinstance(exc, HarnessError):
        exc.run_record = record  # type: ignore[attr-defined]
        raise exc
    if isinstance(exc, Exception):
        # an error inside a step (the user's script, a library): the step failed; its
        # traceback is in the step's log, not on the console
        step = record.failed_step or "setup"
        err = StepFailed(step, f"{type(exc).__name__}: {exc}",
                         hint=f"the traceback is in the step's log: harness show "
                         f"{record.run_id} --step {step}")
        err.run_record = record  # type: ignore[attr-defined]
        raise err from exc
    raise exc


class LocalExecutor:
    """One local run of a workflow (see the module doc)."""

    def __init__(self, wf, cfg: PipelineConfig, *, progress: Progress | None = None,
                 announce: Callable[[str], None] = print,
                 on_step: Callable[[StepRecord], None] | None = None,
                 config_file: str | None = None):
        self.wf = wf
        self.cfg = cfg
        self.store = RunStore(cfg.runs_path())
        self.recorder = RunRecorder(cfg, self.store, progress=progress, announce=announce,
                                    on_step=on_step)
        self.config_file = config_file
        self.record: RunRecord | None = None  # the run being executed (or last executed)

    def _resume_command(self, run_id: str, step: str) -> str:
        """A command that continues this very run: resume reads the run's own stored
        configuration (config.json), so only the runs folder must be named."""
        cmd = "harness run"
        if self.cfg.runs_dir != type(self.cfg).model_fields["runs_dir"].default:
            cmd += f" --runs-dir {shlex.quote(str(self.cfg.runs_path()))}"
        return cmd + f" --resume {run_id} --from {step}"

    def _reused(self, resume: str, from_step: str | None
                ) -> dict[str, tuple[Any, dict[str, Any]]]:
        """{step: (its earlier input, output)} for the steps before the resume point."""
        old = self.store.load(resume)
        if old.status == "RUNNING":
            raise HarnessError(f"run {resume} is still running (another harness process "
                               "holds it); wait for it or stop it first", field="--resume")
        names = [s.state_id for s in self.wf.main_path]
        start = from_step or old.failed_step
        if start is None:
            raise HarnessError(f"run {resume} did not fail; say which step to resume from",
                               field="--from", expected="one of " + ", ".join(names))
        if start not in names:
            raise ConfigError(f"no step named {start!r} on the pipeline's path",
                              field="--from", expected="one of " + ", ".join(names))
        from harness.storage import read_json
        reused: dict[str, tuple[Any, dict[str, Any]]] = {}
        for name in names[:names.index(start)]:
            try:
                rec = old.step(name)
            except KeyError:
                raise HarnessError(f"run {resume} has no step '{name}' (another pipeline?)",
                                   field="--resume") from None
            if rec.status not in ("SUCCEEDED", "REUSED"):
                raise HarnessError(f"cannot resume from '{start}': step '{name}' of run "
                                   f"{resume} has status {rec.status}",
                                   field="--from", expected="a step after the last succeeded one")
            step_dir = self.store.step_dir(resume, name)
            reused[name] = (read_json(step_dir / "input.json"),
                            read_json(step_dir / "output.json"))
        return reused

    def _cache(self) -> StepCache | None:
        names = {s.state_id for s in self.wf.steps}
        unknown = [s for s in self.cfg.cache.skip_steps if s not in names]
        if unknown:
            raise ConfigError(f"no step named {unknown[0]!r} in the pipeline",
                              field="--no-cache-step", expected="one of " + ", ".join(
                                  s.state_id for s in self.wf.steps))
        return StepCache(self.cfg.runs_path(), self.store) if self.cfg.cache.enabled else None

    def _cached_step(self, cache: StepCache, record: RunRecord, step: Step, build,
                     doc: dict[str, Any], resources: contextlib.ExitStack,
                     registry: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Reuse the step from an earlier run whose key matches (its files linked into
        this run), else run it and remember its key (harness.step_cache)."""
        request = resolve(step.request(build), doc, step.state_id)
        extra = step.cache_inputs(request)
        if extra is None:  # not cacheable this time (e.g. the data may be downloaded)
            return self.recorder.run_step(record, step, build, doc, resources, registry,
                                          step.local_runner)
        base = doc[BASE_URI_KEY]
        key = step_key(step.kind, request, base, record.run_id, extra)
        hit = cache.lookup(key)
        if hit is None:
            output = self.recorder.run_step(record, step, build, doc, resources, registry,
                                            step.local_runner)
            cache.remember(key, record.run_id, step.state_id)
            return output
        old_run, old_request, old_output = hit
        old_base = uris.file_uri(self.store.run_dir(old_run))  # LocalSetup.base_uri
        link_reused_files(old_base, base, {step.state_id: (old_request, old_output)},
                          rename=(old_run, record.run_id))
        self.recorder.announce(f"{step.state_id}: cached from run {old_run} (same request, "
                               "inputs and code; --no-cache-step to run it)")
        output = rebased(old_output, old_base, base, old_run, record.run_id)
        return self.recorder.reuse(record, step, (request, output), old_run, resources,
                                   registry)

    def run(self, *, inputs: dict[str, Any] | None = None, run_id: str | None = None,
            resume: str | None = None, from_step: str | None = None) -> RunResult:
        from harness.asl import check_references
        from harness.local_setup import LocalSetup

        wf, cfg = self.wf, self.cfg
        inputs = wf.execution_input.validate(inputs)
        reused: dict[str, tuple[Any, dict[str, Any]]] = {}
        if resume:
            reused = self._reused(resume, from_step)
        elif from_step:
            raise HarnessError("--from needs --resume RUN_ID (the run whose outputs to reuse)",
                               field="--from")
        setup = LocalSetup(cfg)
        setup.check()
        build = wf.build_context("local", setup.images, tags=resource_tags(cfg))
        check_references(wf, build, cloud=False)

        cache = self._cache()  # an unknown --no-cache-step stops here, before any record
        run_id = run_id or new_run_id()
        record = RunRecord(run_id=run_id, backend="local", workflow=wf.name,
                           resumed_from=resume,
                           steps=[StepRecord(s.state_id, s.kind) for s in wf.steps])
        run_dir = self.store.create(record)
        self.record = record
        write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
        (run_dir / "graph.mmd").write_text(wf.render_graph().mermaid)
        base = setup.base_uri(run_id, run_dir)
        doc: dict[str, Any] = {RUN_ID_KEY: run_id, BASE_URI_KEY: base,
                               CODE_URI_KEY: code_uri_of(base), **inputs}
        outputs: dict[str, dict[str, Any]] = {}
        current: str | None = None
        resources = contextlib.ExitStack()
        t_run = time.perf_counter()
        try:
            if reused:
                old_base = setup.base_uri(resume, self.store.run_dir(resume))
                linked = link_reused_files(old_base, doc[BASE_URI_KEY], reused)
                if linked:
                    self.recorder.announce(f"reusing from run {resume}: {', '.join(linked)}")
            code_uris = setup.stage_code(wf.code(), doc[BASE_URI_KEY])
            registry = setup.create([r for s in wf.steps
                                     for r in s.setup_requests(code_uris, build)], run_id)
            step: Step | None = wf.start
            while step is not None:
                current = step.state_id
                if step.state_id in reused:
                    output = self.recorder.reuse(record, step, reused[step.state_id], resume,
                                                 resources, registry)
                elif cache is not None and step.cacheable \
                        and step.state_id not in cfg.cache.skip_steps \
                        and not (resume and step.state_id == from_step):  # asked to run
                    output = self._cached_step(cache, record, step, build, doc, resources,
                                               registry)
                else:
                    output = self.recorder.run_step(record, step, build, doc, resources,
                                                    registry, step.local_runner)
                outputs[step.state_id] = output
                doc[step.result_key] = output
                step = step.next_step if step.state_id in reused else step.after(output)
            current = None
        except BaseException as exc:
            resources.close()
            self.recorder.fail(wf, record, exc, current,
                               lambda at: self._resume_command(run_id, at))
            write_report_safely(run_dir, wf)
            raise_with_record(exc, record)
        self.recorder.finish(record)
        summary = summarize(wf, record, outputs, run_dir, time.perf_counter() - t_run)
        write_json_atomic(run_dir / "summary.json", summary)
        write_report_safely(run_dir, wf)
        return RunResult(record, summary, run_dir, resources, outputs)


class LocalBackend(Backend):
    """``local``: every step's local runner, in this process."""

    name = "local"

    def run(self, wf, cfg: PipelineConfig, *, inputs: dict[str, Any] | None = None,
            run_id: str | None = None, resume: str | None = None,
            from_step: str | None = None, progress: Progress | None = None,
            announce: Callable[[str], None] | None = None,
            on_step: Callable[[StepRecord], None] | None = None,
            config_file: str | None = None, **_: Any) -> RunResult:
        executor = LocalExecutor(wf, cfg, progress=progress,
                                 announce=announce or (lambda m: None),
                                 on_step=on_step, config_file=config_file)
        return executor.run(inputs=inputs, run_id=run_id, resume=resume, from_step=from_step)
