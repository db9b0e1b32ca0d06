"""``make drift-demo`` end to end, small: a run, clean and shifted windows through
``harness serve`` + ``harness monitor``, then ``harness monitor --retrain --labels``; the
new model is better on shifted held-out digits. Held-out digits come from the bundled
sample (``--heldout sample``): a user's clone has no ``../shared``."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHIFTS = ["gaussian_noise_sigma100", "rotation_40deg", "translation_20pct",
          "class_7_knocked_out", "inverted", "ood_dataset"]


@pytest.mark.slow
def test_drift_demo_flags_each_shift_and_retraining_helps(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "examples/drift_demo.py", "--runs-dir", str(runs), "--epochs", "2",
         "--window", "500", "--retrain-count", "1000", "--heldout", "sample",
         "--heldout-count", "500",
         "--set", "evaluate.threshold=0.9"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    out = proc.stdout
    # 2 epochs: the gate is lowered so that the retrain run (whose test split holds noisy
    # digits) passes it; the demo's defaults keep the configured 0.95
    assert proc.returncode == 0, out[-6000:] + proc.stderr[-4000:]
    first, retrained = sorted(p.name for p in runs.iterdir() if not p.name.startswith("."))

    # one check per window, in order: clean first, then each shift
    checks = sorted((runs / first / "monitoring").glob("2*"))
    reports = [json.loads((c / "drift_report.json").read_text()) for c in checks]
    assert len(reports) == 1 + len(SHIFTS) + 1          # + the retraining window
    clean = json.loads((checks[0] / "constraint_violations.json").read_text())["violations"]
    assert not [v for v in clean if v["constraint_check_type"] == "baseline_drift_check"]
    for case, report in zip(SHIFTS, reports[1:]):
        assert report["status"] == "checked" and report["drifted_features"], case
    assert re.search(r"clean\s*│\s*500\s*│\s*0/20\s*│\s*none", out), out

    # the retrain run: SUCCEEDED, more training examples than the original, deployed
    record = json.loads((runs / retrained / "record.json").read_text())
    assert record["status"] == "SUCCEEDED"

    def train_count(run):
        summary = json.loads((runs / run / "summary.json").read_text())
        facts = {s["name"]: s["facts"] for s in summary["steps"]}["prepare"]
        text = " ".join(str(v) for v in facts.values())
        return int(re.search(r"train (\d+)", text).group(1))

    assert train_count(retrained) > train_count(first)
    info = json.loads((checks[-1] / "retrain.json").read_text())
    assert info["captured_examples"] == 1000 and not info["label_problems"]
    assert (checks[-1] / "retrain-data").is_dir()

    found = re.search(r"ACCURACY gaussian_noise_sigma100 old=([\d.]+) new=([\d.]+)", out)
    assert found, out[-3000:]
    old, new = map(float, found.groups())
    assert new > old, (old, new)
