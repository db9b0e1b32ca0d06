"""The drift monitoring workflow (harness/monitor_pipeline.py): the check as a SageMaker
Processing job under Model Monitor's BYOC contract, then a gate on its violation count;
one definition, run locally here and compiled to the state machine Step Functions runs."""
from __future__ import annotations

import json
import tarfile

import pytest
from drift_support import capture_lines, setup, write_capture

from harness import uris
from harness.asl_check import validate
from harness.config import load_config
from harness.errors import GateFailed, StepFailed
from harness.local_setup import LocalImages
from harness.monitor_pipeline import monitoring_workflow
from harness.steps.base import BuildContext


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitor-pipeline")
    b = setup(tmp)
    (tmp / "model").mkdir()
    (tmp / "saved_model.pb").write_bytes(b"")
    with tarfile.open(tmp / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(b["statistics"], "1/assets.extra/drift_baseline/statistics.json")
        tar.add(b["constraints"], "1/assets.extra/drift_baseline/constraints.json")
        tar.add(tmp / "saved_model.pb", "1/saved_model.pb")
    return {**b, "archive": tmp / "model" / "model.tar.gz"}


def workflow(tmp_path, base, images):
    write_capture(tmp_path / "capture", capture_lines(images, base["model"].predict(images)))
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    wf = monitoring_workflow(cfg, capture_uri=uris.file_uri(tmp_path / "capture"),
                             model_data=uris.file_uri(base["archive"]),
                             endpoint_name="digits")
    return cfg, wf


def test_clean_traffic_passes_the_gate(tmp_path, base):
    cfg, wf = workflow(tmp_path, base, base["x"][:400])
    result = wf.run("local", config=cfg)
    assert result.record.status == "SUCCEEDED"
    report = result.output("drift-gate")["Body"]
    assert report["violation_count"] == 0 and report["records"]["instances"] == 400
    assert (result.run_dir / "monitoring" / result.record.run_id
            / "constraint_violations.json").is_file()


def test_drifted_traffic_fails_the_monitoring_run_with_the_count(tmp_path, base):
    cfg, wf = workflow(tmp_path, base, 1.0 - base["x"][:400])
    with pytest.raises(GateFailed) as e:
        wf.run("local", config=cfg)
    assert "violation_count = " in str(e.value) and "required <= 0" in str(e.value)
    record = e.value.run_record
    assert [s.status for s in record.steps] == ["SUCCEEDED", "SUCCEEDED", "FAILED"]


def test_the_state_machine_runs_the_check_as_a_byoc_processing_job(tmp_path, base):
    _, wf = workflow(tmp_path, base, base["x"][:10])
    asl = wf.definition(BuildContext("cloud", LocalImages(), role="arn:aws:iam::1:role/r"))
    assert validate(asl) == []
    check = asl["States"][asl["StartAt"]]
    assert check["Resource"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    params = check["Parameters"]
    env = params["Environment"]
    assert env["dataset_source"] == "/opt/ml/processing/endpointdata"
    assert env["output_path"] == "/opt/ml/processing/resultdata"
    assert env["baseline_model"] == "/opt/ml/processing/baseline"
    # the monitor: thresholds of the configuration, as the environment's overrides
    assert (env["significance_level"], env["comparison_method"]) == ("0.05", "Robust")
    assert params["AppSpecification"]["ContainerEntrypoint"][-1].endswith("/drift_check.py")
    inputs = {i["InputName"]: i["S3Input"] for i in params["ProcessingInputs"]}
    # the stage step (on the client) uploaded them: their S3 URIs come in the input
    assert inputs["endpointdata"]["S3Uri.$"] == "$.Stage.Uris.endpointdata"
    assert inputs["baseline"]["S3Uri.$"] == "$.Stage.Uris.baseline"
    choice = next(s for s in asl["States"].values() if s["Type"] == "Choice")
    assert choice["Choices"][1]["And"][1] == {"Variable": "$.DriftGate.Body.violation_count",
                                              "NumericLessThanEquals": 0}
    assert asl["States"]["drift-gate-failed"]["Type"] == "Fail"


@pytest.mark.slow
def test_on_the_emulator_the_check_runs_as_a_processing_job_on_the_uploaded_traffic(
        tmp_path, base):
    """The same workflow on the emulator: the stage step uploads the local captures and
    model, the processing bridge runs drift_check.py on emulated S3, and the state
    machine's gate reads drift_report.json there: drifted traffic fails the execution."""
    cfg, wf = workflow(tmp_path, base, 1.0 - base["x"][:300])
    cfg = cfg.model_copy(update={"cloud": cfg.cloud.model_copy(update={"poll_seconds": 0.2})})
    with pytest.raises(StepFailed) as e:  # the execution failed at the gate's Fail state
        wf.run("emulator", config=cfg)
    record = e.value.run_record
    assert record.backend == "emulator"
    assert [(s.name, s.status) for s in record.steps] == [
        ("stage", "SUCCEEDED"), ("check", "SUCCEEDED"), ("drift-gate", "FAILED")]
    assert "GateNotPassed: violation_count = " in str(e.value)
    run_dir = tmp_path / "runs" / record.run_id
    staged = json.loads((run_dir / "steps" / "stage" / "output.json").read_text())["Uris"]
    assert staged["endpointdata"].startswith("s3://") and staged["endpointdata"].endswith(
        f"/{record.run_id}/monitored/endpointdata")
    assert staged["baseline"].endswith("/monitored/baseline/model.tar.gz")


def test_drift_starts_the_training_pipeline_when_retraining_is_on(tmp_path, base):
    """With ``retrain``, the gate's unmet branch starts the pipeline (locally: a `harness
    run` child process with the configuration, waited for); the monitoring run succeeds
    and names the new run. A failed started run is reported, not raised: starting it was
    the step's job, as with Step Functions' startExecution. (A one-step pipeline: what is
    checked is how the run is started; tests/e2e/test_drift_cloud_demo.py retrains the
    real pipeline.)"""
    tiny = "tests/harness/tiny_pipeline.py:build"  # a path from the project root

    drifted = 1.0 - base["x"][:300]
    write_capture(tmp_path / "capture", capture_lines(drifted, base["model"].predict(drifted)))
    results = {}
    for source in ("fixture", str(tmp_path / "no-such-data")):
        cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs"), "pipeline": tiny,
                                     "data.source": source})
        wf = monitoring_workflow(cfg, capture_uri=uris.file_uri(tmp_path / "capture"),
                                 model_data=uris.file_uri(base["archive"]),
                                 endpoint_name="digits", retrain=cfg)
        result = wf.run("local", config=cfg)
        # the second time, the check of the same traffic is cached from the first
        assert [s.status for s in result.record.steps] in (
            ["SUCCEEDED"] * 4, ["SUCCEEDED", "REUSED", "SUCCEEDED", "SUCCEEDED"])
        assert result.output("drift-gate")["Body"]["violation_count"] > 0
        results[source] = result.output("retrain")
    ok, failed = results.values()
    assert (ok["Status"], ok["ExitCode"]) == ("SUCCEEDED", 0)
    child = json.loads((tmp_path / "runs" / ok["RunId"] / "record.json").read_text())
    assert (child["workflow"], child["status"]) == ("tiny", "SUCCEEDED")
    assert ok["ExecutionArn"] == f"local:run:{ok['RunId']}"
    assert failed["Status"] == "FAILED" and failed["ExitCode"] != 0
    child = json.loads((tmp_path / "runs" / failed["RunId"] / "record.json").read_text())
    assert child["status"] == "FAILED" and child["failed_step"] == "prepare"


def test_the_retrain_branch_compiles_to_a_start_execution_of_the_pipeline(tmp_path, base):
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    wf = monitoring_workflow(cfg, capture_uri="s3://b/p/r1/capture",
                             model_data="s3://b/p/r1/training/model.tar.gz", endpoint_name="e",
                             retrain=cfg, retrain_from={
                                 "RunId": "r1", "BaseUri": "s3://b/p/r1",
                                 "CodeUri": "s3://b/p/r1/code", "Prepare": {"Uri": "s3://b/p/r1/raw"}})
    asl = wf.definition(BuildContext("cloud", LocalImages(), role="arn:aws:iam::1:role/r"))
    assert validate(asl) == []
    assert asl["States"]["drift-gate-check"]["Default"] == "retrain"
    start = asl["States"]["retrain-start"]
    assert start["Resource"] == "arn:aws:states:::states:startExecution"
    params = start["Parameters"]
    assert params["StateMachineArn.$"].endswith(
        "stateMachine:mlharness-mnist', States.ArrayGetItem(States.StringSplit("
        "$$.StateMachine.Id, ':'), 1), States.ArrayGetItem(States.StringSplit("
        "$$.StateMachine.Id, ':'), 3), States.ArrayGetItem(States.StringSplit("
        "$$.StateMachine.Id, ':'), 4))")
    assert params["Name.$"] == "$.RetrainRun.RunId"
    # the new run's input: its own id and location, the monitored run's uploaded data and
    # code
    assert params["Input"]["Prepare"] == {"Uri": "s3://b/p/r1/raw"}
    assert params["Input"]["CodeUri"] == "s3://b/p/r1/code"
    assert "RunId" not in params["Input"] and params["Input"]["RunId.$"] == "$.RetrainRun.RunId"
    assert params["Input"]["BaseUri.$"] == \
        "States.Format('s3://{}/mlharness/runs/{}', $.Bucket, $.RetrainRun.RunId)"
    # the roles are scoped to both pipelines' jobs: the check shares the evaluation prefix
    assert wf.name_prefixes()["processing-job"] == cfg.evaluate.job_name
    assert "cloud_runners.emulator.training_bridge:TrainingBridge" in wf.emulator_bridges()


def test_retraining_needs_the_outputs_of_the_pipelines_client_side_steps(tmp_path):
    from harness.errors import ConfigError
    cfg = load_config(overrides={"runs_dir": str(tmp_path / "runs")})
    wf = monitoring_workflow(cfg, capture_uri="s3://b/c", model_data="s3://b/m.tar.gz",
                             endpoint_name="e", retrain=cfg)
    with pytest.raises(ConfigError) as e:
        wf.definition(BuildContext("cloud", LocalImages(), role="arn:aws:iam::1:role/r"))
    assert "retrain.reuse" in str(e.value) and "prepare" in str(e.value)
