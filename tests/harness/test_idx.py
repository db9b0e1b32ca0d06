"""harness/idx.py: IDX round trips and the errors a user sees for broken files."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from harness.errors import DataError
from harness.idx import read_idx, read_image_label_pair, write_idx


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_round_trip_plain_and_gzip(tmp_path, images, name):
    path = tmp_path / name
    write_idx(path, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(path, expect_ndim=3)
    assert back.dtype == np.uint8 and back.shape == (7, 5, 4)
    np.testing.assert_array_equal(back, images)


def test_round_trip_other_dtypes(tmp_path):
    for arr in (np.arange(-3, 3, dtype=np.int32), np.linspace(0, 1, 6, dtype=np.float64)):
        write_idx(tmp_path / "a.idx", arr)
        np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
        (tmp_path / "a.idx").unlink()


def test_header_is_big_endian_mnist_layout(tmp_path, images):
    write_idx(tmp_path / "x-idx3-ubyte", images)
    raw = (tmp_path / "x-idx3-ubyte").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert struct.unpack(">3I", raw[4:16]) == (7, 5, 4)
    assert len(raw) == 16 + 7 * 5 * 4


def test_truncated_file(tmp_path, images):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, images)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and "truncated" in str(e.value)
    assert "140 data bytes" in str(e.value) and "130 data bytes" in str(e.value)


def test_truncated_inside_header(tmp_path):
    path = tmp_path / "h-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="truncated inside the header") as e:
        read_idx(path)
    assert str(path) in str(e.value)


def test_corrupt_gzip(tmp_path, images):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, images)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))  # cut the gzip stream
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert str(path) in str(e.value) and "gzip" in str(e.value)


def test_wrong_magic(tmp_path):
    path = tmp_path / "notes-idx3-ubyte"
    path.write_bytes(b"hello, this is not an IDX file")
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert str(path) in msg and "wrong magic number" in msg and "68656c6c" in msg


def test_wrong_ndim(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    write_idx(path, np.zeros((3, 2), dtype=np.uint8))  # 2-D where labels must be 1-D
    with pytest.raises(DataError) as e:
        read_idx(path, expect_ndim=1)
    msg = str(e.value)
    assert str(path) in msg and "2 dimension(s)" in msg and "Expected 1 dimension(s)" in msg


def test_count_mismatch(tmp_path, images):
    write_idx(tmp_path / "i-idx3-ubyte", images)
    write_idx(tmp_path / "l-idx1-ubyte", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        read_image_label_pair(tmp_path / "i-idx3-ubyte", tmp_path / "l-idx1-ubyte")
    msg = str(e.value)
    assert "count mismatch" in msg and "l-idx1-ubyte" in msg and "i-idx3-ubyte" in msg
    assert "(7)" in msg and "6 labels" in msg


def test_empty_dataset(tmp_path):
    write_idx(tmp_path / "i-idx3-ubyte", np.zeros((0, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "l-idx1-ubyte", np.zeros(0, dtype=np.uint8))
    with pytest.raises(DataError) as e:
        read_image_label_pair(tmp_path / "i-idx3-ubyte", tmp_path / "l-idx1-ubyte")
    assert "empty dataset" in str(e.value) and "i-idx3-ubyte" in str(e.value)


def test_empty_file(tmp_path):
    (tmp_path / "z-idx1-ubyte.gz").write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="empty or truncated before the magic") as e:
        read_idx(tmp_path / "z-idx1-ubyte.gz")
    assert "z-idx1-ubyte.gz" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as e:
        read_idx(tmp_path / "nope-idx1-ubyte")
    assert "nope-idx1-ubyte" in str(e.value)


def test_images_must_be_bytes(tmp_path):
    write_idx(tmp_path / "i-idx3-ubyte", np.zeros((2, 2, 2), dtype=np.float32))
    write_idx(tmp_path / "l-idx1-ubyte", np.zeros(2, dtype=np.uint8))
    with pytest.raises(DataError, match="unsigned bytes"):
        read_image_label_pair(tmp_path / "i-idx3-ubyte", tmp_path / "l-idx1-ubyte")
