"""model/evaluate.py, the evaluation script the pipeline's SageMaker Processing job runs:
the score of a real SavedModel archive on a Parquet test split, its CLI, its answers to
bad input. (The script through the local processing runner: tests/local_runners/
test_processing.py.)"""
import json
import tarfile

import numpy as np
import pytest
from support import sample_digits, write_split

from harness.config import PROJECT_ROOT
from model.evaluate import InputError, evaluate, extract_model, score

EVALUATE = PROJECT_ROOT / "model" / "evaluate.py"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny real model (1 epoch on 1,000 sample digits), packed like a training job's
    model.tar.gz, in a folder as the processing job's model input delivers it."""
    import keras

    from model.network import build_model, export_saved_model

    tmp = tmp_path_factory.mktemp("evaluate")
    x, y = sample_digits(1400, seed=3)
    keras.utils.set_random_seed(1)
    model = build_model(28, 28, 10, learning_rate=0.003, shift=0.0)
    model.fit(x[:1000], y[:1000], batch_size=64, epochs=1, verbose=0)
    export_saved_model(model, tmp / "saved")
    (tmp / "model").mkdir()
    with tarfile.open(tmp / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp / "saved" / "1", arcname="1")
    test_dir = write_split(tmp / "processed" / "test", x[1000:], y[1000:])
    probabilities = model.predict(x[1000:], verbose=0)
    return {"model": tmp / "model", "test_dir": test_dir, "y": y[1000:],
            "probabilities": probabilities, "tmp": tmp}


@pytest.mark.slow
def test_evaluation_matches_a_direct_computation(trained, tmp_path):
    out = tmp_path / "evaluation"
    said = []
    result = evaluate(trained["model"], trained["test_dir"], out, log=said.append)
    y, p = trained["y"], trained["probabilities"]
    expected_accuracy = float((p.argmax(axis=1) == y).mean())
    report = json.loads((out / "evaluation.json").read_text())
    assert report == json.loads(json.dumps(result))
    assert report["metrics"]["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    expected_loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    assert report["metrics"]["loss"] == pytest.approx(expected_loss, rel=1e-4)
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == report["count"] == 400
    assert np.trace(cm) == round(expected_accuracy * 400)
    assert [c["support"] for c in report["per_class"]] == np.bincount(y, minlength=10).tolist()
    assert report["model_version"] == 1
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the mistakes: all of them counted, the most confident 25 listed and drawn
    pred = p.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    mistakes = report["misclassified"]
    assert mistakes["count"] == len(wrong) == 400 - np.trace(cm)
    shown = mistakes["shown"]
    assert len(shown) == min(25, len(wrong))
    assert all(m["predicted"] != m["true"] == y[m["index"]] for m in shown)
    assert [m["predicted"] for m in shown] == [int(pred[m["index"]]) for m in shown]
    confidences = [m["confidence"] for m in shown]
    assert confidences == sorted(confidences, reverse=True)
    assert confidences[0] == pytest.approx(float(p[wrong].max()), rel=1e-4)
    assert (out / "misclassified.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert said and "400 test examples" in said[0]
    assert expected_accuracy > 0.7  # one epoch on 1,000 real digits


def test_misclassified_lists_the_most_confident_mistakes_first():
    from model.evaluate import misclassified

    p = np.array([[0.6, 0.4], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05], [0.3, 0.7]])
    y = np.array([1, 1, 0, 0, 0])
    found = misclassified(p, y, limit=2)
    assert found["count"] == 3  # rows 0, 2 and 4
    assert found["shown"] == [
        {"index": 2, "true": 0, "predicted": 1, "confidence": 0.8},
        {"index": 4, "true": 0, "predicted": 1, "confidence": 0.7}]
    assert misclassified(p[[1, 3]], y[[1, 3]]) == {"count": 0, "shown": []}


def test_score_per_class_and_macro():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    y = np.array([0, 1, 1, 1])
    s = score(p, y)
    assert s["confusion_matrix"].tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert s["metrics"]["accuracy"] == 0.75
    per = {c["class"]: c for c in s["per_class"]}
    assert per[0]["precision"] == 0.5 and per[0]["recall"] == 1.0
    assert per[1]["precision"] == 1.0 and per[1]["recall"] == pytest.approx(2 / 3)
    assert per[2]["support"] == 0
    # macro: over the classes present in y (class 2 has no example)
    assert s["metrics"]["macro_recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert s["metrics"]["macro_precision"] == pytest.approx((0.5 + 1.0) / 2)
    assert s["metrics"]["loss"] == pytest.approx(
        -np.mean(np.log([0.9, 0.8, 0.4, 0.9])))


@pytest.mark.slow
def test_bad_inputs_name_the_file_and_leave_no_output(trained, tmp_path):
    out = tmp_path / "evaluation"
    with pytest.raises(InputError, match="split directory not found") as e:
        evaluate(trained["model"], tmp_path / "no", out)
    assert str(tmp_path / "no") in str(e.value)
    with pytest.raises(InputError, match="model archive not found") as e:
        evaluate(tmp_path / "m", trained["test_dir"], out)
    assert e.value.file == str(tmp_path / "m" / "model.tar.gz")
    empty = tmp_path / "empty"
    empty.mkdir()
    with tarfile.open(empty / "model.tar.gz", "w:gz"):
        pass
    with pytest.raises(InputError, match="no servable SavedModel version found"):
        evaluate(empty, trained["test_dir"], out)
    (tmp_path / "extracted").mkdir()
    with pytest.raises(InputError, match="no servable SavedModel version found"):
        extract_model(empty / "model.tar.gz", tmp_path / "extracted")
    assert not out.exists()
    evaluate(trained["model"], trained["test_dir"], out)
    with pytest.raises(InputError, match="refusing to overwrite"):
        evaluate(trained["model"], trained["test_dir"], out)


# ----------------------------------------------------------------------------- the CLI
# As the processing job runs it: no harness, exit code 2 on bad input.


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model as a processing input delivers it (a folder with model.tar.gz) and a
    test split of 12-pixel rows with labels of its 3 classes."""
    from support import C, D, save_tiny_model

    tmp = tmp_path_factory.mktemp("tiny-evaluate")
    version_dir = save_tiny_model(tmp / "saved", seed=4)
    (tmp / "model").mkdir()
    with tarfile.open(tmp / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    rng = np.random.default_rng(7)
    x, y = rng.random((50, D), dtype=np.float32), rng.integers(0, C, 50)
    return {"model": tmp / "model", "test": write_split(tmp / "test", x, y), "x": x, "y": y,
            "version_dir": version_dir, "tmp": tmp}


def _cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, str(EVALUATE), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_script_writes_evaluation_json_and_prints_the_metrics(tiny, tmp_path):
    from model.evaluate import predict

    out = tmp_path / "evaluation"
    # Run from elsewhere, as the container does: the script finds data.py beside it.
    done = _cli("--model", tiny["model"], "--test", tiny["test"], "--output", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report) == {"metrics", "per_class", "confusion_matrix", "count", "model_version",
                           "misclassified"}
    expected = score(predict(tiny["version_dir"], tiny["x"]), tiny["y"])
    assert report["metrics"] == pytest.approx(expected["metrics"])
    assert report["count"] == 50 and report["model_version"] == 1
    assert report["confusion_matrix"] == expected["confusion_matrix"].tolist()
    assert [set(c) for c in report["per_class"]] == [{"class", "precision", "recall",
                                                      "support"}] * 3
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 12-pixel rows are not square images: no grid of mistakes, and the log says so
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png", "evaluation.json"]
    assert "not square images: misclassified.png is not written" in done.stdout
    metric_lines = [line for line in done.stdout.splitlines() if "=" in line]
    assert metric_lines == [f"{m}={report['metrics'][m]:.4f}" for m in
                            ("accuracy", "loss", "macro_precision", "macro_recall")]


@pytest.mark.slow
def test_script_bad_input_is_one_line_on_stderr_and_exit_code_2(tiny, tmp_path):
    done = _cli("--model", tmp_path, "--test", tiny["test"], "--output", tmp_path / "out")
    assert done.returncode == 2
    assert f"ERROR: {tmp_path / 'model.tar.gz'}: model archive not found." in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def _main_error(capsys, *args) -> str:
    from model.evaluate import main

    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: ") and err.count("\n") == 1, err
    return err


@pytest.mark.slow
def test_bad_inputs_name_the_file_field_and_expected_value(tiny, tmp_path, capsys):
    import tensorflow as tf
    from support import D

    out = tmp_path / "out"
    # no serving_default signature
    bare = tmp_path / "bare"
    tf.saved_model.save(tf.Module(), str(bare / "saved" / "1"))
    (bare / "model").mkdir()
    with tarfile.open(bare / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(bare / "saved" / "1", arcname="1")
    err = _main_error(capsys, "--model", bare / "model", "--test", tiny["test"], "--output", out)
    assert "no serving_default signature" in err and "Expected signature 'serving_default'" in err
    # wrong pixel width
    rng = np.random.default_rng(0)
    wide = write_split(tmp_path / "wide", rng.random((5, D + 4), dtype=np.float32),
                       np.zeros(5, np.int64))
    err = _main_error(capsys, "--model", tiny["model"], "--test", wide, "--output", out)
    assert "field 'pixels'" in err and f"Expected {D} values per row" in err and "Got 16" in err
    # labels the model does not have
    labels = write_split(tmp_path / "labels", rng.random((5, D), dtype=np.float32),
                         np.array([0, 1, 2, 5, 1]))
    err = _main_error(capsys, "--model", tiny["model"], "--test", labels, "--output", out)
    assert f"{labels}: field 'label': labels outside the model's classes" in err
    assert "Expected values in [0, 2]. Got 5." in err
    # a test folder without data
    err = _main_error(capsys, "--model", tiny["model"], "--test", tmp_path / "none",
                      "--output", out)
    assert "split directory not found" in err
    # an archive member escaping the extraction folder
    evil = tmp_path / "evil"
    evil.mkdir()
    (tmp_path / "x.txt").write_text("x")
    with tarfile.open(evil / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "x.txt", arcname="../x.txt")
    err = _main_error(capsys, "--model", evil, "--test", tiny["test"], "--output", out)
    assert "unsafe member in the model archive" in err and "'../x.txt'" in err
    assert not out.exists()


@pytest.mark.slow
def test_an_existing_evaluation_is_never_overwritten(tiny, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "evaluation.json").write_text("{}")
    err = _main_error(capsys, "--model", tiny["model"], "--test", tiny["test"], "--output", out)
    assert "refusing to overwrite it" in err
    assert (out / "evaluation.json").read_text() == "{}"


@pytest.mark.slow
def test_without_matplotlib_the_plot_is_skipped_and_said(tiny, tmp_path, monkeypatch):
    import sys


    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    said = []
    report = evaluate(tiny["model"], tiny["test"], tmp_path / "out", log=said.append)
    assert report["count"] == 50
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["evaluation.json"]
    assert any("matplotlib is not installed" in s for s in said), said


def test_missing_pyarrow_installs_the_requirements_first(tmp_path):
    import sys

    from model.evaluate import ensure_requirements

    calls = []

    class Done:
        def __init__(self, code):
            self.returncode = code

    (tmp_path / "requirements.txt").write_text("pyarrow==25.0.1\n")
    said = []
    ensure_requirements("no_such_module_for_this_test", tmp_path,
                        run=lambda cmd: calls.append(cmd) or Done(0), log=said.append)
    assert calls == [[sys.executable, "-m", "pip", "install", "--quiet", "-r",
                      str(tmp_path / "requirements.txt")]]
    assert "no_such_module_for_this_test is not installed" in said[0]
    with pytest.raises(InputError, match="exit code 1"):
        ensure_requirements("no_such_module_for_this_test", tmp_path, run=lambda cmd: Done(1))
    ensure_requirements("pyarrow", tmp_path, run=lambda cmd: pytest.fail("pip was called"))
    with pytest.raises(InputError, match="no requirements file"):
        ensure_requirements("no_such_module_for_this_test", tmp_path / "none")


def test_script_score_keys_and_label_check():

    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    s = score(p, np.array([0, 1, 1, 1]))
    assert s["per_class"][1] == {"class": 1, "precision": 1.0, "recall": pytest.approx(2 / 3),
                                 "support": 3}
    assert s["metrics"]["macro_precision"] == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(InputError, match="field 'label'"):
        score(p, np.array([0, 1, 3, 1]))


def test_the_script_does_not_import_harness():
    source = EVALUATE.read_text()
    assert "harness" not in [line.split()[1].split(".")[0] for line in source.splitlines()
                             if line.startswith(("import ", "from "))]
