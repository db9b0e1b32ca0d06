"""Atomic writes: a step writes to a temporary sibling and renames it into place.

A crashed step never leaves an output that looks complete, and an existing output is
never overwritten.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from harness.errors import HarnessError


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``target`` when the block succeeds."""
    target = Path(target)
    if target.exists():
        raise HarnessError("output already exists; refusing to overwrite it", file=str(target),
                           hint="earlier runs are never modified: start a new run")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` via a temporary file and rename (replaces an older file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HarnessError("file not found", file=str(path)) from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"not valid JSON ({e})", file=str(path)) from None
