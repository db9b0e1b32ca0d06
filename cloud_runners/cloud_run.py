"""The ``cloud`` backend (`make cloud-run`, `harness run --backend cloud`): a workflow on AWS.

Preflight (credentials, region, the stack; what the run creates and costs; nothing is
created) -> the steps that run on the client before the execution (e.g. obtain the data
and upload it), with their cloud runners -> the code the steps run uploaded under the
run's prefix, the Glue jobs and the state machine created or updated -> one Step
Functions execution, its events streamed -> the steps that run on the client after it
(e.g. the test split through the endpoint). Which step runs where is the step kinds'
business; this module knows no step by name.

The run's record is the one every backend keeps (``record.json``: each step's status,
timings, input, output and log, read from the execution's history for the steps inside
the state machine: ``cloud_runners.execution_history``) plus ``execution.json`` (the
execution and all its events). When the execution fails, the failed step's error is its
job's own reason, and the failure names it.

Ctrl-C (or SIGTERM, which the CLI turns into one) while the execution runs stops it
(StopExecution, on AWS as on the emulator: nothing would follow it any more, and a run
left going on AWS goes on costing), says so, records its last events, and the run is
INTERRUPTED at the step that was running.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable

from cloud_runners import aws
from cloud_runners.execution_history import ExecutionHistory
from cloud_runners.preflight import preflight
from cloud_runners.report_artifacts import fetch_report_artifacts_safely
from cloud_runners.setup import CloudSetup
from cloud_runners.stepfunctions import (
    HistoryReader,
    console_url,
    execution_arn_for,
    start_execution,
    stop_execution,
    stream_events,
    upsert_state_machine,
)
from harness.asl import execution_input
from harness.backends import Backend
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError, StepFailed
from harness.executor import RunRecorder, RunResult, raise_with_record, summarize
from harness.placeholders import CODE_URI_KEY
from harness.report import write_report_safely
from harness.runs import RunRecord, RunStore, StepRecord, new_run_id
from harness.stages import GLUE_JOBS
from harness.storage import write_json_atomic
from harness.tags import resource_tags


def build_context(wf, cfg: PipelineConfig, setup: CloudSetup, run_id: str | None = None):
    return wf.build_context(cfg.backend if cfg.backend != "local" else "cloud", setup.images,
                            role=setup.role, roles=setup.roles,
                            tags=resource_tags(cfg, run_id),
                            poll_seconds=cfg.cloud.poll_seconds)


def deploy_workflow(wf, cfg: PipelineConfig, setup: CloudSetup, run_id: str, *,
                    reuse: bool = False) -> tuple[dict[str, str], str]:
    """Upload the code under the run's prefix (with ``reuse``: unless an earlier run
    uploaded the same code, ``setup.code_uri``), create or update the Glue jobs and the
    state machine (idempotent); return ({Glue job: created|updated}, state machine ARN)."""
    ctx = build_context(wf, cfg, setup, run_id)
    code_uris = setup.stage_code(wf.code(), setup.base_uri(run_id), reuse=reuse)
    registry = setup.create([r for s in wf.steps for r in s.setup_requests(code_uris, ctx)],
                            run_id)
    jobs = {name: body["_action"] for name, body in registry.get(GLUE_JOBS, {}).items()}
    arn = upsert_state_machine(cfg, setup.session, aws.state_machine_name(cfg, wf.name),
                               wf.definition(ctx), setup.outputs["StepFunctionsRoleArn"],
                               run_id=run_id)
    return jobs, arn


def create_workflow(wf, cfg: PipelineConfig, *, session=None, run_id: str = "bootstrap") -> str:
    """``Workflow.create()``: the state machine (and the Glue jobs) on AWS; its ARN."""
    setup = CloudSetup(cfg, session=session)
    setup.check()
    return deploy_workflow(wf, cfg, setup, run_id)[1]


class CloudBackend(Backend):
    """``cloud``: the compiled state machine on AWS Step Functions (see the module doc).
    The emulator backend runs this very class against the embedded emulator."""

    name = "cloud"

    def run(self, wf, cfg: PipelineConfig, *, inputs: dict[str, Any] | None = None,
            run_id: str | None = None, resume: str | None = None,
            from_step: str | None = None, progress: Any = None,
            announce: Callable[[str], None] | None = None,
            on_step: Callable[[StepRecord], None] | None = None, session: Any = None,
            **_: Any) -> RunResult:
        if resume or from_step:
            raise ConfigError("--resume and --from apply to the local backend only",
                              field="--backend", expected="local")
        say = announce or (lambda m: None)
        if cfg.backend not in ("cloud", "emulator"):
            cfg = cfg.model_copy(deep=True)
            cfg.backend = "cloud"
        inputs = wf.execution_input.validate(inputs)
        session = session or aws.session_for(cfg)
        run_id = run_id or new_run_id()
        report = preflight(cfg, session, wf, run_id)  # creates nothing
        say(f"preflight ok: account {report.account}, region {report.region}, stack "
            f"{report.stack}, bucket {report.bucket}; {report.cost.summary()}")

        store = RunStore(cfg.runs_path())
        record = RunRecord(run_id=run_id, backend=cfg.backend, workflow=wf.name,
                           steps=[StepRecord(s.state_id, s.kind) for s in wf.steps])
        run_dir = store.create(record)
        write_json_atomic(run_dir / "config.json", cfg.model_dump(mode="json"))
        (run_dir / "graph.mmd").write_text(wf.render_graph().mermaid)
        recorder = RunRecorder(cfg, store, progress=progress, announce=say, on_step=on_step)
        execution: dict[str, Any] = {"run_id": run_id, "backend": cfg.backend,
                                     "status": "RUNNING", "started": record.started,
                                     "events": []}
        write_json_atomic(run_dir / "execution.json", execution)
        setup = CloudSetup(cfg, session=session)
        ctx = build_context(wf, cfg, setup, run_id)
        doc: dict[str, Any] = execution_input(
            wf, run_id=run_id, bucket=setup.bucket, prefix=setup.run_prefix(run_id),
            inputs=inputs, before={s.state_id: {} for s in wf.before_steps()})
        outputs: dict[str, dict[str, Any]] = {}
        resources = contextlib.ExitStack()
        current: str | None = None
        t_run = time.perf_counter()
        def on_client(steps) -> None:
            """Run client-side steps with their cloud runners against ``doc``."""
            nonlocal current
            for step in steps:
                current = step.state_id
                outputs[step.state_id] = recorder.run_step(
                    record, step, ctx, doc, resources, {}, step.cloud_runner)
                doc[step.result_key] = outputs[step.state_id]
            current = None

        history = ExecutionHistory(wf, record, recorder, execution["events"])
        state_machine: str | None = None
        execution_arn: str | None = None
        reader: HistoryReader | None = None
        final: dict[str, Any] | None = None

        def on_event(event: dict[str, Any]) -> None:
            history.on_event(event)
            took = f" ({event['duration_s']:.0f} s)" if event.get("duration_s") else ""
            say(f"  {event['timestamp']}  {event['type']:<28} "
                f"{event.get('step') or ''}{took}")

        try:
            on_client(wf.before_steps())
            jobs, state_machine = deploy_workflow(wf, cfg, setup, run_id, reuse=True)
            say((setup.code_skipped or f"code uploaded to {setup.code_uri}") + "; "
                + "".join(f"Glue job {n} {a}; " for n, a in jobs.items())
                + f"state machine {state_machine}")
            doc = execution_input(wf, run_id=run_id, bucket=setup.bucket,
                                  prefix=setup.run_prefix(run_id), inputs=inputs,
                                  before={s.state_id: outputs[s.state_id]
                                          for s in wf.before_steps()})
            doc[CODE_URI_KEY] = setup.code_uri
            execution_arn = start_execution(cfg, session, state_machine, run_id, doc)
            execution.update(state_machine=state_machine, execution=execution_arn, input=doc)
            write_json_atomic(run_dir / "execution.json", execution)
            say(f"execution {run_id}: {console_url(aws.region(cfg, session), execution_arn)}")
            reader = HistoryReader(session, execution_arn, cfg=cfg)
            final = stream_events(session, execution_arn, on_event,
                                  poll_s=cfg.cloud.poll_seconds, cfg=cfg, reader=reader)
            execution.update(status=final["status"], error=final.get("error"),
                             cause=final.get("cause"), output=final.get("output"))
            write_json_atomic(run_dir / "execution.json", execution)
            reason = history.end(final)
            if final["status"] != "SUCCEEDED":
                current = history.current
                raise StepFailed(current or "execution",
                                 f"execution {final['status']} at step '{current}': {reason}",
                                 hint=f"the step's events and the whole cause: harness show "
                                 f"{run_id} --step {current}" if current else None)
            if isinstance(final.get("output"), dict):
                doc = final["output"]
            for s in wf.machine_steps():
                if s.result_key in doc:
                    outputs[s.state_id] = doc[s.result_key]
            on_client(wf.after_steps())
        except BaseException as exc:
            resources.close()
            if isinstance(exc, KeyboardInterrupt) and state_machine is not None \
                    and final is None:
                _stop_interrupted(session, cfg, record, execution,
                                  execution_arn or execution_arn_for(state_machine, run_id),
                                  reader, on_event, history, say)
            recorder.fail(wf, record, exc, current, None)
            execution.update(status=execution.get("status") if execution.get("status")
                             not in ("RUNNING", "SUCCEEDED") else "FAILED",
                             error=execution.get("error") or (
                                 exc.message if isinstance(exc, HarnessError) else str(exc)))
            write_json_atomic(run_dir / "execution.json", execution)
            _write_report(run_dir, wf, session, cfg, say)
            raise_with_record(exc, record)
        recorder.finish(record)
        summary = summarize(wf, record, outputs, run_dir, time.perf_counter() - t_run)
        write_json_atomic(run_dir / "summary.json", summary)
        _write_report(run_dir, wf, session, cfg, say)
        return RunResult(record, summary, run_dir, resources, outputs)


def _write_report(run_dir: Path, wf: Any, session: Any, cfg: PipelineConfig,
                  say: Callable[[str], None]) -> None:
    """The run's report, after copying the files it draws from S3 into the run folder."""
    try:
        s3 = aws.client(session, "s3", cfg)
    except Exception as e:  # noqa: BLE001 -- the report then lists what is missing
        say(f"the report's files could not be copied from S3: {e}")
    else:
        fetch_report_artifacts_safely(s3, run_dir, say)
    write_report_safely(run_dir, wf)


def _stop_interrupted(session: Any, cfg: PipelineConfig, record: RunRecord,
                      execution: dict[str, Any], execution_arn: str,
                      reader: HistoryReader | None, on_event: Callable[[dict[str, Any]], None],
                      history: ExecutionHistory, say: Callable[[str], None]) -> None:
    """Ctrl-C (or SIGTERM) while the execution runs: nobody will follow it any more, so it
    is stopped -- on AWS too, where a run left behind would go on costing (its training
    job, its endpoint) with no record following it. Its last events go into the record;
    the recorder then marks the running step and the run INTERRUPTED."""
    run_id = record.run_id
    where = "the emulator" if cfg.backend == "emulator" else "AWS"
    say(f"interrupted: stopping execution {run_id} on {where} (StopExecution)")
    try:
        status = stop_execution(session, execution_arn, cfg=cfg, error="Interrupted",
                                cause=f"run {run_id} was interrupted on the client "
                                "(Ctrl-C or a termination signal)")
    except HarnessError as e:
        url = console_url(aws.region(cfg, session), execution_arn)
        say(f"could not stop execution {run_id}: {e.message} It may still be running: {url}")
        record.error = (f"interrupted (Ctrl-C or a termination signal); stopping execution "
                        f"{execution_arn} failed, it may still be running")
        execution.update(status="UNKNOWN", error=record.error)
        return
    if status is None:
        say(f"execution {run_id} had not started; nothing to stop")
        return
    try:
        (reader or HistoryReader(session, execution_arn, cfg=cfg)).read(on_event)
    except Exception as e:  # noqa: BLE001 -- the record keeps what was read before
        say(f"the last events of execution {run_id} could not be read: {e}")
    history.interrupted()
    state = "stopped" if status != "RUNNING" else "stopping (StopExecution accepted)"
    if cfg.backend == "emulator":
        say(f"execution {run_id} {state} ({status}); the job of the step that was running "
            "stops with the emulator")
    else:
        say(f"execution {run_id} {state} ({status}); Step Functions stops the job of the "
            "step that was running; what the run created before stays (harness cloud "
            "teardown removes it)")
    record.error = f"interrupted (Ctrl-C or a termination signal); execution {status}"
    execution.update(execution=execution_arn, status=status, error="Interrupted",
                     cause=f"run {run_id} was interrupted on the client")
