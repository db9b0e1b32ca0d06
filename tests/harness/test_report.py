"""The run report (harness/report.py): one self-contained page built from a run folder.

The run folders here are made by hand with the shapes a real local run leaves
(record.json, graph.mmd, steps/*/, the training job's metrics.json, evaluation/); no
pipeline runs."""
import base64
import io
import json
import re
from pathlib import Path

import pytest
from report_fakes import GRAPH, PER_CLASS, RUN_ID, STEPS, make_run, png

from harness import report
from harness.cli import main
from harness.report import build_report, parse_mermaid, write_report_safely



@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "runs")


def _html(run_dir: Path) -> str:
    return build_report(run_dir).read_text()


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_every_step_appears_with_status_and_duration(run_dir):
    html = _html(run_dir)
    record = json.loads((run_dir / "record.json").read_text())
    for s in record["steps"]:
        row = re.search(rf'<tr id="row-{re.escape(s["name"])}">(.*?)</tr>', html, re.S)
        assert row, s["name"]
        assert s["status"] in row.group(1) and s["kind"] in row.group(1)
        assert f'{s["duration_s"]:.2f} s' in row.group(1)
    assert "SUCCEEDED" in html and "mnist" in html and RUN_ID in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html  # autoescaped JSON
    assert "prepare line 59" in html and "prepare line 19" not in html  # last 40 lines
    assert "<details>" in html


def test_images_decode_and_numbers_match_the_run(run_dir):
    from PIL import Image

    html = _html(run_dir)
    images = _images(html)
    assert len(images) == 4  # graph, training curves, confusion matrix, mistakes
    for data in images:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as im:
            assert im.size[0] > 10 and im.size[1] > 10
    assert (run_dir / "evaluation" / "confusion_matrix.png").read_bytes() in images
    evaluation = re.search(r'<section id="evaluation">(.*?)</section>', html, re.S).group(1)
    assert "0.9420" in evaluation and "0.2265" in evaluation
    assert "29 of 500 wrong; the 25 most confident mistakes" in evaluation
    assert (run_dir / "evaluation" / "misclassified.png").read_bytes() in images
    for c in PER_CLASS:
        assert f'{c["precision"]:.4f}' in evaluation
    training = re.search(r'<section id="training">(.*?)</section>', html, re.S).group(1)
    for value in ("1.2339", "0.5905", "0.1977", "0.9610"):
        assert value in training
    assert "33.5 s" in html  # the run's duration, from started and ended


def test_nothing_is_fetched(run_dir):
    html = _html(run_dir)
    assert not re.search(r'(?:src|href)\s*=\s*["\']?(?:https?:)?//', html, re.I)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html


def test_graph_is_read_back_from_graph_mmd():
    shape = parse_mermaid(GRAPH)
    assert [s.state_id for s in shape.main_path] == [n for n, _, _ in STEPS]
    assert [s.state_id for s in shape.steps][-1] == "retrain"
    gate = shape.main_path[4]
    assert gate.can_stop() and [b.state_id for b in gate.branches()] == ["retrain"]
    assert shape.main_path[0].placement == "before" and gate.placement == "machine"


def test_failed_run_shows_the_step_and_its_error(tmp_path):
    run_dir = make_run(tmp_path / "runs", failed=True)
    html = _html(run_dir)
    assert re.search(r'id="failed-step">train<', html)
    assert "the loss is NaN at epoch 2" in html
    assert re.search(r'<tr id="row-train">.*?FAILED', html, re.S)
    assert re.search(r'<tr id="row-gate">.*?PENDING', html, re.S)
    assert 'id="evaluation"' not in html
    assert "evaluation.json not found" in html  # the missing section is named


def test_missing_and_malformed_files_do_not_raise(run_dir):
    (run_dir / "graph.mmd").unlink()
    (run_dir / "evaluation" / "evaluation.json").write_text("{not json")
    (run_dir / "evaluation" / "confusion_matrix.png").write_bytes(b"not a png")
    (run_dir / "steps" / "etl" / "output.json").write_text("[[[")
    (run_dir / "steps" / "train" / "log.txt").unlink()
    html = _html(run_dir)
    assert "not readable JSON" in html and "confusion_matrix.png missing" in html
    assert "drawn from the record" in html
    assert len(_images(html)) == 2  # graph (from the record) and curves still there
    (run_dir / "record.json").write_text("{}")
    html = _html(run_dir)
    assert RUN_ID in html and "run record" in html


def test_empty_folder_still_gets_a_report(tmp_path):
    empty = tmp_path / RUN_ID
    empty.mkdir()
    assert "record.json not found" in _html(empty)


def test_training_curves_fall_back_to_the_log_epoch_lines(run_dir):
    import shutil
    shutil.rmtree(run_dir / "training")
    (run_dir / "steps" / "train" / "log.txt").write_text(
        "2026-12-01 16:29:56,194 epoch=1/2 train_loss=1.5 train_accuracy=0.4 "
        "val_loss=0.3 val_accuracy=0.9\n"
        "2026-12-01 16:29:57,194 epoch=2/2 train_loss=0.7 train_accuracy=0.8 "
        "val_loss=0.2 val_accuracy=0.93\n")
    html = _html(run_dir)
    training = re.search(r'<section id="training">(.*?)</section>', html, re.S).group(1)
    assert "0.9300" in training and "epoch lines of its log" in training


def test_tuning_and_drift_sections(run_dir):
    monitor = run_dir / "monitoring" / "20261201-170000-aaaa"
    monitor.mkdir(parents=True)
    (monitor / "drift_report.json").write_text(json.dumps({
        "status": "drift", "violation_count": 2, "drifted_features": ["mean_pixel"],
        "features": [{"name": "mean_pixel", "statistic": 0.41, "drifted": True}]}))
    (monitor / "summary.txt").write_text("Drift check of capture/\n")
    png(monitor / "drift.png")
    png(run_dir / "tuning" / "trials.png")
    html = _html(run_dir)
    drift = re.search(r'<section id="drift">(.*?)</section>', html, re.S).group(1)
    assert "mean_pixel" in drift and "0.4100" in drift and "Drift check of" in drift
    assert 'src="data:image/png' in drift
    tuning = re.search(r'<section id="tuning">(.*?)</section>', html, re.S).group(1)
    assert 'src="data:image/png' in tuning


def test_written_atomically(run_dir, monkeypatch):
    path = build_report(run_dir)
    assert path == run_dir / "report.html"
    assert not list(run_dir.glob(".report.html.tmp-*"))

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report, "render", lambda *a, **k: "<html>new</html>")
    monkeypatch.setattr(report.os, "replace", broken)
    with pytest.raises(OSError):
        build_report(run_dir)
    assert not list(run_dir.glob(".report.html.tmp-*"))
    assert path.read_text().startswith("<!DOCTYPE html>") or "<html" in path.read_text()
    assert write_report_safely(run_dir) is None  # guarded: a warning, not an exception


def test_cli_report_prints_the_path(run_dir, capsys):
    code = main(["report", RUN_ID, "--runs-dir", str(run_dir.parent)])
    out = capsys.readouterr().out
    assert code == 0
    assert str(run_dir / "report.html") in out.replace("\n", "")
    assert (run_dir / "report.html").is_file()


def test_cli_report_unknown_run(run_dir, capsys):
    code = main(["report", "20991231-000000-zzzz", "--runs-dir", str(run_dir.parent)])
    out = capsys.readouterr().out
    assert code != 0
    assert "20991231-000000-zzzz" in out
    assert code == main(["show", "20991231-000000-zzzz", "--runs-dir", str(run_dir.parent)])


def test_every_local_run_writes_its_report(tmp_path, monkeypatch):
    """Succeeded or failed, a local run ends with report.html; a report that cannot be
    written is a warning and leaves the run as it was."""
    import executor_fakes
    from executor_fakes import FakeCheck, FakeData, FakeScore

    from harness.config import load_config
    from harness.errors import StepFailed
    from harness.steps import Chain, Gate
    from harness.workflow import Workflow, run_path

    def workflow():  # as in test_executor.py
        data = FakeData("data", output_uri=run_path("raw"))
        score = FakeScore("score", json_uri=run_path("eval", "e.json"), value=0.95,
                          rows=data.output()["Rows"])
        gate = Gate("gate", json_uri=run_path("eval", "e.json"), metric="metrics.score",
                    threshold=0.9, retry_from=score)
        check = FakeCheck("check", expected=gate.output()["Body"]["metrics"]["score"])
        return Workflow("fake", Chain([data, score, gate, check]))

    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    result = workflow().run("local", config=cfg)
    html = (result.run_dir / "report.html").read_text()
    assert all(f'id="row-{s}"' in html for s in ("data", "score", "gate", "check"))
    monkeypatch.setenv("FAKE_FAIL", "score")
    with pytest.raises(StepFailed) as e:
        workflow().run("local", config=cfg)
    failed = e.value.run_record
    html = (cfg.runs_path() / failed.run_id / "report.html").read_text()
    assert 'id="failed-step">score<' in html
    monkeypatch.delenv("FAKE_FAIL")

    def broken(*a, **k):
        raise RuntimeError("template exploded")

    monkeypatch.setattr(report, "build_report", broken)
    executor_fakes.CALLS.clear()
    result = workflow().run("local", config=cfg)
    assert result.record.status == "SUCCEEDED"
    assert not (result.run_dir / "report.html").exists()


def test_a_cloud_runs_s3_files_are_looked_up_in_its_artifacts_folder(tmp_path):
    from harness.uris import mirror_path

    run = tmp_path / "run"
    assert mirror_path(run, "s3://bkt/p/r1/evaluation/evaluation.json") == \
        run / "artifacts" / "s3" / "bkt" / "p" / "r1" / "evaluation" / "evaluation.json"
    for bad in ("s3://bkt/../../etc/passwd", "file:///etc/passwd", "s3:///key", None, 3):
        assert mirror_path(run, bad) is None, bad
