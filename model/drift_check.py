"""Check a window of captured endpoint traffic for drift against the training baseline.

    python drift_check.py                       # a SageMaker Processing job (BYOC monitor)
    python drift_check.py --dataset-source DIR --output-path DIR \\
        --baseline-statistics statistics.json --baseline-constraints constraints.json \\
        [--start-time ISO8601] [--end-time ISO8601] [--endpoint-name NAME]

With no arguments it follows Model Monitor's bring-your-own-container contract: the
environment variables ``dataset_source`` (default ``/opt/ml/processing/endpointdata``),
``output_path`` (default ``/opt/ml/processing/resultdata``), ``baseline_statistics``,
``baseline_constraints``, ``start_time``, ``end_time`` and ``sagemaker_endpoint_name``;
a CLI flag wins over its variable. Two extensions of ours: ``baseline_model`` (the
training job's ``model.tar.gz``, or a folder holding it, whose
``<version>/assets.extra/drift_baseline/`` holds the two baseline files: the processing
job needs no separate baseline upload) and ``window_minutes`` (the window is the minutes
before ``end_time``, or before now: a scheduled check needs no date arithmetic); and
the thresholds ``significance_level``, ``comparison_method``, ``comparison_threshold``,
``datatype_check_threshold``, ``min_completeness``, which override the constraints'.

It reads the capture records (``drift_capture``), computes the features
(``drift_features``) and compares them with the baseline (``drift_baseline``):

* each numerical feature: two-sample Kolmogorov-Smirnov, ``scipy.stats.ks_2samp``
  between the window and the baseline's stored quantile sample. Two-sample rather than
  ``kstest`` against an interpolated baseline CDF because the baseline is itself a
  finite sample: a one-sample test treats its empirical CDF as the truth and raises
  false alarms when the baseline is small, and interpolating the step CDF of discrete
  features (bounding boxes count pixels) invents values never seen. The stored sample
  counts as ``len(sample)`` values, which is conservative when the baseline was larger.
* ``predicted_class``: chi-square goodness of fit, ``scipy.stats.chisquare``, of the
  window's class counts against the baseline proportions (smoothed by half a count so
  no class has zero expectation), with the Jensen-Shannon distance
  (``scipy.spatial.distance.jensenshannon``, base 2, in [0, 1]) reported beside it.
* Bonferroni: with ``m`` tests, each is run at ``significance_level / m``, so a clean
  window raises any drift alarm with probability at most ``significance_level``.

Outputs in ``output_path``, each written atomically: ``constraint_violations.json``
(Model Monitor's ``{"violations": [{"feature_name", "constraint_check_type",
"description"}]}`` with ``baseline_drift_check``, ``data_type_check``,
``completeness_check``, ``missing_column_check``), ``drift_report.json`` (per feature:
test, statistic, p-value, corrected threshold, drifted, baseline and window means;
record counts; malformed records by reason; ``violation_count``, which a gate compares), ``summary.txt`` (for people) and
``drift.png`` (window vs baseline distributions of the drifted features; skipped, and
said so, without matplotlib). An empty window gives ``status: "no_data"`` and says so.
Exit 0 when the check ran (violations or not), 2 on bad input with one line naming the
file, the field and the expected value. numpy, scipy (matplotlib optional); no harness.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

if __package__:  # imported as the ``model`` package (tests, harness tools)
    from .drift_baseline import (BASELINE_DIR as BASELINE_SUBDIR, CONSTRAINTS, ROBUST,
                                 STATISTICS, Baseline, load_baseline, write_json_atomic)
    from .drift_capture import REASONS, CaptureWindow, parse_time, read_window
    from .drift_features import PREDICTED_CLASS, compute_features, feature_names
    from .drift_plot import plot_drift
    from .evaluate import InputError
else:  # run as a script from the code folder (the processing job's code); a module
    # missing from it fails here, as it fails in the container
    from drift_baseline import (BASELINE_DIR as BASELINE_SUBDIR, CONSTRAINTS, ROBUST,
                                STATISTICS, Baseline, load_baseline, write_json_atomic)
    from drift_capture import REASONS, CaptureWindow, parse_time, read_window
    from drift_features import PREDICTED_CLASS, compute_features, feature_names
    from drift_plot import plot_drift
    from evaluate import InputError

VIOLATIONS = "constraint_violations.json"
REPORT = "drift_report.json"
SUMMARY = "summary.txt"
PLOT = "drift.png"
DEFAULTS = {"dataset_source": "/opt/ml/processing/endpointdata",
            "output_path": "/opt/ml/processing/resultdata"}


def ks_critical(alpha: float, n: int, m: int) -> float:
    """The asymptotic two-sample KS critical distance at level ``alpha`` (Model Monitor's
    ``linf_robust`` subtracts it from the CDF distance)."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def compare(features: dict[str, np.ndarray], baseline: Baseline) -> list[dict[str, Any]]:
    """One result per feature: the test, statistic, p-value, corrected level, drifted."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chisquare, ks_2samp

    names = feature_names(baseline.num_classes)
    tests = len(names)                          # every numerical feature + the chi-square
    level = baseline.alpha / tests
    robust = baseline.comparison_method == ROBUST
    threshold = baseline.comparison_threshold
    results = []
    for name in names:
        window = features[name]
        n = len(window)
        entry: dict[str, Any] = {"name": name, "baseline_mean": baseline.means[name],
                                 "window_mean": float(window.mean()), "window_count": n}
        if name == PREDICTED_CLASS:
            k = baseline.num_classes
            counts = np.bincount(window.astype(np.int64), minlength=k)[:k].astype(np.float64)
            base = baseline.class_proportions * baseline.item_count + 0.5
            base /= base.sum()
            observed = counts / n
            chi = chisquare(counts, base * n)
            linf = float(np.abs(observed - baseline.class_proportions).max())
            entry.update(test="chi-square", statistic=float(chi.statistic),
                         p_value=float(chi.pvalue), linf_distance=linf,
                         js_distance=float(jensenshannon(observed, base, base=2)),
                         baseline_proportions=[round(float(v), 6) for v in base],
                         window_proportions=[round(float(v), 6) for v in observed])
            if n * base.min() < 5:
                entry["warning"] = "expected class counts below 5: the chi-square p-value is rough"
            distance = linf
        else:
            sample = baseline.samples[name]
            ks = ks_2samp(window, sample)
            distance = float(ks.statistic)
            crit = ks_critical(level, n, len(sample))
            entry.update(test="two-sample Kolmogorov-Smirnov", statistic=distance,
                         p_value=float(ks.pvalue), critical_distance=crit,
                         robust_distance=max(0.0, distance - crit))
            distance = entry["robust_distance"]
        if not baseline.perform_comparison:
            drifted = False
        elif robust:
            drifted = entry["p_value"] < level and distance >= threshold
        else:
            drifted = entry["linf_distance" if name == PREDICTED_CLASS else "statistic"] \
                > threshold
        entry.update(corrected_alpha=level, drifted=bool(drifted))
        results.append(entry)
    return results


def _describe(entry: dict[str, Any], baseline: Baseline) -> str:
    if entry["test"] == "chi-square":
        text = (f"Predicted-class proportions differ from the baseline: chi-square "
                f"{entry['statistic']:.4g}, p={entry['p_value']:.3g}, Jensen-Shannon "
                f"distance {entry['js_distance']:.3f}")
    else:
        limit = (f"the critical {entry['critical_distance']:.4f}"
                 if baseline.comparison_method == ROBUST else "the comparison threshold")
        text = (f"Baseline drift distance {entry['statistic']:.4f} (KS) exceeds {limit}, "
                f"p={entry['p_value']:.3g}; window mean {entry['window_mean']:.4g} vs "
                f"baseline {entry['baseline_mean']:.4g}")
    if baseline.comparison_method == ROBUST:
        text += (f" (p < {entry['corrected_alpha']:.3g} = significance "
                 f"{baseline.alpha:g} / {len(baseline.samples)} tests, Bonferroni)")
    else:
        text += f" (Simple comparison: threshold {baseline.comparison_threshold:g})"
    return text


def violations_of(window: CaptureWindow, results: list[dict[str, Any]],
                  baseline: Baseline) -> list[dict[str, str]]:
    """Model Monitor's violations for one checked window."""
    out = []
    total = window.in_window
    by_check: dict[tuple[str, str], list[str]] = {}
    for reason, count in sorted(window.malformed.items()):
        check, column = REASONS[reason]
        by_check.setdefault((check, column), []).append(f"{reason}: {count}")
    for (check, column), reasons in sorted(by_check.items()):
        count = sum(int(r.rsplit(": ", 1)[1]) for r in reasons)
        fraction = count / total if total else 0.0
        if check == "data_type_check" and fraction <= baseline.datatype_check_threshold:
            continue
        if check == "completeness_check":
            continue                                        # judged on all reasons below
        out.append({"feature_name": column, "constraint_check_type": check,
                    "description": f"{count} of {total} records ({fraction:.1%}) failed: "
                                   + ", ".join(reasons)})
    completeness = window.well_formed / total if total else 0.0
    if total and completeness < baseline.min_completeness:
        reasons = ", ".join(f"{r}: {c}" for r, c in sorted(window.malformed.items()))
        out.append({"feature_name": "record", "constraint_check_type": "completeness_check",
                    "description": f"Completeness {completeness:.2%} is below the required "
                                   f"{baseline.min_completeness:.2%}: {total - window.well_formed}"
                                   f" of {total} records malformed ({reasons})"})
    for entry in results:
        if entry["drifted"]:
            out.append({"feature_name": entry["name"],
                        "constraint_check_type": "baseline_drift_check",
                        "description": _describe(entry, baseline)})
    return out


def summary_text(report: dict[str, Any]) -> str:
    rec = report["records"]
    lines = [f"Drift check of {report['dataset_source']}"
             + (f" (endpoint {report['endpoint']})" if report.get("endpoint") else ""),
             f"window: {report['window']['start'] or 'beginning'} .. "
             f"{report['window']['end'] or 'end'}",
             f"records: {rec['in_window']} in the window ({rec['well_formed']} well-formed, "
             f"{rec['malformed']} malformed, {rec['instances']} images); "
             f"{rec['outside_window']} outside it; {rec['files']} files"]
    for reason, info in report["malformed_by_reason"].items():
        lines.append(f"  malformed {reason}: {info['count']} (first at {info['first_at']})")
    if report["status"] == "no_data":
        lines.append("NOTHING TO CHECK: no capture record in the window; drift was not tested.")
    elif report["status"] == "no_valid_records":
        lines.append("NOTHING TO TEST: every record in the window is malformed.")
    else:
        drifted = report["drifted_features"]
        lines.append(f"drift: {', '.join(drifted) if drifted else 'none detected'} "
                     f"({report['test']['tests']} tests at {report['test']['corrected_alpha']:.3g}"
                     f" each, family-wise {report['test']['significance_level']:g})")
        for f in report["features"]:
            if f["drifted"]:
                lines.append(f"  {f['name']}: {f['test']} statistic {f['statistic']:.4g}, "
                             f"p={f['p_value']:.3g}; mean {f['window_mean']:.4g} "
                             f"(baseline {f['baseline_mean']:.4g})")
    lines.append(f"violations: {len(report['violations'])}")
    lines += [f"  {v['constraint_check_type']} {v['feature_name']}" for v in report["violations"]]
    return "\n".join(lines) + "\n"


def run_check(dataset_source: str | os.PathLike, output_path: str | os.PathLike,
              baseline_statistics: str | os.PathLike, baseline_constraints: str | os.PathLike,
              start_time: str | None = None, end_time: str | None = None,
              endpoint_name: str | None = None, plot: bool = True,
              log: Callable[[str], None] = print,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read the window, test it, write the outputs; returns the drift report.
    ``settings`` override the constraints' thresholds (``SETTINGS``)."""
    baseline = with_settings(load_baseline(baseline_statistics, baseline_constraints),
                             settings or {})
    times = {}
    for key, value in (("start_time", start_time), ("end_time", end_time)):
        try:
            times[key] = parse_time(value) if value else None
        except ValueError:
            raise InputError(key, "not an ISO 8601 time", field=key,
                             expected="e.g. 2024-05-01T12:00:00Z", got=value) from None
    source = Path(dataset_source)
    if not source.is_dir():
        raise InputError(source, "capture folder not found", field="dataset_source",
                         expected="a folder of data capture JSON Lines files")
    if endpoint_name and (source / endpoint_name).is_dir():
        source = source / endpoint_name
    h, w = baseline.image_shape
    window = read_window(source, h * w, baseline.num_classes, times["start_time"],
                         times["end_time"])
    if window.in_window == 0:
        status, results = "no_data", []
    elif window.instances == 0:
        status, results = "no_valid_records", []
    else:
        status = "checked"
        feats = compute_features(window.images, window.probabilities, baseline.image_shape)
        results = compare(feats, baseline)
    violations = violations_of(window, results, baseline) if status != "no_data" else []
    tests = len(feature_names(baseline.num_classes))
    report = {
        "status": status, "endpoint": endpoint_name, "dataset_source": str(dataset_source),
        "window": {"start": start_time, "end": end_time},
        "generated_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "records": {"files": window.files, "read": window.records_read,
                    "outside_window": window.outside_window, "in_window": window.in_window,
                    "well_formed": window.well_formed,
                    "malformed": int(sum(window.malformed.values())),
                    "instances": window.instances},
        "malformed_by_reason": {r: {"count": c, "check": REASONS[r][0],
                                    "first_at": window.first_at[r]}
                                for r, c in sorted(window.malformed.items())},
        "test": {"comparison_method": baseline.comparison_method,
                 "significance_level": baseline.alpha, "tests": tests,
                 "corrected_alpha": baseline.alpha / tests, "correction": "bonferroni",
                 "comparison_threshold": baseline.comparison_threshold,
                 "baseline_item_count": baseline.item_count},
        "features": results,
        "drifted_features": [r["name"] for r in results if r["drifted"]],
        "violation_count": len(violations),  # what a gate on this report compares
        "violations": violations,
    }
    if status == "no_data":
        report["message"] = ("nothing to check: no capture record in the window "
                             f"under {source}; drift was not tested")
    out = Path(output_path)
    write_json_atomic(out / VIOLATIONS, {"violations": violations})
    write_json_atomic(out / REPORT, report)
    text = summary_text(report)
    tmp = out / f".{SUMMARY}.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / SUMMARY)
    if plot and status == "checked":
        plot_drift(feats, baseline, results, out / PLOT, log)
    log(text.rstrip("\n"))
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ
    p = argparse.ArgumentParser(description="Check captured endpoint traffic for drift "
                                "against a Model Monitor baseline (SageMaker Processing "
                                "job script; without flags it reads Model Monitor's "
                                "environment variables).")
    for flag, var, text in (
            ("--dataset-source", "dataset_source", "folder of data capture JSON Lines"),
            ("--output-path", "output_path", "folder for the results"),
            ("--baseline-statistics", "baseline_statistics", "the baseline statistics.json"),
            ("--baseline-constraints", "baseline_constraints", "the baseline constraints.json"),
            ("--start-time", "start_time", "window start, ISO 8601 (inclusive)"),
            ("--end-time", "end_time", "window end, ISO 8601 (exclusive)"),
            ("--endpoint-name", "sagemaker_endpoint_name", "the endpoint's name"),
            ("--baseline-model", "baseline_model", "instead of the two baseline files: the "
             "model.tar.gz (or a folder holding it) whose <version>/" + BASELINE_SUBDIR
             + " the training script wrote"),
            ("--window-minutes", "window_minutes", "window: the MINUTES before --end-time "
             "(or now), when --start-time is not given"),
            *((f"--{k.replace('_', '-')}", k, "instead of the constraints' value")
              for k in SETTINGS)):
        p.add_argument(flag, dest=var, default=env.get(var) or DEFAULTS.get(var),
                       help=f"{text} (env {var})")
    p.add_argument("--no-plot", action="store_true", help=f"do not draw {PLOT}")
    return p.parse_args(argv)


# Thresholds that may override the baseline's constraints.json (env / flags of the same
# name): what the harness's ``monitor:`` configuration sets for a check.
SETTINGS = {"significance_level": "alpha", "comparison_method": "comparison_method",
            "comparison_threshold": "comparison_threshold",
            "datatype_check_threshold": "datatype_check_threshold",
            "min_completeness": "min_completeness"}


def with_settings(baseline: Baseline, settings: dict[str, Any]) -> Baseline:
    """The baseline with the given thresholds instead of its constraints' (checked)."""
    import dataclasses

    changes: dict[str, Any] = {}
    for name, value in settings.items():
        if value in (None, ""):
            continue
        if name not in SETTINGS:
            raise InputError(name, "unknown setting", field=name,
                             expected=" | ".join(SETTINGS))
        if name == "comparison_method":
            if value not in (ROBUST, "Simple"):
                raise InputError(name, "unknown comparison method", field=name,
                                 expected=f"{ROBUST} | Simple", got=value)
            changes[SETTINGS[name]] = value
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        low_open = name == "significance_level"
        if not (0 < number < 1 if low_open else 0 <= number <= 1):
            raise InputError(name, "value out of range", field=name,
                             expected="a number in (0, 1)" if low_open else
                             "a number in [0, 1]", got=value)
        changes[SETTINGS[name]] = number
    return dataclasses.replace(baseline, **changes)


def baseline_from_model(model: str, dest: Path) -> tuple[Path, Path]:
    """The baseline files inside a model archive (``--baseline-model``: the archive or a
    folder holding ``model.tar.gz``, as a processing input delivers a training job's
    artefact), unpacked into ``dest``."""
    if __package__:
        from .evaluate import ARCHIVE, extract_model
    else:
        from evaluate import ARCHIVE, extract_model
    path = Path(model)
    archive = path / ARCHIVE if path.is_dir() else path
    _, version_dir = extract_model(archive, dest)
    folder = version_dir / BASELINE_SUBDIR
    for name in (STATISTICS, CONSTRAINTS):
        if not (folder / name).is_file():
            raise InputError(archive, "the model has no drift baseline", field="baseline_model",
                             expected=f"<version>/{BASELINE_SUBDIR}/{name} (written by "
                             "train.py from the validation split)")
    return folder / STATISTICS, folder / CONSTRAINTS


def window_start(start: str | None, end: str | None, minutes: str | None) -> str | None:
    """``start_time``, or ``end_time`` (default: now) less ``window_minutes``."""
    if start or not minutes:
        return start
    try:
        span = float(minutes)
    except ValueError:
        span = -1.0
    if not span > 0:
        raise InputError("window_minutes", "not a positive number of minutes",
                         field="window_minutes", expected="e.g. 60", got=minutes)
    try:
        until = parse_time(end) if end else dt.datetime.now(dt.timezone.utc)
    except ValueError:
        raise InputError("end_time", "not an ISO 8601 time", field="end_time",
                         expected="e.g. 2024-05-01T12:00:00Z", got=end) from None
    return (until - dt.timedelta(minutes=span)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main(argv: list[str] | None = None) -> int:
    import tempfile

    args = parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="drift-baseline-") as tmp:
            if args.baseline_model and not (args.baseline_statistics
                                            or args.baseline_constraints):
                args.baseline_statistics, args.baseline_constraints = baseline_from_model(
                    args.baseline_model, Path(tmp))
            for var in ("baseline_statistics", "baseline_constraints"):
                if not getattr(args, var):
                    raise InputError(var, "no baseline file given", field=var,
                                     expected=f"the path in env {var} or "
                                     f"--{var.replace('_', '-')} (or baseline_model)")
            run_check(args.dataset_source, args.output_path, args.baseline_statistics,
                      args.baseline_constraints,
                      window_start(args.start_time, args.end_time, args.window_minutes),
                      args.end_time, args.sagemaker_endpoint_name, plot=not args.no_plot,
                      log=lambda m: print(m, flush=True),
                      settings={k: getattr(args, k) for k in SETTINGS})
    except InputError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
