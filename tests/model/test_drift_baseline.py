"""model/drift_baseline.py: statistics.json and constraints.json in Model Monitor's
format from real digits, their atomic writes, and clear errors on bad baseline files."""
import json

import numpy as np
import pytest
from drift_support import setup

from model.drift_baseline import load_baseline, write_json_atomic
from model.drift_features import feature_names
from model.evaluate import InputError


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return setup(tmp_path_factory.mktemp("drift-baseline"))


def test_statistics_follow_model_monitor_schema(base):
    stats = json.loads(base["statistics"].read_text())
    assert stats["version"] == 0 and stats["dataset"]["item_count"] == 1500
    assert [f["name"] for f in stats["features"]] == feature_names(10)
    for f in stats["features"]:
        assert f["inferred_type"] == ("Integral" if f["name"] == "predicted_class"
                                      else "Fractional")
        num = f["numerical_statistics"]
        assert num["common"] == {"num_present": 1500, "num_missing": 0}
        assert num["min"] <= num["mean"] <= num["max"]
        assert num["sum"] == pytest.approx(num["mean"] * 1500)
        assert num["std_dev"] >= 0
        kll = num["distribution"]["kll"]
        assert len(kll["buckets"]) == 10
        assert sum(b["count"] for b in kll["buckets"]) == 1500
        assert kll["buckets"][0]["lower_bound"] == num["min"]
        assert kll["buckets"][-1]["upper_bound"] == num["max"]
        assert set(kll["sketch"]["parameters"]) == {"c", "k"}
        data = kll["sketch"]["data"][0]
        assert len(data) == 1500 and data == sorted(data)      # <= 2,000: every value
    ext = stats["drift_monitor"]
    assert (ext["image_height"], ext["image_width"], ext["num_classes"]) == (28, 28, 10)
    assert sum(ext["predicted_class_counts"]) == 1500
    assert sum(ext["predicted_class_proportions"]) == pytest.approx(1.0)


def test_constraints_follow_model_monitor_schema(base):
    cons = json.loads(base["constraints"].read_text())
    assert cons["version"] == 0
    assert [f["name"] for f in cons["features"]] == feature_names(10)
    for f in cons["features"]:
        assert set(f) == {"name", "inferred_type", "completeness", "num_constraints"}
        assert 0 <= f["completeness"] <= 1
        assert f["num_constraints"]["is_non_negative"] is True
    mc = cons["monitoring_config"]
    assert mc["evaluate_constraints"] == "Enabled" and mc["emit_metrics"] == "Enabled"
    assert {"datatype_check_threshold", "domain_content_threshold"} <= set(mc)
    dc = mc["distribution_constraints"]
    assert dc["perform_comparison"] == "Enabled"
    assert dc["comparison_method"] == "Robust" and dc["significance_level"] == 0.05
    assert dc["comparison_threshold"] == 0.0
    baseline = load_baseline(base["statistics"], base["constraints"])
    assert baseline.alpha == 0.05 and baseline.image_shape == (28, 28)


def test_large_baseline_keeps_a_quantile_summary(tmp_path):
    from model.drift_baseline import quantile_summary

    values = np.random.default_rng(0).normal(size=50_000)
    q = quantile_summary(values, 2000)
    assert len(q) == 2000 and np.all(np.diff(q) >= 0)
    assert np.isin(q, values).all()                    # observed values, not interpolated
    assert abs(np.median(q)) < 0.02


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "statistics.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(ValueError):
        write_json_atomic(target, {"bad": float("nan")})    # fails mid-serialisation
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["statistics.json"]


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.pop("drift_monitor"), "drift_monitor"),
    (lambda s: s["features"].pop(3), "features[name=p_3]"),
    (lambda s: s["features"][0]["numerical_statistics"]["distribution"]["kll"]["sketch"]
     .update(data=[["x"]]), "features[name=p_0].numerical_statistics.distribution.kll"),
])
def test_bad_statistics_name_file_and_field(base, tmp_path, mutate, field):
    stats = json.loads(base["statistics"].read_text())
    mutate(stats)
    bad = tmp_path / "statistics.json"
    bad.write_text(json.dumps(stats))
    with pytest.raises(InputError) as err:
        load_baseline(bad, base["constraints"])
    assert str(bad) in str(err.value) and field in str(err.value)


def test_bad_constraints_and_unparsable_file(base, tmp_path):
    cons = json.loads(base["constraints"].read_text())
    cons["monitoring_config"]["distribution_constraints"]["comparison_method"] = "Fancy"
    bad = tmp_path / "constraints.json"
    bad.write_text(json.dumps(cons))
    with pytest.raises(InputError, match="comparison_method.*Expected 'Robust' or 'Simple'"):
        load_baseline(base["statistics"], bad)
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_baseline(base["statistics"], bad)
