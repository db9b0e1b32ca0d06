"""The default pipeline's local run on the bundled sample, once per test session: the
end-to-end tests of the local backend read it, and the resume test compares an
interrupted run's evaluation with it (its runs folder is its own, so nothing is reused
from it)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """``harness run --data fixture`` in a fresh process: (runs folder, run id, process)."""
    runs = tmp_path_factory.mktemp("default-run")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--data", "fixture",
                           "--runs-dir", str(runs)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (run_id,) = [p.name for p in runs.iterdir() if not p.name.startswith(".")]  # .cache
    return runs, run_id, proc
