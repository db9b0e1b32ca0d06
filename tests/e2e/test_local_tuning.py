"""The default pipeline with tuning on (`tune.enabled`), on the local backend: a real
tuning job of real training jobs (Optuna), whose best trial's model is the one evaluated,
gated and served."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tuning_e2e_support import run_with_tuning

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_best_trials_model_is_evaluated_gated_and_served(tmp_path):
    runs = tmp_path / "runs"
    proc = run_with_tuning(runs, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_id,) = [p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    run_dir = runs / run_id
    record = json.loads((run_dir / "record.json").read_text())
    assert [s["name"] for s in record["steps"]][:4] == ["prepare", "etl", "tune", "evaluate"]
    assert {s["status"] for s in record["steps"]} == {"SUCCEEDED"}

    tune = json.loads((run_dir / "steps/tune/output.json").read_text())
    best = tune["BestTrainingJob"]["TrainingJobName"]
    assert tune["TrainingJobStatusCounters"]["Completed"] == 2
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
              for s in tune["TrainingJobSummaries"]]
    assert tune["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"][
        "Value"] == max(values)
    best_model = f"file://{run_dir}/training/{best}/output/model.tar.gz"
    evaluate = json.loads((run_dir / "steps/evaluate/input.json").read_text())
    assert evaluate["ProcessingInputs"][1]["S3Input"]["S3Uri"] == best_model
    model = json.loads((run_dir / "steps/model/input.json").read_text())
    assert model["PrimaryContainer"]["ModelDataUrl"] == best_model
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["endpoint accuracy"] == summary["metrics"]["metrics.accuracy"]
    assert (run_dir / "steps/tune/trials.png").is_file()

    shown = subprocess.run([sys.executable, "-m", "harness.cli", "show", run_id, "--step",
                            "tune", "--runs-dir", str(runs)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0 and best in shown.stdout and "Completed - best" in shown.stdout
    assert "Traceback" not in shown.stdout + shown.stderr
