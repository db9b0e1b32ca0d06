"""`make cloud-run` / `harness cloud run`: the pipeline of `make local-run`, on AWS.

Preflight (credentials, region, the stack; what the run creates and costs) -> prepare
on the client and upload the raw data -> upload the code, upsert the Glue job and the
state machine -> start one Step Functions execution and stream its events -> on success
send the test split through the endpoint with ``InvokeEndpoint``. The run's record
(execution ARN, every event, the final status) is kept in ``runs/<run_id>/``.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cloud_runners import aws
from cloud_runners.etl import upsert_glue_job
from cloud_runners.infer import CloudInferRunner
from cloud_runners.plan import cli_plan
from cloud_runners.preflight import preflight, render_report
from cloud_runners.prepare import CloudPrepareRunner
from cloud_runners.setup import CloudSetup
from cloud_runners.stepfunctions import (
    console_url,
    start_execution,
    stream_events,
    upsert_state_machine,
)
from harness.asl import execution_input
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.requests import Names, infer_request, prepare_request
from harness.runs import RunRecord, new_run_id, now_iso
from harness.stages import StageContext
from harness.storage import write_json_atomic


def _context(cfg: PipelineConfig, run_id: str, step: str, log_dir: Path, console
             ) -> StageContext:
    logger = logging.getLogger(f"harness.cloud.{run_id}.{step}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        logger.addHandler(logging.FileHandler(log_dir / f"{step}.log", encoding="utf-8"))
    return StageContext(run_id=run_id, step=step, config=cfg, log=logger,
                        announce=lambda m: console.print(f"[bold magenta]{m}[/]"))


def ensure_pipeline(cfg: PipelineConfig, session, setup: CloudSetup, run_id: str
                    ) -> tuple[str, str]:
    """Upload the code under the run's prefix, create or update the Glue job and the state
    machine (idempotent); return (Glue action, state machine ARN)."""
    layout = setup.layout(run_id)
    glue_jobs = setup.stage_code(layout)
    action = upsert_glue_job(aws.client(session, "glue", cfg), glue_jobs[cfg.etl.job_name],
                             aws.glue_tags(cfg, run_id))
    arn = upsert_state_machine(cfg, session, setup.outputs["StepFunctionsRoleArn"],
                               setup.images, sagemaker_role_arn=setup.role, run_id=run_id)
    return action, arn


def save(run_dir: Path, execution: dict[str, Any]) -> None:
    """``execution.json``: the Step Functions execution and its events; ``record.json``: the
    run record every backend keeps (so `harness runs` / `harness show` list cloud runs)."""
    write_json_atomic(run_dir / "execution.json", execution)
    status = execution.get("status", "RUNNING")
    record = RunRecord(run_id=execution["run_id"], backend="cloud", started=execution["started"],
                       status="SUCCEEDED" if status == "SUCCEEDED" else
                       ("RUNNING" if status == "RUNNING" else "FAILED"),
                       error=": ".join(str(execution[k]) for k in ("error", "cause")
                                       if execution.get(k)) or None,
                       ended=None if status == "RUNNING" else now_iso())
    write_json_atomic(run_dir / "record.json", asdict(record))


def cloud_run(cfg: PipelineConfig, console, *, dry_run: bool = False) -> int:
    if dry_run:
        return cli_plan(cfg, console, as_json=False)
    session = aws.session_for(cfg)
    run_id = new_run_id()
    try:
        report = preflight(cfg, session, run_id)  # creates nothing
    except HarnessError as e:
        console.print(f"[bold red]preflight:[/] {e.message}", soft_wrap=True)
        return e.exit_code
    render_report(report, console)

    run_dir = cfg.runs_path() / run_id
    run_dir.mkdir(parents=True)
    record: dict[str, Any] = {"run_id": run_id, "backend": "cloud", "status": "RUNNING",
                              "started": now_iso(), "events": []}
    save(run_dir, record)
    try:
        setup = CloudSetup(cfg, session=session)
        layout = setup.layout(run_id)
        prepared = CloudPrepareRunner(session).run(
            prepare_request(cfg, layout), _context(cfg, run_id, "prepare", run_dir, console))
        console.print(f"raw data uploaded to {prepared['RawUri']}")
        action, arn = ensure_pipeline(cfg, session, setup, run_id)
        console.print(f"code uploaded to {layout.code}; Glue job {cfg.etl.job_name} {action}; "
                      f"state machine {arn}")
        doc = execution_input(cfg, run_id=run_id, bucket=setup.bucket,
                              prefix=setup.run_prefix(run_id), prepared=prepared,
                              images=setup.images)
        execution = start_execution(cfg, session, arn, run_id, doc)
        record.update(state_machine=arn, execution=execution, input=doc)
        save(run_dir, record)
        console.print(f"execution {run_id}: {console_url(aws.region(cfg, session), execution)}")

        def on_event(event: dict[str, Any]) -> None:
            record["events"].append(event)
            took = f" ({event['duration_s']:.0f} s)" if event.get("duration_s") else ""
            console.print(f"  {event['timestamp']}  {event['type']:<28} "
                          f"{event.get('step') or ''}{took}", highlight=False)
            if event.get("cause"):
                console.print(f"    [red]{event.get('error')}: {event['cause']}[/]")

        final = stream_events(session, execution, on_event, poll_s=cfg.cloud.poll_seconds,
                              cfg=cfg)
        record.update(status=final["status"], error=final.get("error"), cause=final.get("cause"))
        save(run_dir, record)
        if final["status"] != "SUCCEEDED":
            console.print(f"[bold red]execution {final['status']}[/]: "
                          f"{final.get('error', '')} {final.get('cause', '')}", soft_wrap=True)
            return 1
        deployed = {"EndpointName": Names(cfg, run_id).endpoint}
        inferred = CloudInferRunner(session).run(
            infer_request(cfg, layout, deployed),
            _context(cfg, run_id, "infer", run_dir, console))
        record["infer"] = inferred
        save(run_dir, record)
    except HarnessError as e:
        record["status"] = "FAILED"
        record["error"] = e.message
        save(run_dir, record)
        console.print(f"[bold red]cloud run failed:[/] {e.message}", soft_wrap=True)
        return e.exit_code
    console.print(f"[green]endpoint {deployed['EndpointName']}[/] answered "
                  f"{inferred['Count']} test digits: accuracy {inferred['Accuracy']:.4f} "
                  f"({inferred['Requests']} InvokeEndpoint calls). "
                  "It is billed per hour: `harness cloud teardown` removes it.")
    return 0
