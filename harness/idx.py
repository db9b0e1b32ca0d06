"""Read and write IDX files (the MNIST format), gzipped or not, with strict validation.

Format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``0x00 0x00 <type>
<ndim>``, then ``ndim`` big-endian uint32 dimension sizes, then the data, row-major.
Image size and class count are read from the files, never assumed.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from harness.errors import DataError

# IDX type byte -> numpy big-endian dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_OF = {v.newbyteorder("="): k for k, v in _DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror})", file=str(path)) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"corrupt or truncated gzip data ({e})", file=str(path),
                            expected="a complete gzip stream holding one IDX file") from None
    return raw


def _check_magic(path: Path, data: bytes, expect_ndim: int | None) -> tuple[int, int]:
    """Validate the 4-byte magic number; return (type code, number of dimensions)."""
    if len(data) < 4:
        raise DataError("file is empty or truncated before the magic number", file=str(path),
                        field="magic number (bytes 0-3)",
                        expected="a 4-byte IDX magic number", got=f"{len(data)} bytes")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError("wrong magic number: not an IDX file", file=str(path),
                        field="magic number (bytes 0-1)",
                        expected="0x0000 followed by a type byte in "
                        + ", ".join(f"0x{t:02X}" for t in _DTYPES) + " and a dimension count",
                        got=data[:4].hex())
    if type_code not in _DTYPES:
        raise DataError(f"wrong magic number: unknown data type code 0x{type_code:02X}",
                        file=str(path), field="data type code (byte 2 of the magic number)",
                        expected="one of " + ", ".join(
                            f"0x{t:02X} ({d.kind}{d.itemsize * 8})" for t, d in _DTYPES.items()),
                        got=data[:4].hex())
    if ndim == 0:
        raise DataError("wrong magic number: the dimension count is 0", file=str(path),
                        field="dimension count (byte 3 of the magic number)",
                        expected="at least 1 dimension", got=data[:4].hex())
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"magic number says {ndim} dimension(s)", file=str(path),
                        field="dimension count (byte 3 of the magic number)",
                        expected=f"{expect_ndim} dimension(s) "
                        f"({'images: count, rows, columns' if expect_ndim == 3 else 'labels: count'})",
                        got=data[:4].hex())
    return type_code, ndim


def _check_dims(path: Path, dims: tuple[int, ...], itemsize: int, have: int) -> None:
    """Every size after the first (the item count) must be positive, and the sizes must
    account for exactly the data bytes present. Computed with Python integers: a product
    of uint32 sizes cannot overflow here."""
    for i, size in enumerate(dims[1:], start=2):
        if size == 0:
            raise DataError("the header declares a size of 0", file=str(path),
                            field=f"dimension {i} of the header",
                            expected="a size of at least 1", got=0)
    need = math.prod(dims) * itemsize
    if have != need:
        what = "truncated" if have < need else "longer than its header says"
        raise DataError(f"file is {what}: header declares shape {tuple(dims)}", file=str(path),
                        field=("dimension 1 of the header" if len(dims) == 1
                               else f"dimensions 1-{len(dims)} of the header"),
                        expected=f"{need} data bytes", got=f"{have} data bytes")


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> np.ndarray:
    """Return the array stored in an IDX file; raise DataError naming the file and problem."""
    path = Path(path)
    data = _read_bytes(path)
    type_code, ndim = _check_magic(path, data, expect_ndim)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError("file truncated inside the header", file=str(path),
                        field=f"dimension sizes (bytes 4-{header - 1})",
                        expected=f"{header} header bytes", got=f"{len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[type_code]
    _check_dims(path, dims, dtype.itemsize, len(data) - header)
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends with .gz), atomically."""
    path = Path(path)
    arr = np.ascontiguousarray(array)
    native = arr.dtype.newbyteorder("=")
    if native not in _TYPE_OF:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    type_code = _TYPE_OF[native]
    payload = struct.pack(">HBB", 0, type_code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(_DTYPES[type_code], copy=False).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def read_image_label_pair(images_path: str | os.PathLike, labels_path: str | os.PathLike
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Read one images/labels pair and check that they belong together."""
    images = read_idx(images_path, expect_ndim=3)
    labels = read_idx(labels_path, expect_ndim=1)
    if images.shape[0] != labels.shape[0]:
        raise DataError("image/label count mismatch", file=f"{images_path} + {labels_path}",
                        expected=f"as many labels as images ({images.shape[0]})",
                        got=f"{labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataError("empty dataset: the files hold no examples", file=str(images_path),
                        expected="at least one image")
    if images.dtype != np.uint8:
        raise DataError("images must be unsigned bytes", file=str(images_path),
                        expected="IDX type 0x08 (ubyte)", got=str(images.dtype))
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError("labels must be integers", file=str(labels_path),
                        expected="an integer IDX type", got=str(labels.dtype))
    return images, labels
