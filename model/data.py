"""Read one processed split (a Parquet directory written by the ETL) into numpy arrays.

Contract (written by ``glue_etl``): ``<processed>/<split>/`` holds Spark part files (plus
``_SUCCESS``) with columns ``pixels`` (array<float>, values in [0, 1], length H*W,
row-major) and ``label`` (int). This module ships to SageMaker with the training script,
so it depends on numpy and pyarrow only (never on ``harness``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIXELS = "pixels"
LABEL = "label"


class DataFormatError(ValueError):
    """A split directory is missing, empty or does not follow the column contract."""

    def __init__(self, directory: str | os.PathLike, problem: str, *, field: str | None = None,
                 expected: str | None = None, got: object = None):
        self.directory = str(directory)
        self.problem = problem
        self.field = field
        self.expected = expected
        self.got = got
        text = f"{self.directory}: "
        if field:
            text += f"field '{field}': "
        text += problem.rstrip(".") + "."
        if expected is not None:
            text += f" Expected {expected}."
        if got is not None:
            text += f" Got {got!r}."
        super().__init__(text)


def _data_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise DataFormatError(directory, "split directory not found",
                              expected="a directory of Parquet part files written by the ETL")
    def hidden(p: Path) -> bool:  # Spark/Hadoop markers and temporaries: _SUCCESS, .crc
        return any(part.startswith(("_", ".")) for part in p.relative_to(directory).parts)

    files = sorted(p for p in directory.rglob("*") if p.is_file() and not hidden(p))
    if not files:
        raise DataFormatError(directory, "split directory holds no data files",
                              expected="Parquet part files (part-*.parquet)")
    return files


def _read_table(directory: Path, files: list[Path]) -> pa.Table:
    try:
        return pq.read_table([str(f) for f in files], columns=[PIXELS, LABEL])
    except pa.ArrowInvalid as e:
        raise DataFormatError(directory, f"cannot read the Parquet files ({e})",
                              expected=f"Parquet with columns '{PIXELS}' (array<float>) "
                              f"and '{LABEL}' (int)") from None
    except (KeyError, ValueError, OSError) as e:
        raise DataFormatError(directory, f"cannot read the Parquet files ({e})",
                              expected=f"columns '{PIXELS}' and '{LABEL}'") from None


def load_split(directory: str | os.PathLike, expected_pixels: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)``: float32 ``[N, H*W]`` pixels and int64 ``[N]`` labels.

    Raises DataFormatError naming the directory, the column and the expected value when
    the directory is missing or empty, a column is missing or has the wrong type, rows
    have different lengths, values are null, or (when given) the row length is not
    ``expected_pixels``.
    """
    directory = Path(directory)
    files = _data_files(directory)
    schema = pq.read_schema(str(files[0]))
    for name in (PIXELS, LABEL):
        if name not in schema.names:
            raise DataFormatError(directory, "column missing", field=name,
                                  expected=f"columns '{PIXELS}' and '{LABEL}'",
                                  got=", ".join(schema.names))
    table = _read_table(directory, files)
    if table.num_rows == 0:
        raise DataFormatError(directory, "split holds no rows", expected="at least one example")

    pix_type = table.schema.field(PIXELS).type
    if not (pa.types.is_list(pix_type) or pa.types.is_large_list(pix_type)) \
            or not pa.types.is_floating(pix_type.value_type):
        raise DataFormatError(directory, "wrong column type", field=PIXELS,
                              expected="array<float>", got=str(pix_type))
    label_type = table.schema.field(LABEL).type
    if not pa.types.is_integer(label_type):
        raise DataFormatError(directory, "wrong column type", field=LABEL,
                              expected="an integer type", got=str(label_type))

    pixels = table.column(PIXELS).combine_chunks()
    labels = table.column(LABEL)
    if pixels.null_count or labels.null_count:
        name = PIXELS if pixels.null_count else LABEL
        raise DataFormatError(directory, "null values", field=name, expected="no nulls")
    lengths = pc.list_value_length(pixels)
    lo, hi = pc.min_max(lengths).values()
    lo, hi = lo.as_py(), hi.as_py()
    if lo != hi:
        raise DataFormatError(directory, "rows have different pixel counts", field=PIXELS,
                              expected="the same length (H*W) in every row",
                              got=f"lengths from {lo} to {hi}")
    if expected_pixels is not None and lo != expected_pixels:
        raise DataFormatError(directory, "wrong pixel count per row", field=PIXELS,
                              expected=f"{expected_pixels} values (image_height*image_width)",
                              got=lo)
    values = pixels.flatten()
    if values.null_count:
        raise DataFormatError(directory, "null pixel values", field=PIXELS, expected="no nulls")
    x = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, lo)
    y = labels.to_numpy().astype(np.int64, copy=False)
    return x, y
