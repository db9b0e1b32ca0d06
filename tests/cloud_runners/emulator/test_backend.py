"""The ``emulator`` backend when a stage fails: the raw training split that reaches S3 is
not Parquet, so the Glue ETL (the local Spark runner behind the Glue bridge) fails; the
execution ends FAILED with the runner's error as its cause, the run's record says so
(failed step ``etl``), and nothing is left running (no training job, no endpoint, no
model server, the emulator stopped, the environment restored). Also: Ctrl-C stops the
emulator; the fake AWS environment never outlives the run.

The corruption happens between the client-side prepare and the upload (the local prepare
runner's output is overwritten), so everything else is the real cloud path.
"""
from __future__ import annotations

import json
import os

import pytest

from harness.config import PipelineConfig, load_config
from harness.errors import StepFailed
from harness.workflow import load_workflow

pytestmark = [pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]

GARBAGE = b"this is not a parquet file\n" * 64


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """A run whose raw data is corrupt; what the emulator held is read right after the
    cloud backend returns, before the emulator stops."""
    from cloud_runners import cloud_run as cloud_run_module
    from cloud_runners import images
    from cloud_runners import prepare as cloud_prepare
    from cloud_runners.emulator import server
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

    real_run = cloud_run_module.CloudBackend.run
    seen: dict = {}

    def observed_run(self, wf, aimed, **kw):
        try:
            return real_run(self, wf, aimed, **kw)
        finally:
            emu = server._running
            sm = emu.client("sagemaker")
            seen.update(
                emu=emu, bridges=list(emu.bridge), aimed=aimed,
                env_during={k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "MOTO_PORT")},
                endpoints=sm.list_endpoints()["Endpoints"],
                training_jobs=sm.list_training_jobs()["TrainingJobSummaries"],
                glue_runs=emu.client("glue").get_job_runs(JobName="mnist-etl")["JobRuns"],
                hosted_during=[dict(b.hosted) for b in emu.bridge if hasattr(b, "hosted")])

    tmp = tmp_path_factory.mktemp("emu-fail")
    env_before = _env()
    cfg = load_config(overrides={"runs_dir": str(tmp / "runs"), "data.source": "fixture",
                                 "cloud.poll_seconds": 0.2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "IMAGE_CACHE", tmp / "image_uris.json")
        mp.setattr(cloud_prepare, "LocalPrepareRunner", CorruptingPrepare)
        mp.setattr(cloud_run_module.CloudBackend, "run", observed_run)
        with pytest.raises(StepFailed) as e:
            load_workflow(cfg.pipeline, cfg).run("emulator", config=cfg)
    (run_dir,) = (tmp / "runs").iterdir()
    return {**seen, "error": e.value, "cfg": cfg, "run_dir": run_dir,
            "execution": json.loads((run_dir / "execution.json").read_text()),
            "record": json.loads((run_dir / "record.json").read_text()),
            "env": (env_before, _env())}


@pytest.mark.slow
def test_the_execution_fails_in_the_etl_step_with_the_runners_error(failed):
    (run,) = failed["glue_runs"]
    assert run["JobRunState"] == "FAILED"
    message = run["ErrorMessage"]
    assert "the Glue script mnist_etl.py failed: EtlError: cannot read raw split" in message
    # The error names the S3 locations, as on AWS, not the bridge's temporary directory.
    assert "s3://" in message and "mlharness-glue-" not in message, message
    entered = [e["step"] for e in failed["execution"]["events"]
               if e["type"].endswith("StateEntered")]
    assert entered == ["etl", "PipelineFailed"], entered
    assert failed["execution"]["status"] == "FAILED"
    assert failed["execution"]["error"] == "PipelineStepFailed"
    cause = failed["execution"]["cause"]
    assert cause.startswith("States.TaskFailed: ")
    assert message in json.loads(cause[len("States.TaskFailed: "):])["ErrorMessage"]


@pytest.mark.slow
def test_the_record_names_the_failed_step_and_the_cause(failed):
    record = failed["record"]
    assert record["status"] == "FAILED" and record["failed_step"] == "etl"
    steps = {s["name"]: s for s in record["steps"]}
    assert steps["prepare"]["status"] == "SUCCEEDED" and steps["etl"]["status"] == "FAILED"
    assert "cannot read raw split" in steps["etl"]["error"]
    assert all(steps[n]["status"] == "PENDING" for n in ("train", "evaluate", "infer"))
    assert "cannot read raw split" in str(failed["error"])
    assert failed["error"].run_record.failed_step == "etl"


@pytest.mark.slow
def test_nothing_is_left_running(failed):
    assert failed["endpoints"] == [] and failed["training_jobs"] == []
    assert failed["hosted_during"] == [{}]
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
    from cloud_runners.emulator.backend import emulator_config, fake_aws_environment

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
    from cloud_runners import cloud_run as cloud_run_module
    from cloud_runners import images
    from cloud_runners.emulator import server

    seen = {}

    def interrupted(self, wf, aimed, **kw):
        seen.update(emu=server._running, port=os.environ.get("MOTO_PORT"))
        raise KeyboardInterrupt

    env_before = _env()
    monkeypatch.setattr(images, "IMAGE_CACHE", tmp_path / "image_uris.json")
    monkeypatch.setattr(cloud_run_module.CloudBackend, "run", interrupted)
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(KeyboardInterrupt):
        load_workflow(cfg.pipeline, cfg).run("emulator", config=cfg)
    assert seen["emu"] is not None and seen["port"]
    assert not seen["emu"].running and server._running is None
    assert _env() == env_before


def test_the_emulator_installs_the_bridges_the_steps_name(monkeypatch, tmp_path):
    """Which compute bridges the emulator starts comes from the workflow's step kinds."""
    from cloud_runners import cloud_run as cloud_run_module
    from cloud_runners.emulator import server

    seen = {}

    def look(self, wf, aimed, **kw):
        seen["bridges"] = sorted(type(b).__name__ for b in server._running.bridge)
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud_run_module.CloudBackend, "run", look)
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    with pytest.raises(KeyboardInterrupt):
        load_workflow(cfg.pipeline, cfg).run("emulator", config=cfg)
    assert seen["bridges"] == ["GlueBridge", "HostingBridge", "ProcessingBridge",
                               "TrainingBridge"]
