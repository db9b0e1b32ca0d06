"""The default pipeline with tuning on (`tune.enabled`), on the embedded emulator
(`--backend emulator`): the state machine's createHyperParameterTuningJob.sync runs a
real tuning job of real training jobs (the tuning bridge, Optuna), and its best trial's
model -- in the emulated S3 where SageMaker puts it -- is the one evaluated, gated and
served. The twin of tests/e2e/test_local_tuning.py."""
import json

import pytest
from tuning_e2e_support import run_with_tuning


@pytest.mark.slow
def test_the_best_trials_model_is_evaluated_gated_and_served_on_the_emulator(tmp_path):
    runs = tmp_path / "runs"
    proc = run_with_tuning(runs, "--backend", "emulator", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_id,) = [p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    run_dir = runs / run_id
    record = json.loads((run_dir / "record.json").read_text())
    assert record["backend"] == "emulator" and record["status"] == "SUCCEEDED"
    assert [s["name"] for s in record["steps"]][:4] == ["prepare", "etl", "tune", "evaluate"]
    assert {s["status"] for s in record["steps"]} == {"SUCCEEDED"}

    tune = json.loads((run_dir / "steps/tune/output.json").read_text())
    assert tune["HyperParameterTuningJobStatus"] == "Completed"
    assert tune["TrainingJobStatusCounters"]["Completed"] == 2
    best = tune["BestTrainingJob"]["TrainingJobName"]
    assert best.startswith(f"mnist-tune-{run_id}-")  # a real trial, not moto's made-up one
    request = json.loads((run_dir / "steps/tune/input.json").read_text())
    output_path = request["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"]
    best_model = f"{output_path.rstrip('/')}/{best}/output/model.tar.gz"
    assert best_model.startswith("s3://")
    evaluate = json.loads((run_dir / "steps/evaluate/input.json").read_text())
    assert [i["S3Input"]["S3Uri"] for i in evaluate["ProcessingInputs"]
            if i["InputName"] == "model"] == [best_model]
    model = json.loads((run_dir / "steps/model/input.json").read_text())
    assert model["PrimaryContainer"]["ModelDataUrl"] == best_model
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["metrics"]["metrics.accuracy"] >= 0.9
    assert summary["metrics"]["endpoint accuracy"] == summary["metrics"]["metrics.accuracy"]
