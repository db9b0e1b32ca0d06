"""The local executor: walks the pipeline's steps, records every step, applies the gate.

Failures leave a record naming the step and the reason, and the command that resumes
from that step. A resumed run is a new run that reuses the earlier run's outputs for
the steps before the resume point; the earlier run is only read, never written.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.backends import check_backend, runner_for, setup_for
from harness.config import PipelineConfig
from harness.errors import GateFailed, HarnessError, StepFailed
from harness.pipeline import GATE, STEPS, BuildContext, get_step
from harness.progress import NullProgress, Progress
from harness.requests import Names
from harness.runs import RunRecord, RunStore, StepRecord, new_run_id, now_iso
from harness.stages import StageContext
from harness.storage import write_json_atomic


@dataclass
class RunResult:
    record: RunRecord
    summary: dict[str, Any]
    run_dir: Path
    resources: contextlib.ExitStack

    def close(self) -> None:
        """Stop what the run left serving (the endpoint)."""
        self.resources.close()


def _step_logger(run_id: str, step: str, path: Path) -> logging.Logger:
    logger = logging.getLogger(f"harness.run.{run_id}.{step}")
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


class LocalExecutor:
    """Runs the pipeline in this process with the runners of ``cfg.backend``."""

    def __init__(self, cfg: PipelineConfig, *, progress: Progress | None = None,
                 announce: Callable[[str], None] = print,
                 on_step: Callable[[StepRecord], None] | None = None,
                 config_file: str | None = None):
        self.cfg = cfg
        self.store = RunStore(cfg.runs_path())
        self.progress = progress or NullProgress()
        self.announce = announce
        self.on_step = on_step or (lambda rec: None)
        self.config_file = config_file
        self.record: RunRecord | None = None  # the run being executed (or last executed)

    # ----------------------------------------------------------------- helpers
    def _resume_command(self, run_id: str, step: str) -> str:
        cmd = "harness run"
        if self.config_file:
            cmd += f" --config {self.config_file}"
        return cmd + f" --resume {run_id} --from {step}"

    def _reused_outputs(self, resume: str, from_step: str | None
                        ) -> tuple[str, dict[str, dict[str, Any]]]:
        old = self.store.load(resume)
        start = from_step or old.failed_step
        if start is None:
            raise HarnessError(f"run {resume} did not fail; say which step to resume from",
                               field="--from", expected="one of " + ", ".join(s.name for s in STEPS))
        get_step(start)
        outputs: dict[str, dict[str, Any]] = {}
        for step in STEPS:
            if step.name == start:
                break
            rec = old.step(step.name)
            if rec.status not in ("SUCCEEDED", "REUSED"):
                raise HarnessError(f"cannot resume from '{start}': step '{step.name}' of run "
                                   f"{resume} has status {rec.status}",
                                   field="--from", expected="a step after the last succeeded one")
            outputs[step.name] = self.store.step_output(resume, step.name)
        return start, outputs

    # --------------------------------------------------------------------- run
    def run(self, *, run_id: str | None = None, resume: str | None = None,
            from_step: str | None = None) -> RunResult:
        cfg = self.cfg
        check_backend(cfg.backend)
        reused: dict[str, dict[str, Any]] = {}
        start = None
        if resume:
            start, reused = self._reused_outputs(resume, from_step)
        elif from_step:
            raise HarnessError("--from needs --resume RUN_ID (the run whose outputs to reuse)",
                               field="--from")

        setup = setup_for(cfg.backend, cfg)
        setup.check()
        run_id = run_id or new_run_id()
        record = RunRecord(run_id=run_id, backend=cfg.backend, resumed_from=resume,
                           steps=[StepRecord(s.name, s.kind) for s in STEPS])
        run_dir = self.store.create(record)
        self.record = record
        write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
        layout = setup.layout(run_id, run_dir)
        build = BuildContext(cfg=cfg, layout=layout, names=Names(cfg, run_id),
                             images=setup.images, role=setup.role)
        resources = contextlib.ExitStack()
        t_run = time.perf_counter()
        try:
            glue_jobs = setup.stage_code(layout)
            for step in STEPS:
                rec = record.step(step.name)
                if step.name in reused:
                    build.outputs[step.name] = reused[step.name]
                    rec.status, rec.reused_from = "REUSED", resume
                    step_dir = self.store.step_dir(run_id, step.name)
                    write_json_atomic(step_dir / "output.json", reused[step.name])
                    rec.output = str(Path("steps", step.name, "output.json"))
                    self.store.save(record)
                    self.on_step(rec)
                    continue
                output = self._run_step(record, rec, step, build, glue_jobs, resources)
                build.outputs[step.name] = output
                if step.name == GATE.step:
                    passed, message = GATE.check(output)
                    self.announce(message)
                    if not passed:
                        raise GateFailed(message + "; nothing was deployed")
            self._check_parity(build.outputs)
        except BaseException as exc:
            resources.close()
            failed = next((s for s in record.steps if s.status == "RUNNING"), None)
            if failed is None and isinstance(exc, GateFailed):
                failed = record.step(GATE.step)
            record.status = "FAILED"
            record.ended = now_iso()
            record.error = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
            if failed is not None:
                if failed.status == "RUNNING":
                    failed.status = "FAILED"
                    failed.ended = now_iso()
                    failed.error = record.error
                record.failed_step = failed.name
                # Below the gate, evaluating the same model again changes nothing:
                # resume by training again (e.g. with other hyperparameters).
                resume_at = "train" if isinstance(exc, GateFailed) else failed.name
                record.resume_command = self._resume_command(run_id, resume_at)
            self.store.save(record)
            if isinstance(exc, HarnessError) and not isinstance(exc, (StepFailed, GateFailed)):
                raise StepFailed(record.failed_step or "setup", str(exc)) from exc
            raise
        record.status = "SUCCEEDED"
        record.ended = now_iso()
        self.store.save(record)
        summary = self._summary(record, build.outputs, run_dir, time.perf_counter() - t_run)
        write_json_atomic(run_dir / "summary.json", summary)
        return RunResult(record, summary, run_dir, resources)

    def _run_step(self, record: RunRecord, rec: StepRecord, step, build: BuildContext,
                  glue_jobs, resources: contextlib.ExitStack) -> dict[str, Any]:
        step_dir = self.store.step_dir(record.run_id, step.name)
        step_dir.mkdir(parents=True, exist_ok=True)
        request = step.build(build)
        write_json_atomic(step_dir / "input.json", request)
        rec.input = str(Path("steps", step.name, "input.json"))
        rec.log = str(Path("steps", step.name, "log.txt"))
        rec.status, rec.started = "RUNNING", now_iso()
        self.store.save(record)
        self.on_step(rec)
        logger = _step_logger(record.run_id, step.name, step_dir / "log.txt")

        def announce(msg: str) -> None:
            logger.info(msg)
            self.announce(msg)

        ctx = StageContext(run_id=record.run_id, step=step.name, config=self.cfg, log=logger,
                           progress=self.progress, resources=resources, announce=announce,
                           glue_jobs=glue_jobs)
        t0 = time.perf_counter()
        try:
            output = runner_for(self.cfg.backend, step.kind).run(request, ctx)
        except BaseException:
            logger.exception("step %s failed", step.name)
            rec.duration_s = round(time.perf_counter() - t0, 3)
            raise
        finally:
            _close_logger(logger)
        rec.duration_s = round(time.perf_counter() - t0, 3)
        write_json_atomic(step_dir / "output.json", output)
        rec.output = str(Path("steps", step.name, "output.json"))
        rec.status, rec.ended = "SUCCEEDED", now_iso()
        self.store.save(record)
        self.on_step(rec)
        return output

    @staticmethod
    def _check_parity(outputs: dict[str, dict[str, Any]]) -> None:
        """The endpoint must give the evaluate step's accuracy on the same data."""
        if "infer" in outputs and "evaluate" in outputs:
            via_endpoint = outputs["infer"]["Accuracy"]
            in_process = outputs["evaluate"]["Metrics"]["accuracy"]
            if abs(via_endpoint - in_process) > 1e-9:
                raise StepFailed("infer", f"accuracy through the endpoint ({via_endpoint:.6f}) "
                                 f"differs from the evaluate step's ({in_process:.6f}) on the "
                                 "same test split")

    def _summary(self, record: RunRecord, outputs: dict[str, dict[str, Any]], run_dir: Path,
                 wall_s: float) -> dict[str, Any]:
        prep, etl, train = outputs["prepare"], outputs["etl"], outputs["train"]
        ev, dep, inf = outputs["evaluate"], outputs["deploy"], outputs["infer"]
        return {
            "run_id": record.run_id,
            "status": record.status,
            "backend": record.backend,
            "resumed_from": record.resumed_from,
            "run_dir": str(run_dir),
            "data_source": f"{prep['Source']} ({prep['SourceLocation']})",
            "counts": prep["Counts"],
            "artifacts": {
                "raw": prep["RawUri"],
                "processed": etl["OutputUri"],
                "model": train["ModelArtifacts"]["S3ModelArtifacts"],
                "evaluation": ev["EvaluationUri"],
                "confusion_matrix_plot": ev.get("PlotUri"),
                "predictions": inf["PredictionsUri"],
            },
            "test_accuracy": ev["Metrics"]["accuracy"],
            "endpoint_accuracy": inf["Accuracy"],
            "final_metrics": {m["MetricName"]: m["Value"] for m in train["FinalMetricDataList"]},
            "endpoint": dep["EndpointName"],
            "endpoint_url": dep.get("EndpointUrl"),
            "step_seconds": {s.name: s.duration_s for s in record.steps},
            "wall_seconds": round(wall_s, 3),
        }
