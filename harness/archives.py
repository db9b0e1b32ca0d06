"""The tarballs SageMaker uses: pack ``sourcedir.tar.gz`` / ``model.tar.gz``, unpack them.

Packing a training source directory into ``sourcedir.tar.gz`` the way SageMaker expects:

The archive holds the directory's files at its root (``train.py``, ...). It is
deterministic: entries sorted, owner and times zeroed, modes normalised, no Python
caches, gzip header without name or time -- the same source gives the same bytes, so
its hash says whether the code changed.
"""
from __future__ import annotations

import gzip
import os
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from harness import uris
from harness.errors import DataError, HarnessError

EXCLUDED_DIRS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".git", ".mypy_cache"}
EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _included(rel: Path) -> bool:
    if any(part in EXCLUDED_DIRS for part in rel.parts):
        return False
    return not rel.name.endswith(EXCLUDED_SUFFIXES) and rel.name != ".DS_Store"


def _entry(name: str, path: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = path.stat().st_size
        info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
    return info


def pack_source_dir(src_dir: str | os.PathLike, dest_tar_gz: str | os.PathLike) -> Path:
    """Write ``src_dir``'s files to ``dest_tar_gz`` (a path or file:// URI), atomically.

    Replaces an existing archive. Returns the archive's path.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise HarnessError("source directory not found", file=str(src),
                           expected="the training code folder (train.source_dir)")
    return pack_directory(src, dest_tar_gz)


def pack_directory(src_dir: str | os.PathLike, dest_tar_gz: str | os.PathLike, *,
                   allow_empty: bool = False) -> Path:
    """Deterministic, atomic ``tar.gz`` of a directory's contents (entries at the root)."""
    src = Path(src_dir)
    dest = uris.local_path(str(dest_tar_gz)) if "://" in str(dest_tar_gz) else Path(dest_tar_gz)
    if not src.is_dir():
        raise HarnessError("directory to pack not found", file=str(src))
    entries = []
    for root, dirs, files in os.walk(src):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        for name in dirs + files:
            path = Path(root) / name
            rel = path.relative_to(src)
            if path.is_symlink() or not _included(rel):
                continue
            entries.append((rel.as_posix(), path))
    entries.sort()
    if not allow_empty and not any(p.is_file() for _, p in entries):
        raise HarnessError("source directory holds no files", file=str(src),
                           expected="at least the entry point script")

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, path in entries:
                info = _entry(name, path)
                if info.isdir():
                    tar.addfile(info)
                else:
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def extract_archive(archive: Path, dest: Path, *, what: str, expected: str) -> None:
    """Unpack a (gzipped) tar into ``dest``; refuse absolute paths, '..' and links out.

    ``what`` names the archive in errors ("model archive", "code package").
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar.getmembers():
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise DataError(f"unsafe member in the {what}", file=str(archive),
                                    expected="relative paths such as 1/saved_model.pb",
                                    got=member.name)
            tar.extractall(dest, filter="data")
    except FileNotFoundError:
        raise DataError(f"{what} not found", file=str(archive), expected=expected) from None
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"cannot unpack the {what} ({e})", file=str(archive),
                        expected=expected) from None


def newest_model_version(model_dir: Path) -> tuple[int, Path]:
    """The highest integer-named ``<version>/`` holding a saved_model.pb (TF Serving's rule)."""
    model_dir = Path(model_dir)
    found = sorted(p.name for p in model_dir.iterdir()) if model_dir.is_dir() else []
    versions = [(int(p.name), p) for p in model_dir.iterdir()
                if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
                ] if model_dir.is_dir() else []
    if not versions:
        raise DataError("no servable SavedModel version found", file=str(model_dir),
                        expected="<model_dir>/<version>/saved_model.pb with an integer "
                        "version directory, e.g. 1/saved_model.pb",
                        got=", ".join(found) or "an empty directory")
    return max(versions)
