"""The local executor: records, failure and resume, the gate, with step kinds defined
outside the package (tests/executor_fakes.py)."""
import json

import executor_fakes
import pytest
from executor_fakes import FakeCheck, FakeData, FakeScore

from harness.config import load_config
from harness.errors import GateFailed, StepFailed
from harness.runs import RunStore
from harness.steps import Chain, Gate
from harness.workflow import Workflow, run_path


def workflow(threshold=0.9):
    data = FakeData("data", output_uri=run_path("raw"))
    score = FakeScore("score", json_uri=run_path("eval", "e.json"), value=0.95,
                      rows=data.output()["Rows"])
    gate = Gate("gate", json_uri=run_path("eval", "e.json"), metric="metrics.score",
                threshold=threshold, retry_from=score)
    check = FakeCheck("check", expected=gate.output()["Body"]["metrics"]["score"])
    return Workflow("fake", Chain([data, score, gate, check]))


@pytest.fixture
def cfg(tmp_path):
    executor_fakes.CALLS.clear()
    return load_config(overrides={"runs_dir": str(tmp_path / "runs")})


def test_successful_run_records_every_step(cfg):
    result = workflow().run("local", config=cfg)
    run_dir = result.run_dir
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "SUCCEEDED" and record["workflow"] == "fake"
    assert [s["name"] for s in record["steps"]] == ["data", "score", "gate", "check"]
    for s in record["steps"]:
        assert s["status"] == "SUCCEEDED" and s["duration_s"] is not None
        assert json.loads((run_dir / s["input"]).read_text()) is not None
        assert json.loads((run_dir / s["output"]).read_text()) is not None
        assert (run_dir / s["log"]).exists()
    score_in = json.loads((run_dir / "steps/score/input.json").read_text())
    assert score_in == {"JsonUri": f"file://{run_dir}/eval/e.json", "Value": 0.95, "Rows": 10}
    assert result.output("gate") == {"Body": {"metrics": {"score": 0.95}}}
    assert result.output("check")["Seen"] == 0.95
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"] == {"metrics.score": 0.95, "checked": 0.95}
    assert [s["name"] for s in summary["steps"]] == ["data", "score", "gate", "check"]
    assert summary["steps"][0]["facts"] == {"rows": 10}
    assert (run_dir / "graph.mmd").read_text().startswith("flowchart TD")
    assert executor_fakes.CALLS == ["data", "score", "check"]


def test_failed_step_is_recorded_with_resume_command(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "score")
    with pytest.raises(StepFailed) as e:
        workflow().run("local", config=cfg)
    assert "raw/train/part-00000.parquet" in str(e.value)
    rec = e.value.run_record
    assert rec.status == "FAILED" and rec.failed_step == "score"
    # the run's own config is stored; the command names only the runs folder (not default)
    assert rec.resume_command == (f"harness run --runs-dir {cfg.runs_path()} "
                                  f"--resume {rec.run_id} --from score")
    assert rec.step("score").status == "FAILED" and "corrupt input" in rec.step("score").error
    assert rec.step("gate").status == rec.step("check").status == "PENDING"
    assert "check" not in executor_fakes.CALLS
    assert RunStore(cfg.runs_path()).load(rec.run_id).failed_step == "score"


def test_resume_reuses_earlier_outputs_and_leaves_earlier_run_untouched(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "score")
    with pytest.raises(StepFailed) as e:
        workflow().run("local", config=cfg)
    failed_id = e.value.run_record.run_id
    failed_dir = RunStore(cfg.runs_path()).run_dir(failed_id)
    before = {p: p.read_bytes() for p in failed_dir.rglob("*") if p.is_file()}
    monkeypatch.delenv("FAKE_FAIL")
    executor_fakes.CALLS.clear()
    result = workflow().run("local", config=cfg, resume=failed_id)
    assert executor_fakes.CALLS == ["score", "check"]
    assert result.record.step("data").status == "REUSED"
    assert result.record.resumed_from == failed_id
    assert failed_id in result.output("data")["RawUri"]
    after = {p: p.read_bytes() for p in failed_dir.rglob("*") if p.is_file()}
    assert before == after


def test_a_resumed_run_restores_what_reused_steps_registered(cfg):
    first = workflow().run("local", config=cfg)
    executor_fakes.CALLS.clear()
    again = workflow().run("local", config=cfg, resume=first.record.run_id, from_step="gate")
    assert executor_fakes.CALLS == ["check"]
    assert again.output("check")["Registry"] == {"score": "replayed"}


def test_gate_below_threshold_stops_the_run_at_the_gate(cfg, monkeypatch):
    monkeypatch.setenv("FAKE_SCORE", "0.5")
    with pytest.raises(GateFailed, match=r"metrics.score = 0.5 does not meet the gate "
                                         r"\(required >= 0.9\)"):
        workflow().run("local", config=cfg)
    rec = RunStore(cfg.runs_path()).load(RunStore(cfg.runs_path()).list_ids()[-1])
    assert rec.failed_step == "gate" and rec.step("gate").status == "FAILED"
    assert rec.step("check").status == "PENDING" and "check" not in executor_fakes.CALLS
    # Evaluating the same result again changes nothing: resume where it is produced.
    assert rec.resume_command.endswith("--from score")


def test_resume_needs_a_failed_run_or_a_step(cfg):
    from harness.errors import HarnessError
    first = workflow().run("local", config=cfg)
    with pytest.raises(HarnessError, match="did not fail"):
        workflow().run("local", config=cfg, resume=first.record.run_id)
    with pytest.raises(HarnessError, match="no step named 'nope'"):
        workflow().run("local", config=cfg, resume=first.record.run_id, from_step="nope")
