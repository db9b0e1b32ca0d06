"""Storage is addressed by URI (``file://`` locally, ``s3://`` in the cloud).

Stages never build paths by hand: they join URIs here and, on the local backend,
turn a ``file://`` URI into a path with :func:`local_path`.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from harness.errors import HarnessError

SCHEMES = ("file", "s3")


def file_uri(path: str | os.PathLike) -> str:
    """``file://`` URI of a local path (made absolute)."""
    return "file://" + quote(str(Path(path).resolve()))


def scheme(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme not in SCHEMES:
        raise HarnessError(f"unsupported storage URI {uri!r}",
                           expected="a URI starting with file:// or s3://")
    return parsed.scheme


def join(uri: str, *parts: str) -> str:
    """Append path parts to a URI with single slashes."""
    out = uri.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def local_path(uri: str) -> Path:
    """The filesystem path of a ``file://`` URI; anything else is an error."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise HarnessError(f"the local backend can only use file:// URIs, got {uri!r}",
                           hint="use --backend cloud or emulator for s3:// data")
    return Path(unquote(parsed.path))


def to_uri(location: str | os.PathLike) -> str:
    """Accept a URI or a plain path (as users type them) and return a URI."""
    text = str(location)
    if "://" in text:
        scheme(text)
        return text
    return file_uri(Path(text).expanduser())


MIRROR = "artifacts"  # runs/<id>/artifacts/s3/<bucket>/<key>: S3 objects a report shows


def mirror_path(run_dir: str | os.PathLike, uri: str) -> Path | None:
    """Where a cloud run keeps its local copy of the S3 object ``uri`` (the files its
    report shows: training metrics, the evaluation): ``<run_dir>/artifacts/s3/<bucket>/
    <key>``. None for anything but a well-formed ``s3://`` URI (no '..' parts)."""
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or parsed.scheme != "s3" or not parsed.netloc:
        return None
    parts = [p for p in parsed.path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "/" in parsed.netloc:
        return None
    return Path(run_dir) / MIRROR / "s3" / parsed.netloc / Path(*parts) if parts \
        else Path(run_dir) / MIRROR / "s3" / parsed.netloc
