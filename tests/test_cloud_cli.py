"""`harness cloud ...` and `harness run --backend cloud` as a user without AWS sees them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_aws(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    empty = tmp_path / "empty"
    empty.write_text("")
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(empty), AWS_CONFIG_FILE=str(empty),
               AWS_EC2_METADATA_DISABLED="true", MLHARNESS_CACHE=str(tmp_path / "cache"))
    return env


def harness(env, *args):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [["cloud", "run"], ["run", "--backend", "cloud"]])
def test_without_credentials_exit_2_and_nothing_created(no_aws, tmp_path, args):
    runs = tmp_path / "runs"
    proc = harness(no_aws, *args, "--runs-dir", str(runs))
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no AWS credentials found" in text and "nothing was created" in text
    assert not runs.exists()


def test_dry_run_prints_the_plan_without_aws(no_aws, tmp_path):
    proc = harness(no_aws, "cloud", "run", "--dry-run", "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "arn:aws:states:::sagemaker:createTrainingJob.sync" in out
    assert "tensorflow-training:2.19" in out and "one run" in out
    assert not (tmp_path / "runs").exists()


def test_emulator_backend_refuses_local_only_options(no_aws, tmp_path):
    proc = harness(no_aws, "run", "--backend", "emulator", "--resume", "x",
                   "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert "apply to the local backend only" in " ".join(proc.stdout.split())
    assert not (tmp_path / "runs").exists()
