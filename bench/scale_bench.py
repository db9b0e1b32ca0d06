"""`make bench-scale`: the default pipeline when the data grows (not part of the tests).

For each size (70,000 and 700,000 MNIST-sized images by default) it builds a dataset by
tiling the bundled sample (or ``--source DIR``, any IDX pair such as the real MNIST train
set) with small random shifts (-2..2 pixels; the first copy unshifted), runs
``harness run --data DIR`` in a fresh process while sampling the resident memory of the
harness's whole process tree (the harness, Spark's JVM and its Python workers, the
training job's process) every 0.2 s, and reports per step:

- wall time (from the run record),
- the process tree's peak memory while the step ran.

Goals (issue 13):

- the train step's peak memory grows by less than 1.5x from 70 k to 700 k images (the
  training script streams the Parquet parts through tf.data instead of loading them);
- ETL throughput at 700 k on ``local[2]`` at least 0.5x that of numpy+pyarrow doing the
  same normalisation on the same raw files (``bench/etl_bench.py:numpy_etl``); the ETL
  step's time counts whole, Spark's start-up included.

``--workers`` also trains the smallest size with ``train.instance_count`` 1 and 2 (the ETL
reused from the step cache) and prints both times and test accuracies: on 2 cores no
speed-up is expected, the point is that two workers train the same model.

    python -m bench.scale_bench [--sizes 70000 700000] [--epochs 2] [--workers]
                                [--source DIR] [--json FILE]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOAL_MEMORY_GROWTH = 1.5
GOAL_ETL_RATIO = 0.5
SAMPLE_EVERY_S = 0.2


def make_dataset(dest: Path, n: int, source: Path | None = None, seed: int = 0) -> Path:
    """``n`` images as ``dest/train-{images-idx3,labels-idx1}-ubyte`` (uncompressed: gzip
    of 550 MB would dominate the set-up): the source digits tiled, each copy after the
    first shifted by -2..2 pixels in x and y."""
    from harness.idx import read_image_label_pair, write_idx
    from local_runners.prepare import FIXTURE_DIR, find_pairs

    pairs = find_pairs(source or FIXTURE_DIR)
    prefix, images_path, labels_path = next((p for p in pairs if p[0] == "train"), pairs[0])
    images, labels = read_image_label_pair(images_path, labels_path)
    rng = np.random.default_rng(seed)
    out_x = np.empty((n, *images.shape[1:]), dtype=np.uint8)
    out_y = np.empty(n, dtype=labels.dtype)
    for start in range(0, n, len(labels)):
        k = min(len(labels), n - start)
        block = images[:k]
        if start:
            dy, dx = rng.integers(-2, 3, size=2)
            block = np.roll(block, (int(dy), int(dx)), axis=(1, 2))
        out_x[start:start + k], out_y[start:start + k] = block, labels[:k]
    dest.mkdir(parents=True, exist_ok=True)
    write_idx(dest / "train-images-idx3-ubyte", out_x)
    write_idx(dest / "train-labels-idx1-ubyte", out_y)
    return dest


class TreeMemory:
    """Samples the summed RSS of a process and all its descendants in a thread."""

    def __init__(self, pid: int):
        self.pid = pid
        self.samples: list[tuple[float, int]] = []  # (unix time, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            total = 0
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.samples.append((time.time(), total))
            self._stop.wait(SAMPLE_EVERY_S)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, start: float | None = None, end: float | None = None) -> int:
        inside = [b for t, b in self.samples
                  if (start is None or t >= start) and (end is None or t <= end)]
        return max(inside, default=0)


def _ts(iso: str | None) -> float | None:
    return dt.datetime.fromisoformat(iso).timestamp() if iso else None


def run_pipeline(data: Path, runs: Path, *settings: str) -> dict:
    """``harness run --data DATA`` in a fresh process, memory sampled: wall time, the
    record's steps (status, seconds, peak memory) and the summary's metrics."""
    before = {p.name for p in runs.iterdir()} if runs.exists() else set()
    cmd = [sys.executable, "-m", "harness.cli", "run", "--data", str(data),
           "--runs-dir", str(runs)]
    for item in settings:
        cmd += ["--set", item]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    with TreeMemory(proc.pid) as memory:
        output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    new = [p for p in runs.iterdir() if p.name not in before and not p.name.startswith(".")]
    if proc.returncode or len(new) != 1:
        raise SystemExit(f"harness run failed (exit {proc.returncode}):\n{output[-4000:]}")
    run_dir = new[0]
    record = json.loads((run_dir / "record.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    steps = {}
    for step in record["steps"]:
        start, end = _ts(step.get("started")), _ts(step.get("ended"))
        steps[step["name"]] = {
            "status": step["status"],
            "seconds": round(end - start, 2) if start and end else None,
            "peak_mib": round(memory.peak(start, end) / 2**20),
        }
    return {"run_id": run_dir.name, "run_dir": str(run_dir), "wall_s": round(wall, 1),
            "peak_mib": round(memory.peak() / 2**20), "steps": steps,
            "metrics": summary.get("metrics", {})}


def numpy_etl_seconds(run_dir: Path) -> tuple[float, int]:
    """numpy+pyarrow doing the ETL's normalisation on the run's raw splits: (s, rows)."""
    from bench.etl_bench import numpy_etl

    raw = run_dir / "data" / "raw"
    total, rows = 0.0, 0
    with tempfile.TemporaryDirectory(prefix="scale-numpy-etl-") as tmp:
        for split in sorted(p for p in raw.iterdir() if p.is_dir()):
            t0 = time.perf_counter()
            rows += numpy_etl(split, Path(tmp) / f"{split.name}.parquet")
            total += time.perf_counter() - t0
    return total, rows


def bench_size(n: int, work: Path, epochs: int, source: Path | None) -> dict:
    data = make_dataset(work / f"data-{n}", n, source)
    result = run_pipeline(data, work / f"runs-{n}", f"train.hyperparameters.epochs={epochs}",
                          "evaluate.threshold=0.5")
    numpy_s, rows = numpy_etl_seconds(Path(result["run_dir"]))
    etl_s = result["steps"]["etl"]["seconds"]
    result.update(images=n, numpy_etl_s=round(numpy_s, 2), etl_rows=rows,
                  etl_ratio=round(numpy_s / etl_s, 3) if etl_s else None)
    return result


def bench_workers(n: int, work: Path, epochs: int, one: dict) -> dict:
    """The same data and seed trained by 1 and by 2 local workers: 1 is the size's own
    run ``one`` (a second run with the same settings would be the step cache's hit); 2
    reuses its prepare and ETL from the cache and trains."""
    result = run_pipeline(work / f"data-{n}", work / f"runs-{n}",
                          f"train.hyperparameters.epochs={epochs}", "evaluate.threshold=0.5",
                          "train.instance_count=2")
    return {str(count): {"train_s": r["steps"]["train"]["seconds"],
                         "accuracy": r["metrics"].get("metrics.accuracy")}
            for count, r in ((1, one), (2, result))}


def report(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sizes = results["sizes"]
    steps = list(next(iter(sizes.values()))["steps"])
    table = Table(title="harness run at scale: seconds / peak MiB of the process tree")
    table.add_column("step")
    for n in sizes:
        table.add_column(f"{int(n):,} images", justify="right")
    for step in steps:
        table.add_row(step, *(f"{r['steps'][step]['seconds']} s / {r['steps'][step]['peak_mib']}"
                              for r in sizes.values()))
    table.add_row("whole run", *(f"{r['wall_s']} s / {r['peak_mib']}" for r in sizes.values()))
    table.add_row("ETL / numpy+pyarrow throughput",
                  *(f"{r['etl_ratio']}x ({r['numpy_etl_s']} s numpy)" for r in sizes.values()))
    console.print(table)
    for goal in results["goals"]:
        mark = "[green]met[/green]" if goal["met"] else "[red]missed[/red]"
        console.print(f"{goal['name']}: {goal['value']} (goal {goal['goal']}) {mark}")
    if "workers" in results:
        for count, r in results["workers"].items():
            console.print(f"{count} worker(s): train {r['train_s']} s, accuracy {r['accuracy']}")


def goals(sizes: dict) -> list[dict]:
    out = []
    keys = sorted(sizes, key=int)
    if len(keys) >= 2:
        small, large = sizes[keys[0]], sizes[keys[-1]]
        growth = large["steps"]["train"]["peak_mib"] / max(1, small["steps"]["train"]["peak_mib"])
        out.append({"name": f"train peak memory {int(keys[-1]):,} / {int(keys[0]):,}",
                    "value": round(growth, 2), "goal": f"< {GOAL_MEMORY_GROWTH}",
                    "met": growth < GOAL_MEMORY_GROWTH})
    big = sizes[keys[-1]]
    out.append({"name": f"ETL throughput vs numpy+pyarrow at {int(keys[-1]):,}",
                "value": big["etl_ratio"], "goal": f">= {GOAL_ETL_RATIO}",
                "met": (big["etl_ratio"] or 0) >= GOAL_ETL_RATIO})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[70_000, 700_000])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--source", type=Path, help="an IDX folder to tile (default: the sample)")
    p.add_argument("--workers", action="store_true",
                   help="also train the smallest size with 1 and 2 local workers")
    p.add_argument("--work", type=Path, help="keep data and runs here (default: a temp dir)")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "scale_results.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        work = args.work or Path(tmp)
        sizes = {str(n): bench_size(n, work, args.epochs, args.source) for n in args.sizes}
        results = {"date": dt.date.today().isoformat(), "epochs": args.epochs,
                   "sizes": sizes, "goals": goals(sizes)}
        if args.workers:
            results["workers"] = bench_workers(min(args.sizes), work, args.epochs,
                                               sizes[str(min(args.sizes))])
    from bench.scale_cost import model, print_model

    results["paper_model"] = model(results)  # 100x MNIST on AWS from these throughputs
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    print_model(results["paper_model"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
