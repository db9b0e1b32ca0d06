"""The emulator's overhead: the cloud path on the embedded emulator vs the `local` backend.

``bench_e2e()`` times, on the bundled sample with the same configuration and seed:

- ``local``: a whole `harness run --data fixture` in a fresh process (as
  ``bench.run.bench_end_to_end``),
- ``e2e``: ``cloud_runners.emulator.run.emulator_run`` in a fresh process (emulator start,
  bootstrap, prepare + upload, the state machine with the Glue, training and hosting
  bridges, the endpoint answering the test split through ``InvokeEndpoint``),

and reports e2e ÷ local (goal <= 1.5). Both runs are fresh processes, so both pay the
imports and the Spark and TensorFlow start-up. Run it with ``python -m bench.e2e_bench``
(``--json`` prints the dict only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 1.5

# The child process of the e2e measure: the default configuration (pipeline.yaml), the
# bundled sample, runs under argv[1]; exit code = emulator_run's.
_E2E_CHILD = """
import sys
from rich.console import Console
from harness.config import load_config
from cloud_runners.emulator.run import emulator_run
cfg = load_config(None, {"data.source": "fixture", "runs_dir": sys.argv[1]})
sys.exit(emulator_run(cfg, Console(width=160)))
"""


def _local(tmp: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "harness"), "run",
                           "--data", "fixture", "--runs-dir", str(tmp)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"harness run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run_id = sorted(p.name for p in tmp.iterdir())[-1]
    summary = json.loads((tmp / run_id / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "test_accuracy": summary["test_accuracy"],
            "endpoint_accuracy": summary["endpoint_accuracy"]}


def _e2e(tmp: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _E2E_CHILD, str(tmp)],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"emulator run failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run_id = sorted(p.name for p in tmp.iterdir())[-1]
    record = json.loads((tmp / run_id / "execution.json").read_text())
    events = record.get("events", [])
    execution_s = None
    if len(events) >= 2:
        from datetime import datetime

        first, last = (datetime.fromisoformat(str(e["timestamp"]).replace("Z", "+00:00"))
                       for e in (events[0], events[-1]))
        execution_s = round((last - first).total_seconds(), 2)
    return {"wall_s": round(wall, 2), "execution_s": execution_s,
            "status": record.get("status"),
            "endpoint_accuracy": (record.get("infer") or {}).get("Accuracy")}


def bench_e2e() -> dict:
    """Wall times of the emulator run and of the local run on the bundled sample."""
    with tempfile.TemporaryDirectory(prefix="mlharness-bench-local-") as a, \
            tempfile.TemporaryDirectory(prefix="mlharness-bench-e2e-") as b:
        local = _local(Path(a))
        e2e = _e2e(Path(b))
    ratio = round(e2e["wall_s"] / local["wall_s"], 3)
    return {"e2e": e2e, "local": local, "ratio": ratio, "goal_ratio": GOAL_RATIO,
            "ok": ratio <= GOAL_RATIO,
            "same_accuracy": e2e["endpoint_accuracy"] is not None
            and abs(e2e["endpoint_accuracy"] - local["endpoint_accuracy"]) < 1e-9}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args(argv)
    result = bench_e2e()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    e, loc = result["e2e"], result["local"]
    print(f"e2e on the emulator: {e['wall_s']:.1f} s (execution {e['execution_s']} s, "
          f"{e['status']}, endpoint accuracy {e['endpoint_accuracy']})")
    print(f"local backend:       {loc['wall_s']:.1f} s (endpoint accuracy "
          f"{loc['endpoint_accuracy']})")
    print(f"e2e ÷ local = {result['ratio']:.2f} (goal ≤ {GOAL_RATIO}): "
          f"{'ok' if result['ok'] else 'NOT met'}; same accuracy: {result['same_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
