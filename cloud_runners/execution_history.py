"""A run's step records from its Step Functions execution's history (what the console shows).

``ExecutionHistory.on_event`` takes the execution's events in order (the shape of
``cloud_runners.stepfunctions.HistoryReader``) and keeps ``record.json`` up to date: the
step each state belongs to becomes RUNNING when it is entered and SUCCEEDED when the next
step starts; its input (the task's parameters), output and a log of its events are written
under ``steps/<step>/``. When the execution ends (``end``) the step that was running gets
the execution's outcome; a failed step's error is the one of its own failure event, with
the job's reason taken out of the describe response AWS puts in the cause (the whole
cause stays in the step's log and in ``execution.json``). When the run is interrupted
(``interrupted``) the running step keeps RUNNING for the recorder to mark INTERRUPTED, and
its log is written.

Only the events of the run's own execution reach it: the reader follows one execution ARN,
the execution is named after the run id, and the steps are the workflow's.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any

from harness.asl import state_to_step
from harness.executor import RunRecorder
from harness.runs import RunRecord, now_iso
from harness.storage import write_json_atomic

# Fields of a failed job's describe response (SageMaker, Glue) that hold its reason.
_REASON_FIELDS = ("FailureReason", "ErrorMessage", "errorMessage", "Message", "message")
# "<Error>: <Cause>" as the pipeline's Fail state formats a caught error (harness.asl).
_CAUGHT = re.compile(r"^([A-Za-z][\w.]*): (\{.*\})\s*$", re.S)
REASON_CHARS = 1000


def failure_reason(error: str | None, cause: str | None) -> str:
    """``error: reason`` of a failure event or a failed execution, the reason being the
    job's own message when the cause is a describe response (``FailureReason`` of a
    SageMaker job, ``ErrorMessage`` of a Glue job run), else the cause as it is."""
    text = (cause or "").strip()
    caught = _CAUGHT.match(text)
    if caught:
        error, text = caught.group(1), caught.group(2)
    try:
        described = json.loads(text) if text.startswith("{") else None
    except ValueError:
        described = None
    if isinstance(described, dict):
        reason = next((described[k] for k in _REASON_FIELDS
                       if isinstance(described.get(k), str) and described[k].strip()), None)
        if reason is not None:
            text = reason.strip()
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS] + " ..."
    return ": ".join(p for p in (error, text) if p) or "no error given"


@dataclass
class ExecutionHistory:
    """Step records from one execution's events (see the module doc)."""

    wf: Any
    record: RunRecord
    recorder: RunRecorder
    events: list[dict[str, Any]] = field(default_factory=list)
    logs: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.owner = state_to_step(self.wf)
        self.current: str | None = None
        self.failures: dict[str, str] = {}  # step -> its last failure event, as a reason
        self.last_time: str | None = None

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
        self.last_time = when
        if step is not None:
            line = f"{when} {event['type']} {event.get('step')}"
            if event.get("cause") or event.get("error"):
                line += f": {event.get('error')}: {event.get('cause')}"
                self.failures[step] = failure_reason(event.get("error"), event.get("cause"))
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

    def end(self, final: dict[str, Any]) -> str:
        """The execution ended (``final``: its DescribeExecution): the running step gets its
        outcome; returns the reason of a failure ('' when it succeeded)."""
        when = self.last_time or now_iso()
        if final.get("status") == "SUCCEEDED":
            self._finish(self.current, "SUCCEEDED", when)
            return ""
        if final.get("error") or final.get("cause"):
            reason = failure_reason(final.get("error"), final.get("cause"))
        elif final.get("status") == "ABORTED":
            reason = "the execution was stopped (StopExecution) outside this run"
        else:
            reason = f"the execution ended {final.get('status')}"
        if self.current is not None:
            rec = self.record.step(self.current)
            if rec.status == "RUNNING":
                rec.error = self.failures.get(self.current) or reason
                reason = rec.error
            self._finish(self.current, "FAILED", when)
        return reason

    def interrupted(self) -> None:
        """The run was interrupted: the running step keeps RUNNING (the recorder marks it
        INTERRUPTED) and its log so far is written."""
        if self.current is not None and self.record.step(self.current).status == "RUNNING":
            self._write_log(self.current)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _seconds(start: str | None, end: str | None) -> float | None:
    try:
        a, b = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    except (TypeError, ValueError):
        return None
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return round((b - a).total_seconds(), 3)
