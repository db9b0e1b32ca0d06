"""`make bench`: the foundation's benchmarks -> bench/results.json and a printed table.

Not part of the tests. Each goal comes from the foundation issue:
  - end-to-end `harness run` wall time on the bundled sample (goal <= 30 s on 2 cores),
  - ETL: Spark (warm session) / numpy+pyarrow on 70,000 MNIST-sized rows (goal <= 1.5),
  - trainer throughput / bare model.fit of the same model on the same data (goal >= 0.95),
  - accuracy on held-out sample digits and on the real MNIST test set (goal >= 0.95 each),
  - tuning (bench/tune_bench.py): the tuner's overhead, the best trial against the default
    hyperparameters, and the trial-epochs early stopping saves,
  - the step cache (bench/cache_bench.py): a fully cached re-run (< 5 s) and a re-run
    after one hyperparameter change (<= the train step + 8 s).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.backends import load

ROOT = Path(__file__).resolve().parent.parent


def harness_run(backend: str, runs_dir: Path, *settings: str) -> dict:
    """One whole `harness run --backend BACKEND` on the bundled sample, in a fresh process
    (``settings``: ``section.field=value`` overrides): its wall time and its summary
    (every backend writes the same one)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "harness"), "run",
                           "--backend", backend, "--data", "fixture",
                           "--runs-dir", str(runs_dir),
                           *[arg for s in settings for arg in ("--set", s)]],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"harness run --backend {backend} failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run_id = max((p for p in runs_dir.iterdir() if (p / "summary.json").exists()),
                  key=lambda p: p.stat().st_mtime).name
    summary = json.loads((runs_dir / run_id / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "summary": summary, "run_dir": str(runs_dir / run_id)}


def bench_end_to_end() -> dict:
    """Wall time of a whole local run on the bundled sample, in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        run = harness_run("local", Path(tmp))
    s = run["summary"]
    wall = run["wall_s"]
    return {"wall_s": wall, "pipeline_s": s["wall_seconds"],
            "step_seconds": {st["name"]: st["seconds"] for st in s["steps"]},
            "metrics": s["metrics"], "goal_wall_s": 30, "ok": wall <= 30}


def drift_rows(d: dict, row) -> None:
    """The drift benchmark's lines: alarm rates per case (1,000- and 100-record windows)."""
    calibration = d["clean_same_distribution"]
    row("drift false alarms, clean held-out digits (same distribution as the baseline)",
        f"{calibration['alarm_rate_1000']:.1%} (1,000), {calibration['alarm_rate_100']:.1%} "
        f"(100)", "≤ 5%", calibration["alarm_rate_1000"] <= 0.05)
    for case, r in d["detection"].items():
        if case == "clean":  # over the most windows measured
            many = next((v for k, v in d.items() if k.startswith("clean_false_alarm_over")),
                        r)
            row(f"drift alarms: baseline of sample digits vs {d['windows_from']}",
                f"{many['alarm_rate_1000']:.0%} (1,000), {many['alarm_rate_100']:.0%} (100)",
                "no goal: a real shift (class mix)", None)
            continue
        row(f"drift detected: {case}", f"{r['alarm_rate_1000']:.0%} (1,000), "
            f"{r['alarm_rate_100']:.0%} (100)", "≥ 95% (1,000)", r["alarm_rate_1000"] >= 0.95)
    t = d["timing_10k"]
    row("drift check of 10,000 captured records", f"{t['in_process_no_plot_s']:.2f} s",
        "< 2 s", t["in_process_no_plot_s"] < 2.0)


# --only KIND -> (results key, "module:function" measuring it, title)
BENCHES: dict[str, tuple[str, str | None, str]] = {
    "e2e": ("end_to_end", None, "end-to-end local run"),
    "etl": ("etl", "bench.etl_bench:bench_etl", "ETL: Spark vs numpy+pyarrow"),
    "train": ("train", "bench.train_bench:bench_train", "trainer throughput and accuracy"),
    "emulator": ("emulator_e2e", "bench.e2e_bench:bench_e2e",
                 "the cloud path on the embedded emulator vs local"),
    "tuning": ("tuning", "bench.tune_bench:bench_tuning",
               "tuning: 8 trials, 2 at a time; early stopping"),
    "drift": ("drift", "bench.drift_bench:bench_drift",
              "drift monitoring: detection power, false alarms, speed"),
    "cache": ("cache", "bench.cache_bench:bench_cache",
              "step cache: a fully cached re-run, one hyperparameter changed"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=list(BENCHES), action="append")
    args = parser.parse_args(argv)
    only = set(args.only or BENCHES)
    console = Console()
    results: dict = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform()}}
    for kind, (key, target, title) in BENCHES.items():
        if kind in only:
            console.print(f"[bold]{title}[/bold] …")
            results[key] = (bench_end_to_end if target is None else load(target))()
    out = ROOT / "bench" / "results.json"
    if args.only and out.exists():  # a partial run updates the figures it measured
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2) + "\n")

    table = Table(title=f"make bench — {results['date']}")
    for col in ("measure", "value", "goal", "ok"):
        table.add_column(col)

    def row(name, value, goal, ok):  # ok None: a figure with no goal
        table.add_row(name, value, goal, "—" if ok is None else
                      "[green]yes[/green]" if ok else "[red]no[/red]")

    if "end_to_end" in results:
        e = results["end_to_end"]
        row("end-to-end wall time (bundled sample)", f"{e['wall_s']:.1f} s", "≤ 30 s", e["ok"])
    if "etl" in results:
        e = results["etl"]
        row("ETL Spark ÷ numpy+pyarrow (70k rows)",
            f"{e['ratio']:.2f} ({e['spark_s']:.2f} s / {e['numpy_s']:.2f} s)", "≤ 1.5",
            e["ratio"] <= 1.5)
    if "train" in results:
        t = results["train"]
        row("trainer ÷ bare model.fit throughput", f"{t['throughput_ratio']:.3f}", "≥ 0.95",
            t["throughput_ratio"] >= 0.95)
        row("accuracy, held-out sample digits", f"{t['heldout_sample_accuracy']:.4f}", "≥ 0.95",
            t["heldout_sample_accuracy"] >= 0.95)
        if t.get("mnist_t10k_accuracy") is not None:
            row("accuracy, real MNIST test set (10,000)", f"{t['mnist_t10k_accuracy']:.4f}",
                "≥ 0.95", t["mnist_t10k_accuracy"] >= 0.95)
        else:
            table.add_row("accuracy, real MNIST test set", "skipped", "≥ 0.95",
                          t.get("note", "../shared/data/mnist-t10k not found"))
    if "emulator_e2e" in results:
        r = results["emulator_e2e"]
        row("e2e on the emulator ÷ local wall time",
            f"{r['ratio']:.2f} ({r['e2e']['wall_s']:.1f} s / {r['local']['wall_s']:.1f} s)",
            "≤ 1.5", r["ok"])
    if "tuning" in results:
        t = results["tuning"]
        row("tuning wall ÷ (sum of trial times ÷ 2)",
            f"{t['overhead_ratio']:.2f} ({t['tune_s']:.1f} s / {t['trials_s'] / 2:.1f} s)",
            "≤ 1.15", t["overhead_ratio"] <= 1.15)
        row("best trial ÷ default hyperparameters (validation accuracy)",
            f"{t['best_objective']:.4f} vs {t['default_objective']:.4f}", "best > default",
            t["best_objective"] > t["default_objective"])
        row("early stopping Auto: trial-epochs saved",
            f"{t['epochs_saved']:.0%} ({t['auto_epochs']} vs {t['off_epochs']}); best "
            f"{t['auto_best']:.4f} vs {t['best_objective']:.4f}", "≥ 25%, best ± 0.005",
            t["epochs_saved"] >= 0.25 and abs(t["auto_best"] - t["best_objective"]) <= 0.005)
    if "drift" in results:
        drift_rows(results["drift"], row)
    if "cache" in results:
        from bench.cache_bench import rows as cache_rows
        cache_rows(results["cache"], row)
    console.print(table)
    console.print(f"Written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

