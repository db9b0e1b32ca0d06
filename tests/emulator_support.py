"""Helpers shared by the emulator tests: create a state machine, run it to the end."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

ROLE = "arn:aws:iam::123456789012:role/mlharness-states"


def run_to_end(emu, definition: dict[str, Any], inp: dict[str, Any] | None = None,
               timeout_s: float = 30.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Create ``definition``, start one execution, wait for its end; (describe, history)."""
    sfn = emu.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"sm-{uuid.uuid4().hex[:12]}",
                                   definition=json.dumps(definition),
                                   roleArn=ROLE)["stateMachineArn"]
    ex = sfn.start_execution(stateMachineArn=arn, input=json.dumps(inp or {}))["executionArn"]
    deadline = time.monotonic() + timeout_s
    while True:
        described = sfn.describe_execution(executionArn=ex)
        if described["status"] != "RUNNING":
            break
        assert time.monotonic() < deadline, f"execution still RUNNING after {timeout_s} s"
        time.sleep(0.1)
    history = sfn.get_execution_history(executionArn=ex, maxResults=1000)["events"]
    return described, history


def failures(history: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["type"], next((v for k, v in e.items() if k.endswith("EventDetails")), {}))
            for e in history if "Fail" in e["type"]]
