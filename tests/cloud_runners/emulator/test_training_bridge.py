"""The training bridge: an emulated ``sagemaker:createTrainingJob.sync`` of the pipeline's
train step runs model/train.py locally (TensorFlow) on data in the emulated S3 and leaves
``model.tar.gz`` where SageMaker puts it."""
from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path

import pytest
from emulator_support import failures, run_to_end
from pipeline_support import pipeline, request, run_document
from support import sample_digits, write_split

from cloud_runners import aws
from cloud_runners.emulator.server import EmbeddedEmulator
from cloud_runners.emulator.training_bridge import TrainingBridge
from harness.archives import pack_source_dir

BUCKET = "emu-bucket"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"
PROCESSED = f"{BASE}/data/processed"
ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"
SIZES = {"train": 200, "validation": 50, "test": 50}


class Images:
    """Image names without a lookup (the bridges do not use them)."""

    def image(self, framework, version, scope, instance_type, py_version=None):
        return f"img/{framework}-{scope}:{version}"


def stage_training_inputs(emu, tmp_path: Path, wf, skip: tuple[str, ...] = ()) -> None:
    """Bucket, the train step's code package (<base>/code/train/sourcedir.tar.gz) and
    processed splits in the emulated S3 (as the setup and the ETL leave them)."""
    s3 = emu.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    (code,) = wf.step("train").code()
    archive = pack_source_dir(code.source, tmp_path / "sourcedir.tar.gz")
    aws.upload_file(s3, archive, f"{BASE}/code/{code.target}")
    x, y = sample_digits(sum(SIZES.values()), seed=0)
    start = 0
    for split, n in SIZES.items():
        if split not in skip:
            local = write_split(tmp_path / "processed" / split, x[start:start + n],
                                y[start:start + n])
            aws.upload_dir(s3, local, f"{PROCESSED}/{split}")
        start += n


def watch_training_job(emu, name: str, timeout_s: float = 180) -> list[tuple[str, str]]:
    """Record the job's (status, secondary status) changes from a thread until it ends."""
    sm = emu.client("sagemaker")
    seen: list[tuple[str, str]] = []

    def poll() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                job = sm.describe_training_job(TrainingJobName=name)
            except sm.exceptions.ClientError:
                time.sleep(0.02)
                continue
            state = (job["TrainingJobStatus"], job["SecondaryStatus"])
            if not seen or seen[-1] != state:
                seen.append(state)
            if state[0] != "InProgress":
                return
            time.sleep(0.05)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return seen


def one_epoch(**overrides):
    """``(cfg, wf)``: the default pipeline training one epoch."""
    return pipeline(**{"train.hyperparameters": {"epochs": 1, "batch_size": 64,
                                                 "learning_rate": 0.003, "seed": 7},
                       **overrides})


def _train_definition(request):
    return {"StartAt": "Train", "States": {"Train": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "Parameters": request, "ResultSelector": {
            "TrainingJobName.$": "$.TrainingJobName", "ModelArtifacts.$": "$.ModelArtifacts",
            "FinalMetricDataList.$": "$.FinalMetricDataList"},
        "ResultPath": "$.Training", "End": True}}}


def _request(wf, run_id):
    """The pipeline's CreateTrainingJob request of run ``run_id`` in BASE."""
    return request(wf, "train", run_document(BASE, run_id), backend="emulator",
                   images=Images(), role=ROLE)


@pytest.mark.slow
def test_training_job_runs_train_py_on_emulated_s3(tmp_path):
    cfg, wf = one_epoch()
    request = _request(wf, "r1")
    name = request["TrainingJobName"]
    assert name == "mnist-train-r1" and request["RoleArn"] == ROLE
    with EmbeddedEmulator(bridge=TrainingBridge(cfg, workdir=tmp_path)) as emu:
        stage_training_inputs(emu, tmp_path, wf)
        statuses = watch_training_job(emu, name)
        described, history = run_to_end(emu, _train_definition(request), timeout_s=180)
        # The job reported InProgress while the local runner worked, then Completed.
        assert statuses[0] == ("InProgress", "Starting") and "Training" in \
            [s for _, s in statuses] and statuses[-1] == ("Completed", "Completed"), statuses
        assert described["status"] == "SUCCEEDED", failures(history)
        out = json.loads(described["output"])["Training"]
        model_uri = f"{BASE}/training/{name}/output/model.tar.gz"
        assert out["TrainingJobName"] == name
        assert out["ModelArtifacts"] == {"S3ModelArtifacts": model_uri}
        metrics = {m["MetricName"]: m["Value"] for m in out["FinalMetricDataList"]}
        assert "test:accuracy" in metrics, metrics
        assert 0.0 <= metrics["test:accuracy"] <= 1.0
        assert "train:progress" not in metrics  # moto's made-up metric is gone

        s3 = emu.client("s3")
        keys = aws.list_keys(s3, f"{BASE}/training/{name}")
        assert sorted(keys) == [f"mlharness/runs/r1/training/{name}/output/model.tar.gz",
                                f"mlharness/runs/r1/training/{name}/output/output.tar.gz"]
        with tarfile.open(aws.download_file(s3, model_uri, tmp_path / "m" / "model.tar.gz")) as t:
            assert "1/saved_model.pb" in t.getnames()

        job = emu.client("sagemaker").describe_training_job(TrainingJobName=name)
        assert job["TrainingJobStatus"] == "Completed"
        # The request's own metric definitions, not moto's test:dcg.
        assert job["AlgorithmSpecification"]["MetricDefinitions"] == \
            request["AlgorithmSpecification"]["MetricDefinitions"]


def test_a_failing_training_fails_the_job_and_the_execution(tmp_path):
    cfg, wf = one_epoch()
    request = _request(wf, "r2")
    name = request["TrainingJobName"]
    with EmbeddedEmulator(bridge=TrainingBridge(cfg, workdir=tmp_path)) as emu:
        stage_training_inputs(emu, tmp_path, wf, skip=("train",))
        described, history = run_to_end(emu, _train_definition(request), timeout_s=60)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["TrainingJobStatus"] == "Failed"
        reason = cause["FailureReason"]
        assert f"training job {name} failed: no data for channel 'train'" in reason, reason
        # The error names the S3 location, as on AWS, not the bridge's temporary directory.
        assert f"{PROCESSED}/train" in reason and str(tmp_path) not in reason, reason
        assert "ModelArtifacts" not in cause
        assert not aws.list_keys(emu.client("s3"), f"{BASE}/training")
        job = emu.client("sagemaker").describe_training_job(TrainingJobName=name)
        assert job["TrainingJobStatus"] == "Failed" and job["FailureReason"] == reason
