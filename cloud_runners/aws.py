"""boto3 plumbing shared by the cloud runners: session, clients, tags, S3 transfers.

Only ``cloud_runners/`` imports boto3; ``harness/`` never does. Credentials come from the
AWS environment (profile, environment variables, instance role), never from the config.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import boto3
import boto3.session
from botocore.exceptions import BotoCoreError, ClientError

from harness import uris
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError, StepFailed
from harness.stages import StageContext, StageRunner
from harness.tags import PROJECT_TAG, RUN_TAG

# ----------------------------------------------------------------------------- session


def session_for(cfg: PipelineConfig) -> boto3.session.Session:
    """A boto3 session for ``cfg.cloud`` (profile and region; credentials from the env)."""
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session(profile_name=cfg.cloud.profile,
                                     region_name=cfg.cloud.region)
    except ProfileNotFound:
        raise ConfigError(f"AWS profile '{cfg.cloud.profile}' not found", field="cloud.profile",
                          expected="a profile of ~/.aws/config or ~/.aws/credentials, or "
                                   "leave it empty") from None


def region(cfg: PipelineConfig, session: boto3.session.Session) -> str:
    return session.region_name or cfg.cloud.region


def client(session: boto3.session.Session, name: str, cfg: PipelineConfig,
           config: Any = None) -> Any:
    """A service client in the session's region (and at ``cloud.endpoint_url`` if set);
    ``config``: a ``botocore.config.Config`` (timeouts, retries)."""
    kw: dict[str, Any] = {"region_name": region(cfg, session)}
    if cfg.cloud.endpoint_url:
        kw["endpoint_url"] = cfg.cloud.endpoint_url
    if config is not None:
        kw["config"] = config
    return session.client(name, **kw)


def state_machine_name(cfg: PipelineConfig, workflow_name: str) -> str:
    """A pipeline's state machine (created by bootstrap, updated by each run)."""
    from harness.steps.start_execution import state_machine_name as name_of
    return name_of(cfg.cloud.stack_name, workflow_name)


# ----------------------------------------------------------------------------- tags


def tag_pairs(cfg: PipelineConfig, run_id: str) -> dict[str, str]:
    """The project's tags as a mapping (teardown finds resources by ``mlharness:project``)."""
    return {PROJECT_TAG: cfg.cloud.stack_name, RUN_TAG: run_id}


def tags(cfg: PipelineConfig, run_id: str) -> list[dict[str, str]]:
    """SageMaker / S3 style: ``[{"Key": ..., "Value": ...}]``."""
    return [{"Key": k, "Value": v} for k, v in tag_pairs(cfg, run_id).items()]


def glue_tags(cfg: PipelineConfig, run_id: str) -> dict[str, str]:
    """Glue style: ``{"key": "value"}``."""
    return tag_pairs(cfg, run_id)


def sfn_tags(cfg: PipelineConfig, run_id: str) -> list[dict[str, str]]:
    """Step Functions style: ``[{"key": ..., "value": ...}]`` (lower case)."""
    return [{"key": k, "value": v} for k, v in tag_pairs(cfg, run_id).items()]


# ----------------------------------------------------------------------------- responses


def jsonable(obj: Any) -> Any:
    """A boto3 response as JSON-able data: datetimes to ISO strings, no ResponseMetadata."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if k != "ResponseMetadata"}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (dt.datetime, dt.date)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    return obj


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def aws_call(step: str, what: str, fn: Callable[..., Any], **kw: Any) -> Any:
    """Call ``fn(**kw)``; turn AWS errors into StepFailed naming the call and the reason."""
    try:
        return fn(**kw)
    except ClientError as e:
        err = e.response.get("Error", {})
        raise StepFailed(step, f"{what} failed: {err.get('Code', 'Error')}: "
                         f"{err.get('Message', str(e))}") from None
    except BotoCoreError as e:
        raise StepFailed(step, f"{what} failed: {type(e).__name__}: {e}") from None


def poll(describe: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool],
         interval: float, on_update: Callable[[dict[str, Any]], None] | None = None,
         timeout: float | None = None, what: str = "resource") -> dict[str, Any]:
    """Call ``describe`` every ``interval`` seconds until ``done``; return the last answer."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        answer = describe()
        if on_update is not None:
            on_update(answer)
        if done(answer):
            return answer
        if deadline is not None and time.monotonic() >= deadline:
            raise HarnessError(f"{what} did not finish within {timeout:.0f} s")
        time.sleep(interval)


# ----------------------------------------------------------------------------- S3


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> ("bucket", "key/prefix")."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise HarnessError(f"expected an s3:// URI, got {uri!r}",
                           expected="s3://BUCKET/KEY", hint="the cloud backend stores data in S3")
    return parsed.netloc, parsed.path.lstrip("/")


def list_keys(s3: Any, uri: str) -> list[str]:
    """Every object key under the prefix ``uri`` (as a folder: ``<prefix>/``)."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def prefix_exists(s3: Any, uri: str) -> bool:
    bucket, prefix = split_s3(uri)
    answer = s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/", MaxKeys=1)
    return answer.get("KeyCount", 0) > 0


def upload_file(s3: Any, path: str | os.PathLike, uri: str) -> str:
    bucket, key = split_s3(uri)
    s3.upload_file(str(path), bucket, key)
    return uri


def upload_dir(s3: Any, directory: str | os.PathLike, uri: str) -> list[str]:
    """Upload every file under ``directory`` to ``uri`` keeping relative keys; return URIs."""
    directory = Path(directory)
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        out.append(upload_file(s3, path, uris.join(uri, rel)))
    return out


def download_file(s3: Any, uri: str, path: str | os.PathLike) -> Path:
    bucket, key = split_s3(uri)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(bucket, key, str(path))
    except ClientError as e:
        if error_code(e) in ("404", "NoSuchKey", "NotFound"):
            raise HarnessError("object not found in S3", file=uri) from None
        raise
    return path


def download_prefix(s3: Any, uri: str, directory: str | os.PathLike) -> Path:
    """Download every object under ``uri`` into ``directory`` (relative keys kept)."""
    directory = Path(directory)
    keys = list_keys(s3, uri)
    if not keys:
        raise HarnessError("no data under this S3 prefix", file=uri,
                           expected="the objects an earlier step wrote (run it first)")
    bucket, prefix = split_s3(uri)
    base = prefix.rstrip("/") + "/"
    for key in keys:
        rel = key[len(base):]
        if not rel or key.endswith("/"):
            continue  # folder placeholder objects
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    return directory


# ----------------------------------------------------------------------------- runners


class CloudStageRunner(StageRunner):
    """A stage runner that talks to AWS; ``session`` is injectable (tests, the executor)."""

    def __init__(self, session: boto3.session.Session | None = None):
        self._session_obj = session

    def session(self, ctx: StageContext) -> boto3.session.Session:
        if self._session_obj is None:
            self._session_obj = session_for(ctx.config)
        return self._session_obj

    def client(self, ctx: StageContext, name: str) -> Any:
        return client(self.session(ctx), name, ctx.config)
