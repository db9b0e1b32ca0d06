"""`harness cloud run` on moto's in-process mock, up to the Step Functions execution.

moto does not execute the states here (the emulator issue does), so the execution's end
is given: a FAILED execution must be reported with its cause and exit 1, after the data,
the code, the Glue job, the state machine and the execution were created as on AWS.
"""
import json

import pytest
from rich.console import Console
from support import moto_session

from cloud_runners import cloud_run as cloud_run_mod
from cloud_runners import infrastructure as infra
from harness.config import load_config

REGION = "us-east-1"


@pytest.fixture
def session(monkeypatch, tmp_path):
    monkeypatch.setenv("MLHARNESS_CACHE", str(tmp_path / "cache"))
    with moto_session(monkeypatch, REGION) as session:
        yield session


def test_cloud_run_uploads_starts_the_execution_and_reports_its_failure(session, tmp_path,
                                                                         monkeypatch):
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs"), "data.source": "fixture",
                                 "cloud.poll_seconds": 0.01})
    outputs = infra.bootstrap(cfg, session)
    seen = {}

    def finished_execution(sess, execution_arn, on_event, poll_s=5.0, **kw):
        seen["execution"] = execution_arn
        on_event({"id": 1, "type": "ExecutionStarted", "timestamp": "t0", "step": None})
        on_event({"id": 2, "type": "TaskFailed", "timestamp": "t1", "step": "RunEtl",
                  "error": "States.TaskFailed", "cause": "Glue job run FAILED: bad input"})
        return {"status": "FAILED", "error": "States.TaskFailed",
                "cause": "Glue job run FAILED: bad input"}

    monkeypatch.setattr(cloud_run_mod, "stream_events", finished_execution)
    console = Console(record=True, width=200)
    assert cloud_run_mod.cloud_run(cfg, console) == 1
    text = console.export_text()
    assert "preflight ok" in text and "execution FAILED" in text and "bad input" in text

    (run_dir,) = list((tmp_path / "runs").iterdir())
    record = json.loads((run_dir / "execution.json").read_text())
    run_id = record["run_id"]
    assert record["status"] == "FAILED" and record["execution"] == seen["execution"]
    from harness.runs import RunStore
    listed = RunStore(tmp_path / "runs").load(run_id)  # `harness runs` lists cloud runs too
    assert listed.backend == "cloud" and listed.status == "FAILED" and "bad input" in listed.error
    assert [e["type"] for e in record["events"]] == ["ExecutionStarted", "TaskFailed"]
    assert record["input"]["RunId"] == run_id and record["input"]["Data"]["NumClasses"] == "10"

    s3 = session.client("s3")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=outputs["BucketName"])["Contents"]}
    prefix = f"{cfg.cloud.prefix}/{run_id}"
    assert any(k.startswith(f"{prefix}/data/raw/train/") for k in keys)
    assert {f"{prefix}/code/sourcedir.tar.gz", f"{prefix}/code/glue/mnist_etl.py"} <= keys
    job = session.client("glue").get_job(JobName=cfg.etl.job_name)["Job"]
    assert job["Command"]["ScriptLocation"] == \
        f"s3://{outputs['BucketName']}/{prefix}/code/glue/mnist_etl.py"
    sfn = session.client("stepfunctions")
    execution = sfn.describe_execution(executionArn=seen["execution"])
    assert execution["name"] == run_id and json.loads(execution["input"]) == record["input"]
