"""Drift demo: serve a model, send clean then shifted digits, see which features drift,
then retrain on labelled captures and compare the old and new model on shifted digits.

    make drift-demo                       # or: python examples/drift_demo.py [--run RUN_ID]

1. A local pipeline run on the bundled sample (``harness run --data fixture``), or the
   run given with ``--run``.
2. ``harness serve RUN --port 0``: the run's model, capturing into the run's capture folder.
3. Windows of traffic, each checked with ``harness monitor RUN --since T0 --until T1``:
   clean digits (the run's own held-out test split: no violation expected), then each
   shift of ``bench/drift_bench.py``: Gaussian noise (sigma 100/255), rotation by 40
   degrees, translation by 20 %, class 7 removed, inverted, and another dataset (UCI
   optical digits, ``fixtures/uci-digits``). A table: case -> drifted features.
4. Retraining traffic: noisy versions of the run's *training* digits (never the held-out
   ones) sent as one more window; their labels written in Model Monitor's ground-truth
   format keyed by each capture record's eventId; then
   ``harness monitor RUN --since .. --until .. --retrain --labels FILE``.
5. The old and the new model's accuracy on held-out digits, clean and shifted: the real
   MNIST test set (``../shared/data/mnist-t10k`` beside the project) when present, never
   trained on, else the run's own test split (``--heldout sample``; those digits may land
   in the new run's training split when it re-splits the data, so t10k is the fair one).

Fixed seeds throughout; ``--window``, ``--retrain-count``, ``--heldout-count`` and
``--epochs`` make it small enough for a test.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
T10K = ROOT.parent / "shared" / "data" / "mnist-t10k"
RETRAIN_SHIFTS = ("gaussian_noise_sigma100", "rotation_40deg", "translation_20pct", "inverted")


def harness(*args: str, capture: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness.cli", *args]
    print("$ harness " + " ".join(args), flush=True)
    return subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def next_second() -> str:
    """Sleep to the next whole UTC second (capture times have 1 s resolution): a window
    boundary no record straddles."""
    now = dt.datetime.now(dt.timezone.utc)
    nxt = now.replace(microsecond=0) + dt.timedelta(seconds=1)
    time.sleep((nxt - now).total_seconds() + 0.01)
    return _stamp(nxt)


def split_of(run_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A split the run's prepare step wrote (raw Parquet): images in 0..1, labels."""
    import pyarrow.parquet as pq

    from harness import uris
    prepared = json.loads((run_dir / "steps" / "prepare" / "output.json").read_text())
    table = pq.read_table(uris.local_path(prepared["RawUri"]) / name / "part-00000.parquet")
    x = np.asarray(table.column("pixels").combine_chunks().flatten(), np.float32)
    y = table.column("label").to_numpy().astype(np.int64)
    return x.reshape(len(y), -1) / 255.0, y


class Server:
    """``harness serve RUN --port 0`` in a subprocess; its URL from the line it prints."""

    def __init__(self, runs: str, run_id: str):
        import re
        print(f"$ harness serve {run_id} --runs-dir {runs} --port 0", flush=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", run_id,
                                      "--runs-dir", runs, "--port", "0"], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.proc.stdout:
            found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                print("  " + line.strip(), flush=True)
                break
        else:
            raise SystemExit(f"harness serve ended ({self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def send(self, x: np.ndarray, batch: int = 50) -> list[np.ndarray]:
        """POST the images in batches (one capture record each); the batches sent."""
        sent = []
        for i in range(0, len(x), batch):
            rows = np.round(x[i:i + batch], 4)
            body = json.dumps({"instances": rows.tolist()}).encode()
            req = urllib.request.Request(f"{self.url}/v1/models/mnist:predict", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as resp:
                json.load(resp)
            sent.append(rows)
        return sent

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def window(server: Server, x: np.ndarray) -> tuple[str, str, list[np.ndarray]]:
    start = next_second()
    sent = server.send(x)
    end = next_second()
    time.sleep(0.3)  # the capture writer flushes when its queue runs dry
    return start, end, sent


def check(runs: str, run_id: str, start: str, end: str, verbose: bool) -> dict:
    """``harness monitor RUN --since start --until end`` (in this process); the report."""
    import contextlib
    import io

    from harness.cli import main
    from harness.runs import RunStore
    argv = ["monitor", run_id, "--runs-dir", runs, "--since", start, "--until", end]
    print("$ harness " + " ".join(argv), flush=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if verbose or code != 0:
        print(out.getvalue())
    folder = max((RunStore(runs).run_dir(run_id) / "monitoring").glob("2*"))  # the newest
    return json.loads((folder / "drift_report.json").read_text())


def write_labels(capture_root: Path, start: str, end: str, sent: list[np.ndarray],
                 labels: np.ndarray, path: Path) -> int:
    """Ground truth for the capture records of the window, keyed by their eventId: each
    record's instances are matched to the batch that was sent (by its first image)."""
    from harness.retrain import captured_records

    offsets = np.cumsum([0] + [len(b) for b in sent])
    by_first = {np.round(b[0], 4).astype(np.float32).tobytes(): i for i, b in enumerate(sent)}
    records = captured_records(capture_root, sent[0].shape[1], start, end)
    lines = []
    for event, images in records.items():
        i = by_first.get(np.round(images[0], 4).astype(np.float32).tobytes())
        if i is None or len(images) != len(sent[i]):
            continue
        y = labels[offsets[i]:offsets[i + 1]]
        lines.append(json.dumps({"groundTruthData": {"data": ",".join(map(str, y)),
                                                     "encoding": "CSV"},
                                 "eventMetadata": {"eventId": event}, "eventVersion": "0"}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def accuracies(model_data: str, cases: dict[str, np.ndarray], y: np.ndarray
               ) -> dict[str, float]:
    """The model's accuracy on each case's images (the model loaded once)."""
    import tempfile

    from harness import uris
    from model.evaluate import extract_model, predict
    with tempfile.TemporaryDirectory() as tmp:
        _, version = extract_model(uris.local_path(model_data), Path(tmp))
        x = np.concatenate(list(cases.values()))
        hits = predict(version, x).argmax(axis=1) == np.tile(y, len(cases))
    return {case: float(part.mean()) for case, part in zip(cases, np.split(hits, len(cases)))}


def trained_model(run_dir: Path) -> str | None:
    """The model.tar.gz a run's training job wrote (deployed or not)."""
    for path in sorted((run_dir / "steps").glob("*/output.json")):
        doc = json.loads(path.read_text())
        uri = (doc.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if isinstance(uri, str):
            return uri
    return None


def heldout(choice: str, run_dir: Path) -> tuple[np.ndarray, np.ndarray, str]:
    from harness.idx import read_image_label_pair
    folder = T10K if choice == "auto" else None if choice == "sample" else Path(choice)
    if folder is not None and (folder / "t10k-images-idx3-ubyte.gz").is_file():
        x, y = read_image_label_pair(folder / "t10k-images-idx3-ubyte.gz",
                                     folder / "t10k-labels-idx1-ubyte.gz")
        return (x.reshape(len(x), -1).astype(np.float32) / 255.0, y.astype(np.int64),
                f"MNIST t10k ({folder}), never trained on")
    x, y = split_of(run_dir, "test")
    return x, y, "the run's held-out test split (bundled sample)"


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from bench.drift_bench import shifted_pools
    from harness.config import load_config
    from harness.monitoring import target_of_run
    from harness import uris
    from harness.runs import RunStore

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", metavar="RUN_ID", help="reuse this run (default: a new run)")
    p.add_argument("--runs-dir", default=None, help="default: the configured runs/")
    p.add_argument("--epochs", type=int, help="training epochs (default: the configured)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="passed to `harness run` (the retrain run inherits it)")
    p.add_argument("--window", type=int, default=500,
                   help="images per traffic window (at most the run's test split)")
    p.add_argument("--retrain-count", type=int, default=1500,
                   help="labelled shifted training digits sent for retraining")
    p.add_argument("--heldout-count", type=int, default=2000,
                   help="held-out digits for the before/after accuracy")
    p.add_argument("--heldout", default="auto",
                   help="auto (t10k beside the project, else sample) | sample | DIR")
    p.add_argument("--retrain-shift", choices=RETRAIN_SHIFTS, default=RETRAIN_SHIFTS[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print every check's output")
    args = p.parse_args(argv)
    console = Console()
    t0 = time.monotonic()
    runs = str(Path(args.runs_dir).resolve()) if args.runs_dir else str(
        load_config().runs_path())
    store = RunStore(runs)

    run_id = args.run
    if run_id is None:
        extra = ["--set", f"train.hyperparameters.epochs={args.epochs}"] if args.epochs else []
        for item in args.set:
            extra += ["--set", item]
        before = set(store.list_ids())
        if harness("run", "--data", "fixture", "--runs-dir", runs, *extra).returncode:
            return 1
        run_id = next(r for r in store.list_ids() if r not in before)
    run_dir = store.run_dir(run_id)
    target = target_of_run(store, run_id)
    capture_root = uris.local_path(target.capture_uri) / (target.endpoint_name or "")

    x_test, y_test = split_of(run_dir, "test")
    x_train, y_train = split_of(run_dir, "train")
    n = min(args.window, len(y_test))
    pools, notes = shifted_pools(x_test[:n], y_test[:n], None, seed=args.seed)
    rows = []
    server = Server(runs, run_id)
    try:
        for case, x in pools.items():
            start, end, _ = window(server, x[:n])
            report = check(runs, run_id, start, end, args.verbose)
            drifted = report["drifted_features"]
            rows.append((case, str(report["records"]["instances"]),
                         f"{len(drifted)}/{report['test']['tests']}" if report["features"]
                         else "-", ", ".join(drifted) or "none"))
        # retraining traffic: shifted *training* digits, labelled afterwards
        k = min(args.retrain_count, len(y_train))
        rng = np.random.default_rng(args.seed + 1)
        order = rng.permutation(len(y_train))[:k]
        xr, yr = x_train[order], y_train[order]
        shifted, _ = shifted_pools(xr, yr, None, seed=args.seed + 2)
        r_start, r_end, sent = window(server, shifted[args.retrain_shift])
    finally:
        server.stop()

    table = Table(title=f"Drift by case (run {run_id}, {n} images a window)")
    for col in ("case", "images", "drifted", "drifted features"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if notes.get("ood_dataset"):
        console.print(f"ood_dataset: {notes['ood_dataset']}", highlight=False)

    labels_file = run_dir / "monitoring" / f"ground-truth-{r_start.replace(':', '')}.jsonl"
    labelled = write_labels(capture_root, r_start, r_end, sent, yr, labels_file)
    console.print(f"wrote {labelled} ground-truth lines for {k} captured "
                  f"{args.retrain_shift} digits: {labels_file}", highlight=False)
    before = set(store.list_ids())
    proc = harness("monitor", run_id, "--runs-dir", runs, "--since", r_start, "--until", r_end,
                   "--retrain", "--labels", str(labels_file))
    new_ids = [r for r in store.list_ids() if r not in before]
    new_id = new_ids[-1] if new_ids else None
    new_model = trained_model(store.run_dir(new_id)) if new_id else None
    if new_model is None:
        console.print(f"[bold red]retraining failed[/bold red] (exit {proc.returncode})")
        return 1
    deployed = proc.returncode == 0
    if deployed:  # the model the new endpoint serves
        new_model = target_of_run(store, new_id).model_data
    if not deployed:
        console.print(f"[bold yellow]the gate rejected the retrained model[/bold yellow] (run "
                      f"{new_id}): it was not deployed; its accuracy is shown all the same")

    xh, yh, where = heldout(args.heldout, run_dir)
    m = min(args.heldout_count, len(yh))
    pick = np.random.default_rng(args.seed + 3).permutation(len(yh))[:m]
    xh, yh = xh[pick], yh[pick]
    hpools, _ = shifted_pools(xh, yh, None, seed=args.seed + 4)
    acc = Table(title=f"Accuracy on {m} held-out digits: {where}")
    for col in ("digits", f"old model ({run_id})",
                f"new model ({new_id}{'' if deployed else ', not deployed'})"):
        acc.add_column(col)
    cases = {case: hpools[case] for case in ("clean", args.retrain_shift)}
    olds = accuracies(target.model_data, cases, yh)
    news = accuracies(new_model, cases, yh)
    for case in cases:
        old, new = olds[case], news[case]
        acc.add_row(case, f"{old:.4f}", f"{new:.4f}")
        print(f"ACCURACY {case} old={old:.4f} new={new:.4f}", flush=True)
    console.print(acc)
    console.print(f"retrain run {new_id}; demo wall time {time.monotonic() - t0:.1f} s",
                  highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
