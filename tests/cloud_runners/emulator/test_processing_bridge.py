"""The processing bridge: an emulated ``sagemaker:createProcessingJob.sync`` runs
model/evaluate.py locally on a model and a test split in the emulated S3; the state
machine then reads evaluation.json (``aws-sdk:s3:getObject`` + ``States.StringToJson``)
and gates on its accuracy, as the pipeline does."""
from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from emulator_support import failures, run_to_end
from support import C, D, save_tiny_model, write_split

from cloud_runners import aws
from cloud_runners.emulator.processing_bridge import ProcessingBridge
from cloud_runners.emulator.server import EmbeddedEmulator
from harness.config import PROJECT_ROOT, PipelineConfig

BUCKET = "emu-bucket"
PREFIX = "mlharness/runs/r1"
BASE = f"s3://{BUCKET}/{PREFIX}"
ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"
PROC = "/opt/ml/processing"
MODEL_URI = f"{BASE}/training/job/output/model.tar.gz"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model archive and a 12-pixel test split, and the local script's figures."""
    from model.evaluate import predict, score

    tmp = tmp_path_factory.mktemp("emu-processing")
    version_dir = save_tiny_model(tmp / "saved", seed=11)
    archive = tmp / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    rng = np.random.default_rng(5)
    x, y = rng.random((80, D), dtype=np.float32), rng.integers(0, C, 80)
    test_dir = write_split(tmp / "test", x, y)
    return {"archive": archive, "test": test_dir,
            "metrics": score(predict(version_dir, x), y)["metrics"]}


def _stage(emu, tiny, archive: Path | None = None) -> None:
    """Code, model and test split in the emulated S3, as the earlier steps leave them."""
    s3 = emu.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    code = PROJECT_ROOT / "model"
    for path in sorted(code.glob("*")):
        if path.is_file() and path.suffix in (".py", ".txt"):
            aws.upload_file(s3, path, f"{BASE}/code/evaluate/{path.name}")
    aws.upload_file(s3, archive or tiny["archive"], MODEL_URI)
    aws.upload_dir(s3, tiny["test"], f"{BASE}/data/processed/test")


def _request(name: str) -> dict:
    def s3_input(input_name, uri, local):
        return {"InputName": input_name, "S3Input": {
            "S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated"}}

    return {
        "ProcessingJobName": name,
        "AppSpecification": {
            "ImageUri": "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
                        "tensorflow-training:2.19-cpu-py312",
            "ContainerEntrypoint": ["python3", f"{PROC}/input/code/evaluate.py"],
            "ContainerArguments": ["--model", f"{PROC}/input/model", "--test",
                                   f"{PROC}/input/test", "--output", f"{PROC}/evaluation"]},
        "ProcessingInputs": [
            s3_input("code", f"{BASE}/code/evaluate", f"{PROC}/input/code"),
            s3_input("model", MODEL_URI, f"{PROC}/input/model"),
            s3_input("test", f"{BASE}/data/processed/test", f"{PROC}/input/test")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "evaluation", "S3Output": {
            "S3Uri": f"{BASE}/evaluation/{name}", "LocalPath": f"{PROC}/evaluation",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1,
                                                  "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 10}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "Environment": {"EVALUATION": "tiny"},
        "RoleArn": ROLE,
        "Tags": [{"Key": "mlharness:run", "Value": "r1"}],
    }


def _definition(request: dict, threshold: float) -> dict:
    """Evaluate -> read evaluation.json -> gate, the shape the pipeline compiles to."""
    name = request["ProcessingJobName"]
    return {"StartAt": "Evaluate", "States": {
        "Evaluate": {"Type": "Task",
                     "Resource": "arn:aws:states:::sagemaker:createProcessingJob.sync",
                     "Parameters": request,
                     "ResultSelector": {"ProcessingJobName.$": "$.ProcessingJobName",
                                        "ProcessingJobStatus.$": "$.ProcessingJobStatus"},
                     "ResultPath": "$.Evaluate", "Next": "ReadEvaluation"},
        "ReadEvaluation": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                           "Parameters": {"Bucket": BUCKET, "Key": f"{PREFIX}/evaluation/"
                                                                   f"{name}/evaluation.json"},
                           "ResultSelector": {"Body.$": "States.StringToJson($.Body)"},
                           "ResultPath": "$.Gate", "Next": "Gate"},
        "Gate": {"Type": "Choice", "Choices": [{
            "Variable": "$.Gate.Body.metrics.accuracy", "NumericGreaterThanEquals": threshold,
            "Next": "Passed"}], "Default": "BelowThreshold"},
        "Passed": {"Type": "Succeed"},
        "BelowThreshold": {"Type": "Fail", "Error": "GateNotPassed",
                           "Cause": "accuracy below the threshold"}}}


def _watch(emu, name: str, timeout_s: float = 180) -> list[str]:
    """The job's status changes, recorded from a thread until it ends."""
    sm = emu.client("sagemaker")
    seen: list[str] = []

    def poll() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                status = sm.describe_processing_job(ProcessingJobName=name)["ProcessingJobStatus"]
            except sm.exceptions.ClientError:
                time.sleep(0.02)
                continue
            if not seen or seen[-1] != status:
                seen.append(status)
            if status != "InProgress":
                return
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    return seen


def _entered(history) -> list[str]:
    return [e["stateEnteredEventDetails"]["name"] for e in history
            if e["type"].endswith("StateEntered")]


@pytest.mark.slow
def test_evaluation_job_then_gate_on_its_json(tiny, tmp_path):
    accuracy = tiny["metrics"]["accuracy"]
    cfg = PipelineConfig()
    with EmbeddedEmulator(bridge=[ProcessingBridge(cfg, workdir=tmp_path)]) as emu:
        _stage(emu, tiny)
        request = _request("mnist-evaluate-r1")
        statuses = _watch(emu, "mnist-evaluate-r1")
        described, history = run_to_end(emu, _definition(request, accuracy - 0.01),
                                        timeout_s=180)
        assert described["status"] == "SUCCEEDED", failures(history)
        assert statuses[0] == "InProgress" and statuses[-1] == "Completed", statuses
        assert _entered(history) == ["Evaluate", "ReadEvaluation", "Gate", "Passed"]
        resources = [e["taskScheduledEventDetails"]["resource"] for e in history
                     if e["type"] == "TaskScheduled"]
        assert resources == ["createProcessingJob.sync", "getObject"]
        out = json.loads(described["output"])
        assert out["Evaluate"] == {"ProcessingJobName": "mnist-evaluate-r1",
                                   "ProcessingJobStatus": "Completed"}
        body = out["Gate"]["Body"]
        assert body["metrics"]["accuracy"] == accuracy  # the local script's figure
        assert body["metrics"] == pytest.approx(tiny["metrics"])
        assert body["count"] == 80 and body["model_version"] == 1

        keys = aws.list_keys(emu.client("s3"), f"{BASE}/evaluation/mnist-evaluate-r1")
        assert sorted(k.rsplit("/", 1)[-1] for k in keys) == ["confusion_matrix.png",
                                                             "evaluation.json"]
        job = emu.client("sagemaker").describe_processing_job(
            ProcessingJobName="mnist-evaluate-r1")
        assert job["ProcessingJobStatus"] == "Completed"
        assert job["Environment"] == {"EVALUATION": "tiny"}
        assert job["ProcessingResources"] == request["ProcessingResources"]
        assert job["ProcessingStartTime"] <= job["ProcessingEndTime"]
        assert "FailureReason" not in job
    assert not list(tmp_path.iterdir())  # the staging folder is gone


@pytest.mark.slow
def test_a_too_high_threshold_goes_to_the_fail_state(tiny, tmp_path):
    with EmbeddedEmulator(bridge=[ProcessingBridge(workdir=tmp_path)]) as emu:
        _stage(emu, tiny)
        request = _request("mnist-evaluate-r2")
        threshold = tiny["metrics"]["accuracy"] + 0.01
        described, history = run_to_end(emu, _definition(request, threshold), timeout_s=180)
        assert described["status"] == "FAILED"
        assert described["error"] == "GateNotPassed"
        assert _entered(history) == ["Evaluate", "ReadEvaluation", "Gate", "BelowThreshold"]


@pytest.mark.slow
def test_a_failing_job_fails_the_execution_with_the_script_message(tiny, tmp_path):
    corrupt = tmp_path / "corrupt" / "model.tar.gz"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a tarball")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with EmbeddedEmulator(bridge=[ProcessingBridge(workdir=workdir)]) as emu:
        _stage(emu, tiny, archive=corrupt)
        request = _request("mnist-evaluate-r3")
        described, history = run_to_end(emu, _definition(request, 0.0), timeout_s=180)
        assert described["status"] == "FAILED"
        assert _entered(history) == ["Evaluate"]
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["ProcessingJobStatus"] == "Failed"
        reason = cause["FailureReason"]
        assert reason.startswith("processing job mnist-evaluate-r3 failed: ERROR: "
                                 f"{PROC}/input/model/model.tar.gz: cannot unpack the model "
                                 "archive"), reason
        assert "exit code 2" in reason and str(tmp_path) not in reason
        assert not aws.list_keys(emu.client("s3"), f"{BASE}/evaluation")
        job = emu.client("sagemaker").describe_processing_job(
            ProcessingJobName="mnist-evaluate-r3")
        assert job["ProcessingJobStatus"] == "Failed" and job["FailureReason"] == reason


def test_a_missing_input_is_named_by_its_s3_uri(tmp_path):
    """No TensorFlow: the runner stops before the script runs."""
    with EmbeddedEmulator(bridge=[ProcessingBridge(workdir=tmp_path)]) as emu:
        emu.client("s3").create_bucket(Bucket=BUCKET)
        request = _request("mnist-evaluate-r4")
        described, history = run_to_end(emu, _definition(request, 0.0), timeout_s=60)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        reason = json.loads(details["cause"])["FailureReason"]
        assert f"{BASE}/code/evaluate: field 'ProcessingInputs[0].S3Input.S3Uri': " \
               "processing job mnist-evaluate-r4 failed: input 'code' not found" in reason, reason
        assert str(tmp_path) not in reason
