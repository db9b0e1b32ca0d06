"""The pipeline on AWS Step Functions: create/update the state machine, start, stream
events (``HistoryReader``: one execution's events, each once), stop.

The definition is the workflow compiled by ``harness.asl`` (the same requests as the local
runs), with the SageMaker execution role in its requests; the state machine itself runs
as the stack's Step Functions role. Creating is idempotent: an existing machine of the
same name is updated in place and keeps its ARN.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import boto3.session
from botocore.exceptions import ClientError

from cloud_runners import aws
from harness.config import PipelineConfig
from harness.errors import HarnessError

END_STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "PENDING_REDRIVE")
_STATE_EVENTS = ("StateEntered", "StateExited")


def _client(session: boto3.session.Session, cfg: PipelineConfig | None,
            arn: str | None = None, config: Any = None) -> Any:
    if cfg is not None:
        return aws.client(session, "stepfunctions", cfg, config)
    kw: dict[str, Any] = {"config": config} if config is not None else {}
    region = arn.split(":")[3] if arn and arn.count(":") >= 4 else None
    if region:
        kw["region_name"] = region
    return session.client("stepfunctions", **kw)


def find_state_machine(sfn: Any, name: str) -> str | None:
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page.get("stateMachines", []):
            if sm["name"] == name:
                return sm["stateMachineArn"]
    return None


def upsert_state_machine(cfg: PipelineConfig, session: boto3.session.Session, name: str,
                         definition: dict[str, Any], role_arn: str, *,
                         run_id: str = "bootstrap") -> str:
    """Create the state machine ``name`` or update its definition; return its ARN.

    ``role_arn``: the role Step Functions assumes (the SageMaker execution role is already
    in the definition's requests).
    """
    sfn = aws.client(session, "stepfunctions", cfg)
    body = json.dumps(definition)
    arn = find_state_machine(sfn, name)
    if arn is None:
        try:
            return sfn.create_state_machine(name=name, definition=body, roleArn=role_arn,
                                            type="STANDARD",
                                            tags=aws.sfn_tags(cfg, run_id))["stateMachineArn"]
        except ClientError as e:
            if aws.error_code(e) != "StateMachineAlreadyExists":
                raise _error("CreateStateMachine", name, e) from None
            arn = find_state_machine(sfn, name)
    try:
        sfn.update_state_machine(stateMachineArn=arn, definition=body, roleArn=role_arn)
    except ClientError as e:
        raise _error("UpdateStateMachine", name, e) from None
    return arn


def _error(call: str, name: str, e: ClientError) -> HarnessError:
    err = e.response.get("Error", {})
    return HarnessError(f"Step Functions {call} {name} failed: {err.get('Code')}: "
                        f"{err.get('Message')}")


def start_execution(cfg: PipelineConfig, session: boto3.session.Session, arn: str, run_id: str,
                    execution_input: dict[str, Any]) -> str:
    """Start one execution named after the run id; return its ARN."""
    sfn = aws.client(session, "stepfunctions", cfg)
    try:
        return sfn.start_execution(stateMachineArn=arn, name=run_id,
                                   input=json.dumps(execution_input))["executionArn"]
    except ClientError as e:
        if aws.error_code(e) == "ExecutionAlreadyExists":
            raise HarnessError(f"an execution named {run_id} already exists",
                               hint="every run needs a new run id") from None
        raise _error("StartExecution", run_id, e) from None


def _details(event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if key.endswith("EventDetails") and isinstance(value, dict):
            return value
    return {}


class HistoryReader:
    """One execution's history events, read in order, each handed on once.

    Each event: ``{"id", "type", "timestamp" (ISO), "step" (the state it belongs to),
    "duration_s" (on StateExited), "error", "cause" (on failures), "input", "output",
    "parameters" (when the event has them)}``. ``read`` can be called again (while the
    execution runs, or once more after it was stopped) and hands on only what is new.
    """

    def __init__(self, session: boto3.session.Session, execution_arn: str, *,
                 cfg: PipelineConfig | None = None):
        self.sfn = _client(session, cfg, execution_arn)
        self.execution_arn = execution_arn
        self.last_id = 0
        self.current_step: str | None = None
        self.entered: dict[str, float] = {}

    def read(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        kw: dict[str, Any] = {"executionArn": self.execution_arn, "maxResults": 1000,
                              "reverseOrder": False}
        while True:
            page = self.sfn.get_execution_history(**kw)
            for ev in page.get("events", []):
                if ev["id"] <= self.last_id:
                    continue
                self.last_id = ev["id"]
                on_event(self._event(ev))
            if not page.get("nextToken"):
                return
            kw["nextToken"] = page["nextToken"]

    def _event(self, ev: dict[str, Any]) -> dict[str, Any]:
        details = _details(ev)
        ts = ev["timestamp"]
        out: dict[str, Any] = {"id": ev["id"], "type": ev["type"],
                               "timestamp": ts.isoformat() if hasattr(ts, "isoformat")
                               else str(ts)}
        if ev["type"].endswith(_STATE_EVENTS) and "name" in details:
            self.current_step = details["name"]
            if ev["type"].endswith("StateEntered") and hasattr(ts, "timestamp"):
                self.entered[self.current_step] = ts.timestamp()
            elif self.current_step in self.entered and hasattr(ts, "timestamp"):
                out["duration_s"] = round(ts.timestamp() - self.entered[self.current_step], 3)
        out["step"] = None if ev["type"].startswith("Execution") else self.current_step
        if "error" in details or "cause" in details:
            out["error"], out["cause"] = details.get("error"), details.get("cause")
        for key in ("input", "output", "parameters"):
            if isinstance(details.get(key), str):
                out[key] = details[key]
        return out


def stream_events(session: boto3.session.Session, execution_arn: str,
                  on_event: Callable[[dict[str, Any]], None], poll_s: float = 5.0, *,
                  cfg: PipelineConfig | None = None, timeout_s: float | None = None,
                  reader: HistoryReader | None = None) -> dict[str, Any]:
    """Call ``on_event`` for every new history event until the execution ends (the events:
    ``HistoryReader``; pass one to read on after this returns or raises). Returns the final
    ``DescribeExecution`` (JSON-able, ``input``/``output`` parsed).
    """
    reader = reader or HistoryReader(session, execution_arn, cfg=cfg)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        # Read the status first: events written before it ended are then all in the history.
        described = reader.sfn.describe_execution(executionArn=execution_arn)
        reader.read(on_event)
        if described["status"] in END_STATUSES:
            break
        if deadline is not None and time.monotonic() >= deadline:
            raise HarnessError(f"execution {execution_arn} still running after {timeout_s:.0f} s")
        time.sleep(poll_s)
    final = aws.jsonable(described)
    for key in ("input", "output"):
        if isinstance(final.get(key), str):
            try:
                final[key] = json.loads(final[key])
            except ValueError:
                pass
    return final


def execution_arn_for(state_machine_arn: str, name: str) -> str:
    """The ARN an execution named ``name`` of the state machine has (or will have)."""
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def stop_execution(session: boto3.session.Session, execution_arn: str, *,
                   cfg: PipelineConfig | None = None, error: str = "Interrupted",
                   cause: str = "", settle_s: float = 5.0) -> str | None:
    """``StopExecution`` (what the console's Stop button does: Step Functions also stops
    the job a ``.sync`` task was waiting for); the execution's status afterwards, or None
    when there is no such execution. Quick to give up (a Ctrl-C is waiting on it); a
    HarnessError when the call fails."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    sfn = _client(session, cfg, execution_arn,
                  Config(connect_timeout=3, read_timeout=10, retries={"total_max_attempts": 2}))
    try:
        sfn.stop_execution(executionArn=execution_arn, error=error[:256], cause=cause[:32768])
        deadline = time.monotonic() + settle_s
        while True:  # AWS answers ABORTED at once; the emulator once its worker has seen it
            status = sfn.describe_execution(executionArn=execution_arn)["status"]
            if status != "RUNNING" or time.monotonic() >= deadline:
                return status
            time.sleep(0.1)
    except ClientError as e:
        if aws.error_code(e) == "ExecutionDoesNotExist":
            return None
        raise _error("StopExecution", execution_arn, e) from None
    except BotoCoreError as e:
        raise HarnessError(f"Step Functions StopExecution {execution_arn} failed: {e}") from None


def console_url(region: str, execution_arn: str) -> str:
    """The Step Functions console page of one execution."""
    return (f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            f"#/v2/executions/details/{execution_arn}")
