"""Resume after an interruption, on the real default pipeline (Spark ETL, TensorFlow
training): a run stopped with Ctrl-C in the middle of its Glue job, resumed, killed with
SIGKILL in the middle of training, resumed again, ends with the same evaluation as an
uninterrupted run of the same configuration and seed. Each interrupted run reads
INTERRUPTED, leaves no half-written file, and ``harness run --resume RUN`` (the command
it printed) is all it takes to continue."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["--data", "fixture"]  # the settings of the session's default run

# the session's default run is the uninterrupted reference: on its pytest-xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("default_run")]


def start(runs: Path, *args: str) -> subprocess.Popen:
    return launch("run", "--runs-dir", str(runs), *args)


def launch(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "400"})


def printed_resume_command(out: str, run_id: str) -> list[str]:
    """The ``harness run ... --resume RUN ...`` command the interrupted run printed."""
    import shlex

    line = next(x for x in out.splitlines() if f"--resume {run_id}" in x)
    words = shlex.split(line[line.index("harness run"):])
    return words[1:]  # without "harness"


def finish(proc: subprocess.Popen, code: int = 0) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == code, out[-5000:]
    return out


def newest_run(runs: Path) -> Path:
    return max((p for p in runs.iterdir() if not p.name.startswith(".")),
               key=lambda p: p.name)


def wait_until(proc: subprocess.Popen, runs: Path, ready, what: str,
               timeout: float = 300) -> Path:
    """Poll the newest run's record until ``ready(run_dir, steps)``; the run folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before {what}: {proc.stdout.read()}"
        try:
            run_dir = newest_run(runs)
            record = json.loads((run_dir / "record.json").read_text())
            if ready(run_dir, {s["name"]: s for s in record["steps"]}):
                return run_dir
        except (ValueError, OSError):
            pass  # not written yet
        time.sleep(0.2)
    raise AssertionError(f"never reached: {what}")


def spark_running(proc: subprocess.Popen):
    def ready(run_dir: Path, steps: dict) -> bool:
        children = psutil.Process(proc.pid).children(recursive=True)
        return steps["etl"]["status"] == "RUNNING" and any(
            "java" in (c.name() or "") for c in children)
    return ready


def first_epoch_done(run_dir: Path, steps: dict) -> bool:
    train = steps["train"]
    if train["status"] != "RUNNING" or not train.get("log"):
        return False
    log = run_dir / train["log"]
    return log.is_file() and "epoch=1/" in log.read_text()


def evaluation(run_dir: Path) -> dict:
    report = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())
    return {k: report[k] for k in ("metrics", "confusion_matrix", "count")}


def statuses(run_dir: Path) -> dict[str, str]:
    record = json.loads((run_dir / "record.json").read_text())
    return {s["name"]: s["status"] for s in record["steps"]}


def test_interrupted_mid_etl_and_mid_training_ends_as_an_uninterrupted_run(
        tmp_path, default_run):
    # the reference: the session's default run, in another runs folder (nothing reused)
    reference_runs, reference_id, _ = default_run
    expected = evaluation(reference_runs / reference_id)

    runs = tmp_path / "runs"
    # 1. Ctrl-C while Spark runs the Glue script
    proc = start(runs, *SETTINGS)
    first = wait_until(proc, runs, spark_running(proc), "the ETL running in Spark")
    proc.send_signal(signal.SIGINT)
    out = finish(proc, 130)
    resume = printed_resume_command(out, first.name)
    assert statuses(first)["etl"] == "INTERRUPTED"
    assert not list(first.rglob(".*tmp*")), "half-written files left by Ctrl-C"
    assert not (first / "data" / "processed").exists() or not any(
        (first / "data" / "processed").rglob("*.parquet"))

    # 2. resumed; killed (SIGKILL: nothing can clean up) after the first epoch
    proc = launch(*resume)  # the exact command it printed
    second = wait_until(proc, runs, first_epoch_done, "the first epoch of training")
    assert second != first
    proc.kill()
    proc.wait(timeout=60)
    listed = subprocess.run([sys.executable, "-m", "harness.cli", "runs", "--runs-dir",
                             str(runs)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "250"})
    line = next(x for x in listed.stdout.splitlines() if second.name in x)
    assert "INTERRUPTED" in line and "RUNNING" not in line, listed.stdout

    # 3. resumed again: it finishes, with the reference's evaluation
    out = finish(start(runs, "--resume", second.name))
    third = newest_run(runs)
    assert third not in (first, second)
    done = statuses(third)
    assert done["prepare"] == done["etl"] == "REUSED", done
    assert all(s in ("SUCCEEDED", "REUSED") for s in done.values()), done
    assert evaluation(third) == expected
