"""harness/image_files.py: the images `harness predict FILES...` reads, and the error a
user sees for each kind of broken file (the file named, what was expected)."""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from harness.errors import DataError
from harness.idx import write_idx
from harness.image_files import load_images

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402  (after choosing the backend)


@pytest.fixture
def grey() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)


@pytest.fixture
def png(tmp_path, grey) -> Path:
    import PIL.Image
    path = tmp_path / "digit.png"
    PIL.Image.fromarray(np.stack([grey] * 3, axis=2), mode="RGB").save(path)
    return path


def error_for(*paths) -> str:
    """The message of the DataError load_images raises; it must name the last file."""
    with pytest.raises(DataError) as e:
        load_images([str(p) for p in paths])
    msg = str(e.value)
    assert str(paths[-1]) in msg, msg
    assert "Expected" in msg, msg
    return msg


# ----------------------------------------------------------------------------- good files


def test_png_npy_and_idx_together(tmp_path, png, grey):
    np.save(tmp_path / "two.npy", np.full((2, 28, 28), 255, dtype=np.uint8))
    write_idx(tmp_path / "three-idx3-ubyte", np.zeros((3, 28, 28), dtype=np.uint8))
    x = load_images([str(png), str(tmp_path / "two.npy"), str(tmp_path / "three-idx3-ubyte")])
    assert x.shape == (6, 784) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], grey.reshape(-1) / 255, atol=1e-6)  # RGB -> [0, 1]
    assert (x[1:3] == 1).all() and (x[3:] == 0).all()                 # 0..255 -> [0, 1]


def test_grey_and_alpha_png_uses_the_grey_channel(tmp_path):
    import PIL.Image
    la = np.zeros((4, 4, 2), dtype=np.uint8)
    la[..., 0], la[..., 1] = 51, 255          # grey 0.2, opaque
    PIL.Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_images([str(tmp_path / "la.png")]), 0.2, atol=1e-6)


# ----------------------------------------------------------------------------- broken PNG


@pytest.mark.parametrize("damage", ["truncated", "bad-chunk-crc", "garbage-after-signature",
                                    "not-a-png", "empty"])
def test_corrupt_png(tmp_path, png, damage):
    raw = png.read_bytes()
    bad = tmp_path / f"{damage}.png"
    bad.write_bytes({"truncated": raw[: len(raw) // 2],
                     "bad-chunk-crc": raw[:40] + bytes(b ^ 0xFF for b in raw[40:48]) + raw[48:],
                     "garbage-after-signature": raw[:8] + b"junk" * 20,
                     "not-a-png": b"hello, world",
                     "empty": b""}[damage])
    msg = error_for(bad)
    assert "cannot decode the PNG image" in msg and "a valid PNG image" in msg


# ----------------------------------------------------------------------------- broken .npy


def test_npy_of_strings(tmp_path):
    np.save(tmp_path / "strings.npy", np.array(["0", "1", "255"]))  # numeric-looking text
    msg = error_for(tmp_path / "strings.npy")
    assert "not numeric" in msg and "integers or floats" in msg and "<U3" in msg


def test_npy_of_objects(tmp_path):
    np.save(tmp_path / "objects.npy", np.array([1, "x", None], dtype=object),
            allow_pickle=True)
    msg = error_for(tmp_path / "objects.npy")
    assert "cannot read the .npy file" in msg and "no pickled or object data" in msg


def test_pickle_named_npy(tmp_path):
    (tmp_path / "pickled.npy").write_bytes(pickle.dumps([[0.0] * 784]))
    msg = error_for(tmp_path / "pickled.npy")
    assert "pickled data" in msg and "no pickled or object data" in msg


def test_npy_of_records(tmp_path):
    np.save(tmp_path / "records.npy", np.zeros(3, dtype=[("a", "i4"), ("b", "f4")]))
    assert "not numeric" in error_for(tmp_path / "records.npy")


def test_npy_of_complex_numbers(tmp_path):
    np.save(tmp_path / "complex.npy", np.ones((1, 784), dtype=complex))
    assert "complex128" in error_for(tmp_path / "complex.npy")


def test_npz_named_npy(tmp_path):
    with (tmp_path / "zipped.npy").open("wb") as f:
        np.savez(f, images=np.ones((1, 784)))
    assert ".npz archive" in error_for(tmp_path / "zipped.npy")


def test_truncated_npy(tmp_path):
    np.save(tmp_path / "full.npy", np.ones((2, 784), dtype=np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:200])
    assert "cannot read the .npy file" in error_for(tmp_path / "cut.npy")


@pytest.mark.parametrize("shape", [(0, 784), (3, 0), (0,)])
def test_empty_npy(tmp_path, shape):
    np.save(tmp_path / "empty.npy", np.zeros(shape, dtype=np.float32))
    msg = error_for(tmp_path / "empty.npy")
    assert "holds no pixels" in msg and f"shape {shape}" in msg


def test_scalar_npy(tmp_path):
    np.save(tmp_path / "scalar.npy", np.float32(0.5))
    assert "single number" in error_for(tmp_path / "scalar.npy")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_npy(tmp_path, value):
    x = np.zeros((2, 784), dtype=np.float32)
    x[1, 7] = value
    np.save(tmp_path / "x.npy", x)
    msg = error_for(tmp_path / "x.npy")
    assert "NaN or infinite" in msg and "(image 1, pixel 7)" in msg
    assert "finite pixel values" in msg


@pytest.mark.parametrize("value", [-3.0, 256.0, 1e300])
def test_out_of_range_npy(tmp_path, value):
    np.save(tmp_path / "x.npy", np.full((1, 784), value))
    msg = error_for(tmp_path / "x.npy")
    assert "out of range" in msg and "[0, 1] or [0, 255]" in msg


# ----------------------------------------------------------------------------- broken IDX


def test_idx_with_no_images(tmp_path):
    path = tmp_path / "none-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 0x08, 3, 0, 28, 28))
    assert "holds no images" in error_for(path)


def test_idx_with_a_zero_image_size(tmp_path):
    path = tmp_path / "flat-idx3-ubyte"
    path.write_bytes(struct.pack(">HBB3I", 0, 0x08, 3, 4, 0, 28))
    assert "dimension 2 of the header" in error_for(path)


def test_idx_of_floats(tmp_path):
    write_idx(tmp_path / "f-idx3", np.full((1, 2, 2), np.nan, dtype=np.float32))
    assert "unsigned bytes" in error_for(tmp_path / "f-idx3")


# ----------------------------------------------------------------------------- sets of files


def test_pngs_of_different_sizes(tmp_path, png):
    mpimg.imsave(tmp_path / "small.png", np.zeros((10, 10)), cmap="gray")
    msg = error_for(png, tmp_path / "small.png")
    assert "784 pixels per image like" in msg and str(png) in msg and "100 pixels" in msg


def test_npy_of_another_size_than_a_png(tmp_path, png):
    np.save(tmp_path / "wide.npy", np.zeros((2, 785), dtype=np.float32))
    assert "785 pixels per image" in error_for(png, tmp_path / "wide.npy")


def test_missing_file_and_directory(tmp_path, png):
    assert "file not found" in error_for(png, tmp_path / "nope.png")
    assert "not a file" in error_for(tmp_path)


def test_no_files():
    with pytest.raises(DataError, match="no image files given"):
        load_images([])
