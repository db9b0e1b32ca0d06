"""The training bridge: an emulated ``sagemaker:createTrainingJob.sync`` runs model/train.py
locally (TensorFlow) on data in the emulated S3 and leaves ``model.tar.gz`` where
SageMaker puts it."""
from __future__ import annotations

import json
import tarfile
import threading
import time
from pathlib import Path

import pytest
from emulator_support import failures, run_to_end
from support import sample_digits, write_split

from cloud_runners import aws
from cloud_runners.emulator import moto_gaps, training_bridge
from cloud_runners.emulator.server import EmbeddedEmulator
from cloud_runners.emulator.training_bridge import TrainingBridge
from harness.archives import pack_source_dir
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.requests import Layout, Names, training_request

BUCKET = "emu-bucket"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"
ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"
PREPARED = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10}
SIZES = {"train": 200, "validation": 50, "test": 50}


def test_guard_moto_internals_the_training_bridge_relies_on_are_unchanged():
    problems = training_bridge.check()
    assert not problems, ("moto changed under cloud_runners/emulator/training_bridge.py; "
                          "review the bridge for:\n" + "\n".join(problems))


def test_guard_names_the_changed_symbol(monkeypatch):
    from moto.sagemaker.models import SageMakerModelBackend

    original = SageMakerModelBackend.create_training_job
    symbol = "moto.sagemaker.models.FakeTrainingJob.__init__"
    monkeypatch.setitem(training_bridge.FINGERPRINTS, symbol, "0" * 16)
    with pytest.raises(moto_gaps.MotoGapsError, match=symbol.replace(".", r"\.")):
        TrainingBridge().install(emulator=None)
    assert SageMakerModelBackend.create_training_job is original


def stage_training_inputs(emu, tmp_path: Path, cfg: PipelineConfig, layout: Layout,
                          skip: tuple[str, ...] = ()) -> None:
    """Bucket, code package and processed splits in the emulated S3 (as ETL leaves them)."""
    s3 = emu.client("s3")
    try:
        s3.create_bucket(Bucket=BUCKET)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    code = pack_source_dir(PROJECT_ROOT / cfg.train.source_dir, tmp_path / "sourcedir.tar.gz")
    aws.upload_file(s3, code, layout.sourcedir)
    x, y = sample_digits(sum(SIZES.values()), seed=0)
    start = 0
    for split, n in SIZES.items():
        if split not in skip:
            local = write_split(tmp_path / "processed" / split, x[start:start + n],
                                y[start:start + n])
            aws.upload_dir(s3, local, layout.processed_split(split))
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


def one_epoch_config() -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.train.hyperparameters = {"epochs": 1, "batch_size": 64, "learning_rate": 0.003,
                                 "seed": 7}
    return cfg


def _train_definition(request):
    return {"StartAt": "Train", "States": {"Train": {
        "Type": "Task", "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
        "Parameters": request, "ResultSelector": {
            "TrainingJobName.$": "$.TrainingJobName", "ModelArtifacts.$": "$.ModelArtifacts",
            "FinalMetricDataList.$": "$.FinalMetricDataList"},
        "ResultPath": "$.Training", "End": True}}}


def _request(cfg, layout, run_id):
    return training_request(cfg, layout, Names(cfg, run_id), PREPARED, image="img:latest",
                            role=ROLE)


@pytest.mark.slow
def test_training_job_runs_train_py_on_emulated_s3(tmp_path):
    cfg, layout = one_epoch_config(), Layout(BASE)
    request = _request(cfg, layout, "r1")
    name = request["TrainingJobName"]
    with EmbeddedEmulator(bridge=TrainingBridge(cfg, workdir=tmp_path)) as emu:
        stage_training_inputs(emu, tmp_path, cfg, layout)
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
    cfg, layout = one_epoch_config(), Layout(BASE)
    request = _request(cfg, layout, "r2")
    name = request["TrainingJobName"]
    with EmbeddedEmulator(bridge=TrainingBridge(cfg, workdir=tmp_path)) as emu:
        stage_training_inputs(emu, tmp_path, cfg, layout, skip=("train",))
        described, history = run_to_end(emu, _train_definition(request), timeout_s=60)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["TrainingJobStatus"] == "Failed"
        reason = cause["FailureReason"]
        assert f"training job {name} failed: no data for channel 'train'" in reason, reason
        # The error names the S3 location, as on AWS, not the bridge's temporary directory.
        assert f"{layout.processed}/train" in reason and str(tmp_path) not in reason, reason
        assert "ModelArtifacts" not in cause
        assert not aws.list_keys(emu.client("s3"), f"{BASE}/training")
        job = emu.client("sagemaker").describe_training_job(TrainingJobName=name)
        assert job["TrainingJobStatus"] == "Failed" and job["FailureReason"] == reason


def _raw_digits(directory: Path) -> Path:
    """~300 real digits as the prepare step writes them (label int32, pixels 0..255)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = sample_digits(sum(SIZES.values()), seed=1)
    pixels = np.rint(x * 255).astype(np.int32)
    start = 0
    for split, n in SIZES.items():
        (directory / split).mkdir(parents=True)
        pq.write_table(pa.table({"label": pa.array(y[start:start + n], pa.int32()),
                                 "pixels": pa.array(list(pixels[start:start + n]),
                                                    pa.list_(pa.int32()))}),
                       directory / split / "part-00000.parquet")
        start += n
    return directory


@pytest.mark.slow
def test_compiled_pipeline_stops_at_the_gate_with_an_impossible_threshold(tmp_path):
    """The issue's gate case: RunEtl (Spark) -> Train (TensorFlow) -> gate on the emulator;
    threshold 1.0 takes the Fail branch and nothing is hosted."""
    from cloud_runners.emulator.bridge import GlueBridge
    from harness.asl import compile_state_machine, execution_input
    from harness.requests import glue_job_definition

    cfg = one_epoch_config()
    cfg.evaluate.threshold = 1.0
    images = {"training": "img-train", "serving": "img-serve"}
    run_id, prefix = "g1", "mlharness/runs/g1"
    layout = Layout(f"s3://{BUCKET}/{prefix}")
    bridges = [GlueBridge(cfg, workdir=tmp_path), TrainingBridge(cfg, workdir=tmp_path)]
    with EmbeddedEmulator(bridge=bridges) as emu:
        s3 = emu.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        aws.upload_file(s3, PROJECT_ROOT / cfg.etl.script, layout.glue_script(cfg))
        aws.upload_file(s3, pack_source_dir(PROJECT_ROOT / cfg.train.source_dir,
                                            tmp_path / "sourcedir.tar.gz"), layout.sourcedir)
        aws.upload_dir(s3, _raw_digits(tmp_path / "raw"), layout.raw)
        emu.client("glue").create_job(**glue_job_definition(cfg, layout, role=ROLE))
        definition = compile_state_machine(cfg, images, role=ROLE, endpoint_poll_s=1)
        inp = execution_input(cfg, run_id=run_id, bucket=BUCKET, prefix=prefix,
                              prepared=PREPARED, images=images)
        described, history = run_to_end(emu, definition, inp, timeout_s=300)

        assert described["status"] == "FAILED", failures(history)
        assert described["error"] == "ModelBelowThreshold"
        entered = [e["stateEnteredEventDetails"]["name"] for e in history
                   if e["type"].endswith("StateEntered")]
        assert entered == ["RunEtl", "Train", "ReadGateMetric", "GateValue", "Gate",
                           "BelowThreshold"]
        accuracy = next(
            m["Value"] for m in json.loads(next(
                e for e in history if e["type"] == "TaskSucceeded"
                and '"FinalMetricDataList"' in e["taskSucceededEventDetails"]["output"]
            )["taskSucceededEventDetails"]["output"])["FinalMetricDataList"]
            if m["MetricName"] == "test:accuracy")
        assert described["cause"].startswith(
            f"model below threshold: test:accuracy = {accuracy}"), described["cause"]
        assert "threshold 1.0; nothing was deployed" in described["cause"]
        # The cloud layout: processed Parquet from Glue, model.tar.gz from training.
        name = Names(cfg, run_id).training_job
        keys = aws.list_keys(s3, f"s3://{BUCKET}/{prefix}")
        assert f"{prefix}/training/{name}/output/model.tar.gz" in keys
        assert any(k.startswith(f"{prefix}/data/processed/test/") and k.endswith(".parquet")
                   for k in keys), keys
        sm = emu.client("sagemaker")
        assert sm.list_models()["Models"] == []
        assert sm.list_endpoint_configs()["EndpointConfigs"] == []
        assert sm.list_endpoints()["Endpoints"] == []
