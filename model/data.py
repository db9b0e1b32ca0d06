"""Read a processed split (a Parquet directory written by the ETL): streamed through
``tf.data`` for training (:func:`stream_split`), or whole into numpy arrays for the
smaller readers (:func:`load_split`: evaluation, batch inference, drift tools).

Contract (written by ``glue_etl``): ``<processed>/<split>/`` holds Spark part files (plus
``_SUCCESS``) with columns ``pixels`` (array<float>, values in [0, 1], length H*W,
row-major) and ``label`` (int). The ETL caps the rows of a part file (``etl.rows_per_file``),
so a split of any size is many files of bounded size: the stream reads them one record
batch at a time and memory stays flat as the data grows. This module ships to SageMaker
with the training script, so it depends on numpy and pyarrow only (never on ``harness``);
TensorFlow is imported by :func:`stream_split` alone (evaluation and the drift tools read
without it).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIXELS = "pixels"
LABEL = "label"
# Rows one pyarrow record batch holds: what the stream's reader materialises at a time
# (784 float32 pixels a row: ~3 MiB), decoded from the part file's current row group.
READ_ROWS = 1024
# The row shuffle buffer of a training stream: 10,000 rows is ~31 MiB of 28x28 float32
# images, one whole part file at the ETL's default rows_per_file, so with the file order
# shuffled per epoch every file's rows are fully mixed with its neighbours' (the ETL's
# rows are already in random order: the prepare step shuffles every split). A larger
# buffer costs memory and a longer fill before the first step, for little gain.
SHUFFLE_BUFFER_ROWS = 10_000


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


def split_files(directory: str | os.PathLike) -> list[Path]:
    """The split's data files in name order (markers such as ``_SUCCESS`` left out);
    DataFormatError when the directory is missing or holds none."""
    return _data_files(Path(directory))


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


def _check_columns(where: Path, schema: pa.Schema) -> None:
    """Both columns there, with their contract types (from the schema alone)."""
    for name in (PIXELS, LABEL):
        if name not in schema.names:
            raise DataFormatError(where, "column missing", field=name,
                                  expected=f"columns '{PIXELS}' and '{LABEL}'",
                                  got=", ".join(schema.names))
    pix_type = schema.field(PIXELS).type
    if not (pa.types.is_list(pix_type) or pa.types.is_large_list(pix_type)) \
            or not pa.types.is_floating(pix_type.value_type):
        raise DataFormatError(where, "wrong column type", field=PIXELS,
                              expected="array<float>", got=str(pix_type))
    label_type = schema.field(LABEL).type
    if not pa.types.is_integer(label_type):
        raise DataFormatError(where, "wrong column type", field=LABEL,
                              expected="an integer type", got=str(label_type))


def _to_arrays(where: Path, pixels: pa.Array, labels: pa.Array,
               expected_pixels: int | None, num_classes: int | None, *, copy: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Checked rows as ``(x float32 [n, H*W], y int64 [n])``: no nulls, one row length
    (``expected_pixels`` when given), labels in ``[0, num_classes)`` when given. ``x`` is
    a view of Arrow's buffer when it can be, unless ``copy``: a view keeps the whole
    decoded row group alive for as long as anything (a tensor) holds it."""
    if pixels.null_count or labels.null_count:
        name = PIXELS if pixels.null_count else LABEL
        raise DataFormatError(where, "null values", field=name, expected="no nulls")
    lengths = pc.list_value_length(pixels)
    lo, hi = pc.min_max(lengths).values()
    lo, hi = lo.as_py(), hi.as_py()
    if lo != hi:
        raise DataFormatError(where, "rows have different pixel counts", field=PIXELS,
                              expected="the same length (H*W) in every row",
                              got=f"lengths from {lo} to {hi}")
    if expected_pixels is not None and lo != expected_pixels:
        raise DataFormatError(where, "wrong pixel count per row", field=PIXELS,
                              expected=f"{expected_pixels} values (image_height*image_width)",
                              got=lo)
    values = pixels.flatten()  # the values of these rows only (a batch may be a slice)
    if values.null_count:
        raise DataFormatError(where, "null pixel values", field=PIXELS, expected="no nulls")
    x = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=copy).reshape(-1, lo)
    y = labels.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if num_classes is not None:
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            raise DataFormatError(where, f"values outside [0, {num_classes - 1}]", field=LABEL,
                                  expected=f"labels below num_classes={num_classes}",
                                  got=int(y[bad][0]))
    return x, y


def load_split(directory: str | os.PathLike, expected_pixels: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(x, y)``: float32 ``[N, H*W]`` pixels and int64 ``[N]`` labels, the whole
    split in memory (training streams it instead: :func:`stream_split`).

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
    _check_columns(directory, table.schema)
    return _to_arrays(directory, table.column(PIXELS).combine_chunks(),
                      table.column(LABEL).combine_chunks(), expected_pixels, None)


def _parquet_file(directory: Path, path: Path) -> pq.ParquetFile:
    try:
        # a buffered stream, not whole column chunks read ahead: Arrow still decodes a
        # row group's list column at once (~3x its size at peak; the ETL's rows_per_file
        # bounds a file, so its row groups), the buffering saves the raw chunk's copy
        return pq.ParquetFile(str(path), pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataFormatError(path, f"cannot read the Parquet file ({e})",
                              expected=f"a Parquet part file of the split {directory} with "
                              f"columns '{PIXELS}' (array<float>) and '{LABEL}' (int)") from None


def count_rows(directory: str | os.PathLike, files: Sequence[str | os.PathLike] | None = None
               ) -> int:
    """The split's rows from the Parquet footers (no data is read). With ``files``,
    theirs only."""
    directory = Path(directory)
    paths = [Path(f) for f in files] if files is not None else _data_files(directory)
    total = 0
    for path in paths:
        with _parquet_file(directory, path) as f:
            total += f.metadata.num_rows
    return total


def check_split(directory: str | os.PathLike,
                files: Sequence[str | os.PathLike] | None = None) -> tuple[list[Path], int]:
    """``(files, rows)`` of a split whose every file has the contract's columns and
    types, read from the Parquet footers only; DataFormatError naming the file, the
    column and the expected type otherwise, or when the split holds no rows."""
    directory = Path(directory)
    paths = [Path(f) for f in files] if files is not None else _data_files(directory)
    if not paths:
        raise DataFormatError(directory, "no data files given",
                              expected="at least one Parquet part file of the split")
    rows = 0
    for path in paths:
        with _parquet_file(directory, path) as f:
            _check_columns(path, f.schema_arrow)
            rows += f.metadata.num_rows
    if rows == 0:
        raise DataFormatError(directory, "split holds no rows", expected="at least one example")
    return paths, rows


def read_batches(files: Sequence[str | os.PathLike], *, expected_pixels: int,
                 num_classes: int | None = None, rows: int = READ_ROWS
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(x, y)`` chunks of at most ``rows`` rows, file after file, each read as one
    pyarrow record batch and checked (nulls, pixel count, labels) before it is yielded:
    a bad row fails here with a DataFormatError naming its file."""
    for path in files:
        path = Path(os.fsdecode(path))
        with _parquet_file(path.parent, path) as f:
            _check_columns(path, f.schema_arrow)
            for batch in f.iter_batches(batch_size=rows, columns=[PIXELS, LABEL]):
                yield _to_arrays(path, batch.column(PIXELS), batch.column(LABEL),
                                 expected_pixels, num_classes, copy=True)


def head_rows(directory: str | os.PathLike, limit: int, *, expected_pixels: int,
              num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The split's first ``limit`` rows (files in name order) as ``(x, y)`` arrays,
    reading no further than needed."""
    if limit < 1:
        raise ValueError(f"head_rows needs a limit of at least 1 row, got {limit}")
    xs, ys, taken = [], [], 0
    for x, y in read_batches(_data_files(Path(directory)), expected_pixels=expected_pixels,
                             num_classes=num_classes):
        xs.append(x[:limit - taken])
        ys.append(y[:limit - taken])
        taken += len(ys[-1])
        if taken >= limit:
            break
    if not xs:
        raise DataFormatError(directory, "split holds no rows", expected="at least one example")
    return np.concatenate(xs), np.concatenate(ys)


# DataFormatErrors the stream's reader raised: tf.data runs it in a py_function, which
# hands the caller a tf.errors.InvalidArgumentError holding a Python traceback instead
# (raise_data_errors turns it back into the reader's own error).
_raised: list[DataFormatError] = []


def stream_split(directory: str | os.PathLike, *, batch_size: int, shuffle: bool,
                 seed: int, expected_pixels: int, num_classes: int,
                 files: Sequence[str | os.PathLike] | None = None,
                 shuffle_buffer: int = SHUFFLE_BUFFER_ROWS, read_rows: int = READ_ROWS):
    """A ``tf.data.Dataset`` of ``(x float32 [B, H*W], y int64 [B])`` batches of the
    split (or of ``files``), read record batch by record batch, never whole.

    With ``shuffle`` the file order is shuffled every epoch (iteration) and the rows go
    through a ``shuffle_buffer``-row buffer; both are seeded, so the same seed gives the
    same batches run to run. Without it rows come in file-name order. The dataset's
    cardinality is known (from the footers): Keras sees the steps of an epoch. Columns
    and types are checked here, before any data is read; nulls, pixel counts and label
    ranges per record batch while the data streams (iterate the dataset inside
    :func:`raise_data_errors` to get those as DataFormatError).
    """
    import tensorflow as tf

    if batch_size < 1 or read_rows < 1 or shuffle_buffer < 1:
        raise ValueError(f"batch_size, read_rows and shuffle_buffer must be >= 1, got "
                         f"{batch_size}, {read_rows}, {shuffle_buffer}")
    paths, rows = check_split(directory, files)

    def file_batches(path: bytes) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        try:
            yield from read_batches([path], expected_pixels=expected_pixels,
                                    num_classes=num_classes, rows=read_rows)
        except DataFormatError as e:
            _raised.append(e)
            raise

    signature = (tf.TensorSpec([None, expected_pixels], tf.float32),
                 tf.TensorSpec([None], tf.int64))
    names = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle:  # a new file order every epoch: the seed fixes the sequence of orders
        names = names.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    # one file at a time, in the order above (flat_map keeps it: deterministic)
    dataset = names.flat_map(lambda path: tf.data.Dataset.from_generator(
        file_batches, args=(path,), output_signature=signature)).unbatch()
    if shuffle:  # a second seed: the row order is not tied to the file order's draws
        dataset = dataset.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))
    options = tf.data.Options()
    # SageMaker gives each instance its own part files (S3DataDistributionType
    # ShardedByS3Key) or all of them (FullyReplicated, by choice): the script must not
    # shard again. Under MultiWorkerMirroredStrategy, AUTO would split each worker's own
    # shard by file once more (a worker trains on a fraction of what it was given; with
    # fewer files than workers, some get none).
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.OFF
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


@contextlib.contextmanager
def raise_data_errors() -> Iterator[None]:
    """Run ``model.fit`` / ``evaluate`` on streams inside this: a DataFormatError raised
    by a stream's reader comes out as itself (its text names the file, the column and the
    expected value), not as the tf.errors.InvalidArgumentError tf.data wraps it in."""
    import tensorflow as tf

    mark = len(_raised)
    try:
        yield
    except tf.errors.OpError:
        if len(_raised) > mark:
            raise _raised[mark] from None
        raise
