"""The training data stream (model/data.py: stream_split and its reader): every row once
an epoch, seeded shuffles, files read record batch by record batch, the same checks and
messages as load_split."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import sample_digits, write_split

from harness.config import PROJECT_ROOT
from model.data import (DataFormatError, count_rows, head_rows, load_split, raise_data_errors,
                        read_batches, split_files, stream_split)


def rows_of(x: np.ndarray, y: np.ndarray) -> list[tuple[int, bytes]]:
    """Each row as (label, pixel bytes): rows compared whole, as a multiset when sorted."""
    return [(int(label), pixels.tobytes()) for pixels, label in zip(x, y)]


def epoch(dataset) -> tuple[list[tuple[int, bytes]], list[int]]:
    """One pass over a stream: its rows in order, and its batch sizes."""
    rows, sizes = [], []
    with raise_data_errors():
        for x, y in dataset:
            assert x.dtype.name == "float32" and y.dtype.name == "int64"
            rows += rows_of(x.numpy(), y.numpy())
            sizes.append(len(y))
    return rows, sizes


def bad_split(directory: Path, table: pa.Table, good_parts: int = 2) -> Path:
    """A split whose last part file is ``table`` after ``good_parts`` good ones."""
    x, y = sample_digits(40 * good_parts, seed=5)
    write_split(directory, x, y, parts=good_parts)
    pq.write_table(table, directory / "part-99999-x.snappy.parquet")
    return directory


def pixels_column(rows: list[list[float] | None]) -> pa.Array:
    return pa.array(rows, pa.list_(pa.float32()))


@pytest.mark.slow
def test_every_row_once_an_epoch_in_a_seeded_order(tmp_path):
    x, y = sample_digits(900, seed=1)
    write_split(tmp_path / "train", x, y, parts=4)
    source = rows_of(x, y)

    def stream(seed: int, shuffle: bool = True):
        return stream_split(tmp_path / "train", batch_size=64, shuffle=shuffle, seed=seed,
                            expected_pixels=784, num_classes=10, shuffle_buffer=200,
                            read_rows=50)

    ds = stream(3)
    assert int(ds.cardinality()) == 15  # ceil(900 / 64), known from the footers
    first, sizes = epoch(ds)
    second, _ = epoch(ds)
    assert sizes == [64] * 14 + [4]
    assert sorted(first) == sorted(second) == sorted(source)  # each row once an epoch
    assert first != source and second != first                # shuffled, again each epoch
    again = stream(3)
    assert epoch(again)[0] == first and epoch(again)[0] == second  # same seed, same order
    assert epoch(stream(4))[0] != first
    plain, _ = epoch(stream(3, shuffle=False))
    assert plain == source  # no shuffle: files in name order, rows as written


@pytest.mark.slow
def test_the_shuffle_mixes_rows_across_files(tmp_path):
    """The file order and the row buffer both shuffle: a batch holds rows of several
    files, and the files come in a different order each epoch."""
    x, y = sample_digits(400, seed=2)
    write_split(tmp_path / "train", x, y, parts=4)  # 100 rows a file
    part_of = {row: i // 100 for i, row in enumerate(rows_of(x, y))}
    ds = stream_split(tmp_path / "train", batch_size=40, shuffle=True, seed=0,
                      expected_pixels=784, num_classes=10, shuffle_buffer=150, read_rows=25)
    orders = []
    for _ in range(3):
        rows, _ = epoch(ds)
        parts = [part_of[r] for r in rows]
        assert len(set(parts[:40])) > 1
        orders.append(tuple(dict.fromkeys(parts)))  # the order files first appear in
    assert len(set(orders)) > 1


@pytest.mark.slow
def test_the_split_is_read_piecewise_never_whole(tmp_path):
    """In a fresh process (Arrow's peak allocation counts from its start): streaming an
    epoch of an 8-file split allocates at most a few files' worth of Arrow memory at
    once; reading the split whole (load_split, as pq.read_table does) needs it all."""
    rng = np.random.default_rng(0)
    split = tmp_path / "train"
    split.mkdir()
    rows_per_file, files = 1500, 8
    for i in range(files):  # random pixels: Snappy cannot shrink them
        pixels = rng.random((rows_per_file, 784), dtype=np.float32)
        pq.write_table(pa.table({
            "pixels": pa.FixedSizeListArray.from_arrays(pixels.ravel(), 784)
            .cast(pa.list_(pa.float32())),
            "label": pa.array(rng.integers(0, 10, rows_per_file), pa.int32())}),
            split / f"part-{i:05d}-x.snappy.parquet")
    one_file = rows_per_file * 784 * 4
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        import pyarrow as pa
        from model.data import load_split, stream_split
        if sys.argv[1] == "stream":
            ds = stream_split({str(split)!r}, batch_size=256, shuffle=True, seed=0,
                              expected_pixels=784, num_classes=10)
            rows = sum(len(y) for _, y in ds)
        else:
            rows = len(load_split({str(split)!r})[1])
        print(rows, pa.default_memory_pool().max_memory())
    """)
    peaks = {}
    for mode in ("stream", "whole"):
        out = subprocess.run([sys.executable, "-c", code, mode], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        rows, peak = map(int, out.stdout.split()[-2:])
        assert rows == rows_per_file * files
        peaks[mode] = peak
    assert peaks["whole"] >= files * one_file  # the measure sees a whole read
    assert peaks["stream"] < 4 * one_file, peaks


def test_the_reader_yields_record_batches_and_counts_from_the_footers(tmp_path, monkeypatch):
    x, y = sample_digits(230, seed=3)
    write_split(tmp_path / "s", x, y, parts=3)
    files = split_files(tmp_path / "s")
    chunks = list(read_batches(files, expected_pixels=784, num_classes=10, rows=32))
    assert max(len(cy) for _, cy in chunks) == 32 and len(chunks) == 9  # 3 files of 77/77/76
    assert rows_of(np.concatenate([c[0] for c in chunks]),
                   np.concatenate([c[1] for c in chunks])) == rows_of(x, y)
    hx, hy = head_rows(tmp_path / "s", 100, expected_pixels=784)
    np.testing.assert_array_equal(hx, x[:100])
    np.testing.assert_array_equal(hy, y[:100])
    assert len(head_rows(tmp_path / "s", 10_000, expected_pixels=784)[1]) == 230

    def no_data(*a, **k):
        raise AssertionError("count_rows read data")

    monkeypatch.setattr(pq, "read_table", no_data)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", no_data)
    monkeypatch.setattr(pq.ParquetFile, "read", no_data)
    assert count_rows(tmp_path / "s") == 230
    assert count_rows(tmp_path / "s", files[:2]) == 154


@pytest.mark.slow
@pytest.mark.parametrize("table, words", [
    (pa.table({"pixels": pixels_column([[0.5] * 784, None]), "label": [1, 2]}),
     r"part-99999-x.snappy.parquet: field 'pixels': null values. Expected no nulls"),
    (pa.table({"pixels": pixels_column([[0.5] * 784]),
               "label": pa.array([None], pa.int32())}),
     r"field 'label': null values. Expected no nulls"),
    (pa.table({"pixels": pixels_column([[0.5] * 784, [0.5] * 783]), "label": [1, 2]}),
     r"field 'pixels': rows have different pixel counts"),
    (pa.table({"pixels": pixels_column([[0.5] * 783]), "label": [1]}),
     r"field 'pixels': wrong pixel count per row. Expected 784 values "
     r"\(image_height\*image_width\). Got 783"),
    (pa.table({"pixels": pixels_column([[0.5] * 784, [0.5, None] * 392]), "label": [1, 2]}),
     r"field 'pixels': null pixel values"),
    (pa.table({"pixels": pixels_column([[0.5] * 784] * 3), "label": [1, 12, 3]}),
     r"field 'label': values outside \[0, 9\]. Expected labels below num_classes=10. Got 12"),
    (pa.table({"pixels": pixels_column([[0.5] * 784]), "label": [-1]}),
     r"field 'label': values outside \[0, 9\].* Got -1"),
])
def test_a_bad_row_fails_while_streaming_naming_file_field_and_value(tmp_path, table, words):
    split = bad_split(tmp_path / "train", table)
    ds = stream_split(split, batch_size=16, shuffle=False, seed=0, expected_pixels=784,
                      num_classes=10)
    with pytest.raises(DataFormatError, match=words) as e:
        epoch(ds)
    assert e.value.directory.startswith(str(split))


@pytest.mark.slow
def test_bad_columns_and_locations_fail_before_any_data_is_read(tmp_path):
    def stream(directory):
        return stream_split(directory, batch_size=8, shuffle=True, seed=0,
                            expected_pixels=784, num_classes=10)

    with pytest.raises(DataFormatError, match="missing: split directory not found"):
        stream(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "_SUCCESS").write_text("")
    with pytest.raises(DataFormatError, match="holds no data files"):
        stream(tmp_path / "empty")
    split = bad_split(tmp_path / "target", pa.table({"pixels": pixels_column([[0.1] * 784]),
                                                    "target": [1]}))
    with pytest.raises(DataFormatError, match=r"part-99999-x.snappy.parquet: field 'label': "
                       r"column missing. Expected columns 'pixels' and 'label'. Got 'pixels, "
                       r"target'"):
        stream(split)
    split = bad_split(tmp_path / "str", pa.table({"pixels": ["a"], "label": [1]}))
    with pytest.raises(DataFormatError, match="field 'pixels': wrong column type. "
                       "Expected array<float>. Got 'string'"):
        stream(split)
    split = bad_split(tmp_path / "float_label", pa.table({
        "pixels": pixels_column([[0.1] * 784]), "label": [1.0]}))
    with pytest.raises(DataFormatError, match="field 'label': wrong column type. "
                       "Expected an integer type. Got 'double'"):
        stream(split)
    (tmp_path / "nothing").mkdir()
    pq.write_table(pa.table({"pixels": pixels_column([]), "label": pa.array([], pa.int32())}),
                   tmp_path / "nothing" / "part-0.parquet")
    with pytest.raises(DataFormatError, match="split holds no rows"):
        stream(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "part-0.parquet").write_text("not parquet")
    with pytest.raises(DataFormatError, match="part-0.parquet: cannot read the Parquet file"):
        stream(tmp_path / "junk")


def test_load_split_keeps_its_checks(tmp_path):
    """load_split (evaluation, inference, drift tools) shares the checks: a bad row still
    fails it whole, with the same words."""
    split = bad_split(tmp_path / "s", pa.table({"pixels": pixels_column([[0.5] * 783]),
                                               "label": [1]}))
    with pytest.raises(DataFormatError, match=r"field 'pixels': rows have different pixel"):
        load_split(split, expected_pixels=784)
    x, y = sample_digits(50, seed=4)
    write_split(tmp_path / "ok", x, y, parts=2)
    gx, gy = load_split(tmp_path / "ok", expected_pixels=784)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)
