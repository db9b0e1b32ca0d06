"""A failing stage on the embedded emulator: the raw training split that reaches S3 is not
Parquet, so the Glue ETL (the local Spark runner behind the Glue bridge) fails; the
execution ends FAILED (with the runner's error as its cause once the moto gap named at
``test_the_runners_error_is_the_executions_cause`` is closed), ``cloud_run`` returns 1 and
nothing is left running (no training job, no endpoint, no model server).

The corruption happens between the client-side prepare and the upload (the local prepare
runner's output is overwritten), so everything else is the real cloud path, as in
``test_emulator_pipeline``; the run is ``cloud_runners.emulator.run.emulator_run``.
"""
from __future__ import annotations

import io
import json
import os

import pytest

from harness.config import PipelineConfig

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]  # moto's CloudFormation skips it

GARBAGE = b"this is not a parquet file\n" * 64


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """``emulator_run`` (the user-facing command) with a corrupt raw input; what the
    emulator held is read right after ``cloud_run`` returns, before it is stopped."""
    from rich.console import Console

    from cloud_runners import cloud_run as cloud_run_module
    from cloud_runners import images
    from cloud_runners import prepare as cloud_prepare
    from cloud_runners.emulator import server
    from cloud_runners.emulator.hosting_bridge import HostingBridge
    from cloud_runners.emulator.run import emulator_run
    from cloud_runners.emulator.training_bridge import TrainingBridge
    from local_runners.prepare import LocalPrepareRunner

    class CorruptingPrepare(LocalPrepareRunner):
        """The real prepare, then every raw split file replaced by bytes that are not
        Parquet (the ETL fails on the first split it reads)."""

        def run(self, request, ctx):
            from harness import uris

            out = super().run(request, ctx)
            for path in uris.local_path(request["OutputUri"]).rglob("*.parquet"):
                path.write_bytes(GARBAGE)
            return out

    real_cloud_run = cloud_run_module.cloud_run
    seen: dict = {}

    def observed_cloud_run(aimed, console, **kw):
        code = real_cloud_run(aimed, console, **kw)
        emu = server._running
        (run_dir,) = (tmp / "runs").iterdir()
        record = json.loads((run_dir / "execution.json").read_text())
        sfn = emu.client("stepfunctions")
        sm = emu.client("sagemaker")
        bridges = emu.bridge
        seen.update(
            emu=emu, bridges=bridges, aimed=aimed, run_dir=run_dir, record=record,
            env_during={k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "MOTO_PORT")},
            described=sfn.describe_execution(executionArn=record["execution"])
            if "execution" in record else {},
            history=sfn.get_execution_history(executionArn=record["execution"],
                                              maxResults=1000)["events"]
            if "execution" in record else [],
            endpoints=sm.list_endpoints()["Endpoints"],
            training_jobs=sm.list_training_jobs()["TrainingJobSummaries"],
            glue_runs=emu.client("glue").get_job_runs(
                JobName=aimed.etl.job_name)["JobRuns"],
            hosted_during=dict(next(b for b in bridges
                                    if isinstance(b, HostingBridge)).hosted),
            training_threads=list(next(b for b in bridges
                                       if isinstance(b, TrainingBridge)).threads))
        return code

    tmp = tmp_path_factory.mktemp("emu-fail")
    env_before = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    cfg = PipelineConfig()
    cfg.runs_dir = str(tmp / "runs")
    cfg.data.source = "fixture"
    cfg.cloud.poll_seconds = 0.2
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "IMAGE_CACHE", tmp / "image_uris.json")
        mp.setattr(cloud_prepare, "LocalPrepareRunner", CorruptingPrepare)
        mp.setattr(cloud_run_module, "cloud_run", observed_cloud_run)
        code = emulator_run(cfg, Console(file=out, width=200, color_system=None))
    env_after = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    assert "record" in seen and "execution" in seen["record"], out.getvalue()[-4000:]
    return {**seen, "code": code, "console": out.getvalue(), "cfg": cfg,
            "run_record": json.loads((seen["run_dir"] / "record.json").read_text()),
            "env": (env_before, env_after)}


def test_the_execution_fails_in_the_etl_stage(failed):
    assert failed["code"] == 1, failed["console"][-4000:]
    assert failed["described"]["status"] == "FAILED"
    entered = [e["stateEnteredEventDetails"]["name"] for e in failed["history"]
               if e["type"].endswith("StateEntered")]
    assert entered == ["RunEtl", "PipelineFailed"], entered
    (run,) = failed["glue_runs"]
    assert run["JobRunState"] == "FAILED"
    assert "cannot read raw split" in run["ErrorMessage"], run


def test_the_glue_run_fails_with_the_runners_error(failed):
    (run,) = failed["glue_runs"]
    message = run["ErrorMessage"]
    assert "the Glue script mnist_etl.py failed: EtlError: cannot read raw split" in message
    # The error names the S3 locations, as on AWS, not the bridge's temporary directory.
    assert "s3://" in message and "mlharness-glue-" not in message, message
    assert failed["record"]["status"] == "FAILED"
    assert failed["run_record"]["status"] == "FAILED"
    assert "execution FAILED" in failed["console"]
    assert f"run record: {failed['run_dir']}" in failed["console"]


def test_the_runners_error_is_the_executions_cause(failed):
    (run,) = failed["glue_runs"]
    message = run["ErrorMessage"]
    described = failed["described"]
    assert described.get("error") == "PipelineStepFailed", described.get("cause")
    cause = described.get("cause", "")
    prefix = "States.TaskFailed: "
    assert cause.startswith(prefix), cause
    assert message in json.loads(cause[len(prefix):])["ErrorMessage"], cause
    # ... and the same cause is in the run's record and in what cloud_run printed.
    assert message in failed["record"]["cause"]
    assert message in failed["run_record"]["error"]
    assert "cannot read raw split" in failed["console"]


def test_nothing_is_left_running(failed):
    assert failed["endpoints"] == []
    assert failed["training_jobs"] == []
    assert failed["hosted_during"] == {}
    assert failed["training_threads"] == []
    assert not failed["emu"].running
    for b in failed["bridges"]:
        assert all(not t.is_alive() for t in b.threads)
        if hasattr(b, "hosted"):
            assert not b.hosted
    assert failed["cfg"].cloud.endpoint_url is None  # the caller's config is not changed
    assert failed["aimed"].cloud.endpoint_url.startswith("http://127.0.0.1:")
    assert failed["env_during"]["AWS_ACCESS_KEY_ID"] == "testing"
    before, after = failed["env"]
    assert after == before  # fake keys and MOTO_PORT are gone again


def test_fake_environment_is_restored_also_on_an_error(monkeypatch, tmp_path):
    from cloud_runners.emulator.run import emulator_config, fake_aws_environment

    monkeypatch.setenv("AWS_PROFILE", "someones-profile")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALLOOKING")
    monkeypatch.delenv("AWS_SHARED_CREDENTIALS_FILE", raising=False)
    with pytest.raises(KeyboardInterrupt):
        with fake_aws_environment(tmp_path):
            assert "AWS_PROFILE" not in os.environ
            assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
            assert os.environ["AWS_SHARED_CREDENTIALS_FILE"].startswith(str(tmp_path))
            raise KeyboardInterrupt
    assert os.environ["AWS_PROFILE"] == "someones-profile"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAREALLOOKING"
    assert "AWS_SHARED_CREDENTIALS_FILE" not in os.environ
    cfg = PipelineConfig()
    cfg.cloud.profile = "someones-profile"
    aimed = emulator_config(cfg, "http://127.0.0.1:1")
    assert (aimed.cloud.endpoint_url, aimed.cloud.profile) == ("http://127.0.0.1:1", None)
    assert aimed.cloud.poll_seconds <= 0.5
    assert (cfg.cloud.endpoint_url, cfg.cloud.profile) == (None, "someones-profile")


def test_ctrl_c_stops_the_emulator_and_restores_the_environment(monkeypatch, tmp_path):
    from rich.console import Console

    from cloud_runners import cloud_run as cloud_run_module
    from cloud_runners import images
    from cloud_runners.emulator import server
    from cloud_runners.emulator.run import emulator_run

    seen = {}

    def interrupted(aimed, console, **kw):
        seen.update(emu=server._running, port=os.environ.get("MOTO_PORT"))
        raise KeyboardInterrupt

    env_before = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    monkeypatch.setattr(images, "IMAGE_CACHE", tmp_path / "image_uris.json")
    monkeypatch.setattr(cloud_run_module, "cloud_run", interrupted)
    cfg = PipelineConfig()
    cfg.runs_dir = str(tmp_path / "runs")
    out = io.StringIO()
    assert emulator_run(cfg, Console(file=out, width=200, color_system=None)) == 130
    assert seen["emu"] is not None and seen["port"]
    assert not seen["emu"].running and server._running is None
    assert "interrupted" in out.getvalue()
    env_after = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    assert env_after == env_before
