"""A run's record tells the truth about its process: Ctrl-C, SIGTERM and SIGKILL leave an
INTERRUPTED run (never RUNNING forever), no half-written folder, and a resume command that
continues the run with its own configuration and runs folder."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.runs import RunStore

TESTS = Path(__file__).resolve().parent.parent
PIPELINE = f"{TESTS / 'executor_fakes.py'}:build"


def harness(*args, env=None, **kw):
    """``python -m harness.cli ...`` in a child process (the fakes importable)."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *args], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def wait_for_line(proc, text, timeout=60):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never printed; output: {''.join(seen)}")


def only_run(runs):
    ids = RunStore(runs).list_ids()
    assert len(ids) == 1, ids
    return ids[0]


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 130), (signal.SIGINT, 130)])
def test_a_signal_records_the_run_as_interrupted_and_prints_the_resume_command(
        tmp_path, sig, code):
    runs = tmp_path / "runs"
    proc = harness("run", "--pipeline", PIPELINE, "--runs-dir", str(runs),
                   env={"FAKE_SLOW": "sleep"})
    wait_for_line(proc, "SLOW STEP STARTED")
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert "Traceback" not in out
    run_id = only_run(runs)
    assert f"--resume {run_id} --from slow" in out
    rec = json.loads((runs / run_id / "record.json").read_text())
    assert rec["status"] == "INTERRUPTED" and rec["failed_step"] == "slow"
    assert {s["name"]: s["status"] for s in rec["steps"]}["slow"] == "INTERRUPTED"
    assert not list((runs / run_id).rglob(".*.tmp-*")), "half-written folder left behind"
    assert not (runs / run_id / "eval" / "slow-output").exists()


def test_a_killed_run_reads_interrupted_is_cleaned_on_the_next_start_and_resumes(tmp_path):
    runs = tmp_path / "runs"
    proc = harness("run", "--pipeline", PIPELINE, "--runs-dir", str(runs),
                   env={"FAKE_SLOW": "sleep"})
    wait_for_line(proc, "SLOW STEP STARTED")
    run_id = only_run(runs)
    store = RunStore(runs)
    assert store.load(run_id).status == "RUNNING"  # alive: its process holds the lock
    proc.kill()
    proc.wait(timeout=30)
    assert json.loads((runs / run_id / "record.json").read_text())["status"] == "RUNNING"
    assert list((runs / run_id).rglob(".*.tmp-*"))  # what SIGKILL leaves
    assert store.load(run_id).status == "INTERRUPTED"  # ... but it reads the truth

    # a plain --resume continues it (no --from needed) and the next start cleans up
    proc = harness("run", "--runs-dir", str(runs), "--resume", run_id,
                   env={"FAKE_SLOW": "fast"})
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    old = json.loads((runs / run_id / "record.json").read_text())
    assert old["status"] == "INTERRUPTED" and old["failed_step"] == "slow"
    assert not list((runs / run_id).rglob(".*.tmp-*"))
    new_id = [i for i in store.list_ids() if i != run_id][0]
    new = store.load(new_id)
    assert new.status == "SUCCEEDED" and new.resumed_from == run_id
    assert [s.status for s in new.steps][:2] == ["REUSED", "REUSED"]
    # `harness runs`: the killed run reads INTERRUPTED, the resumed one says what it reused
    listed = harness("runs", "--runs-dir", str(runs), env={"COLUMNS": "250"})
    out, _ = listed.communicate(timeout=60)
    (old_line,) = [line for line in out.splitlines() if run_id in line and new_id not in line]
    assert "INTERRUPTED" in old_line
    (new_line,) = [line for line in out.splitlines() if new_id in line]
    assert "SUCCEEDED" in new_line and f"2 from {run_id}" in new_line
    assert re.search(r"\b\d+ s\b", new_line), new_line  # its duration


def test_resume_keeps_the_runs_own_settings_and_flags_override_only_what_they_name(
        tmp_path, capsys):
    runs = tmp_path / "elsewhere"
    args = ["--pipeline", PIPELINE, "--runs-dir", str(runs)]
    sys.path.insert(0, str(TESTS))
    try:
        assert main(["run", *args, "--set", "evaluate.threshold=0.99"]) == 1
        out = capsys.readouterr().out
        run_id = only_run(runs)
        printed = next(line for line in out.splitlines() if "Resume with:" in line)
        command = printed.split("Resume with:", 1)[1].split()
        assert command[:2] == ["harness", "run"] and "--set" not in command
        # exactly the printed command: the threshold is still 0.99, so the gate fails again
        assert main(command[1:]) == 1
        out = capsys.readouterr().out
        assert "required >= 0.99" in out
        assert len(RunStore(runs).list_ids()) == 2
        # a flag given now overrides only what it names
        before = set(RunStore(runs).list_ids())
        assert main([*command[1:], "--set", "evaluate.threshold=0.9"]) == 0
        (last,) = set(RunStore(runs).list_ids()) - before
        stored = json.loads((runs / last / "config.json").read_text())
        assert stored["evaluate"]["threshold"] == 0.9
        assert stored["pipeline"] == PIPELINE and stored["runs_dir"] == str(runs)
    finally:
        sys.path.remove(str(TESTS))


def test_resume_refuses_a_config_file_and_a_run_that_is_alive(tmp_path, capsys):
    runs = tmp_path / "runs"
    proc = harness("run", "--pipeline", PIPELINE, "--runs-dir", str(runs),
                   env={"FAKE_SLOW": "sleep"})
    try:
        wait_for_line(proc, "SLOW STEP STARTED")
        run_id = only_run(runs)
        sys.path.insert(0, str(TESTS))
        assert main(["run", "--runs-dir", str(runs), "--resume", run_id]) == 1
        assert "is still running" in capsys.readouterr().out
        assert main(["run", "--config", "pipeline.yaml", "--resume", run_id]) == 2
        assert "run's own configuration" in capsys.readouterr().out
    finally:
        sys.path.remove(str(TESTS))
        proc.kill()
        proc.wait()
