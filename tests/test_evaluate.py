"""The evaluate stage: score a real SavedModel archive on a Parquet test split."""
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support import sample_digits, write_split

from harness import uris
from harness.config import PipelineConfig
from harness.errors import DataError, HarnessError
from harness.stages import StageContext
from local_runners.evaluate import LocalEvaluateRunner, score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny real model (1 epoch on 1,000 sample digits), packed like a training job's."""
    import keras

    from model.network import build_model, export_saved_model

    tmp = tmp_path_factory.mktemp("evaluate")
    x, y = sample_digits(1400, seed=3)
    keras.utils.set_random_seed(1)
    model = build_model(28, 28, 10, learning_rate=0.003, shift=0.0)
    model.fit(x[:1000], y[:1000], batch_size=64, epochs=1, verbose=0)
    export_saved_model(model, tmp / "model")
    archive = tmp / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp / "model" / "1", arcname="1")
    test_dir = write_split(tmp / "processed" / "test", x[1000:], y[1000:])
    probabilities = model.predict(x[1000:], verbose=0)
    return {"archive": archive, "test_dir": test_dir, "y": y[1000:],
            "probabilities": probabilities, "tmp": tmp}


def _ctx():
    return StageContext(run_id="e", step="evaluate", config=PipelineConfig(),
                        log=logging.getLogger("test.evaluate"))


def _request(trained, out: Path, threshold: float, metric: str = "accuracy"):
    return {"ModelArtifacts": uris.file_uri(trained["archive"]),
            "TestDataUri": uris.file_uri(trained["test_dir"]), "OutputUri": uris.file_uri(out),
            "Metric": metric, "Threshold": threshold}


def test_evaluation_matches_a_direct_computation(trained, tmp_path):
    out = tmp_path / "evaluation"
    result = LocalEvaluateRunner().run(_request(trained, out, 0.5), _ctx())
    y, p = trained["y"], trained["probabilities"]
    expected_accuracy = float((p.argmax(axis=1) == y).mean())
    report = json.loads((out / "evaluation.json").read_text())
    assert report["Metrics"]["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    assert result["Metrics"] == report["Metrics"]
    expected_loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    assert report["Metrics"]["loss"] == pytest.approx(expected_loss, rel=1e-4)
    cm = np.array(report["ConfusionMatrix"])
    assert cm.shape == (10, 10) and cm.sum() == report["Count"] == result["Count"] == 400
    assert np.trace(cm) == round(expected_accuracy * 400)
    assert [c["Support"] for c in report["PerClass"]] == np.bincount(y, minlength=10).tolist()
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["EvaluationUri"] == uris.join(uris.file_uri(out), "evaluation.json")
    assert result["Passed"] is (expected_accuracy >= 0.5)
    assert expected_accuracy > 0.7  # one epoch on 1,000 real digits


def test_passed_reflects_the_threshold(trained, tmp_path):
    low = LocalEvaluateRunner().run(_request(trained, tmp_path / "a", 0.0), _ctx())
    high = LocalEvaluateRunner().run(_request(trained, tmp_path / "b", 1.0, "macro_recall"),
                                     _ctx())
    assert low["Passed"] is True
    assert high["Metric"] == "macro_recall" and high["Threshold"] == 1.0
    assert high["Passed"] is (high["Metrics"]["macro_recall"] >= 1.0) is False


def test_score_per_class_and_macro():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    y = np.array([0, 1, 1, 1])
    s = score(p, y)
    assert s["confusion_matrix"].tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert s["metrics"]["accuracy"] == 0.75
    per = {c["Class"]: c for c in s["per_class"]}
    assert per[0]["Precision"] == 0.5 and per[0]["Recall"] == 1.0
    assert per[1]["Precision"] == 1.0 and per[1]["Recall"] == pytest.approx(2 / 3)
    assert per[2]["Support"] == 0
    assert s["metrics"]["macro_recall"] == pytest.approx((1.0 + 2 / 3) / 2)


def test_bad_inputs_name_the_file_and_leave_no_output(trained, tmp_path):
    out = tmp_path / "evaluation"
    req = _request(trained, out, 0.5)
    with pytest.raises(DataError, match="split directory not found"):
        LocalEvaluateRunner().run({**req, "TestDataUri": uris.file_uri(tmp_path / "no")}, _ctx())
    with pytest.raises(DataError, match="model archive not found"):
        LocalEvaluateRunner().run({**req, "ModelArtifacts": uris.file_uri(tmp_path / "m.tgz")},
                                  _ctx())
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(DataError, match="no servable SavedModel version found"):
        LocalEvaluateRunner().run({**req, "ModelArtifacts": uris.file_uri(empty)}, _ctx())
    with pytest.raises(HarnessError, match="field 'Metric'"):
        LocalEvaluateRunner().run({**req, "Metric": "f1"}, _ctx())
    assert not out.exists()
    LocalEvaluateRunner().run(req, _ctx())
    with pytest.raises(HarnessError, match="already exists"):
        LocalEvaluateRunner().run(req, _ctx())
