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
