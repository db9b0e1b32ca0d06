"""Benchmark drift monitoring: detection power, false alarms and the time of a check.

* A small real Keras model (``model.network.build_model``, a few epochs) is trained on
  the bundled sample ``fixtures/mnist-sample`` (or loaded with ``--model``: a SavedModel
  version folder, or a folder holding one or ``model.tar.gz``); the baseline
  (``statistics.json``/``constraints.json``) is written from sample digits it did not
  train on, as the training job does with its validation split.
* Windows are drawn from held-out digits: the real MNIST test set
  (``../shared/data/mnist-t10k`` beside the project; never trained on) when present,
  else held-out sample digits. 20 windows per case and size (100 and 1,000 records),
  significance 0.05 (family-wise, Bonferroni across the 20 tests). A window "alarms"
  when any feature drifts. Cases: clean digits (the false-alarm rate, goal <= 5%),
  Gaussian noise sigma = 100 on the 0-255 scale (clipped), rotation by 40 degrees,
  translation by 20% of the image in a random direction, one class knocked out,
  inverted images, and an out-of-distribution dataset: the UCI optical digits (8x8,
  0-16, bundled in ``fixtures/uci-digits/`` as scikit-learn ships them for ``load_digits``; read from the
  ``digits.csv.gz`` file, scikit-learn need not import) upscaled into MNIST's 20x20
  box inside 28x28. Without that file (``--uci-digits`` or an installed scikit-learn)
  the OOD case uses 28x28 crops of matplotlib's bundled photograph, and says so.
  Goal: each shift detected in >= 95% of the 1,000-record windows. The clean case is
  also run over 200 windows (``--false-alarm-windows``): 20 windows measure a 5% rate
  in steps of 5%. Because the sample (class-balanced, from MNIST's training set) and the
  t10k test set really differ (class proportions, digit widths), the test's own
  false-alarm rate is measured apart: baseline from half the held-out digits' features,
  clean windows from the other half (``clean_same_distribution``).
* Time: 10,000 real capture records (the model server's JSON Lines format) written
  first, then one check timed end to end in-process (read + features + tests + outputs,
  with and without the plot) and as a fresh ``python model/drift_check.py`` process
  (Model Monitor's environment variables). Goal < 2 s.

Run: ``python -m bench.drift_bench [--model DIR] [--uci-digits digits.csv.gz]``
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "fixtures" / "mnist-sample"
T10K = ROOT.parent / "shared" / "data" / "mnist-t10k"
SIZES = (100, 1000)
KNOCKED_OUT = 7
UCI_DIGITS = ROOT / "fixtures" / "uci-digits" / "digits.csv.gz"  # bundled (fixtures/README)


def _digits(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    from harness.idx import read_image_label_pair
    x, y = read_image_label_pair(images, labels)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64)


def _predictor(model: Path | None, x_train: np.ndarray, y_train: np.ndarray, epochs: int
               ) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function images -> probabilities, and where the model came from."""
    import tensorflow as tf
    if model is None:
        import keras
        from model.network import build_model, classifier_of
        keras.utils.set_random_seed(0)
        net = build_model(28, 28, 10, shift=0.1)
        net.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
        clf = classifier_of(net)
        return (lambda x: clf.predict(x, batch_size=1000, verbose=0),
                f"trained here: {epochs} epochs on {len(y_train)} sample digits")
    if (model / "model.tar.gz").is_file():
        from model.evaluate import extract_model
        tmp = Path(tempfile.mkdtemp(prefix="drift-bench-model-"))
        model = extract_model(model / "model.tar.gz", tmp)[1]
    elif not (model / "saved_model.pb").is_file():
        model = max((p for p in model.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    sig = tf.saved_model.load(str(model)).signatures["serving_default"]
    return (lambda x: np.concatenate([sig(pixels=tf.constant(x[i:i + 1000]))["probabilities"]
                                      .numpy() for i in range(0, len(x), 1000)]),
            f"loaded from {model}")


def _uci_digits(path: Path | None) -> tuple[np.ndarray | None, str]:
    """UCI optical digits (1,797 x 8x8, 0..16) as MNIST-like 28x28 images in [0, 1]."""
    from scipy import ndimage
    if path is None and UCI_DIGITS.is_file():
        path = UCI_DIGITS
    if path is None:
        spec = importlib.util.find_spec("sklearn")
        if spec and spec.submodule_search_locations:
            candidate = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" \
                / "digits.csv.gz"
            path = candidate if candidate.is_file() else None
    if path is None or not Path(path).is_file():
        return None, "UCI digits not found (no --uci-digits, no scikit-learn)"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    small = data[:, :64].reshape(-1, 8, 8) / 16.0
    big = ndimage.zoom(small, (1, 2.5, 2.5), order=1)             # 8x8 -> 20x20
    out = np.zeros((len(big), 28, 28), np.float32)
    out[:, 4:24, 4:24] = np.clip(big, 0, 1)
    return out.reshape(len(out), -1), f"UCI optical digits from {path} ({len(out)} images)"


def _photo_crops(n: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = mpimg.imread(f, format="jpg").astype(np.float32).mean(axis=2) / 255.0
    img = img[::4, ::4]
    r = rng.integers(0, img.shape[0] - 28, n)
    c = rng.integers(0, img.shape[1] - 28, n)
    crops = np.stack([img[i:i + 28, j:j + 28] for i, j in zip(r, c)])
    return crops.reshape(n, -1), "28x28 crops of matplotlib's sample photograph (grace_hopper.jpg)"


def shifted_pools(x: np.ndarray, y: np.ndarray, uci: Path | None, seed: int = 0
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every case's pool of images to draw windows from."""
    from scipy import ndimage
    rng = np.random.default_rng(seed)
    grid = x.reshape(-1, 28, 28)
    rotated = ndimage.rotate(grid, 40, axes=(1, 2), reshape=False, order=1)
    angles = rng.uniform(0, 2 * np.pi, len(x))
    moved = np.stack([ndimage.shift(g, (5.6 * np.sin(a), 5.6 * np.cos(a)), order=1)
                      for g, a in zip(grid, angles)])
    ood, ood_note = _uci_digits(uci)
    if ood is None:
        ood, ood_note = _photo_crops(2000, rng)
        ood_note = "fallback, UCI digits not found: " + ood_note
    pools = {
        "clean": x,
        "gaussian_noise_sigma100": np.clip(x + rng.normal(0, 100 / 255, x.shape), 0, 1),
        "rotation_40deg": np.clip(rotated, 0, 1).reshape(len(x), -1),
        "translation_20pct": np.clip(moved, 0, 1).reshape(len(x), -1),
        f"class_{KNOCKED_OUT}_knocked_out": x[y != KNOCKED_OUT],
        "inverted": 1.0 - x,
        "ood_dataset": ood,
    }
    return {k: v.astype(np.float32) for k, v in pools.items()}, {"ood_dataset": ood_note}


def detection(pools_features: dict[str, dict[str, np.ndarray]], baseline: Any,
              windows: int, seed: int = 1) -> dict[str, Any]:
    """Alarm rates per case and window size (and the features that alarmed most)."""
    from model.drift_check import compare
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for case, feats in pools_features.items():
        n_pool = len(next(iter(feats.values())))
        out[case] = {}
        for size in SIZES:
            alarms, why, effect = 0, Counter(), Counter()
            for _ in range(windows):
                idx = rng.choice(n_pool, size=min(size, n_pool), replace=False)
                results = compare({k: v[idx] for k, v in feats.items()}, baseline)
                drifted = [r for r in results if r["drifted"]]
                alarms += bool(drifted)
                why.update(r["name"] for r in drifted)
                effect.update({r["name"]: r.get("linf_distance", r["statistic"])
                               for r in drifted})
            out[case][f"alarm_rate_{size}"] = alarms / windows
            # most often drifted, ties broken by the larger mean distance
            top = sorted(why, key=lambda f: (why[f], effect[f] / why[f]), reverse=True)[:3]
            out[case][f"top_features_{size}"] = top
    return out


def same_distribution(clean: dict[str, np.ndarray], work: Path, windows: int,
                      alpha: float) -> dict[str, Any]:
    """The test's own false-alarm rate: baseline from a random half of the held-out
    features, clean windows from the other half (no difference in distribution)."""
    from model.drift_baseline import build_baseline, load_baseline, write_json_atomic
    n = len(next(iter(clean.values())))
    perm = np.random.default_rng(5).permutation(n)
    half = {k: v[perm[:n // 2]] for k, v in clean.items()}
    stats, cons = build_baseline(half, num_classes=sum(k.startswith("p_") for k in clean),
                                 image_shape=(28, 28), alpha=alpha)
    folder = work / "same-distribution"
    write_json_atomic(folder / "statistics.json", stats)
    write_json_atomic(folder / "constraints.json", cons)
    baseline = load_baseline(folder / "statistics.json", folder / "constraints.json")
    rest = {k: v[perm[n // 2:]] for k, v in clean.items()}
    return {"baseline_size": n // 2, "windows": windows,
            **detection({"clean": rest}, baseline, windows, seed=4)["clean"]}


def time_check(x: np.ndarray, predict: Callable, statistics: Path, constraints: Path,
               work: Path, n: int = 10_000) -> dict[str, float]:
    """Write n real capture records (one image per request), then time checks of them."""
    import orjson

    from local_runners.serve_capture import capture_record
    from local_runners.serve_codec import encode_predictions
    from model.drift_check import run_check
    idx = np.random.default_rng(2).choice(len(x), n, replace=len(x) < n)
    images = x[idx]
    probs = predict(images)
    start = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    source = work / "endpointdata"
    for part in range(4):                          # four hour folders of 2,500 records
        when = start + dt.timedelta(hours=part)
        folder = source / "digits" / "AllTraffic" / when.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True)
        with open(folder / "00-00-000-bench.jsonl", "wb") as f:
            for i in range(part * n // 4, (part + 1) * n // 4):
                req = orjson.dumps({"instances": images[i:i + 1]},
                                   option=orjson.OPT_SERIALIZE_NUMPY)
                resp = encode_predictions({"probabilities": probs[i:i + 1],
                                           "classes": probs[i:i + 1].argmax(1)}, "row")
                rec = capture_record(req, "application/json", resp, "application/json",
                                     when + dt.timedelta(seconds=i % 3600))
                f.write(orjson.dumps(rec) + b"\n")
    size_mb = sum(p.stat().st_size for p in source.rglob("*.jsonl")) / 1e6
    timings = {"records": n, "capture_megabytes": round(size_mb, 1)}
    for label, plot in (("in_process_no_plot_s", False), ("in_process_with_plot_s", True)):
        t = time.perf_counter()
        report = run_check(source, work / f"out-{label}", statistics, constraints,
                           plot=plot, log=lambda m: None)
        timings[label] = round(time.perf_counter() - t, 3)
        assert report["records"]["instances"] == n, report["records"]
    env = {**os.environ, "dataset_source": str(source), "output_path": str(work / "out-byoc"),
           "baseline_statistics": str(statistics), "baseline_constraints": str(constraints)}
    t = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "model" / "drift_check.py")], env=env,
                          capture_output=True, text=True)
    timings["fresh_process_with_plot_s"] = round(time.perf_counter() - t, 3)
    timings["fresh_process_exit_code"] = done.returncode
    return timings


def bench_drift(model: Path | None = None, uci_digits: Path | None = None,
                windows: int = 20, epochs: int = 3, alpha: float = 0.05,
                false_alarm_windows: int = 200) -> dict[str, Any]:
    from model.drift_baseline import load_baseline, write_baseline
    from model.drift_features import compute_features
    x, y = _digits(SAMPLE / "train-images-idx3-ubyte.gz", SAMPLE / "train-labels-idx1-ubyte.gz")
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    if (T10K / "t10k-images-idx3-ubyte.gz").is_file():
        held_x, held_y = _digits(T10K / "t10k-images-idx3-ubyte.gz",
                                 T10K / "t10k-labels-idx1-ubyte.gz")
        train, val, source = slice(0, 3500), slice(3500, 5000), f"MNIST t10k ({T10K})"
    else:
        held_x, held_y = x[4000:], y[4000:]
        train, val, source = slice(0, 3000), slice(3000, 4000), "held-out sample digits"
    t0 = time.perf_counter()
    predict, model_note = _predictor(model, x[train], y[train], epochs)
    train_s = time.perf_counter() - t0
    held_p = predict(held_x)
    work = Path(tempfile.mkdtemp(prefix="drift-bench-"))
    paths = write_baseline(work / "baseline", x[val], predict(x[val]), alpha=alpha)
    baseline = load_baseline(paths["statistics"], paths["constraints"])
    pools, notes = shifted_pools(held_x, held_y, uci_digits)
    feats = {case: compute_features(imgs, held_p if case == "clean" else predict(imgs))
             for case, imgs in pools.items()}
    rates = detection(feats, baseline, windows)
    extended = detection({"clean": feats["clean"]}, baseline, false_alarm_windows, seed=3)
    calibration = same_distribution(feats["clean"], work, false_alarm_windows, alpha)
    goals = {}
    for case, r in rates.items():
        if case == "clean":
            goals[case] = r["alarm_rate_1000"] <= alpha and r["alarm_rate_100"] <= alpha
        else:
            goals[case] = r["alarm_rate_1000"] >= 0.95
    goals["clean_over_more_windows"] = extended["clean"]["alarm_rate_1000"] <= alpha
    goals["clean_same_distribution"] = calibration["alarm_rate_1000"] <= alpha
    timing = time_check(held_x, predict, paths["statistics"], paths["constraints"], work)
    return {
        "model": model_note, "model_seconds": round(train_s, 1),
        "held_out_accuracy": float((held_p.argmax(1) == held_y).mean()),
        "baseline": f"{len(y[val])} sample digits the model did not train on",
        "windows_from": source, "windows_per_case": windows, "significance_level": alpha,
        "tests_per_window": len(baseline.samples), "notes": notes,
        "detection": rates, "goals_met": goals,
        f"clean_false_alarm_over_{false_alarm_windows}_windows": extended["clean"],
        "clean_same_distribution": calibration, "timing_10k": timing,
        "timing_goal_met": timing["in_process_no_plot_s"] < 2.0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="SavedModel (version folder, its parent, or "
                   "a folder holding model.tar.gz) instead of training one")
    p.add_argument("--uci-digits", type=Path, help="scikit-learn's digits.csv.gz")
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--false-alarm-windows", type=int, default=200,
                   help="clean windows for a tighter false-alarm estimate")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = bench_drift(args.model, args.uci_digits, args.windows, args.epochs,
                         false_alarm_windows=args.false_alarm_windows)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
