"""Retrain on labelled captures: ``harness monitor RUN --retrain --labels FILE``.

Labels come in Model Monitor's ground-truth merge format (JSON Lines, one line per
capture record, matched by the capture record's ``eventMetadata.eventId``)::

    {"groundTruthData": {"data": "7", "encoding": "CSV"},
     "eventMetadata": {"eventId": "<the capture record's eventId>"}, "eventVersion": "0"}

A capture record holding N instances (``{"instances": [[784 floats], ...]}``) gets N
comma-separated labels in ``data`` (``"7,2,0"``), in the order of the instances;
``"encoding": "JSON"`` with ``data`` a JSON number or list of numbers is accepted too.
``FILE`` may also be a folder: every non-hidden file under it is read (the ground-truth
layout ``yyyy/mm/dd/hh/*.jsonl``). A bad line, a label for an eventId with no capture
record in the window, or a record whose label count differs from its instance count is
counted and reported, never fatal; no usable label at all is an error naming the file.

The retraining data (``runs/<run>/monitoring/<time>/retrain-data/``, written under a
temporary name and renamed) holds the files the monitored run's ``prepare`` step read
(copied as they are) plus the labelled captures in the same format (pixels back to
0..255): for IDX files one pair, ``captures-<time>-images-idx3-ubyte.gz`` +
``captures-<time>-labels-idx1-ubyte.gz``; for CSV files ``captures-<time>.csv`` (the label
then the pixels, no header); for Parquet files ``captures-<time>.parquet`` (``label`` and a
``pixels`` list). ``prepare`` then treats the captures like any other pair (file):
with a single pair (the bundled sample, a custom dataset) every pair is pooled and split
three ways, class-stratified, so the new run's test split, the one the gate judges, holds
captured (shifted) digits too; with the canonical MNIST files ``t10k`` stays the test
split and the captures go to train and validation. Retraining a retrained run adds the
new captures to the earlier ones.

The new run uses the monitored run's stored configuration (``config.json``, as
``harness run --resume`` does; ``--set`` values given to ``harness monitor`` override what
they name) with ``data.source`` set to that folder, and runs through
the same code as ``harness run``: record, gate, deploy. The gate decides whether the new
model is deployed.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import uris
from harness.errors import DataError, HarnessError
from harness.idx import write_idx

REASONS = {
    "bad_json": "not a JSON object",
    "missing_field": "no groundTruthData.data or eventMetadata.eventId",
    "bad_encoding": "groundTruthData.encoding is not CSV or JSON",
    "bad_label": "a label is not a whole number >= 0",
    "duplicate_event_id": "a second line for the same eventId (the first is used)",
    "unknown_event_id": "no capture record in the window has this eventId",
    "count_mismatch": "label count differs from the record's instance count",
    "label_out_of_range": "a label outside the run's classes 0..K-1",
}


class LabelsError(DataError):
    """The labels file is missing, or gives no usable label (a user's input: exit 2)."""

    exit_code = 2


@dataclass
class Labels:
    by_event: dict[str, list[int]]
    where: dict[str, str]                      # eventId -> "file:line"
    lines: int = 0
    bad: Counter = field(default_factory=Counter)
    first_at: dict[str, str] = field(default_factory=dict)

    def count(self, reason: str, where: str) -> None:
        self.bad[reason] += 1
        self.first_at.setdefault(reason, where)


def _label_values(gt: Any) -> list[int]:
    """The labels of one ``groundTruthData``; ValueError(reason) when unusable."""
    if not isinstance(gt, dict) or "data" not in gt:
        raise ValueError("missing_field")
    data, encoding = gt["data"], str(gt.get("encoding", "CSV")).upper()
    if encoding == "CSV":
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            data = str(data)
        if not isinstance(data, str):
            raise ValueError("bad_label")
        values: list[Any] = [v.strip() for v in data.replace("\n", ",").split(",")]
        values = [v for v in values if v != ""]
    elif encoding == "JSON":
        try:
            parsed = json.loads(data) if isinstance(data, str) else data
        except ValueError:
            raise ValueError("bad_label") from None
        values = parsed if isinstance(parsed, list) else [parsed]
    else:
        raise ValueError("bad_encoding")
    out = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise ValueError("bad_label") from None
        if isinstance(v, bool) or not number.is_integer() or number < 0:
            raise ValueError("bad_label")
        out.append(int(number))
    if not out:
        raise ValueError("bad_label")
    return out


def _label_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabelsError("labels file not found", file=str(path),
                          expected="a JSON Lines file (or a folder of them) in Model Monitor's "
                          'ground-truth format: {"groundTruthData": {"data": "7", "encoding": '
                          '"CSV"}, "eventMetadata": {"eventId": "..."}, "eventVersion": "0"}')
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))


def read_labels(path: str | os.PathLike) -> Labels:
    """Every usable line of the labels file(s); bad lines are counted by reason."""
    path = Path(path)
    labels = Labels({}, {})
    for file in _label_files(path):
        try:
            lines = file.read_bytes().splitlines()
        except OSError as e:
            raise LabelsError(f"cannot read the labels file ({e.strerror})", file=str(file)) \
                from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            labels.lines += 1
            where = f"{file}:{number}"
            try:
                doc = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                labels.count("bad_json", where)
                continue
            if not isinstance(doc, dict):
                labels.count("bad_json", where)
                continue
            meta = doc.get("eventMetadata")
            event = meta.get("eventId") if isinstance(meta, dict) else None
            if not isinstance(event, str) or not event:
                labels.count("missing_field", where)
                continue
            try:
                values = _label_values(doc.get("groundTruthData"))
            except ValueError as e:
                labels.count(str(e), where)
                continue
            if event in labels.by_event:
                labels.count("duplicate_event_id", where)
                continue
            labels.by_event[event], labels.where[event] = values, where
    if not labels.by_event:
        raise LabelsError(f"no usable label in {labels.lines} line(s)"
                          + "".join(f"; {c} {r} (first at {labels.first_at[r]})"
                                    for r, c in sorted(labels.bad.items())),
                          file=str(path), field="groundTruthData.data / eventMetadata.eventId",
                          expected='lines like {"groundTruthData": {"data": "7,2", "encoding": '
                          '"CSV"}, "eventMetadata": {"eventId": "<a capture record\'s '
                          'eventId>"}, "eventVersion": "0"}, one label per instance')
    return labels


def captured_records(capture_root: Path, num_pixels: int, start: str | None,
                     end: str | None) -> dict[str, np.ndarray]:
    """eventId -> the record's instances [n, num_pixels] in 0..1, for the well-formed
    capture records in [start, end) (the window the drift check read)."""
    from model.drift_capture import Malformed, capture_files, loads_json, parse_time

    t0 = parse_time(start) if start else None
    t1 = parse_time(end) if end else None
    out: dict[str, np.ndarray] = {}
    if not capture_root.is_dir():
        return out
    for path in capture_files(capture_root, t0, t1):
        try:
            lines = path.read_bytes().splitlines()
        except OSError:
            continue
        for line in lines:
            if not line.strip():
                continue
            try:
                record = loads_json(line)
                meta = record["eventMetadata"]
                event, when = meta["eventId"], parse_time(meta["inferenceTime"])
                if (t0 is not None and when < t0) or (t1 is not None and when >= t1):
                    continue
                images = _instances(record, num_pixels)
            except (ValueError, KeyError, TypeError, AttributeError, Malformed):
                continue
            if np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1:
                out[str(event)] = images
    return out


def _instances(record: Any, num_pixels: int) -> np.ndarray:
    from model.drift_capture import (INPUT_NAME, Malformed, capture_body, instances_array,
                                     pick_rows)

    body, kind = capture_body(record["captureData"]["endpointInput"], "endpointInput")
    if kind == "json":
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise Malformed("bad_input_body")
        body = pick_rows(body.get("instances", body.get("inputs")), INPUT_NAME)
    return instances_array(body, num_pixels, "input", "wrong_pixel_count").astype(np.float32)


@dataclass
class Joined:
    images: np.ndarray          # [n, h, w] uint8
    labels: np.ndarray          # [n] uint8
    records: int                # capture records with labels
    unlabelled_records: int     # capture records in the window with no label line
    report: Labels


def join(labels: Labels, records: dict[str, np.ndarray], shape: tuple[int, int],
         num_classes: int, labels_file: str) -> Joined:
    """Captured instances paired with their labels, by eventId."""
    xs, ys = [], []
    for event, values in labels.by_event.items():
        where = labels.where[event]
        if event not in records:
            labels.count("unknown_event_id", where)
            continue
        images = records[event]
        if len(values) != len(images):
            labels.count("count_mismatch", f"{where} ({len(values)} labels, "
                          f"{len(images)} instances)")
            continue
        if max(values) >= num_classes:
            labels.count("label_out_of_range", f"{where} (label {max(values)}, "
                         f"K = {num_classes})")
            continue
        xs.append(images)
        ys.append(values)
    used = len(xs)
    if not used:
        raise LabelsError(f"no label matches a capture record in the window ({len(records)} "
                          f"record(s) captured, {len(labels.by_event)} eventId(s) labelled)"
                          + "".join(f"; {c} {r} (first at {labels.first_at[r]})"
                                    for r, c in sorted(labels.bad.items())),
                          file=labels_file, field="eventMetadata.eventId",
                          expected="the eventIds of capture records inside the monitor window "
                          "(--since/--until/--last), with one label per instance")
    x = np.concatenate(xs).reshape(-1, *shape)
    pixels = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    y = np.concatenate([np.asarray(v) for v in ys]).astype(np.uint8)
    return Joined(pixels, y, used, len(records) - used, labels)


def source_files(run_dir: Path) -> tuple[list[Path], dict[str, Any]]:
    """The files the run's ``prepare`` step read (its output's ``SourceLocation``, the data
    source resolved as prepare resolved it): its IDX pairs, or its CSV or Parquet files;
    and that output."""
    from local_runners.prepare import find_pairs, table_source

    found = sorted((run_dir / "steps").glob("*/output.json"))
    for path in found:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and "SourceLocation" in doc and "RawUri" in doc:
            location = str(doc["SourceLocation"])
            folder = uris.local_path(location) if "://" in location else Path(location)
            files = table_source(folder) or [
                f for _, images, labels in find_pairs(folder) for f in (images, labels)]
            return files, doc
    raise HarnessError(f"run {run_dir.name} has no prepare step output, so its training data "
                       "is unknown", file=str(run_dir / "steps"),
                       expected="a run whose prepare step read a local data source "
                       "(output.json with SourceLocation)")


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """The seed's CSV layout (``local_runners.prepare_tables``): no header, one image a
    row, the label then the H*W grey levels 0..255."""
    rows = np.column_stack([labels.astype(np.int64),
                            images.reshape(len(images), -1).astype(np.int64)])
    np.savetxt(path, rows, fmt="%d", delimiter=",")


def write_parquet(path: Path, images: np.ndarray, labels: np.ndarray,
                  label_column: str = "label") -> None:
    """A ``label_column`` column and a ``pixels`` list column of H*W grey levels 0..255."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = images.reshape(len(images), -1).astype(np.uint8)
    pixels = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    pq.write_table(pa.table({label_column: pa.array(labels.astype(np.int64)),
                             "pixels": pixels}), path)


def build_dataset(run_dir: Path, check_dir: Path, joined: Joined) -> tuple[Path, dict]:
    """``<check_dir>/retrain-data/``: the run's own data files (IDX, CSV or Parquet) +
    the labelled captures in the same format."""
    from harness.storage import atomic_dir

    files, prepared = source_files(run_dir)
    counts = prepared.get("Counts") or {}
    prefix = f"captures-{check_dir.name}"
    dest = check_dir / "retrain-data"
    with atomic_dir(dest) as tmp:
        for f in files:
            shutil.copy2(f, tmp / f.name)
        # the captures in the source's own format: prepare reads a folder's IDX pairs, or
        # else its CSV files, or else its Parquet files, never a mix
        suffix = files[0].suffix.lower() if files else ""
        if suffix == ".csv":
            write_csv(tmp / f"{prefix}.csv", joined.images, joined.labels)
        elif suffix == ".parquet":
            # with the label column the run's prepare read (data.label_column)
            write_parquet(tmp / f"{prefix}.parquet", joined.images, joined.labels,
                          prepared.get("LabelColumn") or "label")
        else:
            write_idx(tmp / f"{prefix}-images-idx3-ubyte.gz", joined.images)
            write_idx(tmp / f"{prefix}-labels-idx1-ubyte.gz", joined.labels)
    info = {"source": prepared.get("SourceLocation"), "source_files": [f.name for f in files],
            "original_examples": int(sum(counts.values())) if counts else None,
            "captured_examples": int(len(joined.labels)),
            "captured_records": joined.records, "unlabelled_records": joined.unlabelled_records,
            "label_lines": joined.report.lines,
            "label_problems": {r: {"count": c, "first_at": joined.report.first_at[r]}
                               for r, c in sorted(joined.report.bad.items())}}
    (check_dir / "retrain.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return dest, info


def prepare_retrain_data(target: Any, check_dir: Path, labels_file: str,
                         start: str | None, end: str | None) -> tuple[Path, dict]:
    """Join the window's captures with the labels and write the retraining folder."""
    _, prepared = source_files(target.run_dir)
    h, w = int(prepared.get("ImageHeight", 28)), int(prepared.get("ImageWidth", 28))
    k = int(prepared.get("NumClasses", 10))
    labels = read_labels(labels_file)
    root = uris.local_path(target.capture_uri)
    if target.endpoint_name and (root / target.endpoint_name).is_dir():
        root = root / target.endpoint_name
    records = captured_records(root, h * w, start, end)
    return build_dataset(target.run_dir, check_dir, join(labels, records, (h, w), k,
                                                         str(labels_file)))


def retrain_config(store: Any, run_id: str, data_dir: Path,
                   overrides: dict[str, Any] | None = None):
    """The monitored run's stored configuration, the ``--set`` overrides given now, and
    ``data.source`` = ``data_dir`` (the runs folder and data source are not overridable)."""
    from harness.config import stored_config

    kept = {k: v for k, v in (overrides or {}).items() if k not in ("runs_dir", "data.source")}
    return stored_config(store.run_dir(run_id), store.root,
                         {**kept, "data.source": str(data_dir), "deploy.keep_serving": False})


def start_run(store: Any, run_id: str, data_dir: Path, console: Any,
              overrides: dict[str, Any] | None = None) -> tuple[int, str | None]:
    """Start the pipeline as ``harness run`` does; (exit code, the new run's id)."""
    from harness.cli import cmd_run_workflow
    from harness.workflow import load_workflow

    cfg = retrain_config(store, run_id, data_dir, overrides)
    before = set(store.list_ids())
    code = cmd_run_workflow(cfg, load_workflow(cfg.pipeline, cfg), console,
                            config_file=f"stored with run {run_id}, data {data_dir}")
    new = [r for r in store.list_ids() if r not in before]
    return code, (new[-1] if new else None)
