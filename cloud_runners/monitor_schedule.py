"""Drift monitoring of a cloud run's endpoint: the monitoring workflow of
``harness.monitor_pipeline``, run once now or started by an EventBridge Scheduler schedule.

The monitored run is found in the runs folder (``harness.monitoring.find_target``: its
endpoint, its capture prefix in S3, its model); its own configuration (``config.json``)
is what a retrain starts with, and its execution input gives the outputs of the
pipeline's client-side steps (the data it uploaded), which the retrain execution reuses.

A schedule (``schedule``) needs a state machine that runs unattended, so its execution
input is fixed when the schedule is made:

- the state machine is ``<stack>-monitor-<run id>`` with the check's code uploaded under
  ``<prefix>/monitor-<run id>/code`` (its *home*, ``BaseUri``);
- each execution has its own ``RunId``, EventBridge Scheduler's
  ``<aws.scheduler.execution-id>``, which names its processing job and its results
  folder ``<home>/monitoring/<RunId>/``;
- the schedule lives in the schedule group named after the stack (tagged for the project:
  ``harness cloud teardown`` deletes the group and its schedules) and starts the state
  machine with the stack's ``SchedulerRole`` (``states:StartExecution`` on the project's
  state machines only).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from cloud_runners import aws
from cloud_runners.stack import TAG_KEY, client_error_code
from harness.asl import execution_input
from harness.config import PipelineConfig, stored_config
from harness.errors import ConfigError, HarnessError
from harness.monitor_pipeline import monitoring_workflow
from harness.monitoring import MonitorTarget, find_target
from harness.runs import RunStore
from harness.storage import read_json
from harness.workflow import Workflow

# EventBridge Scheduler fills it in for every execution it starts (a UUID).
SCHEDULER_EXECUTION_ID = "<aws.scheduler.execution-id>"


def monitored(cfg: PipelineConfig, ref: str) -> tuple[MonitorTarget, PipelineConfig,
                                                      dict[str, Any]]:
    """(the run's endpoint, its configuration, its execution input) of a run made on the
    cloud or emulator backend."""
    store = RunStore(cfg.runs_path())
    target = find_target(store, ref)
    if not target.capture_uri:
        raise HarnessError(f"run {target.run_id}'s endpoint captures no traffic "
                           "(DataCaptureConfig is off)", field="deploy.data_capture_percent",
                           expected="a percentage above 0 for the run being monitored")
    if not (target.capture_uri.startswith("s3://") and target.model_data.startswith("s3://")):
        raise HarnessError(f"run {target.run_id} captured its traffic to {target.capture_uri}: "
                           "the cloud monitor checks what an endpoint on AWS captured",
                           expected="a run of `harness cloud run` (a local run: `harness "
                           f"monitor {target.run_id}`)")
    run_cfg = stored_config(target.run_dir, cfg.runs_path(), {})
    execution = target.run_dir / "execution.json"
    doc = (read_json(execution) or {}).get("input") if execution.is_file() else None
    if not isinstance(doc, dict):
        raise HarnessError(f"run {target.run_id} has no execution input", file=str(execution),
                           expected="the execution.json a cloud run writes")
    return target, run_cfg, doc


def workflow_for(cfg: PipelineConfig, target: MonitorTarget, run_cfg: PipelineConfig,
                 execution: dict[str, Any], *, window_minutes: float = 0,
                 retrain: bool = False) -> Workflow:
    """The monitoring workflow of the run's endpoint (its own state machine)."""
    if not target.endpoint_name:
        raise HarnessError(f"run {target.run_id} has no endpoint name in its records",
                           expected="a run whose endpoint step succeeded")
    return monitoring_workflow(
        cfg, capture_uri=target.capture_uri, model_data=target.model_data,
        endpoint_name=target.endpoint_name, window_minutes=window_minutes,
        retrain=run_cfg if retrain else None, retrain_from=execution,
        name=f"monitor-{target.run_id}")


def static_before(wf: Workflow) -> dict[str, dict[str, Any]]:
    """The client-side steps' outputs of an unattended execution, known without running
    them (``Step.known_output``: an upload of what is already in S3)."""
    out = {}
    for step in wf.before_steps():
        known = step.known_output()
        if known is None:
            raise ConfigError(f"step '{step.state_id}' runs on the client: a schedule cannot "
                              "run it", field=step.state_id,
                              expected="a monitoring workflow whose inputs are in S3")
        out[step.state_id] = known
    return out


def schedule_name(cfg: PipelineConfig, run_id: str) -> str:
    return f"{cfg.cloud.stack_name}-monitor-{run_id}"[:64]


def _ensure_group(scheduler: Any, cfg: PipelineConfig) -> str:
    from botocore.exceptions import ClientError

    group = cfg.cloud.stack_name
    try:
        scheduler.get_schedule_group(Name=group)
    except ClientError as e:
        if client_error_code(e)[0] != "ResourceNotFoundException":
            raise
        scheduler.create_schedule_group(
            Name=group, Tags=[{"Key": TAG_KEY, "Value": cfg.cloud.stack_name}])
    return group


def schedule(cfg: PipelineConfig, session: Any, wf: Workflow, run_id: str, expression: str,
             *, announce: Callable[[str], None] | None = None) -> dict[str, str]:
    """Deploy ``wf``'s state machine (code under its home) and create or update the
    schedule starting it; returns {state_machine, schedule, group, home}."""
    from botocore.exceptions import ClientError

    from cloud_runners.cloud_run import deploy_workflow
    from cloud_runners.setup import CloudSetup

    say = announce or (lambda m: None)
    _check_expression(expression)
    setup = CloudSetup(cfg, session=session)
    setup.check()
    home = f"monitor-{run_id}"
    _, sm_arn = deploy_workflow(wf, cfg, setup, home)
    say(f"state machine {sm_arn} (code under {setup.base_uri(home)}/code)")
    doc = execution_input(wf, run_id=SCHEDULER_EXECUTION_ID, bucket=setup.bucket,
                          prefix=setup.run_prefix(home), before=static_before(wf))
    scheduler = aws.client(session, "scheduler", cfg)
    group = _ensure_group(scheduler, cfg)
    name = schedule_name(cfg, run_id)
    body = {"Name": name, "GroupName": group, "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": "UTC", "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Description": f"drift check of run {run_id}'s endpoint (mlharness)",
            "Target": {"Arn": sm_arn, "RoleArn": setup.outputs["SchedulerRoleArn"],
                       "Input": json.dumps(doc),
                       "RetryPolicy": {"MaximumRetryAttempts": 2}}}
    if expression.startswith("at("):
        body["ActionAfterCompletion"] = "DELETE"
    try:
        scheduler.get_schedule(Name=name, GroupName=group)
        arn = scheduler.update_schedule(**body)["ScheduleArn"]
        say(f"schedule {name} updated: {expression}")
    except ClientError as e:
        if client_error_code(e)[0] != "ResourceNotFoundException":
            raise
        arn = scheduler.create_schedule(**body)["ScheduleArn"]
        say(f"schedule {name} created: {expression}")
    return {"state_machine": sm_arn, "schedule": arn, "group": group,
            "home": setup.base_uri(home)}


def unschedule(cfg: PipelineConfig, session: Any, run_id: str) -> bool:
    """Delete the run's monitoring schedule; whether there was one."""
    from botocore.exceptions import ClientError

    scheduler = aws.client(session, "scheduler", cfg)
    try:
        scheduler.delete_schedule(Name=schedule_name(cfg, run_id),
                                  GroupName=cfg.cloud.stack_name)
    except ClientError as e:
        if client_error_code(e)[0] == "ResourceNotFoundException":
            return False
        raise
    return True


def _check_expression(expression: str) -> None:
    import re
    ok = re.fullmatch(r"rate\(\s*\d+\s+(minute|minutes|hour|hours|day|days)\s*\)"
                      r"|cron\(.+\)|at\(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\)", expression or "")
    if not ok:
        raise ConfigError("not an EventBridge Scheduler expression", field="--schedule",
                          expected="rate(1 hour), cron(0 * * * ? *) or "
                          "at(2026-12-01T15:00:00)", got=expression)
