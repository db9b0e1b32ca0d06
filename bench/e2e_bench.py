"""The emulator's overhead: the cloud path on the embedded emulator vs the `local` backend.

``bench_e2e()`` times, on the bundled sample with the same configuration and seed:

- ``local``: a whole `harness run --data fixture` in a fresh process (as
  ``bench.run.bench_end_to_end``),
- ``e2e``: `harness run --backend emulator --data fixture` in a fresh process (emulator
  start, bootstrap, prepare + upload, the state machine with the Glue, training,
  processing and hosting bridges, the endpoint answering the test split through
  ``InvokeEndpoint``),

and reports e2e ÷ local (goal <= 1.5). Both runs are fresh processes, so both pay the
imports and the Spark and TensorFlow start-up. Run it with ``python -m bench.e2e_bench``
(``--json`` prints the dict only).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_RATIO = 1.5

def _measure(backend: str, tmp: Path) -> dict:
    from bench.run import harness_run

    run = harness_run(backend, tmp)
    metrics = run["summary"]["metrics"]
    return {"wall_s": run["wall_s"], "status": run["summary"]["status"],
            "endpoint_accuracy": metrics.get("endpoint accuracy"),
            "step_seconds": {s["name"]: s["seconds"] for s in run["summary"]["steps"]}}


def bench_e2e() -> dict:
    """Wall times of the emulator run and of the local run on the bundled sample."""
    with tempfile.TemporaryDirectory(prefix="mlharness-bench-local-") as a, \
            tempfile.TemporaryDirectory(prefix="mlharness-bench-e2e-") as b:
        local = _measure("local", Path(a))
        e2e = _measure("emulator", Path(b))
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
    print(f"e2e on the emulator: {e['wall_s']:.1f} s ({e['status']}, endpoint accuracy "
          f"{e['endpoint_accuracy']})")
    print(f"local backend:       {loc['wall_s']:.1f} s (endpoint accuracy "
          f"{loc['endpoint_accuracy']})")
    print(f"e2e ÷ local = {result['ratio']:.2f} (goal ≤ {GOAL_RATIO}): "
          f"{'ok' if result['ok'] else 'NOT met'}; same accuracy: {result['same_accuracy']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
