"""`harness run --backend emulator`: the cloud path, offline, on the embedded emulator.

``emulator_run(cfg, console)``:

1. starts ``EmbeddedEmulator`` (moto on 127.0.0.1, a free port) with the compute bridges
   (Glue ETL, SageMaker training, SageMaker hosting) installed,
2. points a copy of ``cfg`` at it (``cloud.endpoint_url``; no profile; events polled
   every 0.5 s at most) and puts fake keys in the process environment for the run only
   (no profile, config or credentials file of the machine is read); the environment is
   restored afterwards,
3. runs ``cloud_runners.infrastructure.bootstrap`` (the CloudFormation stack) and then
   ``cloud_runners.cloud_run.cloud_run`` itself, the very code that runs against AWS,
4. prints where the run's record is, stops the model servers, the bridges' workers and
   the emulator (also on a failure or Ctrl-C), and returns ``cloud_run``'s exit code.

Everything the emulator held (its S3, the endpoint) is gone when it stops; the run's
record (``execution.json``, ``record.json`` and the stage logs) stays in ``runs_dir``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from harness.config import PipelineConfig
from harness.errors import HarnessError

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


def make_bridges(cfg: PipelineConfig, workdir: str | os.PathLike) -> list[Any]:
    from cloud_runners.emulator.bridge import GlueBridge
    from cloud_runners.emulator.hosting_bridge import HostingBridge
    from cloud_runners.emulator.training_bridge import TrainingBridge

    return [GlueBridge(cfg, workdir=workdir), TrainingBridge(cfg, workdir=workdir),
            HostingBridge(cfg, workdir=workdir)]


@contextlib.contextmanager
def offline_cloud(cfg: PipelineConfig, workdir: str | os.PathLike
                  ) -> Iterator[tuple[Any, PipelineConfig, list[Any]]]:
    """``(emulator, cfg aimed at it, bridges)``: the emulator running with every bridge
    installed, fake keys in the environment. Leaving the block (also on an exception)
    stops the model servers, joins the bridges' workers, stops the emulator and restores
    the environment."""
    from cloud_runners.emulator.server import EmbeddedEmulator

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    bridges = make_bridges(cfg, workdir)
    with fake_aws_environment(workdir):
        with EmbeddedEmulator(region=cfg.cloud.region, bridge=bridges) as emu:
            aimed = emulator_config(cfg, emu.endpoint_url)
            for b in bridges:
                b.cfg = aimed
            yield emu, aimed, bridges


def emulator_run(cfg: PipelineConfig, console) -> int:
    """Bootstrap and run the cloud pipeline on the embedded emulator; cloud_run's exit
    code (see the module doc)."""
    from cloud_runners import aws
    from cloud_runners.cloud_run import cloud_run
    from cloud_runners.infrastructure import bootstrap

    runs = cfg.runs_path()
    before = set(p.name for p in runs.iterdir()) if runs.is_dir() else set()
    code: int | None = None
    with tempfile.TemporaryDirectory(prefix="mlharness-emulator-") as tmp:
        try:
            with offline_cloud(cfg, tmp) as (emu, aimed, _bridges):
                console.print(f"[bold]embedded AWS emulator[/] at {emu.endpoint_url} "
                              "(moto; Glue, SageMaker training and hosting bridged to the "
                              "local runners)")
                try:
                    outputs = bootstrap(aimed, aws.session_for(aimed),
                                        announce=lambda m: console.print(m))
                except HarnessError as e:
                    console.print(f"[bold red]bootstrap on the emulator failed:[/] "
                                  f"{e.message}", soft_wrap=True)
                    return e.exit_code
                console.print(f"stack {aimed.cloud.stack_name} ready: bucket "
                              f"{outputs.get('BucketName')}")
                code = cloud_run(aimed, console)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]: the emulator and its model servers "
                          "are stopped")
            code = 130
        finally:
            new = sorted(set(p.name for p in runs.iterdir()) - before) if runs.is_dir() else []
            for run_id in new:
                console.print(f"run record: {runs / run_id} (execution.json, record.json)")
            console.print("emulator stopped; its S3 objects and endpoint are gone")
    return code if code is not None else 1
