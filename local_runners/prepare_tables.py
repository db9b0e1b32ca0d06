"""Tabular data for the ``prepare`` stage: CSV and Parquet sources, and the raw Parquet.

Sources (a directory, or one file):

- ``*.csv``: one image a row, the label first then the H*W pixel values row-major
  (H = W), with or without a header row (a first row that is not all numbers is a
  header); comma-separated. With a header, ``LabelColumn`` names the label column
  instead (the other columns are the pixels, in file order).
- ``*.parquet``: a label column (``label`` unless the request says ``LabelColumn``) and
  either a list column ``pixels`` or ``image`` of H*W values, or one column per pixel
  (every other column, in file order).

Pixel values: integers 0..255, or floats 0..1 (scaled to 0..255; the log says so). A bad
value is a DataError naming the file, row, column and what was expected. Each file is one
:class:`Pair` (prefix = its stem: ``train`` + ``t10k`` files split as IDX ones do).
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.errors import DataError
from harness.stages import StageContext

# Rows per Parquet row group: several groups per file let Spark read a split in parallel.
ROW_GROUP_ROWS = 5000
TABLE_SUFFIXES = (".csv", ".parquet")
PIXEL_LIST_COLUMNS = ("pixels", "image")
VALUES = "grey values: integers 0..255, or floats 0..1"
CSV_LAYOUT = "*.csv files (a label, then H*W pixel values with H = W; header row optional)"
PARQUET_LAYOUT = ("*.parquet files (a label column, and a list column pixels/image of H*W "
                  "values or one column per pixel)")
_INT32_MAX = 2**31 - 1
Locate = Callable[[int, "int | None"], str]  # (row, pixel index or None: the label) -> field


@dataclass
class Pair:
    """One file's (or IDX pair's) images (n, H, W) uint8 and labels; ``locate`` names
    the row of a table file for a message."""
    prefix: str
    images_path: Path
    labels_path: Path
    images: np.ndarray
    labels: np.ndarray
    locate: Locate | None = None


def table_files(directory: Path) -> list[Path]:
    """The directory's CSV files, else its Parquet files (hidden files skipped)."""
    for suffix in TABLE_SUFFIXES:
        found = sorted(p for p in directory.iterdir()
                       if p.suffix.lower() == suffix and not p.name.startswith(".")
                       and p.is_file())
        if found:
            return found
    return []


def read_tables(files: list[Path], ctx: StageContext, min_side: int,
                label_column: str | None = None) -> list[Pair]:
    """``label_column``: the label's column name (None: ``label`` in Parquet, the first
    column of a CSV file)."""
    pairs = []
    with ctx.progress.task("read data files", total=len(files)) as bar:
        for path in files:
            pair = _read_csv(path, ctx, label_column) if path.suffix.lower() == ".csv" \
                else _read_parquet(path, label_column or "label", ctx)
            n, h, w = pair.images.shape
            if h < min_side:
                raise DataError("images too small for the network", file=str(path),
                                field="pixel columns", expected=f"at least {min_side}x"
                                f"{min_side} pixels", got=f"{h}x{w} ({h * w} pixel values)")
            ctx.log.info("read %s: %d images of %dx%d", path.name, n, h, w)
            if pairs and pairs[0].images.shape[1:] != (h, w):
                first = pairs[0]
                raise DataError("image size differs between files", file=str(path),
                                expected=f"{first.images.shape[1]}x{first.images.shape[2]} "
                                f"like {first.images_path.name}", got=f"{h}x{w}")
            pairs.append(pair)
            bar.advance()
    check_label_range(pairs)
    return pairs


def num_classes(pairs: list[Pair]) -> int:
    """K = max label + 1; every class 0..K-1 must occur, K >= 2, no label may be negative."""
    files = " + ".join(str(p.labels_path) for p in pairs)
    for p in pairs:
        if p.labels.min() < 0:
            raise DataError("negative class label", file=str(p.labels_path),
                            expected="labels 0..K-1",
                            got=f"label values {short(np.unique(p.labels).tolist())}")
    values = np.unique(np.concatenate([np.unique(p.labels) for p in pairs]).astype(np.int64))
    if len(values) < 2:
        raise DataError(f"the labels hold a single class ({int(values[0])}); a classifier "
                        "needs at least two", file=files,
                        expected="labels 0..K-1 with K >= 2, each class occurring",
                        got=f"label values {values.tolist()}")
    k = int(values[-1]) + 1
    if k > len(values):  # not every class 0..K-1 occurs
        raise DataError("labels out of range: the classes must be 0..K-1 with every class "
                        f"present (K = max label + 1 = {k}, missing {missing(values, k)})",
                        file=files, expected="labels 0..K-1, K >= 2, each class occurring",
                        got=f"label values {short(values.tolist())}")
    return k


def check_label_range(pairs: list[Pair]) -> None:
    """Classes 0..K-1 (K = max label + 1) must all occur: else name the row of the
    largest label."""
    values = np.unique(np.concatenate([np.unique(p.labels) for p in pairs]))
    k = int(values[-1]) + 1
    if len(values) < 2 or k == len(values):
        return  # a single class: num_classes says so
    at = max(pairs, key=lambda p: int(p.labels.max()))
    row = int(np.argmax(at.labels == values[-1]))
    raise DataError(f"label {k - 1} out of range: the classes must be 0..K-1 with every "
                    f"class present (K = max label + 1 = {k}, missing {missing(values, k)})",
                    file=str(at.images_path), field=at.locate(row, None) if at.locate else None,
                    expected="labels 0..K-1, K >= 2, each class occurring",
                    got=f"label values {short(values.tolist())}",
                    hint="labels numbered from 1 must be shifted to start at 0"
                    if values[0] == 1 and k == len(values) + 1 else None)


def missing(values: np.ndarray, k: int, limit: int = 12) -> str:
    """The classes of 0..k-1 absent from the sorted unique ``values``, for a message,
    without building 0..k-1 (a label of 2**31 - 1 would need gigabytes)."""
    count = k - len(values)
    head = np.setdiff1d(np.arange(min(k, len(values) + limit + 1)), values)
    if count <= limit:
        return str(head.tolist())
    tail = np.setdiff1d(np.arange(max(0, k - len(values) - limit - 1), k), values)
    return short([*head[: limit // 2].tolist(), *tail[-(limit // 2):].tolist()], limit,
                 total=count)


def short(values: list[int], limit: int = 12, total: int | None = None) -> str:
    """A list for a message: in full when short, else its ends and its length (``total``
    when ``values`` holds only the ends already)."""
    total = len(values) if total is None else total
    if total <= limit:
        return str(values)
    head = ", ".join(map(str, values[: limit // 2]))
    tail = ", ".join(map(str, values[-limit // 2:]))
    return f"[{head}, ..., {tail}] ({total} values)"


# ----------------------------------------------------------------------------- values


def _side(path: Path, pixels: int, field: str, layout: str) -> int:
    side = math.isqrt(max(pixels, 0))
    if pixels < 1 or side * side != pixels:
        raise DataError(f"{pixels} pixel values do not make a square image", file=str(path),
                        field=field, expected=f"{layout} with H*W = H*H values (e.g. 784 = "
                        "28*28)", got=f"{pixels} pixel values")
    return side


def to_images(path: Path, labels: np.ndarray, pixels: np.ndarray, locate: Locate,
              ctx: StageContext) -> tuple[np.ndarray, np.ndarray]:
    """Check float ``labels`` (n,) and ``pixels`` (n, H*W); return int64 labels and
    uint8 images (n, H, W). Floats 0..1 are scaled to 0..255."""
    if len(labels) == 0:
        raise DataError("the file holds no images", file=str(path),
                        expected="at least one row of a label and pixel values")
    bad = ~np.isfinite(labels) | (labels < 0) | (labels > _INT32_MAX) \
        | (labels != np.floor(labels))
    if bad.any():
        i = int(np.argmax(bad))
        value = labels[i]
        what = "missing or non-numeric class label" if not np.isfinite(value) else \
            "negative class label" if value < 0 else "class label is not an integer" \
            if value != np.floor(value) else "class label too large"
        raise DataError(what, file=str(path), field=locate(i, None),
                        expected="labels 0..K-1 (whole numbers)", got=_plain(value))
    finite = np.isfinite(pixels)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise DataError("missing or non-numeric pixel value", file=str(path),
                        field=locate(int(i), int(j)), expected=VALUES)
    lo, hi = float(pixels.min()), float(pixels.max())
    whole = pixels == np.rint(pixels)
    if lo >= 0 and hi <= 255 and whole.all():
        if hi <= 1:
            ctx.log.warning("%s: every pixel value is 0 or 1: read as grey levels 0..255 "
                            "(nearly black); scale them to 0..255 if they are 0..1 "
                            "intensities", path.name)
        images = pixels.astype(np.uint8)
    elif lo >= 0 and hi <= 1:
        ctx.log.info("%s: pixel values are floats in 0..1; scaled to 0..255", path.name)
        images = np.rint(pixels * 255.0).astype(np.uint8)
    else:
        out = (pixels < 0) | (pixels > 255)
        i, j = np.argwhere(out if out.any() else ~whole)[0]
        raise DataError("pixel value out of range" if out.any() else
                        "fractional pixel value in an image with values above 1",
                        file=str(path), field=locate(int(i), int(j)), expected=VALUES,
                        got=_plain(pixels[i, j]))
    side = math.isqrt(pixels.shape[1])
    return labels.astype(np.int64), images.reshape(-1, side, side)


def _plain(value: Any) -> Any:
    value = float(value)
    return int(value) if value.is_integer() else value


# ----------------------------------------------------------------------------- CSV


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _csv_rows(path: Path):
    """(line number, row) of the non-empty rows."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        for row in reader:
            if row:
                yield reader.line_num, row


def _first_row(path: Path) -> list[str]:
    try:
        return next((row for _, row in _csv_rows(path)), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read the CSV file ({e})", file=str(path),
                        expected=CSV_LAYOUT) from None


def _csv_line(path: Path, header: bool, data_row: int) -> int:
    """The line number of data row ``data_row`` (0-based, after any header)."""
    for n, (line, _) in enumerate(_csv_rows(path)):
        if n == data_row + header:
            return line
    return -1


def _csv_scan(path: Path, header: bool, width: int, problem: str) -> DataError:
    """The error of the first bad row (the fast reader failed with ``problem``)."""
    rows = _csv_rows(path)
    if header:
        next(rows)
    for line, row in rows:
        if len(row) != width:
            return DataError(f"row has {len(row)} values", file=str(path), field=f"line {line}",
                             expected=f"{width} values (a label and {width - 1} pixel values) "
                             "like the first row")
        for col, text in enumerate(row, 1):
            if not _is_number(text):
                return DataError("value is not a number", file=str(path),
                                 field=f"line {line}, column {col}",
                                 expected="labels 0..K-1" if col == 1 else VALUES, got=text)
    return DataError(f"cannot parse the CSV file ({problem})", file=str(path),
                     expected=CSV_LAYOUT)


def _read_csv(path: Path, ctx: StageContext, label_column: str | None = None) -> Pair:
    import pyarrow.csv as pcsv

    first = _first_row(path)
    if not first:
        raise DataError("empty CSV file", file=str(path), expected=CSV_LAYOUT)
    header = not all(_is_number(v) for v in first)
    width = len(first)
    label = _csv_label_index(path, first, header, label_column)
    names = [f"c{i}" for i in range(width)]
    _side(path, width - 1, "line 1", "a label column and H*W pixel columns")
    try:
        table = pcsv.read_csv(
            path, read_options=pcsv.ReadOptions(column_names=names, skip_rows=int(header)),
            convert_options=pcsv.ConvertOptions(column_types={
                n: pa.float64() if i == label else pa.float32() for i, n in enumerate(names)}))
    except pa.ArrowInvalid as e:
        raise _csv_scan(path, header, width, str(e)) from None
    except OSError as e:
        raise DataError(f"cannot read the CSV file ({e})", file=str(path)) from None
    pixel_columns = [j for j in range(width) if j != label]
    pixels = np.empty((table.num_rows, width - 1), np.float32)
    for i, j in enumerate(pixel_columns):
        pixels[:, i] = table.column(j).to_numpy()
    labels = table.column(label).to_numpy()
    cols = first if header else None

    def locate(row: int, pixel: int | None) -> str:
        col = 1 + (label if pixel is None else pixel_columns[pixel])
        return f"line {_csv_line(path, header, row)}, column {col}" + \
            (f" ({cols[col - 1]!r})" if cols else "")

    labels, images = to_images(path, labels, pixels, locate, ctx)
    said = "no header row"
    if header:
        said = "header row " + ",".join(first[:3]) + ",..." + \
            (f", labels in column {first[label]!r}" if label else "")
    ctx.log.info("%s: %s", path.name, said)
    return Pair(path.stem, path, path, images, labels, locate)


def _csv_label_index(path: Path, first: list[str], header: bool,
                     label_column: str | None) -> int:
    """The label's column: the one a header row names ``label_column``, else the first
    (a file without a header holds the label first, as the captures a retraining run
    adds are written)."""
    if not header or label_column is None:
        return 0
    names = [v.strip() for v in first]
    if label_column not in names:
        raise DataError("no label column in the header row", file=str(path),
                        field="line 1 (the header row)",
                        expected=f"a column named {label_column!r} (data.label_column) "
                        "holding the class labels",
                        got=short(names))
    return names.index(label_column)


# ----------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path, label_column: str, ctx: StageContext) -> Pair:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"cannot read the Parquet file ({e})", file=str(path),
                        expected=PARQUET_LAYOUT) from None
    names = table.column_names
    if label_column not in names:
        raise DataError("no label column", file=str(path), field=label_column,
                        expected=f"a column named {label_column!r} holding the class labels",
                        got=names[:10])
    labels = _numeric(path, table, label_column).astype(np.float64)
    listed = next((c for c in PIXEL_LIST_COLUMNS if c in names), None)
    if listed is not None:
        pixels, locate = _list_pixels(path, table, listed, label_column)
    else:
        columns = [c for c in names if c != label_column]
        _side(path, len(columns), "pixel columns", f"one column per pixel besides "
              f"{label_column!r}")
        pixels = np.empty((table.num_rows, len(columns)), np.float32)
        for j, c in enumerate(columns):
            pixels[:, j] = _numeric(path, table, c)

        def locate(row: int, pixel: int | None) -> str:
            column = label_column if pixel is None else columns[pixel]
            return f"row {row + 1}, column {column!r}"
    labels, images = to_images(path, labels, pixels, locate, ctx)
    return Pair(path.stem, path, path, images, labels, locate)


def _numeric(path: Path, table: pa.Table, name: str) -> np.ndarray:
    column = table.column(name)
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
            or pa.types.is_decimal(column.type)):
        raise DataError("column is not numeric", file=str(path), field=name,
                        expected=f"numbers ({VALUES} for pixels)", got=str(column.type))
    return column.cast(pa.float64()).to_numpy()


def _list_pixels(path: Path, table: pa.Table, name: str, label_column: str
                 ) -> tuple[np.ndarray, Locate]:
    column = table.column(name).combine_chunks()
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind)) or not (
            pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        raise DataError("pixel column is not a list of numbers", file=str(path), field=name,
                        expected=f"a list of H*W {VALUES} (encoded PNG/JPEG images are not "
                        "read)", got=str(kind))

    def locate(row: int, pixel: int | None) -> str:
        return f"row {row + 1}, " + (f"column {label_column!r}" if pixel is None
                                     else f"column {name!r} value {pixel + 1}")
    if column.null_count:
        row = int(np.argmax(column.is_null().to_numpy(zero_copy_only=False)))
        raise DataError("missing pixel list", file=str(path), field=f"row {row + 1}, column "
                        f"{name!r}", expected=f"a list of H*W {VALUES}")
    lengths = pc.list_value_length(column).to_numpy()
    if len(lengths) and (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise DataError(f"row has {lengths[row]} pixel values", file=str(path),
                        field=f"row {row + 1}, column {name!r}",
                        expected=f"{lengths[0]} values like row 1")
    width = int(lengths[0]) if len(lengths) else 1
    _side(path, width, name, f"a list column {name!r}")
    flat = pc.list_flatten(column).cast(pa.float32()).to_numpy(zero_copy_only=False)
    return flat.reshape(-1, width), locate


# ----------------------------------------------------------------------------- writing


def raw_table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
    """The raw-format table: label int32, pixels list<int32> (row-major H*W values)."""
    n, h, w = images.shape
    flat = pa.array(images.reshape(-1).astype(np.int32, copy=False))
    offsets = pa.array(np.arange(0, n * h * w + 1, h * w, dtype=np.int32))
    return pa.table({"label": pa.array(labels.astype(np.int32, copy=False)),
                     "pixels": pa.ListArray.from_arrays(offsets, flat)})


def write_raw(out_dir: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]],
              ctx: StageContext, names: tuple[str, ...]) -> None:
    with ctx.progress.task("write raw splits", total=len(splits)) as bar:
        for name in names:
            images, labels = splits[name]
            (out_dir / name).mkdir()
            pq.write_table(raw_table(images, labels), out_dir / name / "part-00000.parquet",
                           row_group_size=ROW_GROUP_ROWS, compression="snappy")
            bar.advance()
