"""Image files a user hands to ``harness predict``: IDX image files, PNG files and .npy arrays.

Every file is checked before anything is sent: a file that cannot be decoded, holds no
numbers, no images, non-finite or out-of-range values, or images of another size than the
first file's, raises DataError naming the file and what was expected.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from harness.errors import DataError

EXPECTED_FILES = "an IDX images file, a PNG or a .npy file"
_NPY_EXPECTED = ("a numeric array saved with numpy.save: one flat image [H*W], "
                 "N flat images [N, H*W] or N images [N, H, W]")


def _png_errors() -> tuple[type[BaseException], ...]:
    """What Pillow (under matplotlib) raises for a broken PNG: OSError for truncated data,
    SyntaxError for a bad signature or chunk, ValueError for an unknown pixel format."""
    import PIL.Image
    return (OSError, SyntaxError, ValueError, EOFError, zlib.error,
            PIL.Image.DecompressionBombError)


def _read_png(path: Path, name: str) -> np.ndarray:
    """One PNG as float32 [1, H*W] in [0, 1] (colour: the mean of R, G and B)."""
    import matplotlib.image as mpimg

    try:
        img = np.asarray(mpimg.imread(path))  # PNG: floats in [0, 1]
    except _png_errors() as e:
        raise DataError(f"cannot decode the PNG image ({type(e).__name__}: {e})", file=name,
                        expected="a valid PNG image (greyscale or colour)") from None
    if img.ndim == 3 and img.shape[2] in (3, 4):  # RGB, RGBA (grey + alpha arrives as RGBA)
        img = img[..., :3].mean(axis=2)
    if img.ndim != 2 or img.size == 0:
        raise DataError("the PNG does not decode to one image", file=name,
                        expected="a greyscale or colour image of at least 1x1 pixels",
                        got=f"an array of shape {img.shape}")
    return img.reshape(1, -1).astype(np.float32)


def _load_npy(path: Path, name: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:  # pickled or object data, or a malformed header
        pickled = "allow_pickle" in str(e)
        raise DataError(f"cannot read the .npy file ({e})", file=name,
                        expected=_NPY_EXPECTED + (" (no pickled or object data)" if pickled
                                                  else "")) from None
    except (OSError, EOFError, SyntaxError) as e:
        raise DataError(f"cannot read the .npy file ({type(e).__name__}: {e})", file=name,
                        expected=_NPY_EXPECTED) from None
    if not isinstance(arr, np.ndarray):  # np.load opened an .npz archive
        arr.close()
        raise DataError("the file is an .npz archive, not a .npy array", file=name,
                        expected=_NPY_EXPECTED)
    return arr


def _read_npy(path: Path, name: str) -> np.ndarray:
    """The images of a .npy file as float32 [N, H*W] in [0, 1]; values above 1 are taken
    as grey levels 0..255 and divided by 255."""
    arr = _load_npy(path, name)
    if arr.dtype.kind not in "biuf":
        raise DataError("the array is not numeric", file=name,
                        expected=_NPY_EXPECTED + " of integers or floats",
                        got=f"dtype {arr.dtype}")
    if arr.ndim == 0:
        raise DataError("the array is a single number, not an image", file=name,
                        expected=_NPY_EXPECTED, got="a 0-dimensional array")
    if arr.size == 0:
        raise DataError("the array holds no pixels", file=name,
                        expected="at least one image of at least one pixel",
                        got=f"an array of shape {arr.shape}")
    rows = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(1, -1)
    bad = ~np.isfinite(rows) if arr.dtype.kind == "f" else None
    if bad is not None and bad.any():
        where = np.unravel_index(int(np.argmax(bad)), rows.shape)
        raise DataError(f"{int(bad.sum())} pixel value(s) are NaN or infinite", file=name,
                        expected="finite pixel values in [0, 1] or [0, 255]",
                        got=f"{rows[where]} (image {where[0]}, pixel {where[1]})")
    low, high = rows.min(), rows.max()
    if low < 0 or high > 255:
        raise DataError("pixel values out of range", file=name,
                        expected="pixel values in [0, 1] or [0, 255]",
                        got=f"values from {low} to {high}")
    rows = rows.astype(np.float32)
    return rows / 255.0 if high > 1 else rows


def _read_idx_images(path: Path, name: str) -> np.ndarray:
    from harness.idx import read_idx

    arr = read_idx(path, expect_ndim=3)
    if arr.dtype != np.uint8:
        raise DataError("IDX images must be unsigned bytes", file=name,
                        expected="IDX type 0x08 (ubyte, grey levels 0..255)", got=str(arr.dtype))
    if len(arr) == 0:
        raise DataError("the IDX file holds no images", file=name,
                        expected="at least one image", got=f"shape {arr.shape}")
    return arr.reshape(len(arr), -1).astype(np.float32) / 255.0


def _read_one(name: str) -> np.ndarray:
    path = Path(name)
    if not path.exists():
        raise DataError("file not found", file=name, expected=EXPECTED_FILES)
    if not path.is_file():
        raise DataError("not a file", file=name, expected=EXPECTED_FILES)
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            return _read_png(path, name)
        if suffix == ".npy":
            return _read_npy(path, name)
    except PermissionError as e:
        raise DataError(f"cannot read the file ({e.strerror})", file=name,
                        expected=EXPECTED_FILES) from None
    return _read_idx_images(path, name)


def load_images(files: list[str]) -> np.ndarray:
    """Images as float32 [N, H*W] in [0, 1], from IDX image files, PNG files or .npy."""
    if not files:
        raise DataError("no image files given", expected=EXPECTED_FILES)
    rows = []
    for name in files:
        images = _read_one(name)
        if rows and images.shape[1] != rows[0].shape[1]:
            raise DataError("the image size differs from the first file's", file=name,
                            expected=f"{rows[0].shape[1]} pixels per image like {files[0]}",
                            got=f"{images.shape[1]} pixels per image")
        rows.append(images)
    return np.concatenate(rows)
