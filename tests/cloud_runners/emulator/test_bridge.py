"""The compute bridge: an emulated ``glue:startJobRun.sync`` of the pipeline's etl step
runs the glue_etl script on local Spark against the emulated S3 (slow: starts Spark)."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emulator_support import failures, run_to_end

from pipeline_support import pipeline, request, run_document

from cloud_runners import aws
from cloud_runners.emulator.bridge import GlueBridge
from cloud_runners.emulator.server import EmbeddedEmulator

pytestmark = pytest.mark.slow
BUCKET = "emu-bucket"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"
RAW, PROCESSED = f"{BASE}/data/raw", f"{BASE}/data/processed"
ROLE = "arn:aws:iam::123456789012:role/mlharness-glue"


def _raw(tmp_path, corrupt: bool = False):
    raw = tmp_path / "raw"
    splits = {"train": ([0, 1, 2, 1], [[0, 128, 255, 7], [1, 2, 3, 4], [9, 9, 9, 9],
                                       [4, 3, 2, 1]]),
              "validation": ([0, 1], [[0, 0, 0, 0], [9, 9, 9, 9]]),
              "test": ([2], [[51, 102, 153, 204]])}
    for split, (labels, pixels) in splits.items():
        (raw / split).mkdir(parents=True)
        pq.write_table(pa.table({"label": pa.array(labels, pa.int32()),
                                 "pixels": pa.array(pixels, pa.list_(pa.int32()))}),
                       raw / split / "part-00000.parquet")
    if corrupt:
        (raw / "train" / "part-00000.parquet").write_bytes(b"PAR1 not a parquet file")
    return raw


def _pipeline_glue(emu, tmp_path, corrupt=False):
    """Bucket, script, raw data and the Glue job, as the cloud setup and the prepare step
    leave them; a state machine running the pipeline's etl StartJobRun request."""
    cfg, wf = pipeline()
    etl = wf.step("etl")
    (script,) = etl.code()
    script_uri = f"{BASE}/code/{script.target}"
    s3 = emu.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    aws.upload_file(s3, script.source, script_uri)
    aws.upload_dir(s3, _raw(tmp_path, corrupt), RAW)
    emu.client("glue").create_job(**etl.job_definition(script_uri, role=ROLE))
    req = request(wf, "etl", run_document(BASE, prepared={
        "ImageHeight": 2, "ImageWidth": 2, "NumClasses": 3}), backend="emulator")
    assert req["Arguments"]["--raw_uri"] == RAW and req["Arguments"]["--output_uri"] == PROCESSED
    definition = {"StartAt": "RunEtl", "States": {"RunEtl": {
        "Type": "Task", "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Parameters": req,
        "ResultSelector": {"JobRunState.$": "$.JobRunState", "Id.$": "$.Id"},
        "ResultPath": "$.Etl", "End": True}}}
    return cfg, definition


def test_glue_job_run_runs_the_etl_script_on_emulated_s3(tmp_path):
    bridge = GlueBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        cfg, definition = _pipeline_glue(emu, tmp_path)
        described, history = run_to_end(emu, definition, timeout_s=240)
        assert described["status"] == "SUCCEEDED", failures(history)
        run_id = json.loads(described["output"])["Etl"]["Id"]
        run = emu.client("glue").get_job_run(JobName=cfg.etl.job_name, RunId=run_id)["JobRun"]
        assert run["JobRunState"] == "SUCCEEDED"
        keys = aws.list_keys(emu.client("s3"), PROCESSED)
        for split in ("train", "validation", "test"):
            assert any(k.startswith(f"mlharness/runs/r1/data/processed/{split}/")
                       and k.endswith(".parquet") for k in keys), keys
        local = tmp_path / "check"
        aws.download_prefix(emu.client("s3"), f"{PROCESSED}/train", local)
        assert pq.read_table(local).num_rows == 4


def test_a_failing_etl_fails_the_job_run_and_the_execution(tmp_path):
    bridge = GlueBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        cfg, definition = _pipeline_glue(emu, tmp_path, corrupt=True)
        described, history = run_to_end(emu, definition, timeout_s=240)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["JobRunState"] == "FAILED"
        assert "mnist_etl.py failed" in cause["ErrorMessage"], cause["ErrorMessage"]
        assert f"cannot read raw split 'train' at {RAW}/train" in cause["ErrorMessage"]
        assert not aws.list_keys(emu.client("s3"), PROCESSED)
