"""The tuning benchmark (tuning issue): 8 trials of a short search on the bundled sample,
2 at a time, as a user runs it (`harness run --set tune.enabled=true ...`).

- overhead: the tuning step's wall time ÷ (the sum of its trials' own times ÷ 2); goal
  ≤ 1.15 (the tuner costs little beyond the training it runs);
- the best trial's validation accuracy against a plain run with the default
  hyperparameters (same epochs); its model is the one deployed (the run's gate and
  endpoint see it);
- early stopping Auto on the same search: trial-epochs run (objective values reported)
  against Off; goal ≥ 25 % fewer at the same best objective (± 0.005).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench.run import harness_run

EPOCHS = 4
SEARCH = ["tune.enabled=true", "tune.max_jobs=8", "tune.max_parallel_jobs=2",
          "tune.random_seed=7", f"train.hyperparameters.epochs={EPOCHS}",
          "evaluate.threshold=0.5",
          "tune.parameter_ranges={learning_rate: {type: continuous, min_value: 0.0005, "
          "max_value: 0.01, scaling_type: Logarithmic}, batch_size: {type: integer, "
          "min_value: 32, max_value: 256}, dropout: {type: continuous, min_value: 0.0, "
          "max_value: 0.5}}"]


def _tuning(run: dict) -> dict:
    run_dir = Path(run["run_dir"])
    record = json.loads((run_dir / "record.json").read_text())
    step = next(s for s in record["steps"] if s["name"] == "tune")
    out = json.loads((run_dir / "steps/tune/output.json").read_text())
    trials = out["TrainingJobSummaries"]
    epochs = 0
    for t in trials:
        rec = run_dir / "steps/tune/trials" / t["TrainingJobName"] / "output.json"
        epochs += len(json.loads(rec.read_text()).get("ObjectiveValues") or [])
    best = out["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    return {"tune_s": step["duration_s"], "best": best, "epochs": epochs,
            "trials_s": sum(float(t["TrainingTimeInSeconds"]) for t in trials),
            "counters": out["TrainingJobStatusCounters"],
            "best_hyperparameters": out["BestTrainingJob"]["TunedHyperParameters"],
            "accuracy": run["summary"]["metrics"].get("metrics.accuracy")}


def bench_tuning() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        plain = harness_run("local", runs, f"train.hyperparameters.epochs={EPOCHS}")
        default = next(s for s in plain["summary"]["steps"] if s["name"] == "train")
        off = _tuning(harness_run("local", runs, *SEARCH, "tune.early_stopping=Off"))
        auto = _tuning(harness_run("local", runs, *SEARCH, "tune.early_stopping=Auto"))
    return {
        "trials": 8, "parallel": 2, "epochs": EPOCHS,
        "tune_s": off["tune_s"], "trials_s": round(off["trials_s"], 2),
        "overhead_ratio": round(off["tune_s"] / (off["trials_s"] / 2), 3),
        "best_objective": off["best"], "best_hyperparameters": off["best_hyperparameters"],
        "default_objective": default["facts"]["validation:accuracy"],
        "deployed_test_accuracy": off["accuracy"],
        "off_epochs": off["epochs"], "auto_epochs": auto["epochs"],
        "epochs_saved": round(1 - auto["epochs"] / off["epochs"], 3),
        "auto_best": auto["best"], "auto_counters": auto["counters"],
    }
