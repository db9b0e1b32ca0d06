"""model/drift_check.py: drift checks of real captured traffic (the model server's own
capture format) against a baseline of held-out digits: no alarm on clean digits, the
right features on shifted ones, malformed records counted by reason, the empty window,
and the Model Monitor bring-your-own-container entry point."""
import base64
import datetime as dt
import json
import os
import subprocess
import sys

import numpy as np
import orjson
import pytest
from drift_support import WHEN, capture_lines, setup, write_capture

from harness.config import PROJECT_ROOT
from model.drift_check import main, run_check

SCRIPT = PROJECT_ROOT / "model" / "drift_check.py"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return setup(tmp_path_factory.mktemp("drift-check"))


def check(base, tmp_path, images, **kw):
    lines = capture_lines(images, base["model"].predict(images), batch=kw.pop("batch", 1))
    write_capture(tmp_path / "capture", lines)
    return run_check(tmp_path / "capture", tmp_path / "out", base["statistics"],
                     base["constraints"], plot=kw.pop("plot", False), log=lambda m: None, **kw)


def drift_violations(tmp_path):
    doc = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())
    return {v["feature_name"] for v in doc["violations"]
            if v["constraint_check_type"] == "baseline_drift_check"}


def test_clean_held_out_digits_raise_no_drift(base, tmp_path):
    report = check(base, tmp_path, base["x"], batch=4, plot=True)
    assert report["status"] == "checked" and report["records"]["instances"] == 1000
    assert report["records"]["well_formed"] == 250 and report["records"]["malformed"] == 0
    assert drift_violations(tmp_path) == set() and report["drifted_features"] == []
    assert report["test"]["tests"] == 20
    assert report["test"]["corrected_alpha"] == pytest.approx(0.05 / 20)
    for f in report["features"]:
        assert {"statistic", "p_value", "corrected_alpha", "drifted", "baseline_mean",
                "window_mean"} <= set(f)
    classes = next(f for f in report["features"] if f["name"] == "predicted_class")
    assert classes["test"] == "chi-square" and 0 <= classes["js_distance"] < 0.1
    assert "drift: none detected" in (tmp_path / "out" / "summary.txt").read_text()
    assert (tmp_path / "out" / "drift.png").read_bytes()[:4] == b"\x89PNG"


def test_inverted_images_drift(base, tmp_path):
    check(base, tmp_path, 1.0 - base["x"][:300])
    found = drift_violations(tmp_path)
    assert {"mean_intensity", "ink_mass", "bbox_height", "predicted_class"} <= found
    assert "std_intensity" not in found           # inverting keeps the contrast


def test_gaussian_noise_drifts(base, tmp_path):
    rng = np.random.default_rng(1)
    x = base["x"][:300]
    noisy = np.clip(x + rng.normal(0, 100 / 255, x.shape), 0, 1).astype(np.float32)
    check(base, tmp_path, noisy)
    found = drift_violations(tmp_path)
    assert {"mean_intensity", "ink_mass", "std_intensity"} <= found


def test_a_missing_class_drifts_the_predicted_classes(base, tmp_path):
    x, y = base["x"], base["y"]
    report = check(base, tmp_path, x[y != 1][:600])
    assert "predicted_class" in drift_violations(tmp_path)
    classes = next(f for f in report["features"] if f["name"] == "predicted_class")
    assert classes["window_proportions"][1] < classes["baseline_proportions"][1] / 2


def test_malformed_records_are_counted_by_reason(base, tmp_path):
    x = base["x"][:200]
    good = capture_lines(x, base["model"].predict(x))
    record = orjson.loads(good[0])

    def variant(edit):
        r = json.loads(json.dumps(record))
        edit(r)
        return json.dumps(r).encode()

    def body(r, value):
        r["captureData"]["endpointInput"]["data"] = value

    short = json.dumps({"instances": [[0.5] * 700]})
    text = json.dumps({"instances": [["0.5"] * 784]})
    nan = json.dumps({"instances": [[0.0] * 783 + [float("nan")]]})
    b64 = {"observedContentType": "application/json", "mode": "INPUT", "encoding": "BASE64",
           "data": base64.b64encode(json.dumps({"instances": [x[0].tolist()]}).encode()).decode()}
    bad = [b"{not json", b'{"captureData": {}}',
           variant(lambda r: body(r, short)), variant(lambda r: body(r, text)),
           variant(lambda r: body(r, nan)),
           variant(lambda r: r["captureData"]["endpointInput"].update(
               encoding="BASE64", data="%%%")),
           variant(lambda r: r["captureData"].update(endpointInput=b64))]   # well-formed
    write_capture(tmp_path / "capture", good + bad)
    report = run_check(tmp_path / "capture", tmp_path / "out", base["statistics"],
                       base["constraints"], plot=False, log=lambda m: None)
    counts = {r: v["count"] for r, v in report["malformed_by_reason"].items()}
    assert counts == {"bad_json": 1, "missing_field": 1, "wrong_pixel_count": 1,
                      "input_non_numeric": 1, "input_non_finite": 1, "bad_base64": 1}
    assert report["records"] == {"files": 1, "read": 207, "outside_window": 0,
                                 "in_window": 207, "well_formed": 201, "malformed": 6,
                                 "instances": 201}
    assert report["malformed_by_reason"]["bad_json"]["first_at"].endswith(".jsonl:201: "
                                                                          "not a JSON object")
    checks = {(v["constraint_check_type"], v["feature_name"]) for v in report["violations"]}
    assert {("completeness_check", "record"), ("missing_column_check", "pixels"),
            ("data_type_check", "pixels")} <= checks


def test_csv_records_and_the_time_window(base, tmp_path):
    x = base["x"][:100]
    p = base["model"].predict(x)
    from local_runners.serve_capture import capture_record

    def csv(rows):
        return "\n".join(",".join(f"{v:.6g}" for v in row) for row in rows).encode()

    lines = [orjson.dumps(capture_record(csv(x[i:i + 1]), "text/csv", csv(p[i:i + 1]),
                                         "text/csv", WHEN + dt.timedelta(minutes=i)))
             for i in range(100)]
    write_capture(tmp_path / "capture", lines)
    later = WHEN + dt.timedelta(hours=3)
    write_capture(tmp_path / "capture", capture_lines(x, p, when=later), when=later)
    report = run_check(tmp_path / "capture", tmp_path / "out", base["statistics"],
                       base["constraints"], start_time="2024-05-01T12:30:00Z",
                       end_time="2024-05-01T13:00:00Z", plot=False, log=lambda m: None)
    assert report["records"]["instances"] == 30 and report["records"]["malformed"] == 0
    assert report["records"]["files"] == 1          # the later hour folder is not read
    assert report["records"]["outside_window"] == 70


def test_an_empty_window_says_there_was_nothing_to_check(base, tmp_path):
    (tmp_path / "capture").mkdir()
    report = run_check(tmp_path / "capture", tmp_path / "out", base["statistics"],
                       base["constraints"], log=lambda m: None)
    assert report["status"] == "no_data" and "nothing to check" in report["message"]
    assert report["features"] == [] and report["violations"] == []
    assert "NOTHING TO CHECK" in (tmp_path / "out" / "summary.txt").read_text()
    doc = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())
    assert doc == {"violations": []}


def test_byoc_entry_point_reads_model_monitor_environment(base, tmp_path):
    x = 1.0 - base["x"][:200]
    write_capture(tmp_path / "endpointdata", capture_lines(x, base["model"].predict(x)))
    env = {**os.environ, "dataset_source": str(tmp_path / "endpointdata"),
           "output_path": str(tmp_path / "result"),
           "baseline_statistics": str(base["statistics"]),
           "baseline_constraints": str(base["constraints"]),
           "start_time": "2024-05-01T12:00:00Z", "end_time": "2024-05-01T13:00:00Z",
           "sagemaker_endpoint_name": "digits"}
    done = subprocess.run([sys.executable, SCRIPT.name], cwd=SCRIPT.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "result" / "constraint_violations.json").read_text())
    assert any(v["feature_name"] == "mean_intensity" for v in doc["violations"])
    assert {"drift_report.json", "summary.txt", "drift.png"} <= {
        p.name for p in (tmp_path / "result").iterdir()}


def test_bad_baseline_exits_2_naming_the_file(base, tmp_path, capsys):
    (tmp_path / "capture").mkdir()
    bad = tmp_path / "statistics.json"
    bad.write_text('{"version": 0}')
    code = main(["--dataset-source", str(tmp_path / "capture"), "--output-path",
                 str(tmp_path / "out"), "--baseline-statistics", str(bad),
                 "--baseline-constraints", str(base["constraints"])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(bad) in err and "drift_monitor" in err and "Expected" in err
    assert not (tmp_path / "out").exists()


def test_simple_comparison_uses_the_distance_threshold(base, tmp_path):
    cons = json.loads(base["constraints"].read_text())
    dc = cons["monitoring_config"]["distribution_constraints"]
    dc.update(comparison_method="Simple", comparison_threshold=0.5)
    simple = tmp_path / "constraints.json"
    simple.write_text(json.dumps(cons))
    x = 1.0 - base["x"][:200]
    write_capture(tmp_path / "capture", capture_lines(x, base["model"].predict(x)))
    report = run_check(tmp_path / "capture", tmp_path / "out", base["statistics"], simple,
                       plot=False, log=lambda m: None)
    assert report["test"]["comparison_method"] == "Simple"
    for f in report["features"]:
        distance = f.get("linf_distance", f["statistic"])
        assert f["drifted"] == (distance > 0.5), f["name"]
    assert "mean_intensity" in report["drifted_features"]
    assert "std_intensity" not in report["drifted_features"]


def test_the_baseline_comes_from_the_model_archive_and_the_window_from_minutes(base,
                                                                              tmp_path):
    """Our two extensions of the contract, as the monitoring processing job uses them:
    ``baseline_model`` (the training job's model.tar.gz) and ``window_minutes``."""
    import tarfile

    x = 1.0 - base["x"][:200]
    write_capture(tmp_path / "endpointdata", capture_lines(x, base["model"].predict(x)))
    (tmp_path / "model").mkdir()
    with tarfile.open(tmp_path / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(base["statistics"], "1/assets.extra/drift_baseline/statistics.json")
        tar.add(base["constraints"], "1/assets.extra/drift_baseline/constraints.json")
        (tmp_path / "saved_model.pb").write_bytes(b"")
        tar.add(tmp_path / "saved_model.pb", "1/saved_model.pb")
    env = {**os.environ, "dataset_source": str(tmp_path / "endpointdata"),
           "output_path": str(tmp_path / "result"),
           "baseline_model": str(tmp_path / "model"),
           "end_time": "2024-05-01T13:00:00Z", "window_minutes": "90"}
    done = subprocess.run([sys.executable, SCRIPT.name], cwd=SCRIPT.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "result" / "drift_report.json").read_text())
    assert report["window"]["start"].startswith("2024-05-01T11:30:00")
    assert report["records"]["in_window"] == 200 and report["violation_count"] > 0
    assert report["violation_count"] == len(report["violations"])
    # a model without a baseline: exit 2 naming the archive
    with tarfile.open(tmp_path / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "saved_model.pb", "1/saved_model.pb")
    done = subprocess.run([sys.executable, SCRIPT.name], cwd=SCRIPT.parent,
                          env={**env, "output_path": str(tmp_path / "again")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "model.tar.gz" in done.stderr
    assert "the model has no drift baseline" in done.stderr


def test_settings_override_the_constraints_thresholds(base, tmp_path):
    """What the harness's monitor: configuration does: Simple with a distance threshold of
    1 tolerates any shift; a setting out of range is an error naming it."""
    from model.evaluate import InputError

    report = check(base, tmp_path, 1.0 - base["x"][:300],
                   settings={"comparison_method": "Simple", "comparison_threshold": 1.0})
    assert report["test"]["comparison_method"] == "Simple"
    assert report["drifted_features"] == [] and drift_violations(tmp_path) == set()
    with pytest.raises(InputError, match="significance_level"):
        check(base, tmp_path, base["x"][:10], settings={"significance_level": 0})
