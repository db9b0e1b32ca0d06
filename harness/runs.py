"""Run records on disk: what the Step Functions console shows, kept for local runs.

``runs/<run_id>/record.json`` holds the run and every step's status, timings and error;
``runs/<run_id>/steps/<step>/`` holds ``input.json``, ``output.json`` and ``log.txt``.
Every write goes through a temporary file and a rename.

A run is alive while its process holds an exclusive ``flock`` on ``runs/<run_id>/.lock``
(the kernel drops it when the process dies, even by SIGKILL). A record that still says
RUNNING with nobody holding the lock is shown as INTERRUPTED; ``recover`` writes that into
the record and removes the temporary folders the dead process left behind.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import os
import secrets
import shutil
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
    status: str = "PENDING"  # PENDING RUNNING SUCCEEDED FAILED REUSED INTERRUPTED
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
    status: str = "RUNNING"  # RUNNING SUCCEEDED FAILED INTERRUPTED
    started: str = field(default_factory=now_iso)
    ended: str | None = None
    config: str = "config.json"
    resumed_from: str | None = None
    failed_step: str | None = None
    error: str | None = None
    resume_command: str | None = None
    workflow: str | None = None
    steps: list[StepRecord] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        """Wall time from start to end (None while running or when unreadable)."""
        try:
            return (dt.datetime.fromisoformat(self.ended or "")
                    - dt.datetime.fromisoformat(self.started)).total_seconds()
        except (TypeError, ValueError):
            return None

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def mark_interrupted(self, error: str) -> None:
        """The run stopped (signal, Ctrl-C, or its process died): the step that was running
        and the run become INTERRUPTED; ``failed_step`` names where to resume."""
        running = next((s for s in self.steps if s.status == "RUNNING"), None)
        self.status, self.ended = "INTERRUPTED", self.ended or now_iso()
        self.error = self.error or error
        if running is not None:
            running.status, running.ended = "INTERRUPTED", running.ended or self.ended
            running.error = running.error or error
            self.failed_step = running.name
        elif self.failed_step is None:
            pending = next((s for s in self.steps if s.status == "PENDING"), None)
            self.failed_step = pending.name if pending is not None else None

    @classmethod
    def from_dict(cls, d: Any, source: str = "record.json") -> "RunRecord":
        """A record from its JSON; a record that is not one (hand-edited, truncated, from
        another tool) is a HarnessError naming the file and the field."""
        if not isinstance(d, dict):
            raise HarnessError("not a run record", file=source,
                               expected="a JSON object with run_id, backend, status, steps",
                               got=type(d).__name__)
        known = set(cls.__dataclass_fields__)
        step_fields = set(StepRecord.__dataclass_fields__)
        for name in ("run_id", "backend"):
            if not isinstance(d.get(name), str):
                raise HarnessError("the run record lacks a field", file=source, field=name,
                                   expected="a string", got=d.get(name))
        steps_in = d.get("steps", [])
        if not isinstance(steps_in, list) or not all(
                isinstance(s, dict) and isinstance(s.get("name"), str)
                and isinstance(s.get("kind"), str) for s in steps_in):
            raise HarnessError("the run record's steps are malformed", file=source,
                               field="steps", expected="a list of {name, kind, status, ...}")
        d = {k: v for k, v in d.items() if k in known and k != "steps"}
        steps = [StepRecord(**{k: v for k, v in s.items() if k in step_fields})
                 for s in steps_in]
        try:
            return cls(**d, steps=steps)
        except TypeError as e:
            raise HarnessError(f"not a run record ({e})", file=source) from None


LOCK_FILE = ".lock"
_HELD: dict[str, int] = {}  # run dir -> fd of the lock this process holds


def _temporary_leftovers(run_dir: Path) -> list[Path]:
    """Hidden ``.<name>.tmp-*`` files and folders of atomic writes that never finished."""
    return [p for p in run_dir.rglob(".*.tmp-*")]


class RunStore:
    """The ``runs/`` folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def run_dir(self, run_id: str) -> Path:
        if not _valid_run_id(run_id):
            raise HarnessError("not a run id", field="RUN_ID", got=run_id,
                               expected="a run id such as 20261201-094123-ab12 (harness runs "
                               "lists them), not a path")
        return self.root / run_id

    def create(self, record: RunRecord) -> Path:
        """Make the run's folder and hold its liveness lock until ``release``; runs whose
        process died are marked INTERRUPTED first (``recover``)."""
        run_dir = self.run_dir(record.run_id)
        if self.root.is_dir():
            self.recover()
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise HarnessError("a run with this id exists already", file=str(run_dir)) from None
        except OSError as e:
            raise HarnessError(f"cannot create the run folder ({e.strerror})",
                               file=str(run_dir), field="runs_dir",
                               expected="a folder this user can write") from None
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[str(run_dir)] = fd
        self.save(record)
        return run_dir

    def has_run(self, name: str) -> bool:
        """Whether ``name`` is the id of a run in this folder (a path never is)."""
        return _valid_run_id(name) and (self.root / name / "record.json").exists()

    def release(self, run_id: str) -> None:
        """The run is over (finished, failed or interrupted): let go of its lock."""
        fd = _HELD.pop(str(self.run_dir(run_id)), None)
        if fd is not None:
            os.close(fd)

    def is_alive(self, run_id: str) -> bool:
        """Whether some process still holds the run's lock."""
        run_dir = self.run_dir(run_id)
        if str(run_dir) in _HELD:
            return True
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
        except OSError:
            return False  # no lock file: a run of an older version, or its process is gone
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def recover(self) -> list[str]:
        """Mark runs whose process died while RUNNING as INTERRUPTED (with the step to
        resume from) and remove the temporary folders they left; the ids recovered."""
        recovered = []
        for run_id in self.list_ids():
            try:
                rec = self._read(run_id)
            except HarnessError:
                continue
            if rec.status != "RUNNING" or self.is_alive(run_id):
                continue
            rec.mark_interrupted("the run's process ended while it was running "
                                 "(killed, or the machine stopped)")
            for leftover in _temporary_leftovers(self.run_dir(run_id)):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
            self.save(rec)
            recovered.append(run_id)
        return recovered

    def save(self, record: RunRecord) -> None:
        write_json_atomic(self.run_dir(record.run_id) / "record.json", asdict(record))

    def _read(self, run_id: str) -> RunRecord:
        path = self.run_dir(run_id) / "record.json"
        if not path.exists():
            known = ", ".join(self.list_ids()[-5:]) or "none yet"
            raise HarnessError(f"no run with id {run_id!r}", file=str(self.root),
                               expected=f"a run id (latest: {known})")
        return RunRecord.from_dict(read_json(path), str(path))

    def load(self, run_id: str) -> RunRecord:
        """The record as it stands: a RUNNING run whose process is gone reads INTERRUPTED."""
        rec = self._read(run_id)
        if rec.status == "RUNNING" and not self.is_alive(run_id):
            rec.mark_interrupted("the run's process ended while it was running")
        return rec

    def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _valid_run_id(p.name) and (p / "record.json").exists())

    def step_dir(self, run_id: str, step: str) -> Path:
        return self.run_dir(run_id) / "steps" / step

    def step_output(self, run_id: str, step: str) -> dict[str, Any]:
        return read_json(self.step_dir(run_id, step) / "output.json")

    def summary(self, run_id: str) -> dict[str, Any] | None:
        path = self.run_dir(run_id) / "summary.json"
        if not path.exists():
            return None
        data = read_json(path)
        return data if isinstance(data, dict) else None


def _valid_run_id(run_id: str) -> bool:
    """One path component of plain characters: never a path out of the runs folder."""
    return (isinstance(run_id, str) and 0 < len(run_id) <= 128 and run_id not in (".", "..")
            and all(c.isalnum() or c in "-_." for c in run_id))
