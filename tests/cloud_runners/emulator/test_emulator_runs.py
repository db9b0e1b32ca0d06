"""The emulator backend when a run is interrupted, when a step fails, and when a second run
starts beside it: cheap pipelines of processing steps whose scripts (written by the tests)
succeed, fail, or wait, so each run takes seconds (no Spark, no TensorFlow).

- Ctrl-C during the execution: the record says INTERRUPTED at the running step, whose
  log is written; the execution is stopped on the emulator (StopExecution: ABORTED, the
  task TaskStateAborted); the job's thread and the process it started are stopped (job
  ``Stopped``), and the run returns at once rather than when the job would have ended.
- A failed step: the record holds every step's status and the failed one's own reason
  (the job's FailureReason, not the describe response AWS puts in the cause), which
  `harness show` and the failure message show.
- Two runs at once in one process: the second is refused with a HarnessError naming the
  first, before it creates anything; the first records only its own execution, and the
  runs folder holds nothing but its folder.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import HarnessError, Interrupted, StepFailed
from harness.steps import ProcessingStep
from harness.workflow import RUN_ID, Workflow

pytestmark = [pytest.mark.filterwarnings("ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]

ACCOUNT, REGION = "123456789012", "us-east-1"
JOB_SECONDS = 60  # how long the waiting job would run if nothing stopped it

WAITING = f'''
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep({JOB_SECONDS})"])
with open(os.environ["STARTED_FILE"], "w") as f:
    f.write(str(child.pid))
print("job started", flush=True)
deadline = time.monotonic() + {JOB_SECONDS}
while time.monotonic() < deadline and not os.path.exists(os.environ["RELEASE_FILE"]):
    time.sleep(0.05)
child.kill()
child.wait()
'''
OK = 'print("done")\n'
FAILING = 'import sys\nsys.exit("bad digits: label 11 is out of range")\n'


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}


def _step(tmp: Path, state_id: str, source: str, **environment: str) -> ProcessingStep:
    script = tmp / "code" / state_id / f"{state_id}.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(source)
    # One name prefix for the jobs of a workflow (the IAM roles are scoped to it).
    return ProcessingStep(state_id, job_name=f"emu-{RUN_ID}-{state_id}", code=script,
                          environment=environment, instance_type="ml.m5.large",
                          image_uri="emulated-processing:latest")


def _cfg(tmp: Path):
    return load_config(overrides={"runs_dir": str(tmp / "runs"), "cloud.poll_seconds": 0.2})


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _moto_processing_job(name: str):
    """The emulated job as moto holds it (still there after the emulator stopped)."""
    from moto.sagemaker.models import sagemaker_backends

    return sagemaker_backends[ACCOUNT][REGION].processing_jobs[name]


def test_ctrl_c_stops_the_execution_and_its_job_and_records_the_run_interrupted(tmp_path):
    from cloud_runners.emulator import server

    started = tmp_path / "started"
    wf = Workflow("waits", _step(tmp_path, "work", WAITING, STARTED_FILE=str(started),
                                 RELEASE_FILE=str(tmp_path / "never")))
    seen: dict = {}

    def announce(message: str) -> None:
        # Ctrl-C while the job runs: the KeyboardInterrupt arrives in the main thread,
        # where the cloud backend follows the execution.
        if "TaskSubmitted" in message and "interrupted_at" not in seen:
            _wait_for(started)
            seen["bridges"] = list(server._running.bridge)
            seen["interrupted_at"] = time.monotonic()
            raise KeyboardInterrupt
        seen.setdefault("said", []).append(message)

    env_before = _env()
    with pytest.raises(Interrupted) as e:
        wf.run("emulator", config=_cfg(tmp_path), announce=announce)
    took = time.monotonic() - seen["interrupted_at"]
    assert took < 20, f"the run went on for {took:.0f} s after Ctrl-C"

    record = e.value.run_record
    run_dir = tmp_path / "runs" / record.run_id
    stored = json.loads((run_dir / "record.json").read_text())
    assert (stored["status"], stored["failed_step"]) == ("INTERRUPTED", "work")
    (step,) = stored["steps"]
    assert step["status"] == "INTERRUPTED" and step["log"] == "steps/work/log.txt"
    log = (run_dir / step["log"]).read_text()
    assert "TaskSubmitted work" in log and "TaskStateAborted work" in log
    assert "TaskSucceeded" not in log

    # The execution was stopped on the emulator, and its last events are in the record.
    execution = json.loads((run_dir / "execution.json").read_text())
    assert execution["status"] == "ABORTED" and execution["error"] == "Interrupted"
    assert [ev["type"] for ev in execution["events"]][-2:] == ["TaskStateAborted",
                                                               "ExecutionAborted"]
    assert any(f"stopping execution {record.run_id} on the emulator" in m
               for m in seen["said"])

    # The job and what it started are stopped; nothing of the run is left running.
    job = _moto_processing_job(f"emu-{record.run_id}-work")
    assert job.processing_job_status == "Stopped"
    assert not _pid_alive(int(started.read_text()))
    assert all(not t.is_alive() for b in seen["bridges"] for t in b.threads)
    assert server._running is None and _env() == env_before


def test_a_failed_step_keeps_every_step_and_its_own_reason_in_the_record(
        tmp_path, monkeypatch, capsys):
    from harness import cli

    wf = Workflow("fails", _step(tmp_path, "first", OK) >> _step(tmp_path, "second", FAILING))
    with pytest.raises(StepFailed) as e:
        wf.run("emulator", config=_cfg(tmp_path))
    message = str(e.value)
    assert "execution FAILED at step 'second'" in message
    assert "bad digits: label 11 is out of range" in message
    assert '"ProcessingInputs"' not in message  # not the describe response

    record = e.value.run_record
    run_dir = tmp_path / "runs" / record.run_id
    stored = json.loads((run_dir / "record.json").read_text())
    assert (stored["status"], stored["failed_step"]) == ("FAILED", "second")
    steps = {s["name"]: s for s in stored["steps"]}
    assert steps["first"]["status"] == "SUCCEEDED" and steps["first"]["error"] is None
    assert steps["second"]["status"] == "FAILED"
    assert steps["second"]["error"].startswith(
        f"States.TaskFailed: processing job emu-{record.run_id}-second failed: bad digits")
    for s in steps.values():
        assert s["started"] and s["ended"] and s["input"] and s["log"], s
    # The whole cause (the describe response) stays in the step's log.
    assert '"FailureReason"' in (run_dir / steps["second"]["log"]).read_text()

    # What a person sees: `harness show` lists each step with its status and the reason.
    monkeypatch.setenv("COLUMNS", "250")
    capsys.readouterr()
    assert cli.main(["show", record.run_id, "--runs-dir", str(tmp_path / "runs")]) == 0
    shown = capsys.readouterr().out
    first_row = next(line for line in shown.splitlines() if " first " in line)
    second_row = next(line for line in shown.splitlines() if " second " in line)
    assert "SUCCEEDED" in first_row
    assert "FAILED" in second_row and "bad digits" in second_row


def test_a_second_emulator_run_in_the_same_process_is_refused_and_the_first_keeps_its_own(
        tmp_path):
    started, release = tmp_path / "started", tmp_path / "release"
    wf = Workflow("waits", _step(tmp_path, "work", WAITING, STARTED_FILE=str(started),
                                 RELEASE_FILE=str(release)))
    cfg = _cfg(tmp_path)
    first: dict = {}

    def run_first() -> None:
        try:
            first["result"] = wf.run("emulator", config=cfg, run_id="run-a")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertions below
            first["error"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        _wait_for(started)
        with pytest.raises(HarnessError, match=r"an emulator run is already under way in "
                                               r"this process \(run run-a\)"):
            wf.run("emulator", config=cfg, run_id="run-b")
    finally:
        release.write_text("go")
        thread.join(60)
    assert not thread.is_alive() and "error" not in first, first.get("error")
    result = first["result"]
    assert result.record.status == "SUCCEEDED"

    # Only the first run's folder, holding only its own files.
    runs = tmp_path / "runs"
    assert [p.name for p in runs.iterdir()] == ["run-a"]
    assert {p.name for p in (runs / "run-a").iterdir()} == {
        ".lock", "record.json", "config.json", "graph.mmd", "execution.json", "summary.json",
        "report.html", "steps"}
    execution = json.loads((runs / "run-a" / "execution.json").read_text())
    assert execution["execution"].endswith(":execution:mlharness-waits:run-a")
    started_event = execution["events"][0]
    assert started_event["type"] == "ExecutionStarted"
    assert json.loads(started_event["input"])["RunId"] == "run-a"
    assert [ev["id"] for ev in execution["events"]] == list(
        range(1, len(execution["events"]) + 1))


def test_on_aws_ctrl_c_stops_the_execution_too_and_says_what_stays(aws, cfg, wf, monkeypatch):
    """The same cloud backend on AWS (moto's in-process mock): Ctrl-C stops the execution
    rather than leaving it running (and costing) with no record following it."""
    from pipeline_support import PREPARED

    from cloud_runners import cloud_run as cloud_run_mod
    from cloud_runners import stack
    from cloud_runners.prepare import CloudPrepareRunner

    stack.bootstrap(cfg, aws, wf)
    monkeypatch.setattr(CloudPrepareRunner, "run",
                        lambda self, request, ctx: {**PREPARED, "RawUri": request["OutputUri"]})

    def interrupted(session, execution_arn, on_event, poll_s=5.0, reader=None, **kw):
        if reader is not None:
            reader.read(on_event)  # what there is so far; then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(cloud_run_mod, "stream_events", interrupted)
    said: list[str] = []
    with pytest.raises(Interrupted) as e:
        wf.execute(config=cfg, session=aws, announce=said.append)
    record = e.value.run_record
    assert (record.status, record.failed_step) == ("INTERRUPTED", "etl")
    assert record.step("prepare").status == "SUCCEEDED"
    run_dir = Path(cfg.runs_path()) / record.run_id
    execution = json.loads((run_dir / "execution.json").read_text())
    assert execution["status"] == "ABORTED"
    described = aws.client("stepfunctions").describe_execution(
        executionArn=execution["execution"])
    assert described["status"] == "ABORTED"
    text = "\n".join(said)
    assert f"stopping execution {record.run_id} on AWS (StopExecution)" in text
    assert "harness cloud teardown" in text


@pytest.mark.parametrize("error, cause, expected", [
    ("States.TaskFailed", json.dumps({"ProcessingJobName": "p", "ProcessingJobStatus": "Failed",
                                      "FailureReason": "processing job p failed: bad"}),
     "States.TaskFailed: processing job p failed: bad"),
    # the pipeline's Fail state: "<Error>: <Cause>" of the caught error
    ("PipelineStepFailed", "States.TaskFailed: " + json.dumps(
        {"JobRunState": "FAILED", "ErrorMessage": "cannot read raw split"}),
     "States.TaskFailed: cannot read raw split"),
    ("GateNotPassed", "accuracy = 0.3 does not meet the gate (required >= 0.9)",
     "GateNotPassed: accuracy = 0.3 does not meet the gate (required >= 0.9)"),
    ("States.Runtime", "{not json", "States.Runtime: {not json"),
    (None, None, "no error given"),
])
def test_a_failure_reads_as_its_jobs_own_reason(error, cause, expected):
    from cloud_runners.execution_history import failure_reason

    assert failure_reason(error, cause) == expected


def test_the_emulator_stopping_stops_a_training_job_and_restores_the_process_state(tmp_path):
    """The training script runs in this process (as the local trainer runs it): stopping
    it unwinds the script, and what it changed for the process (working directory,
    environment, argv) is restored."""
    import sys

    from moto.sagemaker.models import sagemaker_backends

    from cloud_runners import aws
    from cloud_runners.emulator.server import EmbeddedEmulator
    from cloud_runners.emulator.training_bridge import TrainingBridge
    from harness.archives import pack_source_dir

    source, started = tmp_path / "source", tmp_path / "started"
    source.mkdir()
    (source / "train.py").write_text(
        "import argparse, os, time\n"
        "p = argparse.ArgumentParser(); p.add_argument('--started_file')\n"
        "args, _ = p.parse_known_args()\n"
        "open(args.started_file, 'w').write(os.environ['SM_MODEL_DIR'])\n"
        f"deadline = time.monotonic() + {JOB_SECONDS}\n"
        "while time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n")
    cwd, argv, environ = os.getcwd(), list(sys.argv), dict(os.environ)
    bridge = TrainingBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket="emu-bucket")
        aws.upload_file(s3, pack_source_dir(source, tmp_path / "sourcedir.tar.gz"),
                        "s3://emu-bucket/code/sourcedir.tar.gz")
        emu.client("sagemaker").create_training_job(
            TrainingJobName="tj-stop", RoleArn="arn:aws:iam::123456789012:role/sm",
            AlgorithmSpecification={"TrainingImage": "img:latest",
                                    "TrainingInputMode": "File"},
            HyperParameters={"sagemaker_program": "train.py",
                             "sagemaker_submit_directory":
                                 "s3://emu-bucket/code/sourcedir.tar.gz",
                             "started_file": str(started)},
            OutputDataConfig={"S3OutputPath": "s3://emu-bucket/training"},
            ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1,
                            "VolumeSizeInGB": 5},
            StoppingCondition={"MaxRuntimeInSeconds": 600})
        _wait_for(started)
        stopping_at = time.monotonic()
    took = time.monotonic() - stopping_at
    assert took < 10, f"the training job went on for {took:.0f} s"
    job = sagemaker_backends[ACCOUNT][REGION].training_jobs["tj-stop"]
    assert (job.training_job_status, job.secondary_status) == ("Stopped", "Stopped")
    assert all(not t.is_alive() for t in bridge.threads)
    assert (os.getcwd(), sys.argv, dict(os.environ)) == (cwd, argv, environ)
