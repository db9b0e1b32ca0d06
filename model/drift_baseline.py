"""The drift baseline: ``statistics.json`` and ``constraints.json`` in Amazon SageMaker
Model Monitor's formats, from the features of a baseline dataset.

At training time the validation split's images and the trained model's probabilities go
through :func:`write_baseline` (features: ``drift_features``); ``drift_check`` later
compares captured traffic against the two files.

``statistics.json`` (Model Monitor's schema): ``version``, ``dataset.item_count``,
``features[]`` with ``name``, ``inferred_type`` (``Integral``|``Fractional``) and
``numerical_statistics`` {``common`` {``num_present``, ``num_missing``}, ``mean``,
``sum``, ``std_dev``, ``min``, ``max``, ``distribution.kll`` {``buckets`` (10 equal-width
buckets, as Model Monitor materialises them), ``sketch`` {``parameters`` {``c``, ``k``},
``data``}}}. **``sketch.data`` is our stand-in for KLL's compactors**: one level holding
up to ``quantiles`` (default 2,000) observed baseline values at evenly spaced quantiles,
sorted (all values when the baseline is smaller). It is the baseline sample the
Kolmogorov-Smirnov test compares a window against. Our extension, top-level
``drift_monitor``: ``image_height``, ``image_width``, ``num_classes``,
``predicted_class_counts`` and ``predicted_class_proportions`` (for the chi-square test).

``constraints.json`` (Model Monitor's schema): ``version``, ``features[]`` {``name``,
``inferred_type``, ``completeness``, ``num_constraints.is_non_negative``} and
``monitoring_config`` {``evaluate_constraints``, ``emit_metrics``,
``datatype_check_threshold``, ``domain_content_threshold``, ``distribution_constraints``
{``perform_comparison``, ``comparison_threshold``, ``comparison_method``}}.
How we read ``distribution_constraints`` (Model Monitor documents ``linf_simple`` as
the largest distance between the two CDFs, violating when above ``comparison_threshold``,
and ``linf_robust`` as that distance less the two-sample Kolmogorov-Smirnov critical
value):

* ``Robust`` (default): a real two-sample KS test per numerical feature and a chi-square
  test on the predicted classes, at family-wise significance ``significance_level``
  (our extension field, default 0.05) with Bonferroni correction across all tests; a
  feature drifts when its p-value is below ``significance_level / tests`` *and* its
  KS distance exceeds the corrected critical value by more than
  ``comparison_threshold`` (default 0: the test alone decides; raise it to ignore
  significant but tiny shifts).
* ``Simple``: no test; a feature drifts when its KS distance (the largest CDF gap, for
  the predicted class the largest gap between class proportions) exceeds
  ``comparison_threshold``.

``completeness`` is the least fraction of well-formed capture records a window must
have; ``datatype_check_threshold`` the largest tolerated fraction of records with
non-numeric or non-finite values; ``domain_content_threshold`` is written for the
format's sake (string domains: we have none). Files are written atomically (a
temporary sibling, then ``os.replace``). numpy only.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if __package__:  # imported as the ``model`` package (tests, harness tools)
    from .drift_features import (FRACTIONAL, INTEGRAL, PREDICTED_CLASS, compute_features,
                                 feature_names, image_shape_of, inferred_type)
    from .evaluate import InputError
else:  # run as a script, or imported by one, from the code folder (SageMaker's source
    # dir); a module missing from sourcedir.tar.gz fails here, as it fails on SageMaker
    from drift_features import (FRACTIONAL, INTEGRAL, PREDICTED_CLASS, compute_features,
                                feature_names, image_shape_of, inferred_type)
    from evaluate import InputError

STATISTICS = "statistics.json"
CONSTRAINTS = "constraints.json"
VERSION = 0
QUANTILES = 2000
BUCKETS = 10
KLL_PARAMETERS = {"c": 0.64, "k": 2048}      # Deequ's KLL defaults (recorded, not used)
ROBUST, SIMPLE = "Robust", "Simple"
EXTENSION = "drift_monitor"
# where the training script writes the baseline, inside the exported model version
BASELINE_DIR = os.path.join("assets.extra", "drift_baseline")


def write_json_atomic(path: str | os.PathLike, doc: Any) -> Path:
    """Write ``doc`` as JSON to ``path`` through a temporary file in the same folder and
    ``os.replace``: a crash never leaves a partial file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out, indent=2, allow_nan=False)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def quantile_summary(values: np.ndarray, size: int = QUANTILES) -> np.ndarray:
    """Sorted observed values at ``size`` evenly spaced quantiles (all values if fewer)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if len(v) <= size:
        return v
    return np.quantile(v, (np.arange(size) + 0.5) / size, method="inverted_cdf")


def numerical_statistics(values: np.ndarray, quantiles: int = QUANTILES) -> dict[str, Any]:
    """Model Monitor's ``numerical_statistics`` of one feature column."""
    v = np.asarray(values, dtype=np.float64)
    present = v[np.isfinite(v)]
    if not len(present):
        raise ValueError("a baseline feature has no finite value")
    lo, hi = float(present.min()), float(present.max())
    edges = np.linspace(lo, hi, BUCKETS + 1) if hi > lo else np.array([lo] * (BUCKETS + 1))
    counts = (np.histogram(present, bins=edges)[0] if hi > lo
              else np.r_[len(present), np.zeros(BUCKETS - 1, dtype=np.int64)])
    return {
        "common": {"num_present": int(len(present)), "num_missing": int(len(v) - len(present))},
        "mean": float(present.mean()), "sum": float(present.sum()),
        "std_dev": float(present.std()), "min": lo, "max": hi,
        "distribution": {"kll": {
            "buckets": [{"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]),
                         "count": float(counts[i])} for i in range(BUCKETS)],
            "sketch": {"parameters": dict(KLL_PARAMETERS),
                       "data": [quantile_summary(present, quantiles).tolist()]}}},
    }


def build_baseline(features: dict[str, np.ndarray], *, num_classes: int,
                   image_shape: tuple[int, int], alpha: float = 0.05,
                   comparison_method: str = ROBUST, comparison_threshold: float = 0.0,
                   datatype_check_threshold: float = 0.0, min_completeness: float = 0.99,
                   quantiles: int = QUANTILES) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(statistics, constraints)`` documents from feature columns (``drift_features``)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if comparison_method not in (ROBUST, SIMPLE):
        raise ValueError(f"comparison_method must be {ROBUST!r} or {SIMPLE!r}, "
                         f"got {comparison_method!r}")
    if not 0 <= min_completeness <= 1 or not 0 <= datatype_check_threshold <= 1:
        raise ValueError("min_completeness and datatype_check_threshold must be in [0, 1]")
    names = feature_names(num_classes)
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(f"baseline features missing: {missing}")
    n = len(features[names[0]])
    if n == 0:
        raise ValueError("the baseline dataset is empty")
    stats = [{"name": name, "inferred_type": inferred_type(name),
              "numerical_statistics": numerical_statistics(features[name], quantiles)}
             for name in names]
    classes = np.asarray(features[PREDICTED_CLASS]).astype(np.int64)
    counts = np.bincount(classes, minlength=num_classes)[:num_classes]
    statistics = {
        "version": VERSION,
        "dataset": {"item_count": int(n)},
        "features": stats,
        EXTENSION: {"image_height": int(image_shape[0]), "image_width": int(image_shape[1]),
                    "num_classes": int(num_classes),
                    "predicted_class_counts": counts.tolist(),
                    "predicted_class_proportions": (counts / counts.sum()).tolist(),
                    "sketch_data": f"up to {quantiles} observed values at evenly spaced "
                                   "quantiles (stand-in for KLL compactors)"},
    }
    constraints = {
        "version": VERSION,
        "features": [{"name": s["name"], "inferred_type": s["inferred_type"],
                      "completeness": float(min_completeness),
                      "num_constraints": {"is_non_negative":
                                          bool(s["numerical_statistics"]["min"] >= 0)}}
                     for s in stats],
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "emit_metrics": "Enabled",
            "datatype_check_threshold": float(datatype_check_threshold),
            "domain_content_threshold": 1.0,
            "distribution_constraints": {
                "perform_comparison": "Enabled",
                "comparison_threshold": float(comparison_threshold),
                "comparison_method": comparison_method,
                "significance_level": float(alpha),
                "multiple_testing_correction": "bonferroni",
                "numerical_test": "two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp)",
                "categorical_test": "chi-square goodness of fit (scipy.stats.chisquare)",
            },
        },
    }
    return statistics, constraints


def write_baseline(output: str | os.PathLike, images: np.ndarray, probabilities: np.ndarray,
                   *, image_shape: tuple[int, int] | None = None, **options: Any
                   ) -> dict[str, Path]:
    """Features of the baseline dataset -> ``output/statistics.json`` and
    ``output/constraints.json`` (atomic writes); returns their paths. ``options``: the
    keyword arguments of :func:`build_baseline` (``alpha``, ``comparison_method``, ...)."""
    probabilities = np.asarray(probabilities)
    shape = image_shape_of(np.asarray(images).shape[1], image_shape)
    feats = compute_features(images, probabilities, shape)
    statistics, constraints = build_baseline(feats, num_classes=probabilities.shape[1],
                                             image_shape=shape, **options)
    out = Path(output)
    return {"statistics": write_json_atomic(out / STATISTICS, statistics),
            "constraints": write_json_atomic(out / CONSTRAINTS, constraints)}


# ----------------------------------------------------------------------------- reading


@dataclass
class Baseline:
    """What a drift check needs from the two baseline files."""
    num_classes: int
    image_shape: tuple[int, int]
    item_count: int
    samples: dict[str, np.ndarray]           # feature -> sorted quantile summary
    means: dict[str, float]
    class_proportions: np.ndarray
    alpha: float = 0.05
    comparison_method: str = ROBUST
    comparison_threshold: float = 0.0
    perform_comparison: bool = True
    datatype_check_threshold: float = 0.0
    min_completeness: float = 0.99
    types: dict[str, str] = field(default_factory=dict)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, f"{what} not found", expected=f"the baseline's {what}")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"not valid JSON ({e})", expected=f"Model Monitor's {what}") \
            from None
    if not isinstance(doc, dict):
        raise InputError(path, "not a JSON object", expected=f"Model Monitor's {what}")
    return doc


def _get(doc: Any, path: Path, dotted: str, kind: type | tuple, expected: str) -> Any:
    cur = doc
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur:
            raise InputError(path, "field missing", field=dotted, expected=expected)
        cur = cur[key]
    if not isinstance(cur, kind) or isinstance(cur, bool) and kind is not bool:
        raise InputError(path, "field has the wrong type", field=dotted, expected=expected,
                         got=cur if not isinstance(cur, (list, dict)) else type(cur).__name__)
    return cur


def load_baseline(statistics_path: str | os.PathLike, constraints_path: str | os.PathLike
                  ) -> Baseline:
    """Read and check the two files; bad content raises ``InputError`` naming the file,
    the field and what was expected."""
    sp, cp = Path(statistics_path), Path(constraints_path)
    stats, cons = _read_json(sp, STATISTICS), _read_json(cp, CONSTRAINTS)
    ext = _get(stats, sp, EXTENSION, dict, "our drift_monitor section (image shape, classes)")
    k = _get(ext, sp, "num_classes", int, "the number of classes, an integer >= 2")
    h = _get(ext, sp, "image_height", int, "a positive integer")
    w = _get(ext, sp, "image_width", int, "a positive integer")
    props = np.asarray(_get(ext, sp, "predicted_class_proportions", list,
                            f"{k} class proportions"), dtype=np.float64)
    if k < 2 or h < 1 or w < 1 or props.shape != (k,) or not np.isfinite(props).all() \
            or props.min() < 0 or not math.isclose(props.sum(), 1.0, abs_tol=1e-6):
        raise InputError(sp, "inconsistent image shape, classes or class proportions",
                         field=f"{EXTENSION}.predicted_class_proportions",
                         expected=f"{k} non-negative proportions summing to 1, positive shape")
    item_count = _get(stats, sp, "dataset.item_count", int, "the baseline's record count")
    feats = {f.get("name"): f for f in _get(stats, sp, "features", list, "a list of features")
             if isinstance(f, dict)}
    samples, means, types = {}, {}, {}
    for name in feature_names(k):
        if name not in feats:
            raise InputError(sp, "feature missing", field=f"features[name={name}]",
                             expected=f"every feature of drift_features for {k} classes")
        f = feats[name]
        where = f"features[name={name}]"
        num = _get(f, sp, "numerical_statistics", dict, f"{where}.numerical_statistics")
        data = _get(num, sp, "distribution.kll.sketch.data", list,
                    f"{where}: a list of lists of numbers")
        try:
            values = np.sort(np.concatenate([np.asarray(level, dtype=np.float64)
                                             for level in data if len(level)]))
        except (TypeError, ValueError):
            values = np.array([np.nan])
        if not len(values) or not np.isfinite(values).all():
            raise InputError(sp, "baseline sample empty or not numeric",
                             field=f"{where}.numerical_statistics.distribution.kll.sketch.data",
                             expected="lists of finite numbers")
        samples[name] = values
        means[name] = float(_get(num, sp, "mean", (int, float), f"{where}: a number"))
        types[name] = f.get("inferred_type", INTEGRAL if name == PREDICTED_CLASS else FRACTIONAL)
    mc = _get(cons, cp, "monitoring_config", dict, "Model Monitor's monitoring_config")
    dc = _get(mc, cp, "distribution_constraints", dict, "distribution_constraints")
    method = dc.get("comparison_method", ROBUST)
    method = {"linf_robust": ROBUST, "linf_simple": SIMPLE}.get(str(method).lower(), method)
    if method not in (ROBUST, SIMPLE):
        raise InputError(cp, "unknown comparison method",
                         field="monitoring_config.distribution_constraints.comparison_method",
                         expected=f"{ROBUST!r} or {SIMPLE!r}", got=method)
    numbers = {}
    for key, holder, default, lo, hi in (
            ("significance_level", dc, 0.05, 0.0, 1.0),
            ("comparison_threshold", dc, 0.0 if method == ROBUST else 0.1, 0.0, 1.0),
            ("datatype_check_threshold", mc, 0.0, 0.0, 1.0)):
        value = holder.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and lo <= value <= hi
        if not ok or (key == "significance_level" and not 0 < value < 1):
            prefix = "monitoring_config." + ("distribution_constraints." if holder is dc else "")
            raise InputError(cp, "value out of range", field=prefix + key,
                             expected=f"a number in [{lo}, {hi}]", got=value)
        numbers[key] = float(value)
    completeness = [c.get("completeness") for c in cons.get("features", [])
                    if isinstance(c, dict) and isinstance(c.get("completeness"), (int, float))]
    return Baseline(num_classes=k, image_shape=(h, w), item_count=item_count, samples=samples,
                    means=means, class_proportions=props, alpha=numbers["significance_level"],
                    comparison_method=method,
                    comparison_threshold=numbers["comparison_threshold"],
                    perform_comparison=str(dc.get("perform_comparison", "Enabled")) == "Enabled",
                    datatype_check_threshold=numbers["datatype_check_threshold"],
                    min_completeness=float(max(completeness)) if completeness else 0.99,
                    types=types)
