"""The local processing runner: a CreateProcessingJob request run on file:// URIs, the way
the processing container runs it (in this process for python + a .py file)."""
from __future__ import annotations

import json
import logging
import os
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from support import C, D, LogLines, save_tiny_model, write_split

from harness import uris
from harness.config import PROJECT_ROOT, PipelineConfig
from harness.errors import HarnessError, StepFailed
from harness.stages import StageContext
from local_runners.processing import LocalProcessingRunner

ROOT = PROJECT_ROOT
PROC = "/opt/ml/processing"

SCRIPT = textwrap.dedent('''
    """A tiny processing job: counts what its inputs hold, writes a report."""
    import argparse, json, os, sys
    from pathlib import Path

    import helper  # a module beside the script (the code input)

    p = argparse.ArgumentParser()
    p.add_argument("--table")
    p.add_argument("--parts")
    p.add_argument("--out")
    p.add_argument("--fail", default="")
    a = p.parse_args()
    print("starting", helper.NAME)
    if a.fail == "raise":
        raise RuntimeError("the table is empty")
    if a.fail == "exit":
        print("cannot read the parts", file=sys.stderr)
        sys.exit(3)
    out = Path(a.out)
    (out / "nested").mkdir()
    (out / "nested" / "copy.txt").write_text(Path(a.table).read_text())
    report = {"argv": sys.argv[1:], "table": a.table,
              "parts": sorted(str(p.relative_to(a.parts)) for p in Path(a.parts).rglob("*")
                              if p.is_file()),
              "env": os.environ["REPORT_DIR"], "cwd": os.getcwd()}
    (out / "report.json").write_text(json.dumps(report))
    Path(os.environ["MESSAGE_DIR"], "message").write_text("all good")  # the ExitMessage
    print("done")
''')


def make_ctx(name="processing"):
    log = logging.getLogger(f"test.processing.{name}.{id(object())}")
    handler = LogLines()
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    ctx = StageContext(run_id="p1", step="evaluate", config=PipelineConfig(), log=log)
    return ctx, handler.lines


def s3_input(name, uri, local):
    return {"InputName": name, "S3Input": {
        "S3Uri": uri, "LocalPath": local, "S3DataType": "S3Prefix", "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated"}}


@pytest.fixture()
def staged(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.py").write_text(SCRIPT)
    (code / "helper.py").write_text("NAME = 'helper-of-the-job'\n")
    table = tmp_path / "data" / "table.csv"
    table.parent.mkdir()
    table.write_text("a,b\n1,2\n")
    parts = tmp_path / "data" / "parts"
    (parts / "sub").mkdir(parents=True)
    (parts / "p0.txt").write_text("0")
    (parts / "sub" / "p1.txt").write_text("1")
    return {"code": code, "table": table, "parts": parts, "out": tmp_path / "run" / "report"}


def request_for(staged, name="tiny-job-1", extra_args=(), entrypoint=None):
    return {
        "ProcessingJobName": name,
        "AppSpecification": {
            "ImageUri": "img:latest",
            "ContainerEntrypoint": entrypoint or ["python3", f"{PROC}/input/code/job.py"],
            "ContainerArguments": ["--table", f"{PROC}/input/table/table.csv",
                                   "--parts", f"{PROC}/input/parts",
                                   f"--out={PROC}/report", *extra_args]},
        "ProcessingInputs": [
            s3_input("code", uris.file_uri(staged["code"]), f"{PROC}/input/code"),
            s3_input("table", uris.file_uri(staged["table"]), f"{PROC}/input/table"),
            s3_input("parts", uris.file_uri(staged["parts"]), f"{PROC}/input/parts")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": uris.file_uri(staged["out"]), "LocalPath": f"{PROC}/report",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1,
                                                  "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 10}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
        "Environment": {"REPORT_DIR": f"{PROC}/report", "MESSAGE_DIR": "/opt/ml/output",
                        "PLAIN": "/opt/ml/processing-not-a-path"},
        "RoleArn": "arn:aws:iam::123456789012:role/r",
    }


def test_a_script_runs_in_process_on_its_inputs_and_publishes_its_output(staged):
    request = request_for(staged)
    ctx, lines = make_ctx()
    before = (dict(os.environ), list(sys.argv), list(sys.path), os.getcwd())
    out = LocalProcessingRunner().run(request, ctx)
    assert (dict(os.environ), list(sys.argv), list(sys.path), os.getcwd()) == before
    assert "helper" not in sys.modules and "job" not in sys.modules

    report = json.loads((staged["out"] / "report.json").read_text())
    # Every declared LocalPath became a folder of the job; nothing else was touched.
    container = Path(report["cwd"])
    assert report["table"] == f"{container}{PROC}/input/table/table.csv"
    assert report["argv"] == ["--table", report["table"], "--parts",
                              f"{container}{PROC}/input/parts", f"--out={container}{PROC}/report"]
    assert report["env"] == f"{container}{PROC}/report"
    assert report["parts"] == ["p0.txt", "sub/p1.txt"]  # a folder keeps relative paths
    assert (staged["out"] / "nested" / "copy.txt").read_text() == "a,b\n1,2\n"
    assert not container.exists()  # the job folder is gone
    assert "starting helper-of-the-job" in lines and "done" in lines

    assert out["ProcessingJobName"] == "tiny-job-1"
    assert out["ProcessingJobArn"] == \
        "arn:aws:sagemaker:local:000000000000:processing-job/tiny-job-1"
    assert out["ProcessingJobStatus"] == "Completed"
    assert out["ExitMessage"] == "all good"
    for key in ("ProcessingInputs", "ProcessingOutputConfig", "ProcessingResources",
                "AppSpecification", "StoppingCondition", "Environment", "RoleArn"):
        assert out[key] == request[key], key
    assert out["ProcessingStartTime"] <= out["ProcessingEndTime"]
    json.dumps(out)

    with pytest.raises(StepFailed, match="output 'report' already exists"):
        LocalProcessingRunner().run(request, ctx)


@pytest.mark.parametrize("how, message, code", [
    ("raise", "RuntimeError: the table is empty", 1),
    ("exit", "cannot read the parts", 3)])
def test_a_failing_script_is_step_failed_and_leaves_no_output(staged, how, message, code):
    request = request_for(staged, extra_args=["--fail", how])
    ctx, _ = make_ctx()
    with pytest.raises(StepFailed) as e:
        LocalProcessingRunner().run(request, ctx)
    assert e.value.step == "evaluate"
    assert f"processing job tiny-job-1 failed: {message}" in e.value.message
    assert f"exit code {code}" in e.value.message
    assert not staged["out"].exists() and not staged["out"].parent.exists()


def test_missing_input_and_bad_requests_are_named(staged, tmp_path):
    request = request_for(staged)
    request["ProcessingInputs"][2]["S3Input"]["S3Uri"] = uris.file_uri(tmp_path / "nothing")
    with pytest.raises(StepFailed, match=r"input 'parts' not found") as e:
        LocalProcessingRunner().run(request, make_ctx()[0])
    assert e.value.file == str(tmp_path / "nothing")
    assert e.value.field == "ProcessingInputs[2].S3Input.S3Uri"

    bad = request_for(staged)
    del bad["AppSpecification"]["ContainerEntrypoint"]
    with pytest.raises(HarnessError, match="field 'AppSpecification.ContainerEntrypoint'"):
        LocalProcessingRunner().run(bad, make_ctx()[0])
    bad = request_for(staged)
    bad["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "relative/path"
    with pytest.raises(HarnessError, match="absolute container path"):
        LocalProcessingRunner().run(bad, make_ctx()[0])
    bad = request_for(staged)
    bad["ProcessingInputs"][1]["S3Input"]["S3Uri"] = "s3://bucket/table.csv"
    with pytest.raises(HarnessError, match="only use file:// URIs"):
        LocalProcessingRunner().run(bad, make_ctx()[0])
    assert not staged["out"].exists()


def test_another_entry_point_runs_as_a_subprocess_with_this_python_on_path(staged):
    (staged["code"] / "run.sh").write_text(textwrap.dedent('''
        set -e
        echo "table: $(cat "$1")" | head -1
        python3 -c 'import sys; print("python", sys.executable)'
        mkdir -p "$2" && cp "$1" "$2/table.csv"
        echo "shell says bye" >&2
        [ -z "$FAIL" ] || { echo "asked to fail" >&2; exit 4; }
    '''))
    request = request_for(staged, entrypoint=["sh", f"{PROC}/input/code/run.sh"])
    request["AppSpecification"]["ContainerArguments"] = [f"{PROC}/input/table/table.csv",
                                                         f"{PROC}/report"]
    ctx, lines = make_ctx()
    LocalProcessingRunner().run(request, ctx)
    assert (staged["out"] / "table.csv").read_text() == "a,b\n1,2\n"
    python = next(line.split(" ", 1)[1] for line in lines if line.startswith("python "))
    assert Path(python).parent == Path(sys.executable).parent
    assert "shell says bye" in lines

    request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = \
        uris.file_uri(staged["out"].with_name("other"))
    request["Environment"]["FAIL"] = "1"
    with pytest.raises(StepFailed, match="failed: asked to fail.*exit code 4"):
        LocalProcessingRunner().run(request, make_ctx()[0])
    assert not staged["out"].with_name("other").exists()


@pytest.mark.slow
def test_the_evaluation_script_through_the_runner(tmp_path):
    """model/evaluate.py as the pipeline's processing job runs it: code folder, model
    archive and test split as inputs, evaluation.json as output."""
    from model.evaluate import predict, score

    version_dir = save_tiny_model(tmp_path / "model", seed=5)
    archive = tmp_path / "training" / "model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    rng = np.random.default_rng(2)
    x, y = rng.random((60, D), dtype=np.float32), rng.integers(0, C, 60)
    test_dir = write_split(tmp_path / "processed" / "test", x, y)
    out = tmp_path / "evaluation"
    request = {
        "ProcessingJobName": "mnist-evaluate-p1",
        "AppSpecification": {
            "ImageUri": "tensorflow-training:2.19-cpu-py312",
            "ContainerEntrypoint": ["python3", f"{PROC}/input/code/evaluate.py"],
            "ContainerArguments": ["--model", f"{PROC}/input/model", "--test",
                                   f"{PROC}/input/test", "--output", f"{PROC}/evaluation"]},
        "ProcessingInputs": [
            s3_input("code", uris.file_uri(ROOT / "model"), f"{PROC}/input/code"),
            s3_input("model", uris.file_uri(archive), f"{PROC}/input/model"),
            s3_input("test", uris.file_uri(test_dir), f"{PROC}/input/test")],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "evaluation", "S3Output": {
            "S3Uri": uris.file_uri(out), "LocalPath": f"{PROC}/evaluation",
            "S3UploadMode": "EndOfJob"}}]},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1,
                                                  "InstanceType": "ml.m5.xlarge",
                                                  "VolumeSizeInGB": 10}},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    ctx, lines = make_ctx("evaluate")
    LocalProcessingRunner().run(request, ctx)
    report = json.loads((out / "evaluation.json").read_text())
    expected = score(predict(version_dir, x), y)
    assert report["metrics"] == pytest.approx(expected["metrics"])
    assert report["count"] == 60 and report["model_version"] == 1
    assert (out / "confusion_matrix.png").is_file()
    assert f"accuracy={expected['metrics']['accuracy']:.4f}" in lines

    request["ProcessingJobName"] = "mnist-evaluate-p2"
    request["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = \
        uris.file_uri(tmp_path / "evaluation-2")
    (tmp_path / "training" / "model.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(StepFailed, match="cannot unpack the model archive") as e:
        LocalProcessingRunner().run(request, make_ctx()[0])
    assert "exit code 2" in e.value.message
    # The script's message names the container's path, not the job folder.
    assert f"ERROR: {PROC}/input/model/model.tar.gz: cannot unpack" in e.value.message
    assert not (tmp_path / "evaluation-2").exists()
