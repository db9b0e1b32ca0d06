"""The compute bridge: an emulated ``glue:startJobRun.sync`` runs the glue_etl script on
local Spark against the emulated S3 (slow: starts Spark)."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from emulator_support import failures, run_to_end

from cloud_runners import aws
from cloud_runners.emulator.bridge import GlueBridge
from cloud_runners.emulator.server import EmbeddedEmulator
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.requests import Layout, etl_request, glue_job_definition

pytestmark = pytest.mark.slow
BUCKET = "emu-bucket"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"


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
    """Bucket, script, raw data and the Glue job, as bootstrap + prepare leave them."""
    cfg = PipelineConfig()
    layout = Layout(BASE)
    s3 = emu.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    aws.upload_file(s3, PROJECT_ROOT / cfg.etl.script, layout.glue_script(cfg))
    aws.upload_dir(s3, _raw(tmp_path, corrupt), layout.raw)
    emu.client("glue").create_job(**glue_job_definition(cfg, layout, role="arn:aws:iam::"
                                                        "123456789012:role/mlharness-glue"))
    request = etl_request(cfg, layout, {"RawUri": layout.raw, "ImageHeight": 2,
                                        "ImageWidth": 2, "NumClasses": 3})
    definition = {"StartAt": "RunEtl", "States": {"RunEtl": {
        "Type": "Task", "Resource": "arn:aws:states:::glue:startJobRun.sync",
        "Parameters": request,
        "ResultSelector": {"JobRunState.$": "$.JobRunState", "Id.$": "$.Id"},
        "ResultPath": "$.Etl", "End": True}}}
    return cfg, layout, definition


def test_glue_job_run_runs_the_etl_script_on_emulated_s3(tmp_path):
    bridge = GlueBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        cfg, layout, definition = _pipeline_glue(emu, tmp_path)
        described, history = run_to_end(emu, definition, timeout_s=240)
        assert described["status"] == "SUCCEEDED", failures(history)
        run_id = json.loads(described["output"])["Etl"]["Id"]
        run = emu.client("glue").get_job_run(JobName=cfg.etl.job_name, RunId=run_id)["JobRun"]
        assert run["JobRunState"] == "SUCCEEDED"
        keys = aws.list_keys(emu.client("s3"), layout.processed)
        for split in ("train", "validation", "test"):
            assert any(k.startswith(f"mlharness/runs/r1/data/processed/{split}/")
                       and k.endswith(".parquet") for k in keys), keys
        local = tmp_path / "check"
        aws.download_prefix(emu.client("s3"), layout.processed_split("train"), local)
        assert pq.read_table(local).num_rows == 4


def test_a_failing_etl_fails_the_job_run_and_the_execution(tmp_path):
    bridge = GlueBridge(workdir=tmp_path)
    with EmbeddedEmulator(bridge=bridge) as emu:
        cfg, layout, definition = _pipeline_glue(emu, tmp_path, corrupt=True)
        described, history = run_to_end(emu, definition, timeout_s=240)
        assert described["status"] == "FAILED"
        (_, details), = [f for f in failures(history) if f[0] == "TaskFailed"]
        assert details["error"] == "States.TaskFailed"
        cause = json.loads(details["cause"])
        assert cause["JobRunState"] == "FAILED"
        assert "mnist_etl.py failed" in cause["ErrorMessage"], cause["ErrorMessage"]
        assert f"cannot read raw split 'train' at {layout.raw}/train" in cause["ErrorMessage"]
        assert not aws.list_keys(emu.client("s3"), layout.processed)
