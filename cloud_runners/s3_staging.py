"""Staging S3 data on this machine for a local runner, and back.

A bridge of the emulator (or a client-side cloud runner) runs a local runner on S3 data:
it downloads the inputs into a temporary folder, runs the runner on ``file://`` URIs of
that folder, uploads the outputs, and reports errors naming the S3 locations, as AWS
would, never the temporary paths. ``S3Staging`` is that folder plus its local -> S3 map,
one per job run (so concurrent runs never share a map):

    with S3Staging(s3, prefix="mlharness-glue-", dir=workdir) as staging:
        raw = staging.download("s3://bucket/raw", "raw")          # a prefix -> a folder
        script = staging.download("s3://bucket/code/job.py", "code/job.py")  # an object
        out = staging.local_uri("processed", "s3://bucket/processed")  # not there yet
        ...run the local runner on file:// URIs...
        staging.upload(staging.path("processed"), "s3://bucket/processed")
    except Exception as e:
        reason = staging.error_message(e)                        # S3 names, no temp paths

Built on the transfer functions of ``cloud_runners.aws``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from cloud_runners import aws
from harness import uris
from harness.errors import HarnessError

OBJECT, PREFIX = "object", "prefix"


def error_text(e: BaseException) -> str:
    """A runner's error as one line: a HarnessError's message, else ``Type: text``."""
    return e.message if isinstance(e, HarnessError) else f"{type(e).__name__}: {e}"


class S3Staging:
    """One job run's local folder and its map from local paths to S3 URIs.

    ``root``: use this folder (kept afterwards); else a fresh temporary folder
    (``prefix``, under ``dir``) that ``cleanup()`` -- or leaving the ``with`` block --
    removes.
    """

    def __init__(self, s3: Any, *, root: str | os.PathLike | None = None,
                 prefix: str = "mlharness-", dir: str | os.PathLike | None = None):
        self.s3 = s3
        if root is not None:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
            self._owned = False
        else:
            self.root = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
            self._owned = True
        self._map: list[tuple[str, str]] = []  # (local path or file:// URI, S3 URI)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> "S3Staging":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the temporary folder (a given ``root`` is left alone)."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- local names --------------------------------------------------------------------------

    def path(self, name: str | os.PathLike) -> Path:
        """``root/name`` (``name`` relative, without '..')."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts:
            raise HarnessError("a staging name is a relative path", got=str(name))
        return self.root / rel

    def remember(self, local: str | os.PathLike, uri: str) -> None:
        """Report ``local`` (and its file:// URI) as ``uri`` in error messages."""
        local = Path(local)
        remote = uri.rstrip("/")
        for text in (uris.file_uri(local), str(local), str(local.resolve())):
            if (text, remote) not in self._map:
                self._map.append((text, remote))
        # Longest first: a file:// URI is replaced before its bare path, a file inside a
        # staged folder before the folder.
        self._map.sort(key=lambda pair: len(pair[0]), reverse=True)

    def local_uri(self, name: str | os.PathLike, uri: str) -> str:
        """The file:// URI of ``root/name``, standing for ``uri`` (remembered)."""
        local = self.path(name)
        self.remember(local, uri)
        return uris.file_uri(local)

    def s3_names(self, message: str) -> str:
        """``message`` with every staged local path and file:// URI as its S3 URI."""
        for local, remote in self._map:
            message = message.replace(local, remote)
        return message

    def error_message(self, e: BaseException) -> str:
        """A runner's error as AWS would report it: naming S3 locations, not temp paths."""
        return self.s3_names(error_text(e))

    # -- transfers ----------------------------------------------------------------------------

    def kind(self, uri: str) -> str | None:
        """``"object"`` when ``uri`` names an object, ``"prefix"`` when objects live under
        ``uri/``, else None."""
        bucket, key = aws.split_s3(uri)
        if key and not key.endswith("/"):
            answer = self.s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
            if any(o["Key"] == key for o in answer.get("Contents", [])):
                return OBJECT
        return PREFIX if aws.prefix_exists(self.s3, uri) else None

    def download(self, uri: str, name: str | os.PathLike, *, kind: str | None = None,
                 required: bool = True) -> Path:
        """Download ``uri`` to ``root/name``: an object becomes that file, a prefix that
        folder (relative keys kept); remembered for ``s3_names``.

        ``kind`` (``"object"``/``"prefix"``) says what ``uri`` is; by default it is looked
        up (an object of that exact key first). Nothing there: a HarnessError naming
        ``uri``, or with ``required=False`` the path, not created.
        """
        target = self.path(name)
        self.remember(target, uri)
        if kind is None or not required:
            found = self.kind(uri)
            if kind is not None and found != kind:
                found = None
        else:
            found = kind
        if found == OBJECT:
            return aws.download_file(self.s3, uri, target)
        if found == PREFIX:
            return aws.download_prefix(self.s3, uri, target)
        if found is not None:
            raise ValueError(f"kind must be {OBJECT!r} or {PREFIX!r}, got {found!r}")
        if not required:
            return target
        raise HarnessError("nothing in S3 at this location", file=uri,
                           expected="an object, or objects under this prefix, that an "
                                    "earlier step wrote (run it first)")

    def upload(self, path: str | os.PathLike, uri: str,
               on_file: Callable[[Path], None] | None = None) -> list[str]:
        """Upload a file to ``uri``, or a folder's files under ``uri`` (relative keys
        kept); ``on_file`` is called after each file. Returns the S3 URIs written."""
        path = Path(path)
        self.remember(path, uri)
        if path.is_file():
            done = [aws.upload_file(self.s3, path, uri)]
            if on_file is not None:
                on_file(path)
            return done
        if not path.is_dir():
            raise HarnessError("nothing to upload", file=str(path), expected="a file or folder")
        out = []
        for item in files(path):
            out.append(aws.upload_file(self.s3, item,
                                       uris.join(uri, item.relative_to(path).as_posix())))
            if on_file is not None:
                on_file(item)
        return out


def files(directory: str | os.PathLike) -> list[Path]:
    """Every file under ``directory``, sorted (what ``upload`` sends)."""
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())
