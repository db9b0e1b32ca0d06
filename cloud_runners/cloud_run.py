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
the state machine) plus ``execution.json`` (the execution and all its events).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cloud_runners import aws
from cloud_runners.preflight import preflight
from cloud_runners.setup import CloudSetup
from cloud_runners.stepfunctions import (
    console_url,
    start_execution,
    stream_events,
    upsert_state_machine,
)
from harness.asl import execution_input, state_to_step
from harness.backends import Backend
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError, StepFailed
from harness.executor import RunRecorder, RunResult, raise_with_record, summarize
from harness.placeholders import BASE_URI_KEY
from harness.runs import RunRecord, RunStore, StepRecord, new_run_id, now_iso
from harness.stages import GLUE_JOBS
from harness.storage import write_json_atomic
from harness.tags import resource_tags


def build_context(wf, cfg: PipelineConfig, setup: CloudSetup, run_id: str | None = None):
    return wf.build_context(cfg.backend if cfg.backend != "local" else "cloud", setup.images,
                            role=setup.role, roles=setup.roles,
                            tags=resource_tags(cfg, run_id),
                            poll_seconds=cfg.cloud.poll_seconds)


def deploy_workflow(wf, cfg: PipelineConfig, setup: CloudSetup, run_id: str
                    ) -> tuple[dict[str, str], str]:
    """Upload the code under the run's prefix, create or update the Glue jobs and the
    state machine (idempotent); return ({Glue job: created|updated}, state machine ARN)."""
    ctx = build_context(wf, cfg, setup, run_id)
    code_uris = setup.stage_code(wf.code(), setup.base_uri(run_id))
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


@dataclass
class _History:
    """Step records from an execution's events (what the Step Functions console shows)."""

    wf: Any
    record: RunRecord
    recorder: RunRecorder
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.owner = state_to_step(self.wf)
        self.current: str | None = None

    def _finish(self, name: str | None, status: str, when: str) -> None:
        if name is None:
            return
        rec = self.record.step(name)
        if rec.status == "RUNNING":
            rec.status, rec.ended = status, when
            rec.duration_s = _seconds(rec.started, when)
            self._write_log(name)
            self.recorder.save(self.record, rec)

    def _write_log(self, name: str) -> None:
        rec = self.record.step(name)
        path = self.recorder.store.step_dir(self.record.run_id, name) / "log.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.logs.get(name, [])) + "\n")
        rec.log = f"steps/{name}/log.txt"

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        step = self.owner.get(event.get("step") or "")
        when = event["timestamp"]
        if step is not None:
            line = f"{when} {event['type']} {event.get('step')}"
            if event.get("cause"):
                line += f": {event.get('error')}: {event['cause']}"
            self.logs.setdefault(step, []).append(line)
        if step is not None and step != self.current and event["type"].endswith("Entered"):
            self._finish(self.current, "SUCCEEDED", when)
            self.current = step
            rec = self.record.step(step)
            rec.status, rec.started = "RUNNING", when
            self.recorder.save(self.record, rec)
        if step is None:
            return
        step_dir = self.recorder.store.step_dir(self.record.run_id, step)
        if event["type"] == "TaskScheduled" and event.get("parameters") \
                and not self.record.step(step).input:
            write_json_atomic(step_dir / "input.json", _json(event["parameters"]))
            self.record.step(step).input = f"steps/{step}/input.json"
        if event["type"].endswith("StateExited") and event.get("output"):
            key = self.wf.step(step).result_key
            out = _json(event["output"])
            if isinstance(out, dict) and key in out:
                write_json_atomic(step_dir / "output.json", out[key])
                self.record.step(step).output = f"steps/{step}/output.json"

    def end(self, status: str, error: str | None) -> None:
        when = now_iso()
        if status == "SUCCEEDED":
            self._finish(self.current, "SUCCEEDED", when)
        elif self.current is not None:
            rec = self.record.step(self.current)
            if rec.status == "RUNNING":
                rec.error = error
            self._finish(self.current, "FAILED", when)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _seconds(start: str | None, end: str | None) -> float | None:
    import datetime as dt

    try:
        a, b = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    except (TypeError, ValueError):
        return None
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return round((b - a).total_seconds(), 3)


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

        try:
            on_client(wf.before_steps())
            jobs, arn = deploy_workflow(wf, cfg, setup, run_id)
            say(f"code uploaded to {doc[BASE_URI_KEY]}/code; "
                + "".join(f"Glue job {n} {a}; " for n, a in jobs.items())
                + f"state machine {arn}")
            doc = execution_input(wf, run_id=run_id, bucket=setup.bucket,
                                  prefix=setup.run_prefix(run_id), inputs=inputs,
                                  before={s.state_id: outputs[s.state_id]
                                          for s in wf.before_steps()})
            execution_arn = start_execution(cfg, session, arn, run_id, doc)
            execution.update(state_machine=arn, execution=execution_arn, input=doc)
            write_json_atomic(run_dir / "execution.json", execution)
            say(f"execution {run_id}: {console_url(aws.region(cfg, session), execution_arn)}")
            history = _History(wf, record, recorder, execution["events"])

            def on_event(event: dict[str, Any]) -> None:
                history.on_event(event)
                took = f" ({event['duration_s']:.0f} s)" if event.get("duration_s") else ""
                say(f"  {event['timestamp']}  {event['type']:<28} "
                    f"{event.get('step') or ''}{took}")

            final = stream_events(session, execution_arn, on_event,
                                  poll_s=cfg.cloud.poll_seconds, cfg=cfg)
            execution.update(status=final["status"], error=final.get("error"),
                             cause=final.get("cause"), output=final.get("output"))
            write_json_atomic(run_dir / "execution.json", execution)
            history.end(final["status"], f"{final.get('error')}: {final.get('cause')}")
            if final["status"] != "SUCCEEDED":
                current = history.current
                raise StepFailed(current or "execution",
                                 f"execution {final['status']} at step '{current}': "
                                 f"{final.get('error') or ''}: {final.get('cause') or ''}")
            if isinstance(final.get("output"), dict):
                doc = final["output"]
            for s in wf.machine_steps():
                if s.result_key in doc:
                    outputs[s.state_id] = doc[s.result_key]
            on_client(wf.after_steps())
        except BaseException as exc:
            resources.close()
            recorder.fail(wf, record, exc, current, None)
            execution.update(status=execution.get("status") if execution.get("status")
                             not in ("RUNNING", "SUCCEEDED") else "FAILED",
                             error=execution.get("error") or (
                                 exc.message if isinstance(exc, HarnessError) else str(exc)))
            write_json_atomic(run_dir / "execution.json", execution)
            raise_with_record(exc, record)
        record.status = "SUCCEEDED"
        record.ended = now_iso()
        store.save(record)
        summary = summarize(wf, record, outputs, run_dir, time.perf_counter() - t_run)
        write_json_atomic(run_dir / "summary.json", summary)
        return RunResult(record, summary, run_dir, resources, outputs)
