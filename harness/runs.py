"""Run records on disk: what the Step Functions console shows, kept for local runs.

``runs/<run_id>/record.json`` holds the run and every step's status, timings and error;
``runs/<run_id>/steps/<step>/`` holds ``input.json``, ``output.json`` and ``log.txt``.
Every write goes through a temporary file and a rename.
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.storage import read_json, write_json_atomic


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(2)}"


@dataclass
class StepRecord:
    name: str
    kind: str
    status: str = "PENDING"  # PENDING RUNNING SUCCEEDED FAILED REUSED
    started: str | None = None
    ended: str | None = None
    duration_s: float | None = None
    input: str | None = None
    output: str | None = None
    log: str | None = None
    error: str | None = None
    reused_from: str | None = None


@dataclass
class RunRecord:
    run_id: str
    backend: str
    status: str = "RUNNING"  # RUNNING SUCCEEDED FAILED
    started: str = field(default_factory=now_iso)
    ended: str | None = None
    config: str = "config.json"
    resumed_from: str | None = None
    failed_step: str | None = None
    error: str | None = None
    resume_command: str | None = None
    workflow: str | None = None
    steps: list[StepRecord] = field(default_factory=list)

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        known = set(cls.__dataclass_fields__)
        step_fields = set(StepRecord.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        steps = [StepRecord(**{k: v for k, v in s.items() if k in step_fields})
                 for s in d.pop("steps", [])]
        return cls(**d, steps=steps)


class RunStore:
    """The ``runs/`` folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def create(self, record: RunRecord) -> Path:
        run_dir = self.run_dir(record.run_id)
        run_dir.mkdir(parents=True, exist_ok=False)
        self.save(record)
        return run_dir

    def save(self, record: RunRecord) -> None:
        write_json_atomic(self.run_dir(record.run_id) / "record.json", asdict(record))

    def load(self, run_id: str) -> RunRecord:
        path = self.run_dir(run_id) / "record.json"
        if not path.exists():
            known = ", ".join(self.list_ids()[-5:]) or "none yet"
            raise HarnessError(f"no run with id {run_id!r}", file=str(self.root),
                               expected=f"a run id (latest: {known})")
        return RunRecord.from_dict(read_json(path))

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "record.json").exists())

    def step_dir(self, run_id: str, step: str) -> Path:
        return self.run_dir(run_id) / "steps" / step

    def step_output(self, run_id: str, step: str) -> dict[str, Any]:
        return read_json(self.step_dir(run_id, step) / "output.json")

    def summary(self, run_id: str) -> dict[str, Any] | None:
        path = self.run_dir(run_id) / "summary.json"
        return read_json(path) if path.exists() else None
