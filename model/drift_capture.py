"""Read a window of endpoint data capture into image and probability arrays.

Input: SageMaker's data capture JSON Lines, as SageMaker lays them out under
``DestinationS3Uri`` (and as ``local_runners.serve_capture`` writes them):
``<endpoint>/<variant>/yyyy/mm/dd/hh/*.jsonl``, one record per line::

    {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT",
                                        "data", "encoding": "JSON"|"CSV"|"BASE64"},
                     "endpointOutput": {... "mode": "OUTPUT" ...}},
     "eventMetadata": {"eventId", "inferenceTime": "2024-05-01T12:00:00Z"},
     "eventVersion": "0"}

Request bodies are TF Serving REST (``{"instances": [[H*W floats], ...]}`` or
``[{"pixels": [...]}, ...]``, or columnar ``{"inputs": ...}``) or CSV (one image per
line); responses ``{"predictions": [{"probabilities": [C floats], "classes": k}, ...]}``
(or plain probability rows, or columnar ``{"outputs": ...}``) or CSV.

Every file under the folder is read recursively; hour folders wholly outside
``[start, end)`` are skipped unread, and records whose ``eventMetadata.inferenceTime``
is outside it are counted, not used. A malformed record never stops the read: it is
counted under a reason (:data:`REASONS` says which Model Monitor check it feeds) with
the first place it occurred. orjson when importable, else the standard ``json``.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import orjson

    loads_json = orjson.loads
except ImportError:  # pragma: no cover - the SageMaker image may lack orjson
    orjson = None
    loads_json = json.loads

# reason -> (Model Monitor check type, feature/column it concerns)
REASONS = {
    "bad_json": ("completeness_check", "record"),
    "missing_field": ("completeness_check", "record"),
    "bad_encoding": ("completeness_check", "record"),
    "bad_base64": ("completeness_check", "record"),
    "bad_inference_time": ("completeness_check", "record"),
    "bad_input_body": ("completeness_check", "pixels"),
    "bad_output_body": ("completeness_check", "probabilities"),
    "batch_mismatch": ("completeness_check", "record"),
    "input_non_numeric": ("data_type_check", "pixels"),
    "input_non_finite": ("data_type_check", "pixels"),
    "input_out_of_range": ("data_type_check", "pixels"),
    "output_non_numeric": ("data_type_check", "probabilities"),
    "output_non_finite": ("data_type_check", "probabilities"),
    "wrong_pixel_count": ("missing_column_check", "pixels"),
    "wrong_class_count": ("missing_column_check", "probabilities"),
    "unreadable_file": ("completeness_check", "record"),
}
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
VALUE_PROBLEMS = {"input_non_finite": "pixels hold NaN or infinity",
                  "input_out_of_range": "pixel values outside [0, 1]",
                  "output_non_finite": "probabilities hold NaN or infinity"}


class Malformed(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


@dataclass
class CaptureWindow:
    """What one read found: arrays of the well-formed records and counts of the rest."""
    images: np.ndarray
    probabilities: np.ndarray
    files: int = 0
    records_read: int = 0            # lines with content, in or out of the window
    outside_window: int = 0
    well_formed: int = 0             # records (requests) used
    malformed: Counter = field(default_factory=Counter)
    first_at: dict[str, str] = field(default_factory=dict)   # reason -> "file:line: detail"

    @property
    def in_window(self) -> int:
        return self.well_formed + sum(self.malformed.values())

    @property
    def instances(self) -> int:
        return int(len(self.images))


def parse_time(value: str) -> dt.datetime:
    """ISO 8601 -> aware UTC datetime ("Z" accepted on any Python; naive means UTC)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = dt.datetime.fromisoformat(text)
    return when.replace(tzinfo=dt.timezone.utc) if when.tzinfo is None else when


def _loads(data: str | bytes) -> Any:
    """orjson first; the standard parser as a fallback (it reads NaN/Infinity)."""
    try:
        return loads_json(data)
    except ValueError:
        return json.loads(data)


def capture_body(section: Any, side: str) -> tuple[Any, str]:
    """(parsed body, "json"|"csv") of ``endpointInput``/``endpointOutput``."""
    if not isinstance(section, dict) or "data" not in section:
        raise Malformed("missing_field", f"captureData.{side}.data")
    data, encoding = section["data"], str(section.get("encoding", "JSON")).upper()
    ctype = str(section.get("observedContentType") or "").split(";")[0].strip().lower()
    if not isinstance(data, str):
        raise Malformed("missing_field", f"captureData.{side}.data is not a string")
    if encoding == "BASE64":
        try:
            raw = base64.b64decode(data, validate=True)
            data = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise Malformed("bad_base64", f"captureData.{side}.data") from None
        kind = "csv" if "csv" in ctype else "json"
    elif encoding in ("JSON", "CSV"):
        kind = encoding.lower()
    else:
        raise Malformed("bad_encoding", f"captureData.{side}.encoding={encoding!r}")
    what = "bad_input_body" if side == "endpointInput" else "bad_output_body"
    if kind == "csv":
        rows = [line.split(",") for line in data.splitlines() if line.strip()]
        try:
            return [[float(v) for v in row] for row in rows], kind
        except ValueError:
            prefix = "input" if side == "endpointInput" else "output"
            raise Malformed(f"{prefix}_non_numeric",
                            f"captureData.{side}.data: CSV value not a number") from None
    try:
        return _loads(data), kind
    except ValueError:
        raise Malformed(what, f"captureData.{side}.data is not JSON") from None


def pick_rows(rows: Any, name: str) -> Any:
    """Rows of one named tensor from TF Serving's row or columnar layout."""
    if isinstance(rows, dict):
        return rows.get(name, next(iter(rows.values()), None) if len(rows) == 1 else None)
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        return [r.get(name) for r in rows]
    return rows


def instances_array(rows: Any, width: int, prefix: str, count_reason: str) -> np.ndarray:
    if not isinstance(rows, list) or not rows:
        raise Malformed(f"bad_{prefix}_body", "no rows")
    try:
        arr = np.asarray(rows)
    except ValueError:                       # ragged
        lengths = {len(r) if isinstance(r, list) else -1 for r in rows}
        if -1 in lengths:
            raise Malformed(f"{prefix}_non_numeric", "rows mix lists and values") from None
        raise Malformed(count_reason, f"rows of {sorted(lengths)} values, expected {width}") \
            from None
    if arr.ndim == 1 and arr.dtype.kind in "iuf":
        arr = arr[None, :]                   # one unwrapped instance
    if arr.dtype.kind not in "iuf":
        raise Malformed(f"{prefix}_non_numeric", f"values of type {arr.dtype.kind!r}")
    if arr.ndim != 2 or arr.shape[1] != width:
        got = arr.shape[1] if arr.ndim == 2 else f"shape {list(arr.shape)}"
        raise Malformed(count_reason, f"{got} values per row, expected {width}")
    return arr                  # finite values and range: checked for all records at once


def parse_record(record: Any, num_pixels: int, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, P], probabilities [n, C]) of one capture record; raises Malformed.
    Values are not yet checked to be finite and in range (:func:`check_values`)."""
    try:
        capture = record["captureData"]
        request, response = capture["endpointInput"], capture["endpointOutput"]
    except (KeyError, TypeError):
        raise Malformed("missing_field", "captureData.endpointInput/endpointOutput") from None
    body, kind = capture_body(request, "endpointInput")
    if kind == "json":
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise Malformed("bad_input_body", 'expected {"instances": ...} or {"inputs": ...}')
        body = pick_rows(body.get("instances", body.get("inputs")), INPUT_NAME)
    images = instances_array(body, num_pixels, "input", "wrong_pixel_count")
    out, kind = capture_body(response, "endpointOutput")
    if kind == "json":
        if not isinstance(out, dict) or not ({"predictions", "outputs"} & set(out)):
            raise Malformed("bad_output_body", 'expected {"predictions": ...} or {"outputs": ...}')
        out = pick_rows(out.get("predictions", out.get("outputs")), OUTPUT_NAME)
    probabilities = instances_array(out, num_classes, "output", "wrong_class_count")
    if len(images) != len(probabilities):
        raise Malformed("batch_mismatch", f"{len(images)} inputs, {len(probabilities)} outputs")
    return images, probabilities


def _hour_of(path: Path, root: Path) -> dt.datetime | None:
    """The hour a file's ``yyyy/mm/dd/hh`` folders name, if they do."""
    parts = path.relative_to(root).parts[-5:-1]
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        try:
            return dt.datetime(*map(int, parts), tzinfo=dt.timezone.utc)
        except ValueError:
            return None
    return None


def capture_files(root: Path, start: dt.datetime | None = None,
                  end: dt.datetime | None = None) -> list[Path]:
    """Every non-hidden file under ``root``, sorted; hour folders outside the window
    left out."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.startswith((".", "_")):
                continue
            path = Path(dirpath) / name
            hour = _hour_of(path, root)
            if hour is not None and ((end is not None and hour >= end) or
                                     (start is not None and hour + dt.timedelta(hours=1) <= start)):
                continue
            files.append(path)
    return files


def read_window(root: str | os.PathLike, num_pixels: int, num_classes: int,
                start: dt.datetime | None = None, end: dt.datetime | None = None
                ) -> CaptureWindow:
    """Read every capture record under ``root`` with ``start <= inferenceTime < end``."""
    root = Path(root)
    images, probabilities, places = [], [], []
    win = CaptureWindow(np.zeros((0, num_pixels), np.float32),
                        np.zeros((0, num_classes), np.float32))
    timed = start is not None or end is not None

    def bad(reason: str, where: str, detail: str) -> None:
        win.malformed[reason] += 1
        win.first_at.setdefault(reason, f"{where}: {detail}" if detail else where)

    for path in capture_files(root, start, end):
        win.files += 1
        rel = path.relative_to(root)
        try:
            lines = path.read_bytes().splitlines()
        except OSError as e:
            bad("unreadable_file", str(rel), e.strerror or str(e))
            continue
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            win.records_read += 1
            where = f"{rel}:{number}"
            try:
                record = loads_json(line)
            except ValueError:
                bad("bad_json", where, "not a JSON object")
                continue
            if timed:
                try:
                    when = parse_time(record["eventMetadata"]["inferenceTime"])
                except (KeyError, TypeError, ValueError, AttributeError):
                    bad("bad_inference_time", where, "eventMetadata.inferenceTime")
                    continue
                if (start is not None and when < start) or (end is not None and when >= end):
                    win.outside_window += 1
                    continue
            try:
                x, p = parse_record(record, num_pixels, num_classes)
            except Malformed as e:
                bad(e.reason, where, e.detail)
                continue
            images.append(x)
            probabilities.append(p)
            places.append(where)
    if images:
        sizes = np.array([len(x) for x in images])
        x, p = np.concatenate(images), np.concatenate(probabilities)
        keep = np.ones(len(sizes), dtype=bool)
        for reason, row_bad in check_values(x, p):
            bad_records = np.unique(np.repeat(np.arange(len(sizes)), sizes)[row_bad])
            for i in bad_records[keep[bad_records]]:
                bad(reason, places[i], VALUE_PROBLEMS[reason])
            keep[bad_records] = False
        rows = np.repeat(keep, sizes)
        win.images = x[rows].astype(np.float32)
        win.probabilities = p[rows].astype(np.float32)
        win.well_formed = int(keep.sum())
    return win


def check_values(images: np.ndarray, probabilities: np.ndarray
                 ) -> list[tuple[str, np.ndarray]]:
    """(reason, rows it applies to) for non-finite or out-of-range values, vectorised."""
    finite_in = np.isfinite(images).all(axis=1)
    with np.errstate(invalid="ignore"):
        in_range = ((images >= 0) & (images <= 1)).all(axis=1)
    return [("input_non_finite", ~finite_in),
            ("input_out_of_range", finite_in & ~in_range),
            ("output_non_finite", ~np.isfinite(probabilities).all(axis=1))]
