"""The default pipeline with tuning on, small, through the CLI as a user runs it (the local
and the emulator tuning e2e tests run the same command)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMALL_TUNING = ["--set", "tune.enabled=true", "--set", "tune.max_jobs=2",
                "--set", "tune.max_parallel_jobs=2", "--set", "train.hyperparameters.epochs=1",
                "--set", "evaluate.threshold=0.9"]


def run_with_tuning(runs: Path, *flags: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", *flags, "--data", "fixture",
         "--runs-dir", str(runs), *SMALL_TUNING],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
