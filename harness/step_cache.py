"""The local step cache: a step whose request, inputs and code have not changed since a
finished step of an earlier run is reused from that run instead of run again.

A step's **key** is the SHA-256 of:

- its resolved request, with the run's own location (``BaseUri``) and run id replaced by
  fixed tokens (so two runs of the same request look alike);
- in place of every existing local file or folder the request names (``file://`` URIs):
  its content digest -- the data it reads, the earlier steps' outputs, the staged code
  (the Glue script, the training ``sourcedir.tar.gz``, the processing code); by content,
  never by path, so a reused earlier output counts the same as a fresh one. A path that
  does not exist yet (what the step will write) counts by its name. Spark's output counts
  by what it holds: a Parquet file by its schema and rows (parquet-mr does not write the
  same bytes twice for the same rows: the order of a column's encodings varies), a part
  file's name without the write's UUID (``part-00000-<uuid>-c000...``);
- the content of the local inputs the request does not name as URIs (the data folder a
  prepare step reads: ``Step.cache_inputs``);
- the step kind and the versions its result depends on: Python, TensorFlow, PySpark.

Only kinds that declare ``cacheable`` are cached (data preparation, Glue, training,
tuning, processing): hosting and inference always run (serving is the point of a run),
gates are instant. A hit is valid only while the earlier run's step is on disk with its
output and every file its output names: a deleted artifact makes the step run again,
never fail. The index is one small JSON file per key in ``runs/.cache/``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from harness import uris

CACHE_DIR = ".cache"
_CHUNK = 1 << 20
_DIGEST_ROWS = 8192  # rows of a Parquet file hashed at a time (about 25 MB of MNIST)


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """The versions a step's result depends on besides its inputs."""
    from importlib import metadata

    out = {"python": ".".join(map(str, sys.version_info[:2]))}
    for dist in ("tensorflow", "pyspark", "keras"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "-"
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _normalised(value: Any, base: str, run_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(base, "<run>").replace(run_id, "<run-id>")
    if isinstance(value, dict):
        return {k: _normalised(v, base, run_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalised(v, base, run_id) for v in value]
    return value


_SPARK_PART = re.compile(r"^(part-\d+)-[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}(.*)$")


def _name_key(rel: str) -> str:
    """A relative file name as the digest counts it: Spark's per-write UUID left out."""
    head, _, name = rel.rpartition("/")
    name = _SPARK_PART.sub(r"\1\2", name)
    return f"{head}/{name}" if head else name


def _parquet_digest(path: Path) -> bytes | None:
    """The SHA-256 of a Parquet file's schema and rows (None if it cannot be read: then
    its bytes count). The rows are read a row group at a time and hashed as Arrow IPC in
    slices of ``_DIGEST_ROWS`` rows, so the digest does not depend on the file's row
    groups and a large file is never held in memory whole (at 700,000 images a whole
    read took 5.4 GiB; Spark and ``prepare`` write row groups of at most 10,000 rows)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        h = hashlib.sha256()

        def add(rows: "pa.Table") -> None:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, rows.schema) as writer:
                writer.write_table(rows.combine_chunks())
            h.update(sink.getvalue())

        with pq.ParquetFile(path) as parquet:
            # one row group at a time (pyarrow's iter_batches holds more as it goes)
            pending = parquet.schema_arrow.empty_table()
            for group in range(parquet.num_row_groups):
                pending = pa.concat_tables([pending, parquet.read_row_group(group)])
                while pending.num_rows >= _DIGEST_ROWS:
                    add(pending.slice(0, _DIGEST_ROWS))
                    pending = pending.slice(_DIGEST_ROWS)
            if pending.num_rows or not parquet.metadata.num_rows:
                add(pending)  # the rest; an empty file counts by its schema
        return h.digest()
    except Exception:  # noqa: BLE001 - not readable as Parquet: its bytes count
        return None


def content_digest(path: Path) -> str:
    """SHA-256 of a file's content, or of a folder's files (relative names and contents,
    in order; hidden files and folders left out). Parquet files count by schema and
    rows, Spark part-file names without their UUID (module doc)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(
        (p for p in path.rglob("*") if p.is_file()
         and not any(part.startswith(".") for part in p.relative_to(path).parts)),
        key=lambda p: _name_key(p.relative_to(path).as_posix()))
    for f in files:
        if f != path:
            h.update(_name_key(f.relative_to(path).as_posix()).encode() + b"\0")
        rows = _parquet_digest(f) if f.suffix == ".parquet" else None
        if rows is not None:
            h.update(b"parquet-rows\0" + rows)
        else:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(_CHUNK), b""):
                    h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _local_input(text: str) -> Path | None:
    """The existing local file or folder a request string names (a ``file://`` URI,
    maybe JSON-quoted as SageMaker hyperparameters are), else None."""
    candidate = text.strip('"')
    if not candidate.startswith("file://"):
        return None
    try:
        path = uris.local_path(candidate)
    except Exception:  # noqa: BLE001 - not a usable file URI: its text counts
        return None
    return path if path.exists() else None


def _with_digests(value: Any, digests: dict[str, str]) -> Any:
    """The request with every existing local input replaced by its content digest."""
    if isinstance(value, str):
        path = _local_input(value)
        if path is None:
            return value
        key = str(path)
        if key not in digests:
            digests[key] = content_digest(path)
        return value.replace(value.strip('"'), f"sha256:{digests[key]}")
    if isinstance(value, dict):
        return {k: _with_digests(v, digests) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_digests(v, digests) for v in value]
    return value


def step_key(kind: str, request: dict[str, Any], base: str, run_id: str,
             extra_inputs: list[Any] = ()) -> str:
    """The cache key of a step's resolved request (module doc); ``extra_inputs``: what
    else its result depends on (``Step.cache_inputs``): local files or folders (``Path``,
    by content) and values."""
    digests: dict[str, str] = {}
    extra = [(content_digest(x) if x.exists() else f"missing:{x}") if isinstance(x, Path)
             else x for x in extra_inputs]
    doc = {"kind": kind,
           "request": _normalised(_with_digests(request, digests), base, run_id),
           "extra": extra, "versions": versions()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def rebased(output: Any, old_base: str, new_base: str, old_id: str, new_id: str) -> Any:
    """A reused output naming the new run's (linked) files instead of the old run's: a
    location under the old run moves under the new one, its old run id renamed as
    ``link_reused_files(rename=...)`` renames it; other text (job names) is kept."""
    if isinstance(output, str):
        if output.startswith(old_base):
            return new_base + output[len(old_base):].replace(old_id, new_id)
        return output
    if isinstance(output, dict):
        return {k: rebased(v, old_base, new_base, old_id, new_id) for k, v in output.items()}
    if isinstance(output, list):
        return [rebased(v, old_base, new_base, old_id, new_id) for v in output]
    return output


def link_reused_files(old_base: str, new_base: str,
                      reused: dict[str, tuple[Any, dict[str, Any]]],
                      rename: tuple[str, str] | None = None) -> list[str]:
    """Give a resumed run the files its reused steps read and wrote: every location under
    the earlier run that their inputs and outputs name appears at the same place under the
    new run (files hard-linked, or copied across file systems; folders made anew), so
    later steps find them by the run's own paths. The earlier run is only read. Returns
    the relative paths linked. ``rename`` (old run id, new run id): the step cache's
    reuse puts a path that names the old run's id (``monitoring/<id>/``,
    ``training/<job>-<id>/``) where this run's own request would write it. (Resume and the
    step cache both reuse this way.)"""
    import shutil

    old_dir, new_dir = uris.local_path(old_base), uris.local_path(new_base)
    prefix = old_base.rstrip("/") + "/"
    linked: list[str] = []
    for request, output in reused.values():
        for text in _strings([request, output]):
            if not text.startswith(prefix):
                continue
            rel = text[len(prefix):].strip("/")
            if not rel or rel.split("/", 1)[0] in ("code", "steps"):
                continue
            src = old_dir / rel
            dst = new_dir / (rel.replace(*rename) if rename else rel)
            if not src.exists() or dst.exists():
                continue
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            for f in files:
                target = dst if f == src else dst / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy2(f, target)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            linked.append(rel)
    return linked


class StepCache:
    """The index of finished steps by key, in ``<runs>/.cache/``."""

    def __init__(self, runs_root: Path, store: Any):
        self.root = Path(runs_root) / CACHE_DIR
        self.store = store

    def lookup(self, key: str) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """(run id, its request, its output) of a finished step with this key whose
        artifacts are all still there; None otherwise."""
        entry_path = self.root / f"{key}.json"
        try:
            entry = json.loads(entry_path.read_text(encoding="utf-8"))
            run_id, step = entry["run_id"], entry["step"]
            rec = self.store.load(run_id).step(step)
            step_dir = self.store.step_dir(run_id, step)
            request = json.loads((step_dir / "input.json").read_text(encoding="utf-8"))
            output = json.loads((step_dir / "output.json").read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - a missing or broken entry is a miss
            return None
        if rec.status not in ("SUCCEEDED", "REUSED") or not isinstance(output, dict):
            return None
        for text in _strings(output):
            if text.startswith("file://"):
                try:
                    if not uris.local_path(text).exists():
                        return None  # an artifact was deleted: run the step again
                except Exception:  # noqa: BLE001
                    continue
        return run_id, request, output

    def remember(self, key: str, run_id: str, step: str) -> None:
        """Index a finished step (atomic: a crash leaves the old entry or none)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.write_text(json.dumps({"run_id": run_id, "step": step}), encoding="utf-8")
        os.replace(tmp, self.root / f"{key}.json")
