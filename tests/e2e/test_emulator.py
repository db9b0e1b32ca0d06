"""The default pipeline on the embedded emulator, as `harness run --backend emulator` runs
it: the compiled state machine on moto's Step Functions, the Glue, training, processing
and hosting calls bridged to the local runners, the test split through sagemaker-runtime
``InvokeEndpoint``. One successful run (module fixture) serves the assertions; a gate
that is not met stopping the execution on the emulator is tests/e2e/test_custom_step_kind.py's.
"""
from __future__ import annotations

import json
import os

import pytest

from harness.config import load_config
from harness.workflow import load_workflow

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS.{2}S3.{2}BucketPolicy")]  # moto's CloudFormation skips it

STEPS = ["prepare", "etl", "train", "evaluate", "gate", "model", "endpoint-config",
         "endpoint", "infer"]
HEAD = ["etl", "train", "evaluate", "gate", "gate-check", "model", "endpoint-config",
        "endpoint"]
POLL = ["endpoint-wait", "endpoint-describe", "endpoint-in-service"]


def config(tmp, **overrides):
    return load_config(overrides={"runs_dir": str(tmp / "runs"), "data.source": "fixture",
                                  "cloud.poll_seconds": 0.2,
                                  # two epochs keep it short; the gate still needs a model
                                  "train.hyperparameters.epochs": 2,
                                  "evaluate.threshold": 0.5, **overrides})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cloud_runners import images

    tmp = tmp_path_factory.mktemp("emulator")
    env_before = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images, "IMAGE_CACHE", tmp / "image_uris.json")
        cfg = config(tmp)
        result = load_workflow(cfg.pipeline, cfg).run("emulator", config=cfg)
    env_after = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "MOTO_"))}
    execution = json.loads((result.run_dir / "execution.json").read_text())
    return {"result": result, "execution": execution, "env": (env_before, env_after),
            "cfg": cfg}


def test_the_run_succeeds_and_every_step_is_recorded(run):
    result = run["result"]
    assert result.record.status == "SUCCEEDED" and result.record.backend == "emulator"
    assert [s.name for s in result.record.steps] == STEPS
    assert [s.status for s in result.record.steps] == ["SUCCEEDED"] * len(STEPS)
    for s in result.record.steps:  # what the console shows, from the execution's history
        assert s.started and s.ended, s.name
        assert json.loads((result.run_dir / s.input).read_text()), s.name
    train_in = json.loads((result.run_dir / "steps/train/input.json").read_text())
    assert train_in["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"].startswith(
        "s3://")
    assert run["execution"]["status"] == "SUCCEEDED"
    assert run["env"][0] == run["env"][1]  # fake keys and MOTO_PORT are gone again


def test_the_history_runs_every_state_of_the_definition_in_order(run):
    entered = [e["step"] for e in run["execution"]["events"] if e["type"].endswith("Entered")]
    assert entered[:len(HEAD)] == HEAD, entered
    polls = entered[len(HEAD):-1]
    assert polls and len(polls) % 3 == 0, entered
    assert all(polls[i:i + 3] == POLL for i in range(0, len(polls), 3)), entered
    assert entered[-1] == "PipelineSucceeded"


def test_the_processing_job_writes_evaluation_json_and_the_gate_reads_it(run):
    events = run["execution"]["events"]
    scheduled = {e["step"]: json.loads(e["parameters"]) for e in events
                 if e["type"] == "TaskScheduled"}
    job = scheduled["evaluate"]
    assert job["AppSpecification"]["ContainerEntrypoint"] == [
        "python3", "/opt/ml/processing/input/code/evaluate.py"]
    out = job["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    read = scheduled["gate"]
    assert f"s3://{read['Bucket']}/{read['Key']}" == f"{out}/evaluation.json"
    gate_out = run["result"].output("gate")["Body"]
    assert set(gate_out["metrics"]) >= {"accuracy", "loss", "macro_precision", "macro_recall"}
    assert sum(map(sum, gate_out["confusion_matrix"])) == 500


def test_the_endpoint_answers_as_the_evaluation_and_the_training_job(run):
    result = run["result"]
    accuracy = result.summary["metrics"]["metrics.accuracy"]
    # the infer step itself checks InvokeEndpoint's accuracy against evaluation.json's
    assert result.summary["metrics"]["endpoint accuracy"] == accuracy
    assert result.output("infer")["Count"] == 500
    final = {m["MetricName"]: m["Value"] for m in result.output("train")["FinalMetricDataList"]}
    assert final["test:accuracy"] == pytest.approx(accuracy, abs=1e-4)


def test_the_report_draws_the_training_curves_and_the_evaluation_from_s3(run):
    """What the report shows lives in the emulated S3: the run copies those few files
    (never the model) into runs/<id>/artifacts/s3/ before writing report.html."""
    import re

    run_dir = run["result"].run_dir
    mirrored = {p.name for p in (run_dir / "artifacts" / "s3").rglob("*") if p.is_file()}
    assert mirrored == {"output.tar.gz", "evaluation.json", "confusion_matrix.png",
                        "misclassified.png"}
    html = (run_dir / "report.html").read_text()
    training = re.search(r'<section id="training">(.*?)</section>', html, re.S).group(1)
    assert 'alt="loss and accuracy per epoch"' in training and "metrics.json" in training
    assert len(re.findall(r"<tr><td class=\"num\">\d+</td>", training)) == 2  # 2 epochs
    evaluation = re.search(r'<section id="evaluation">(.*?)</section>', html, re.S).group(1)
    accuracy = run["result"].summary["metrics"]["metrics.accuracy"]
    assert f"{accuracy:.4f}" in evaluation
    assert 'alt="confusion matrix"' in evaluation
    assert 'alt="misclassified test digits"' in evaluation
    wrong = round((1 - accuracy) * 500)
    assert f"{wrong} of 500 wrong" in evaluation
