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
   Ctrl-C: the cloud backend stops its execution first, the emulator then stops what is
   still running -- executions, the jobs the bridges run, the endpoints' servers).

One emulator run at a time per process (moto's state is process-wide): a second one in
the same process is refused with a HarnessError before it creates anything; runs in
separate processes each have their own emulator. The emulator backend writes nothing in
``runs_dir`` but the run's own folder (scratch folders are in the system's temp dir).

Everything the emulator held (its S3, the endpoint) is gone when it stops; the run's
record (``record.json``, ``execution.json``, the steps' inputs, outputs and logs) stays
in ``runs_dir``.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from harness.backends import Backend, load
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.runs import new_run_id

# Variables that could make boto3 use something other than the emulator's fake keys.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL")
EMULATOR_POLL_SECONDS = 0.5

_SET = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE")
_ONE_RUN = threading.Lock()  # one emulator run per process: moto's state is process-wide
_holder = ""  # what holds it (named to a second run)


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
def one_emulator_run(label: str) -> Iterator[None]:
    """Hold this process's one emulator run (``label`` names it to a second one, which is
    refused: moto's state is process-wide). Taken before the environment is touched."""
    global _holder
    if not _ONE_RUN.acquire(blocking=False):
        raise HarnessError(
            f"an emulator run is already under way in this process ({_holder or 'starting'})",
            hint="the embedded emulator's state is process-wide, so one emulator run at a "
            "time per process: start the other one in another process (e.g. `harness run "
            "--backend emulator` in a second terminal), or after this one")
    _holder = label
    try:
        yield
    finally:
        _holder = ""
        _ONE_RUN.release()


@contextlib.contextmanager
def offline_cloud(cfg: PipelineConfig, workdir: str | os.PathLike, bridges: list[str], *,
                  label: str = "an offline cloud") -> Iterator[tuple[Any, PipelineConfig,
                                                                     list[Any]]]:
    """``(emulator, cfg aimed at it, bridges)``: the emulator running with the bridges
    installed, fake keys in the environment. Leaving the block (also on an exception or
    Ctrl-C) stops the executions still running, the bridges' jobs and model servers, and
    the emulator, and restores the environment. One per process (``one_emulator_run``)."""
    from cloud_runners.emulator.server import EmbeddedEmulator

    workdir = Path(workdir)
    with one_emulator_run(label), fake_aws_environment(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        installed = make_bridges(cfg, workdir, bridges)
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
        run_id = options.pop("run_id", None) or new_run_id()
        with tempfile.TemporaryDirectory(prefix="mlharness-emulator-") as tmp:
            with offline_cloud(cfg, tmp, bridges, label=f"run {run_id}") as (emu, aimed, _):
                say(f"embedded AWS emulator at {emu.endpoint_url} (moto; bridged to the local "
                    f"runners: {', '.join(b.rsplit(':', 1)[-1] for b in bridges) or 'none'})")
                session = aws.session_for(aimed)
                outputs = bootstrap(aimed, session, wf, announce=say)
                say(f"stack {aimed.cloud.stack_name} ready: bucket {outputs.get('BucketName')}")
                return CloudBackend().run(wf, aimed, session=session, run_id=run_id,
                                          **options)
