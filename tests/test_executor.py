"""The executor's records, failure handling, resume and gate, with stand-in runners."""
import json

import executor_fakes
import pytest

from harness import backends
from harness.config import load_config
from harness.errors import GateFailed, StepFailed
from harness.executor import LocalExecutor
from harness.runs import RunStore

KINDS = ("prepare", "etl", "train", "evaluate", "deploy", "infer")


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    for kind in KINDS:
        monkeypatch.setitem(backends.RUNNERS, ("emulator", kind),
                            f"executor_fakes:Fake{'Train' if kind == 'train' else kind.title()}")
    monkeypatch.setitem(backends.SETUPS, "emulator", "harness.local_setup:LocalSetup")
    executor_fakes.CALLS.clear()
    return load_config(overrides={"backend": "emulator", "runs_dir": str(tmp_path / "runs")})


def test_successful_run_records_every_step(cfg):
    result = LocalExecutor(cfg, announce=lambda m: None).run()
    run_dir = result.run_dir
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "SUCCEEDED"
    assert [s["name"] for s in record["steps"]] == list(KINDS)
    for s in record["steps"]:
        assert s["status"] == "SUCCEEDED" and s["duration_s"] is not None
        assert json.loads((run_dir / s["input"]).read_text())
        assert json.loads((run_dir / s["output"]).read_text())
        assert (run_dir / s["log"]).exists()
    train_in = json.loads((run_dir / "steps/train/input.json").read_text())
    assert train_in["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].startswith("file://")
    assert (run_dir / "code/sourcedir.tar.gz").exists()
    assert (run_dir / "code/glue/mnist_etl.py").exists()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] == summary["endpoint_accuracy"] == 0.97
    assert set(summary["step_seconds"]) == set(KINDS)


def test_failed_step_is_recorded_with_resume_command(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "etl")
    ex = LocalExecutor(cfg, announce=lambda m: None)
    with pytest.raises(StepFailed) as e:
        ex.run()
    assert "raw/train/part-00000.parquet" in str(e.value)
    rec = ex.record
    assert rec.status == "FAILED" and rec.failed_step == "etl"
    assert rec.resume_command == f"harness run --resume {rec.run_id} --from etl"
    assert rec.step("etl").status == "FAILED" and "corrupt raw data" in rec.step("etl").error
    assert rec.step("train").status == "PENDING"
    assert "train" not in executor_fakes.CALLS
    on_disk = RunStore(cfg.runs_path()).load(rec.run_id)
    assert on_disk.failed_step == "etl"


def test_resume_reuses_earlier_outputs_and_leaves_earlier_run_untouched(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "etl")
    ex = LocalExecutor(cfg, announce=lambda m: None)
    with pytest.raises(StepFailed):
        ex.run()
    failed_id = ex.record.run_id
    failed_dir = RunStore(cfg.runs_path()).run_dir(failed_id)
    before = {p: p.read_bytes() for p in failed_dir.rglob("*") if p.is_file()}
    monkeypatch.delenv("FAKE_FAIL")
    executor_fakes.CALLS.clear()
    result = LocalExecutor(cfg, announce=lambda m: None).run(resume=failed_id)
    assert executor_fakes.CALLS == ["etl", "train", "evaluate", "deploy", "infer"]
    assert result.record.step("prepare").status == "REUSED"
    assert result.record.resumed_from == failed_id
    prepare_out = json.loads((result.run_dir / "steps/prepare/output.json").read_text())
    assert failed_id in prepare_out["RawUri"]
    after = {p: p.read_bytes() for p in failed_dir.rglob("*") if p.is_file()}
    assert before == after


def test_gate_below_threshold_deploys_nothing(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_ACCURACY", "0.5")
    ex = LocalExecutor(cfg, announce=lambda m: None)
    with pytest.raises(GateFailed, match="model below threshold: accuracy = 0.5000"):
        ex.run()
    assert "deploy" not in executor_fakes.CALLS
    assert ex.record.failed_step == "evaluate"
    assert ex.record.step("deploy").status == "PENDING"


def test_endpoint_accuracy_must_match_evaluation(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_INFER_ACCURACY", "0.96")
    with pytest.raises(StepFailed, match="differs from the evaluate step"):
        LocalExecutor(cfg, announce=lambda m: None).run()


def test_unavailable_backend_is_a_clear_error(tmp_path):
    cfg = load_config(overrides={"backend": "emulator", "runs_dir": str(tmp_path)})
    from harness.errors import ConfigError
    with pytest.raises(ConfigError, match="backend 'emulator' is not available yet"):
        LocalExecutor(cfg).run()
    assert not any(tmp_path.iterdir())
