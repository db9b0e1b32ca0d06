"""The ``emulator`` backend (`harness run --backend emulator`): the cloud path, offline.

1. starts ``EmbeddedEmulator`` (moto on 127.0.0.1, a free port) with the compute bridges
   the workflow's steps name (``Step.emulator_bridge``: Glue ETL, SageMaker training,
   processing and hosting run on the local runners against the emulated S3),
2. points a copy of the config at it (``cloud.endpoint_url``; no profile; events polled
   every 0.5 s at most) and puts fake keys in the process environment for the run only
   (no profile, config or credentials file of the machine is read); the environment is
   restored afterwards,
3. bootstraps the stack (the CloudFormation template, roles scoped to the workflow) and
   runs the ``cloud`` backend itself, the very code that runs against AWS,
4. stops the model servers, the bridges' workers and the emulator (also on a failure or
   Ctrl-C).

Everything the emulator held (its S3, the endpoint) is gone when it stops; the run's
record (``record.json``, ``execution.json``, the steps' inputs, outputs and logs) stays
in ``runs_dir``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from harness.backends import Backend, load
from harness.config import PipelineConfig

# Variables that could make boto3 use something other than the emulator's fake keys.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL")
EMULATOR_POLL_SECONDS = 0.5

_SET = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE")


@contextlib.contextmanager
def fake_aws_environment(scratch: str | os.PathLike) -> Iterator[None]:
    """Fake keys only while the block runs; no profile or AWS config file of the machine
    is read (both point at files in ``scratch`` that do not exist). Restored on exit."""
    from cloud_runners.emulator.server import FAKE_ACCESS_KEY, FAKE_SECRET_KEY

    saved = {k: os.environ.get(k) for k in (*_CLEARED, *_SET)}
    try:
        for k in _CLEARED:
            os.environ.pop(k, None)
        os.environ["AWS_ACCESS_KEY_ID"] = FAKE_ACCESS_KEY
        os.environ["AWS_SECRET_ACCESS_KEY"] = FAKE_SECRET_KEY
        os.environ["AWS_CONFIG_FILE"] = str(Path(scratch) / "no-aws-config")
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(Path(scratch) / "no-aws-credentials")
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def emulator_config(cfg: PipelineConfig, endpoint_url: str) -> PipelineConfig:
    """A copy of ``cfg`` aimed at the emulator (``cfg`` itself is not changed)."""
    out = cfg.model_copy(deep=True)
    out.cloud.endpoint_url = endpoint_url
    out.cloud.profile = None  # the fake keys, never a profile of the machine
    # Polling a local emulator every 30 s (the AWS default) would only add waiting.
    out.cloud.poll_seconds = min(cfg.cloud.poll_seconds, EMULATOR_POLL_SECONDS)
    return out


def make_bridges(cfg: PipelineConfig, workdir: str | os.PathLike,
                 targets: list[str]) -> list[Any]:
    """The compute bridges named by ``targets`` (``"module:Class"``)."""
    return [load(t)(cfg, workdir=workdir) for t in targets]


@contextlib.contextmanager
def offline_cloud(cfg: PipelineConfig, workdir: str | os.PathLike, bridges: list[str]
                  ) -> Iterator[tuple[Any, PipelineConfig, list[Any]]]:
    """``(emulator, cfg aimed at it, bridges)``: the emulator running with the bridges
    installed, fake keys in the environment. Leaving the block (also on an exception)
    stops the model servers, joins the bridges' workers, stops the emulator and restores
    the environment."""
    from cloud_runners.emulator.server import EmbeddedEmulator

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    installed = make_bridges(cfg, workdir, bridges)
    with fake_aws_environment(workdir):
        with EmbeddedEmulator(region=cfg.cloud.region, bridge=installed) as emu:
            aimed = emulator_config(cfg, emu.endpoint_url)
            for b in installed:
                b.cfg = aimed
            yield emu, aimed, installed


class EmulatorBackend(Backend):
    """``emulator``: the cloud backend on the embedded emulator (see the module doc)."""

    name = "emulator"

    def run(self, wf, cfg: PipelineConfig, **options: Any):
        from cloud_runners import aws
        from cloud_runners.cloud_run import CloudBackend
        from cloud_runners.stack import bootstrap

        say = options.get("announce") or (lambda m: None)
        cfg = cfg.model_copy(deep=True)
        cfg.backend = "emulator"
        bridges = wf.emulator_bridges()
        with tempfile.TemporaryDirectory(prefix="mlharness-emulator-") as tmp:
            with offline_cloud(cfg, tmp, bridges) as (emu, aimed, _installed):
                say(f"embedded AWS emulator at {emu.endpoint_url} (moto; bridged to the local "
                    f"runners: {', '.join(b.rsplit(':', 1)[-1] for b in bridges) or 'none'})")
                session = aws.session_for(aimed)
                outputs = bootstrap(aimed, session, wf, announce=say)
                say(f"stack {aimed.cloud.stack_name} ready: bucket {outputs.get('BucketName')}")
                return CloudBackend().run(wf, aimed, session=session, **options)
