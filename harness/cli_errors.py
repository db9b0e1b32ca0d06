"""What the CLI does with errors it did not expect, and with termination signals.

A user never sees a Python traceback: an unexpected error is reported in one line that
says it is a bug and where its traceback was written. SIGTERM (``kill``, a CI runner's
timeout, ``docker stop``) is handled like Ctrl-C, so every command stops the same way:
Spark, the trainer and the server are stopped, the run is recorded as INTERRUPTED and the
resume command is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Iterator

ERROR_LOG = "harness-errors.log"


def _log_dir(args: argparse.Namespace) -> Path:
    """The runs folder when it exists (next to the runs it concerns), else the temp dir."""
    from harness.config import PROJECT_ROOT

    runs = Path(os.path.expanduser(getattr(args, "runs_dir", None) or "runs"))
    runs = runs if runs.is_absolute() else PROJECT_ROOT / runs
    return runs if runs.is_dir() and os.access(runs, os.W_OK) else Path(tempfile.gettempdir())


def internal_error(exc: BaseException, args: argparse.Namespace) -> str:
    """Append the traceback to the error log; the one-line message for the console."""
    path = _log_dir(args) / ERROR_LOG
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- {stamp} harness {getattr(args, 'command', '')}\n{text}\n")
        where = f"the traceback is in {path}"
    except OSError:
        where = "the traceback could not be written to a log file"
    return (f"an unexpected error, a bug in the harness: {type(exc).__name__}: {exc}. "
            f"Please report it; {where}")


def _raise_interrupt(signum: int, frame) -> None:
    """SIGTERM does what Ctrl-C does: the SIGINT handler in force runs (Spark's session
    installs one that cancels its jobs first; a clean-up block may defer it); without one,
    KeyboardInterrupt is raised."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
