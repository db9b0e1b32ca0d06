"""``make drift-cloud-demo`` end to end: the cloud path of the drift monitor on the
emulator. The pipeline runs as `harness cloud run` does; inverted digits go through
InvokeEndpoint and the emulated endpoint captures them into the emulated S3;
`harness cloud monitor RUN` checks them once (drift: the execution fails at the gate); an
EventBridge Scheduler ``at()`` schedule starts the monitoring state machine; its
processing job finds the drift and ``states:startExecution`` starts the training
pipeline, which reuses the monitored run's data and code and succeeds."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_scheduled_monitor_finds_the_drift_and_starts_a_retrain_that_succeeds(tmp_path):
    out_file = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "examples/drift_cloud_demo.py", "--epochs", "1", "--images", "200",
         "--json", str(out_file), "--runs-dir", str(tmp_path / "runs")], cwd=ROOT,
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]
    out = json.loads(out_file.read_text())
    run_id = out["run_id"]
    # `harness cloud monitor RUN`, once, without retraining: the drift fails the execution
    # at its gate (exit 1) and the monitoring run's record says so
    once = out["once"]
    assert once["exit_code"] == 1
    record = json.loads((Path(out["runs_dir"]) / once["run_id"] / "record.json").read_text())
    assert record["backend"] == "cloud" and record["workflow"] == f"monitor-{run_id}"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("stage", "SUCCEEDED"), ("check", "SUCCEEDED"), ("drift-gate", "FAILED")]
    # the schedule fired once, started the monitoring state machine, and went (at(): DELETE)
    (firing,) = out["firings"]
    assert firing["execution_arn"] == out["monitoring"]["executionArn"]
    assert out["schedule"]["state_machine"].endswith(f":mlharness-monitor-{run_id}")
    # the check ran on the captured traffic and found what inverting digits changes
    report = out["report"]
    assert report["status"] == "checked" and report["violation_count"] > 0
    # the window holds the pipeline's own inference traffic (its test split) too
    assert report["records"]["instances"] >= 200
    drifted = {f["name"] for f in report["features"] if f["drifted"]}
    assert {"mean_intensity", "ink_mass", "confidence"} <= drifted
    assert out["monitoring"]["status"] == "SUCCEEDED"
    # the retrain: a new run of the training pipeline, on the monitored run's data and code
    retrain = out["retrain"]
    assert retrain["status"] == "SUCCEEDED", retrain.get("cause")
    given = json.loads(retrain["input"])
    assert given["RunId"] != run_id and given["BaseUri"].endswith(f"/{given['RunId']}")
    assert given["CodeUri"] == out["execution_input"]["CodeUri"]
    assert given["Prepare"] == out["execution_input"]["Prepare"]
    assert retrain["stateMachineArn"].endswith(":stateMachine:mlharness-mnist")
