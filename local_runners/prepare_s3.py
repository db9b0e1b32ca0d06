"""``prepare`` from ``s3://bucket/prefix`` on the local backend: a cached local copy.

The data objects directly under the prefix (IDX files, ``*.csv``, ``*.parquet``; not
sub-folders) are downloaded into ``<cache_dir>/s3/<bucket>/<prefix>/`` with the user's
normal AWS credentials chain (``cloud.profile``, ``cloud.region`` and
``cloud.endpoint_url`` of the config are honoured). Each file has a hidden sidecar
``.<name>.etag``: a later run downloads only objects whose ETag (or size) changed, and
removes cached files whose object is gone, so the folder mirrors the prefix. A URI that
ends in ``.csv`` or ``.parquet`` names one object, cached at ``<cache_dir>/s3/<bucket>/
<key>``. The result is read like a local directory (or file) source.

boto3 is imported only here, and only when such a source is used.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

from harness.config import PipelineConfig
from harness.errors import DataError
from harness.stages import StageContext

_DATA_NAME = re.compile(r"(idx[13]-ubyte(\.gz)?|\.csv|\.parquet)$", re.IGNORECASE)
_SINGLE = re.compile(r"\.(csv|parquet)$", re.IGNORECASE)
_CHUNK = 1 << 20
ACCEPTED = ("IDX files (<prefix>-images-idx3-ubyte[.gz] + <prefix>-labels-idx1-ubyte[.gz]), "
            "*.csv or *.parquet objects directly under the prefix")
CREDENTIALS = ("credentials from the normal AWS chain: AWS_PROFILE or cloud.profile, "
               "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials, SSO, an "
               "instance role")


def is_s3(source: str) -> bool:
    return source.lower().startswith("s3://")


def _parse(uri: str) -> tuple[str, list[str]]:
    """(bucket, key parts) of ``s3://bucket/a/b``; DataError for anything unusable."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    parts = key.rstrip("/").split("/") if key.rstrip("/") else []
    if not re.fullmatch(r"[A-Za-z0-9._-]+", bucket) or bucket in (".", "..") \
            or any(p in ("", ".", "..") for p in parts):
        raise DataError("not a usable S3 data URI", file=uri, field="data.source",
                        expected="s3://<bucket>/<prefix> (no empty, '.' or '..' parts)")
    return bucket, parts


def _s3_client(cfg: PipelineConfig, timeout: float) -> Any:
    from botocore.config import Config

    from cloud_runners import aws  # imports boto3: only for an s3:// source

    return aws.client(aws.session_for(cfg), "s3", cfg, config=Config(
        connect_timeout=timeout, read_timeout=max(timeout, 60),
        retries={"max_attempts": 3, "mode": "standard"}))


def _aws_error(e: Exception, uri: str) -> DataError:
    """One clear DataError for a failed S3 call about ``uri``."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
        return DataError("no AWS credentials to read the data", file=uri,
                         expected=CREDENTIALS, hint="or use a local directory for --data")
    if isinstance(e, ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", "Error"))
        got = f"{code}: {err.get('Message', '')}".rstrip(": ")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken", "403") or status == 403:
            return DataError("access denied reading the data", file=uri, got=got,
                             expected="s3:ListBucket and s3:GetObject on the prefix for "
                             + CREDENTIALS)
        if code == "NoSuchBucket":
            return DataError("the bucket does not exist", file=uri, got=got,
                             expected="an existing bucket (check the name and cloud.region)")
        return DataError(f"cannot read the data from S3 ({got})", file=uri)
    return DataError(f"cannot reach S3 ({type(e).__name__}: {e})", file=uri,
                     hint="check the network, cloud.region and cloud.endpoint_url")


def fetch(uri: str, cache_dir: Path, cfg: PipelineConfig, timeout: float,
          ctx: StageContext) -> Path:
    """The local copy of ``uri`` (a folder, or one file), brought up to date."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, parts = _parse(uri)
    try:
        s3 = _s3_client(cfg, timeout)
        if parts and _SINGLE.search(parts[-1]):
            key = "/".join(parts)
            head = s3.head_object(Bucket=bucket, Key=key)
            objects = [{"Key": key, "Size": head["ContentLength"], "ETag": head["ETag"]}]
            dest = cache_dir.joinpath("s3", bucket, *parts[:-1])
        else:
            objects = _list(s3, bucket, "".join(p + "/" for p in parts), uri)
            dest = cache_dir.joinpath("s3", bucket, *parts)
        dest.mkdir(parents=True, exist_ok=True)
        fetched = sum(_sync(s3, bucket, obj, dest, ctx) for obj in objects)
    except ClientError as e:
        if parts and _SINGLE.search(parts[-1]) and \
                e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise DataError("no such S3 object", file=uri, expected=ACCEPTED) from None
        raise _aws_error(e, uri) from None
    except BotoCoreError as e:
        raise _aws_error(e, uri) from None
    except OSError as e:
        raise DataError(f"cannot write the local copy of the S3 data ({e})", file=uri,
                        field="data.cache_dir", expected="a writable folder") from None
    if not (parts and _SINGLE.search(parts[-1])):
        _prune(dest, {o["Key"].rsplit("/", 1)[-1] for o in objects}, ctx)
    cached = len(objects) - fetched
    ctx.log.info("%s: %d object(s): %d downloaded, %d cached (same ETag) in %s", uri,
                 len(objects), fetched, cached, dest)
    if not fetched:
        ctx.log.info("%s: every object cached; nothing downloaded", uri)
    return dest / parts[-1] if parts and _SINGLE.search(parts[-1]) else dest


def _list(s3: Any, bucket: str, prefix: str, uri: str) -> list[dict]:
    objects, others, folders = [], [], []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix,
                                                              Delimiter="/"):
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix):]
            if not name or name.startswith("."):
                continue  # the folder marker, hidden objects
            (objects if _DATA_NAME.search(name) else others).append(obj)
    if not objects:
        problem = "no objects under the S3 prefix" if not others else \
            "no IDX, CSV or Parquet objects under the S3 prefix"
        got = [o["Key"] for o in others][:10] + [f + " (folder, not read)" for f in folders][:5]
        raise DataError(problem, file=uri, expected=ACCEPTED, got=got or None,
                        hint="check the bucket and prefix")
    return objects


def _etag_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.etag")


def _sync(s3: Any, bucket: str, obj: dict, dest: Path, ctx: StageContext) -> bool:
    """Download ``obj`` unless the cached copy has its ETag and size; True if fetched."""
    path = dest / obj["Key"].rsplit("/", 1)[-1]
    sidecar = _etag_file(path)
    try:
        same = sidecar.read_text(encoding="utf-8").strip() == obj["ETag"] \
            and path.stat().st_size == obj["Size"]
    except OSError:
        same = False
    if same:
        ctx.log.info("cached s3://%s/%s (ETag %s)", bucket, obj["Key"], obj["ETag"])
        return False
    sidecar.unlink(missing_ok=True)
    tmp = dest / f".{path.name}.part-{uuid.uuid4().hex[:8]}"
    try:
        resp = s3.get_object(Bucket=bucket, Key=obj["Key"])
        size = 0
        with ctx.progress.task(f"download {path.name}", total=resp.get("ContentLength")
                               ) as bar, tmp.open("wb") as out:
            for block in iter(lambda: resp["Body"].read(_CHUNK), b""):
                out.write(block)
                size += len(block)
                bar.advance(len(block))
        if size != resp.get("ContentLength", size):
            raise DataError("S3 download truncated", file=f"s3://{bucket}/{obj['Key']}",
                            expected=f"{resp['ContentLength']} bytes", got=size)
        os.replace(tmp, path)
        tag_tmp = sidecar.with_name(sidecar.name + f".{uuid.uuid4().hex[:8]}")
        tag_tmp.write_text(resp.get("ETag", obj["ETag"]), encoding="utf-8")
        os.replace(tag_tmp, sidecar)
    finally:
        tmp.unlink(missing_ok=True)
    ctx.log.info("downloaded s3://%s/%s (%d bytes) to %s", bucket, obj["Key"], size, path)
    return True


def _prune(dest: Path, names: set[str], ctx: StageContext) -> None:
    """Remove cached files (and sidecars) whose object is no longer under the prefix."""
    for path in dest.iterdir():
        name = path.name[1:-len(".etag")] if path.name.startswith(".") and \
            path.name.endswith(".etag") else path.name
        if path.is_file() and name not in names and ".part-" not in name:  # not in flight
            ctx.log.info("removing %s: no longer under the S3 prefix", path)
            path.unlink(missing_ok=True)
