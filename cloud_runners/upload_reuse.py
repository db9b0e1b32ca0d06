"""Step Functions has no step cache; what a cloud run can skip is uploading what S3
already holds. A run's raw data (the prepare step) and its code are uploaded once per
content: each upload is remembered in an index object keyed by the content's digest,

    s3://<bucket>/<cloud.prefix>/.digests/<kind>-<sha256>.json
    {"uri": "s3://...", "run_id": "...", "files": {"<relative key>": <size>, ...}}

and a later run whose files have the same digest uses that URI instead of uploading, and
says so. The earlier run's objects are checked first (every file still there with its
size): a deleted or changed upload is uploaded again, never half reused. Only the run's
own prefix is ever written; the reused objects are read, never modified. The roles may
read any run's ``data/raw`` and ``code`` (infrastructure.yaml), so reused objects are
readable by the jobs. ``cache.enabled: false`` (``--no-cache``) uploads everything.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from botocore.exceptions import ClientError

from cloud_runners import aws

INDEX_FOLDER = ".digests"
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(files: Iterable[tuple[str, Path]]) -> str:
    """One digest of (relative key, content) pairs, independent of their order."""
    h = hashlib.sha256()
    for rel, path in sorted(files):
        h.update(f"{rel}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def _sizes_under(s3: Any, uri: str) -> dict[str, int]:
    bucket, prefix = aws.split_s3(uri)
    base = prefix.rstrip("/") + "/"
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for o in page.get("Contents", []):
            sizes[o["Key"][len(base):]] = o["Size"]
    return sizes


class UploadIndex:
    """The digest index of one bucket and project prefix."""

    def __init__(self, s3: Any, bucket: str, prefix: str, *, enabled: bool = True):
        self.s3, self.bucket, self.enabled = s3, bucket, enabled
        self.folder = f"{prefix.strip('/')}/{INDEX_FOLDER}".lstrip("/")

    def _key(self, kind: str, digest: str) -> str:
        return f"{self.folder}/{kind}-{digest}.json"

    def find(self, kind: str, files: list[tuple[str, Path]]) -> tuple[str, dict[str, Any]]:
        """(digest, earlier upload) for these files; the upload is ``{}`` when there is none
        usable (reuse off, no index entry, or its objects gone or changed)."""
        digest = tree_digest(files)
        if not self.enabled:
            return digest, {}
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self._key(kind, digest))["Body"]
            entry = json.loads(body.read())
            uri, listed = entry["uri"], entry["files"]
            if not (isinstance(uri, str) and uri.startswith("s3://")
                    and isinstance(listed, dict)):
                return digest, {}
        except ClientError as e:
            if aws.error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return digest, {}
            raise
        except (ValueError, KeyError, TypeError):
            return digest, {}  # an unreadable entry is ignored (and later replaced)
        present = _sizes_under(self.s3, uri)
        expected = {rel: path.stat().st_size for rel, path in files}
        if listed != expected or any(present.get(rel) != size
                                     for rel, size in expected.items()):
            return digest, {}
        return digest, entry

    def remember(self, kind: str, digest: str, uri: str, files: list[tuple[str, Path]],
                 run_id: str) -> None:
        entry = {"uri": uri, "run_id": run_id,
                 "files": {rel: path.stat().st_size for rel, path in files}}
        self.s3.put_object(Bucket=self.bucket, Key=self._key(kind, digest),
                           Body=json.dumps(entry, indent=1).encode(),
                           ContentType="application/json")


def index_for(s3: Any, uri: str, cfg: Any) -> UploadIndex:
    """The index of the bucket ``uri`` is in, for the project's ``cloud.prefix``."""
    bucket, _ = aws.split_s3(uri)
    return UploadIndex(s3, bucket, cfg.cloud.prefix, enabled=cfg.cache.enabled)


def skipped_message(what: str, entry: dict[str, Any], files: list[tuple[str, Path]]) -> str:
    size = sum(p.stat().st_size for _, p in files)
    return (f"{what}: same content as {entry['uri']} (run {entry.get('run_id')}); "
            f"{len(files)} files, {size / 1e6:.1f} MB not uploaded")


def relative_files(root: Path) -> list[tuple[str, Path]]:
    from cloud_runners.s3_staging import files
    return [(p.relative_to(root).as_posix(), p) for p in files(root)]

