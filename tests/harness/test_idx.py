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


# ----------------------------------------------------------------------------- hostile headers


def _header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(f">HBB{len(dims)}I", 0, type_code, len(dims), *dims)


def _read_error(path) -> str:
    with pytest.raises(DataError) as e:
        read_idx(path)
    msg = str(e.value)
    assert str(path) in msg
    return msg


@pytest.mark.parametrize("dims, field", [
    ((5, 0, 28), "dimension 2 of the header"),
    ((5, 28, 0), "dimension 3 of the header"),
    ((0, 0, 0), "dimension 2 of the header"),
])
def test_zero_dimension_in_header(tmp_path, dims, field):
    path = tmp_path / "zero-images-idx3-ubyte"
    path.write_bytes(_header(0x08, dims))
    msg = _read_error(path)
    assert f"field '{field}'" in msg and "Expected a size of at least 1" in msg


def test_dimension_product_overflowing_64_bits(tmp_path):
    # 2**31 * 2**31 * 4 == 2**64: wraps to 0 in int64 arithmetic, "matching" an empty body
    path = tmp_path / "overflow-images-idx3-ubyte"
    path.write_bytes(_header(0x08, (2**31, 2**31, 4)))
    msg = _read_error(path)
    assert "truncated" in msg and "dimensions 1-3 of the header" in msg
    assert f"Expected {2**64} data bytes" in msg and "0 data bytes" in msg


def test_dimension_product_exceeding_the_file(tmp_path):
    path = tmp_path / "huge-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_header(0x08, (2**32 - 1,) * 3) + bytes(10)))
    msg = _read_error(path)
    assert "truncated" in msg and f"Expected {(2**32 - 1) ** 3} data bytes" in msg


def test_dimensions_larger_than_the_data_for_wider_types(tmp_path):
    path = tmp_path / "floats-idx2"
    path.write_bytes(_header(0x0D, (3, 4)) + bytes(3 * 4 * 4 - 1))  # float32: 48 bytes due
    msg = _read_error(path)
    assert "Expected 48 data bytes" in msg and "47 data bytes" in msg
    assert "field 'dimensions 1-2 of the header'" in msg


def test_unknown_dtype_code(tmp_path):
    path = tmp_path / "t-idx1-ubyte"
    path.write_bytes(_header(0x07, (1,)) + b"\x00")
    msg = _read_error(path)
    assert "data type code (byte 2 of the magic number)" in msg and "0x07" in msg
    assert "0x08 (u8)" in msg and "0x0E (f64)" in msg


def test_zero_dimension_count(tmp_path):
    path = tmp_path / "n-idx0"
    path.write_bytes(b"\x00\x00\x08\x00" + bytes(8))
    msg = _read_error(path)
    assert "dimension count (byte 3 of the magic number)" in msg
    assert "Expected at least 1 dimension" in msg


def test_dimension_count_beyond_the_file(tmp_path):
    path = tmp_path / "n-idx255"
    path.write_bytes(b"\x00\x00\x08\xff" + bytes(100))
    msg = _read_error(path)
    assert "truncated inside the header" in msg and "1024 header bytes" in msg
    assert "field 'dimension sizes (bytes 4-1023)'" in msg


@pytest.mark.parametrize("damage", ["crc", "body", "trailing", "method"])
def test_corrupt_gzip_variants(tmp_path, images, damage):
    path = tmp_path / f"{damage}-images-idx3-ubyte.gz"
    write_idx(path, images)
    raw = path.read_bytes()
    raw = {"crc": raw[:-8] + bytes([raw[-8] ^ 0xFF]) + raw[-7:],
           "body": raw[:12] + bytes(b ^ 0x55 for b in raw[12:40]) + raw[40:],
           "trailing": raw + b"garbage!",
           "method": raw[:2] + b"\x07" + raw[3:]}[damage]
    path.write_bytes(raw)
    msg = _read_error(path)
    assert "gzip" in msg and "Expected a complete gzip stream" in msg
