"""The ``cloud`` backend (`harness cloud run`) on moto's in-process mock, up to the Step
Functions execution: preflight, the client-side steps before it (the data uploaded), the
code, the Glue job and the state machine deployed, the execution started with the run's
input. moto does not execute the states, so the execution's events are given; the run
record is read back from them (a failed execution fails its step; a successful one gives
every step its input and output and the after-steps run on the execution's output)."""
import json
from argparse import Namespace

import pytest
from cloud_support import REGION, answer, console, printed

from cloud_runners import cloud_run as cloud_run_mod
from cloud_runners import stack
from cloud_runners.cloud_cli import run as cli_run
from cloud_runners.cloud_run import CloudBackend, build_context, create_workflow, deploy_workflow
from cloud_runners.credentials import NoCredentials
from cloud_runners.infer import CloudInferRunner
from cloud_runners.prepare import CloudPrepareRunner
from cloud_runners.setup import CloudSetup
from harness.asl import execution_input, state_to_step, transitions
from harness.errors import ConfigError
from harness.local_setup import LocalSetup
from harness.placeholders import resolve
from harness.runs import RunStore
from harness.tags import resource_tags

RUN = "20261129-120000-ab12"
PREPARED = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10, "Counts": {"train": 1}}
OUTPUTS = {"BucketName": "mlharness-test-bucket",
           "GlueRoleArn": "arn:aws:iam::123456789012:role/mlharness-glue",
           "SageMakerRoleArn": "arn:aws:iam::123456789012:role/mlharness-sagemaker",
           "StepFunctionsRoleArn": "arn:aws:iam::123456789012:role/mlharness-states"}


def s3_keys(aws, bucket, prefix):
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                       Prefix=prefix)
    return {o["Key"][len(prefix):] for page in pages for o in page.get("Contents", [])}


def test_build_context_names_the_stacks_roles_tags_and_poll(cfg, wf):
    cfg.cloud.poll_seconds = 12
    ctx = build_context(wf, cfg, CloudSetup(cfg, outputs=OUTPUTS), RUN)
    assert ctx.backend == "cloud"
    assert ctx.role == OUTPUTS["SageMakerRoleArn"]
    assert ctx.roles["glue"] == OUTPUTS["GlueRoleArn"]
    assert ctx.tags == resource_tags(cfg, RUN) == [
        {"Key": "mlharness:project", "Value": "mlharness"}, {"Key": "mlharness:run", "Value": RUN}]
    assert ctx.poll_seconds == 12


class RecordingImages:
    def __init__(self, images):
        self.images, self.seen = images, set()

    def image(self, *args, **kw):
        uri = self.images.image(*args, **kw)
        self.seen.add(uri)
        return uri


def _normalised(body, base, images):
    text = json.dumps(body).replace(base, "<base>")
    for uri in images:
        text = text.replace(json.dumps(uri)[1:-1], "<image>")
    out = json.loads(text)
    for role_field in ("RoleArn", "ExecutionRoleArn"):
        out.pop(role_field, None)
    return out


def test_every_request_is_the_local_request_but_for_location_image_and_role(cfg, wf):
    setup = CloudSetup(cfg, outputs=OUTPUTS)
    cloud_images = RecordingImages(setup.images)
    cloud_ctx = build_context(wf, cfg, setup, RUN)
    cloud_ctx.images = cloud_images
    local_images = RecordingImages(LocalSetup(cfg).images)
    local_ctx = wf.build_context("local", local_images, tags=resource_tags(cfg))
    local_base = "file:///tmp/mlharness-runs/" + RUN

    def outputs(base):
        return {"Prepare": {**PREPARED, "RawUri": f"{base}/data/raw"},
                "Train": {"ModelArtifacts": {
                    "S3ModelArtifacts": f"{base}/training/job/output/model.tar.gz"}},
                "Gate": {"Body": {"metrics": {"accuracy": 0.97}}},
                "Endpoint": {"EndpointName": f"mnist-endpoint-{RUN}"}}

    cloud_doc = execution_input(wf, run_id=RUN, bucket=OUTPUTS["BucketName"],
                                prefix=setup.run_prefix(RUN),
                                before={"prepare": outputs(setup.base_uri(RUN))["Prepare"]})
    cloud_doc.update(outputs(setup.base_uri(RUN)))
    local_doc = {"RunId": RUN, "BaseUri": local_base, "CodeUri": f"{local_base}/code",
                 **outputs(local_base)}
    for step in wf.steps:
        cloud = resolve(step.request(cloud_ctx), cloud_doc)
        local = resolve(step.request(local_ctx), local_doc)
        assert _normalised(cloud, setup.base_uri(RUN), cloud_images.seen) == \
            _normalised(local, local_base, local_images.seen), step.state_id
    # The one thing the cloud adds: the execution role, where SageMaker needs one.
    train = resolve(wf.step("train").request(cloud_ctx), cloud_doc)
    assert train["RoleArn"] == OUTPUTS["SageMakerRoleArn"]
    assert "RoleArn" not in resolve(wf.step("train").request(local_ctx), local_doc)
    assert cloud_images.seen and all("dkr.ecr.us-east-1" in i for i in cloud_images.seen)


def test_deploy_workflow_uploads_the_code_and_creates_job_and_state_machine(aws, cfg, wf):
    outputs = stack.bootstrap(cfg, aws, wf)
    setup = CloudSetup(cfg, session=aws)
    jobs, arn = deploy_workflow(wf, cfg, setup, RUN)
    assert jobs == {"mnist-etl": "created"}
    prefix = f"mlharness/runs/{RUN}/code/"
    assert {"etl/mnist_etl.py", "train/sourcedir.tar.gz", "evaluate/evaluate.py"} <= \
        s3_keys(aws, outputs["BucketName"], prefix)
    job = aws.client("glue").get_job(JobName="mnist-etl")["Job"]
    assert job["Command"]["ScriptLocation"] == \
        f"s3://{outputs['BucketName']}/{prefix}etl/mnist_etl.py"
    assert job["Role"] == outputs["GlueRoleArn"]
    sfn = aws.client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=arn)
    assert described["name"] == "mlharness-mnist"
    assert described["roleArn"] == outputs["StepFunctionsRoleArn"]
    definition = json.loads(described["definition"])
    assert definition == wf.definition(build_context(wf, cfg, setup, RUN))
    assert definition["States"]["train"]["Parameters"]["RoleArn"] == outputs["SageMakerRoleArn"]
    # Again (the next run): the job is updated, the state machine keeps its ARN.
    answer(aws, "glue.UpdateJob", {"JobName": "mnist-etl"})  # moto 5.2.5 has no UpdateJob
    assert deploy_workflow(wf, cfg, setup, "next-run") == ({"mnist-etl": "updated"}, arn)


def test_workflow_create_needs_the_stack(aws, cfg, wf):
    with pytest.raises(stack.StackMissing):
        create_workflow(wf, cfg, session=aws)
    stack.bootstrap(cfg, aws, wf)
    arn = wf.create(cfg, session=aws)
    assert arn.endswith(":stateMachine:mlharness-mnist")


def test_without_credentials_nothing_is_created(no_aws, cfg, wf, tmp_path):
    with pytest.raises(NoCredentials):
        CloudBackend().run(wf, cfg)
    assert no_aws == [] and not (tmp_path / "runs").exists()


def test_resume_is_for_the_local_backend_only(no_aws, cfg, wf):
    with pytest.raises(ConfigError, match="apply to the local backend only"):
        CloudBackend().run(wf, cfg, resume="some-run", from_step="train")
    assert no_aws == []


def test_a_failed_execution_fails_its_step_after_everything_was_created(aws, cfg, wf, tmp_path,
                                                                       monkeypatch):
    outputs = stack.bootstrap(cfg, aws, wf)
    cfg.data.source = "fixture"
    seen = {}
    parameters = {"JobName": "mnist-etl", "Arguments": {"--image_height": "28"}}

    def failed_execution(session, execution_arn, on_event, poll_s=5.0, **kw):
        seen["execution"] = execution_arn
        for event in [
                {"id": 1, "type": "ExecutionStarted", "step": None},
                {"id": 2, "type": "TaskStateEntered", "step": "etl"},
                {"id": 3, "type": "TaskScheduled", "step": "etl",
                 "parameters": json.dumps(parameters)},
                {"id": 4, "type": "TaskFailed", "step": "etl", "error": "States.TaskFailed",
                 "cause": "Glue job run FAILED: bad input"},
                {"id": 5, "type": "ExecutionFailed", "step": None}]:
            on_event({"timestamp": f"2026-11-29T12:00:0{event['id']}+00:00", **event})
        return {"status": "FAILED", "error": "States.TaskFailed",
                "cause": "Glue job run FAILED: bad input"}

    monkeypatch.setattr(cloud_run_mod, "stream_events", failed_execution)
    c = console()
    assert cli_run(cfg, wf, c, Namespace(dry_run=False)) == 1
    text = printed(c)
    assert "preflight ok: account 123456789012" in text and "state machine arn:" in text
    assert "Pipeline failed at step 'etl'" in text and "bad input" in text

    (run_dir,) = list((tmp_path / "runs").iterdir())
    execution = json.loads((run_dir / "execution.json").read_text())
    run_id = execution["run_id"]
    assert execution["status"] == "FAILED" and execution["execution"] == seen["execution"]
    assert [e["type"] for e in execution["events"]] == [
        "ExecutionStarted", "TaskStateEntered", "TaskScheduled", "TaskFailed",
        "ExecutionFailed"]
    doc = execution["input"]
    assert doc["RunId"] == run_id and doc["Bucket"] == outputs["BucketName"]
    assert doc["Prefix"] == f"mlharness/runs/{run_id}"
    assert doc["Prepare"]["NumClasses"] == 10
    assert doc["Prepare"]["RawUri"] == f"s3://{outputs['BucketName']}/{doc['Prefix']}/data/raw"
    # `harness runs` / `harness show` read the cloud run as any other.
    store = RunStore(tmp_path / "runs")
    record = store.load(run_id)
    assert (record.backend, record.status, record.failed_step) == ("cloud", "FAILED", "etl")
    assert "bad input" in record.error
    status = {s.name: s.status for s in record.steps}
    assert status == {"prepare": "SUCCEEDED", "etl": "FAILED", "train": "PENDING",
                      "evaluate": "PENDING", "gate": "PENDING", "model": "PENDING",
                      "endpoint-config": "PENDING", "endpoint": "PENDING", "infer": "PENDING"}
    assert json.loads((run_dir / "steps" / "etl" / "input.json").read_text()) == parameters
    assert "Glue job run FAILED: bad input" in (run_dir / "steps" / "etl" / "log.txt").read_text()
    assert store.step_output(run_id, "prepare")["NumClasses"] == 10
    # What AWS holds: the data, the code, the Glue job on it, the execution with the input.
    keys = s3_keys(aws, outputs["BucketName"], f"{doc['Prefix']}/")
    assert {"data/raw/train/part-00000.parquet", "code/etl/mnist_etl.py",
            "code/train/sourcedir.tar.gz", "code/evaluate/evaluate.py"} <= keys
    job = aws.client("glue").get_job(JobName="mnist-etl")["Job"]
    assert job["Command"]["ScriptLocation"] == f"{doc['BaseUri']}/code/etl/mnist_etl.py"
    described = aws.client("stepfunctions").describe_execution(executionArn=seen["execution"])
    assert described["name"] == run_id and json.loads(described["input"]) == doc


def test_a_successful_execution_gives_every_step_its_record(aws, cfg, wf, tmp_path,
                                                            monkeypatch):
    stack.bootstrap(cfg, aws, wf)
    monkeypatch.setattr(CloudPrepareRunner, "run",
                        lambda self, request, ctx: {**PREPARED, "RawUri": request["OutputUri"]})
    inferred = []

    def infer(self, request, ctx):
        inferred.append(request)
        return {"Accuracy": 0.97, "Requests": 2, "EndpointName": request["EndpointName"]}

    monkeypatch.setattr(CloudInferRunner, "run", infer)
    results = {
        "Etl": {"Id": "jr_1", "JobName": "mnist-etl", "JobRunState": "SUCCEEDED"},
        "Train": {"TrainingJobName": f"mnist-train-{RUN}", "FinalMetricDataList": [],
                  "ModelArtifacts": {"S3ModelArtifacts": "s3://b/model.tar.gz"}},
        "Evaluate": {"ProcessingJobName": f"mnist-evaluate-{RUN}",
                     "ProcessingJobStatus": "Completed"},
        "Gate": {"Body": {"metrics": {"accuracy": 0.97}}},
        "Model": {"ModelArn": f"arn:model/mnist-{RUN}"},
        "EndpointConfig": {"EndpointConfigArn": f"arn:endpoint-config/mnist-config-{RUN}"},
        "Endpoint": {"EndpointName": f"mnist-endpoint-{RUN}", "EndpointStatus": "InService"}}

    def succeeded_execution(session, execution_arn, on_event, poll_s=5.0, **kw):
        definition = json.loads(aws.client("stepfunctions").describe_state_machine(
            stateMachineArn=execution_arn.replace(":execution:", ":stateMachine:")
            .rsplit(":", 1)[0])["definition"])
        doc = json.loads(aws.client("stepfunctions").describe_execution(
            executionArn=execution_arn)["input"])
        owner = state_to_step(wf)
        n = 0

        def emit(kind, state, **extra):
            nonlocal n
            n += 1
            on_event({"id": n, "type": kind, "step": state,
                      "timestamp": f"2026-11-29T12:{n // 60:02d}:{n % 60:02d}+00:00", **extra})

        emit("ExecutionStarted", None)
        for state in transitions(definition)["states"][:-1]:
            step = wf.step(owner[state])
            kind = definition["States"][state]["Type"]
            emit(f"{kind}StateEntered", state)
            if state == step.state_id and kind == "Task":
                emit("TaskScheduled", state, parameters=json.dumps({"For": state}))
            doc[step.result_key] = results[step.result_key]
            emit(f"{kind}StateExited", state, output=json.dumps(doc))
        emit("ExecutionSucceeded", None)
        return {"status": "SUCCEEDED", "output": doc}

    monkeypatch.setattr(cloud_run_mod, "stream_events", succeeded_execution)
    said = []
    result = wf.execute(config=cfg, session=aws, run_id=RUN, announce=said.append)

    assert result.record.status == "SUCCEEDED"
    assert {s.name: s.status for s in result.record.steps} == {
        s.state_id: "SUCCEEDED" for s in wf.steps}
    for step in wf.machine_steps():
        assert result.outputs[step.state_id] == results[step.result_key]
        assert json.loads((result.run_dir / "steps" / step.state_id / "output.json")
                          .read_text()) == results[step.result_key]
        assert json.loads((result.run_dir / "steps" / step.state_id / "input.json")
                          .read_text()) == {"For": step.state_id}
    # The after-step ran on the execution's output.
    request, = inferred
    assert request["EndpointName"] == f"mnist-endpoint-{RUN}"
    assert request["Endpoint"] == results["Endpoint"] and request["ExpectedAccuracy"] == 0.97
    assert request["TestDataUri"].endswith(f"/mlharness/runs/{RUN}/data/processed/test")
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["backend"] == "cloud" and summary["status"] == "SUCCEEDED"
    assert summary["metrics"]["metrics.accuracy"] == 0.97
    assert summary["metrics"]["endpoint accuracy"] == 0.97
    execution = json.loads((result.run_dir / "execution.json").read_text())
    assert execution["status"] == "SUCCEEDED" and execution["events"][-1]["type"] == \
        "ExecutionSucceeded"
    assert any(m.startswith(f"execution {RUN}: https://{REGION}.console.aws.amazon.com")
               for m in said)
    assert (result.run_dir / "graph.mmd").exists() and (result.run_dir / "config.json").exists()
