"""Cloud runners against moto's in-process AWS mock (no network, fake credentials)."""
from __future__ import annotations

import copy
import json
import logging
import tarfile

import boto3
import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import Stubber
from moto import mock_aws
from support import write_split

from cloud_runners import aws
from cloud_runners.aws import state_machine_name
from cloud_runners.deploy import CloudDeployRunner
from cloud_runners.etl import CloudEtlRunner
from cloud_runners.images import images_for
from cloud_runners.infer import CloudInferRunner
from cloud_runners.prepare import CloudPrepareRunner
from cloud_runners.runtime_transport import SageMakerRuntimeTransport
from cloud_runners.stepfunctions import (
    console_url,
    start_execution,
    stream_events,
    upsert_state_machine,
)
from cloud_runners.train import CloudTrainingRunner, check_distribution
from harness import uris
from harness.asl import compile_state_machine, execution_input
from harness.config import PROJECT_ROOT, parse_config
from harness.errors import StepFailed
from harness.inference_client import EndpointClient, EndpointError
from harness.local_setup import LocalSetup
from harness.requests import (
    Layout,
    Names,
    etl_request,
    glue_job_definition,
    hosting_requests,
    infer_request,
    prepare_request,
    training_request,
)
from harness.stages import StageContext

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "mlharness-test-bucket"
PREFIX = "mlharness/runs/r1"
RUN_ID = "20261129-120000-ab12"
SM_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlharness-sagemaker"
GLUE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlharness-glue"
SFN_ROLE = f"arn:aws:iam::{ACCOUNT}:role/mlharness-states"
PREPARED = {"RawUri": f"s3://{BUCKET}/{PREFIX}/data/raw", "ImageHeight": 28, "ImageWidth": 28,
            "NumClasses": 10}


@pytest.fixture()
def cfg():
    return parse_config({"backend": "cloud",
                         "cloud": {"region": REGION, "poll_seconds": 0.001, "bucket": BUCKET,
                                   "stack_name": "mlh-test"}})


@pytest.fixture()
def session(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SECURITY_TOKEN": "testing", "AWS_SESSION_TOKEN": "testing",
                       "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        s = boto3.session.Session(region_name=REGION)
        s.client("s3").create_bucket(Bucket=BUCKET)
        yield s


@pytest.fixture()
def layout():
    return Layout(f"s3://{BUCKET}/{PREFIX}")


def make_ctx(cfg, step, glue_jobs=None):
    return StageContext(run_id=RUN_ID, step=step, config=cfg, log=logging.getLogger(f"t.{step}"),
                        announce=lambda m: None, glue_jobs=glue_jobs or {})


def capture(session, event):
    """Record the parameters of every call ``event`` (e.g. 'sagemaker.CreateTrainingJob')."""
    calls = []
    session.events.register(f"provide-client-params.{event}",
                            lambda params, **kw: calls.append(copy.deepcopy(params)))
    return calls


def override(session, event, edit):
    """Edit the parsed response of every ``event`` call (moto's answers are canned)."""
    session.events.register(f"after-call.{event}", lambda parsed, **kw: edit(parsed))


def s3_keys(session, uri):
    return sorted(k.removeprefix(aws.split_s3(uri)[1].rstrip("/") + "/")
                  for k in aws.list_keys(session.client("s3"), uri))


def tag_map(tag_list):
    return {t["Key"]: t["Value"] for t in tag_list}


# ----------------------------------------------------------------------------- plumbing


def test_session_client_and_tags(cfg, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s = aws.session_for(cfg)
    assert s.region_name == REGION
    assert aws.client(s, "s3", cfg).meta.endpoint_url == "https://s3.amazonaws.com"
    cfg.cloud.endpoint_url = "http://127.0.0.1:5000"
    assert aws.client(s, "glue", cfg).meta.endpoint_url == "http://127.0.0.1:5000"
    assert aws.tags(cfg, "r9") == [{"Key": "mlharness:project", "Value": "mlh-test"},
                                   {"Key": "mlharness:run", "Value": "r9"}]
    assert aws.glue_tags(cfg, "r9") == {"mlharness:project": "mlh-test", "mlharness:run": "r9"}
    assert aws.sfn_tags(cfg, "r9")[0] == {"key": "mlharness:project", "value": "mlh-test"}


def test_jsonable_turns_datetimes_into_iso_strings():
    import datetime as dt
    t = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    out = aws.jsonable({"A": [t], "ResponseMetadata": {}, "B": {"C": t}})
    assert out == {"A": ["2026-01-02T03:04:05+00:00"], "B": {"C": "2026-01-02T03:04:05+00:00"}}


def test_images_come_from_sagemaker_core_for_the_region(cfg):
    images = images_for(cfg)
    assert images["training"].endswith(".dkr.ecr.us-east-1.amazonaws.com/"
                                       "tensorflow-training:2.19-cpu-py312")
    assert images["serving"].endswith(".dkr.ecr.us-east-1.amazonaws.com/"
                                      "tensorflow-inference:2.19-cpu")
    other = cfg.model_copy(deep=True)
    other.cloud.region = "eu-west-1"
    assert ".eu-west-1." in images_for(other)["training"]


# ----------------------------------------------------------------------------- prepare


def test_prepare_uploads_the_raw_splits_with_the_same_keys(cfg, session, layout):
    request = {**prepare_request(cfg, layout), "Source": "fixture"}
    out = CloudPrepareRunner(session).run(request, make_ctx(cfg, "prepare"))
    assert out["RawUri"] == layout.raw
    assert s3_keys(session, layout.raw) == [f"{s}/part-00000.parquet"
                                           for s in ("test", "train", "validation")]
    assert out["NumClasses"] == 10 and sum(out["Counts"].values()) == 5000
    with pytest.raises(Exception, match="already exists"):
        CloudPrepareRunner(session).run(request, make_ctx(cfg, "prepare"))


# ----------------------------------------------------------------------------- etl


def _stage_glue(cfg, session, layout, role=GLUE_ROLE):
    s3 = session.client("s3")
    aws.upload_file(s3, PROJECT_ROOT / cfg.etl.script, layout.glue_script(cfg))
    return {cfg.etl.job_name: glue_job_definition(cfg, layout, role)}


def test_glue_job_points_at_the_uploaded_script_and_runs_with_the_request_args(
        cfg, session, layout):
    jobs = _stage_glue(cfg, session, layout)
    request = etl_request(cfg, layout, PREPARED)
    started = capture(session, "glue.StartJobRun")
    created = capture(session, "glue.CreateJob")
    out = CloudEtlRunner(session).run(request, make_ctx(cfg, "etl", jobs))

    job = session.client("glue").get_job(JobName=cfg.etl.job_name)["Job"]
    assert job["Command"]["ScriptLocation"] == f"s3://{BUCKET}/{PREFIX}/code/glue/mnist_etl.py"
    assert job["Role"] == GLUE_ROLE and job["GlueVersion"] == cfg.etl.glue_version
    assert created[0]["Tags"] == aws.glue_tags(cfg, RUN_ID)
    assert started == [{"JobName": cfg.etl.job_name, "Arguments": request["Arguments"]}]
    assert out["JobRunState"] == "SUCCEEDED"
    assert out["OutputUri"] == layout.processed
    json.dumps(out)  # JSON-able: datetimes became strings


def test_second_upsert_updates_the_glue_job(cfg, session, layout):
    jobs = _stage_glue(cfg, session, layout)
    request = etl_request(cfg, layout, PREPARED)
    CloudEtlRunner(session).run(request, make_ctx(cfg, "etl", jobs))
    # moto 5.2.5 has no UpdateJob: answer it here and keep what was sent.
    updates = capture(session, "glue.UpdateJob")
    session.events.register(
        "before-call.glue.UpdateJob",
        lambda **kw: (AWSResponse("https://glue", 200, {}, None), {"JobName": "mnist-etl"}))
    jobs[cfg.etl.job_name]["NumberOfWorkers"] = 5
    out = CloudEtlRunner(session).run(request, make_ctx(cfg, "etl", jobs))
    assert out["JobRunState"] == "SUCCEEDED"
    expected = {k: v for k, v in jobs[cfg.etl.job_name].items() if k != "Name"}
    assert updates == [{"JobName": cfg.etl.job_name, "JobUpdate": expected}]


def test_failed_glue_run_names_the_run_and_the_message(cfg, session, layout):
    jobs = _stage_glue(cfg, session, layout)
    override(session, "glue.GetJobRun", lambda parsed: parsed["JobRun"].update(
        JobRunState="FAILED", ErrorMessage="AnalysisException: no such column pixels"))
    with pytest.raises(StepFailed, match=r"Glue job run jr_\w+ FAILED: AnalysisException") as e:
        CloudEtlRunner(session).run(etl_request(cfg, layout, PREPARED), make_ctx(cfg, "etl", jobs))
    assert e.value.step == "etl"


def test_glue_job_without_script_or_role_is_refused(cfg, session, layout):
    no_role = {cfg.etl.job_name: glue_job_definition(cfg, layout)}
    with pytest.raises(StepFailed, match="no role"):
        CloudEtlRunner(session).run(etl_request(cfg, layout, PREPARED),
                                    make_ctx(cfg, "etl", no_role))
    jobs = {cfg.etl.job_name: glue_job_definition(cfg, layout, GLUE_ROLE)}
    with pytest.raises(StepFailed, match="script is not in S3"):
        CloudEtlRunner(session).run(etl_request(cfg, layout, PREPARED),
                                    make_ctx(cfg, "etl", jobs))


# ----------------------------------------------------------------------------- train


def _strip(x, replacements):
    if isinstance(x, dict):
        return {k: _strip(v, replacements) for k, v in x.items()}
    if isinstance(x, list):
        return [_strip(v, replacements) for v in x]
    if isinstance(x, str):
        for old, new in replacements:
            x = x.replace(old, new)
    return x


def test_training_request_sent_equals_the_local_request_modulo_uris_and_image(
        cfg, session, layout):
    names = Names(cfg, RUN_ID)
    cloud_image = images_for(cfg)["training"]
    local_base = "file:///tmp/mlharness-run"
    local_image = LocalSetup.images["training"]
    # what the local executor builds: no role (LocalSetup.role is None)
    local = training_request(cfg, Layout(local_base), names, PREPARED, local_image,
                             LocalSetup.role)
    cloud = training_request(cfg, layout, names, PREPARED, cloud_image, SM_ROLE)
    sent = capture(session, "sagemaker.CreateTrainingJob")
    out = CloudTrainingRunner(session).run(cloud, make_ctx(cfg, "train"))

    assert len(sent) == 1
    body = dict(sent[0])
    assert body == cloud
    assert tag_map(body["Tags"]) == {"mlharness:project": "mlh-test", "mlharness:run": RUN_ID}
    assert body.pop("RoleArn") == SM_ROLE  # the one field the cloud adds: the execution role
    assert _strip(body, [(layout.base, "<base>"), (cloud_image, "<image>")]) == \
        _strip(local, [(local_base, "<base>"), (local_image, "<image>")])
    assert names.training_job.endswith(RUN_ID) and out["TrainingJobName"] == names.training_job
    assert out["TrainingJobStatus"] == "Completed"
    assert out["ModelArtifacts"]["S3ModelArtifacts"] == uris.join(
        layout.training, names.training_job, "output", "model.tar.gz")
    assert isinstance(out["FinalMetricDataList"], list)
    json.dumps(out)
    tags = session.client("sagemaker").list_tags(ResourceArn=out["TrainingJobArn"])["Tags"]
    assert tag_map(tags)["mlharness:run"] == RUN_ID


def test_failed_training_job_reports_the_failure_reason(cfg, session, layout):
    request = training_request(cfg, layout, Names(cfg, RUN_ID), PREPARED, "img", SM_ROLE)
    override(session, "sagemaker.DescribeTrainingJob", lambda parsed: parsed.update(
        TrainingJobStatus="Failed", FailureReason="AlgorithmError: ExecuteUserScriptError"))
    with pytest.raises(StepFailed, match="Failed: AlgorithmError: ExecuteUserScriptError"):
        CloudTrainingRunner(session).run(request, make_ctx(cfg, "train"))


def test_training_request_needs_a_role(cfg, session, layout):
    request = training_request(cfg, layout, Names(cfg, RUN_ID), PREPARED, "img")
    with pytest.raises(Exception, match="RoleArn"):
        CloudTrainingRunner(session).run(request, make_ctx(cfg, "train"))


def test_several_instances_without_a_distribution_are_flagged(cfg, layout):
    cfg.train.instance_count = 2
    request = training_request(cfg, layout, Names(cfg, RUN_ID), PREPARED, "img", SM_ROLE)
    assert check_distribution(request) is None  # the builder enables the strategy
    del request["HyperParameters"]["sagemaker_multi_worker_mirrored_strategy_enabled"]
    assert "each host trains independently" in check_distribution(request)


# ----------------------------------------------------------------------------- deploy


def _hosting(cfg, layout, image="serving-image"):
    model_url = uris.join(layout.training, "job", "output", "model.tar.gz")
    return hosting_requests(cfg, Names(cfg, RUN_ID), model_url, image, SM_ROLE)


def test_deploy_creates_tagged_model_config_and_endpoint(cfg, session, layout):
    request = _hosting(cfg, layout)
    ctx = make_ctx(cfg, "deploy")
    out = CloudDeployRunner(session).run(request, ctx)
    sm = session.client("sagemaker")
    model = sm.describe_model(ModelName=request["CreateModel"]["ModelName"])
    config = sm.describe_endpoint_config(
        EndpointConfigName=request["CreateEndpointConfig"]["EndpointConfigName"])
    endpoint = sm.describe_endpoint(EndpointName=request["CreateEndpoint"]["EndpointName"])
    for arn in (model["ModelArn"], config["EndpointConfigArn"], endpoint["EndpointArn"]):
        assert tag_map(sm.list_tags(ResourceArn=arn)["Tags"]) == {
            "mlharness:project": "mlh-test", "mlharness:run": RUN_ID}
    for name in (model["ModelName"], config["EndpointConfigName"], endpoint["EndpointName"]):
        assert RUN_ID in name
    assert model["PrimaryContainer"]["ModelDataUrl"].startswith(f"s3://{BUCKET}/")
    assert out["EndpointStatus"] == "InService" and out["ModelName"] == model["ModelName"]
    assert out["EndpointName"] == endpoint["EndpointName"] and "EndpointUrl" not in out
    json.dumps(out)
    assert not ctx.resources._exit_callbacks  # the endpoint outlives the run


def test_failed_endpoint_reports_the_failure_reason(cfg, session, layout):
    override(session, "sagemaker.DescribeEndpoint", lambda parsed: parsed.update(
        EndpointStatus="Failed", FailureReason="The primary container did not pass the ping"))
    with pytest.raises(StepFailed, match="Failed: The primary container did not pass"):
        CloudDeployRunner(session).run(_hosting(cfg, layout), make_ctx(cfg, "deploy"))


# ----------------------------------------------------------------------------- runtime + infer


def _streaming(data: bytes):
    import io

    from botocore.response import StreamingBody
    return StreamingBody(io.BytesIO(data), len(data))


def test_runtime_transport_sends_the_body_and_content_type():
    rt = boto3.client("sagemaker-runtime", region_name=REGION, aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    body = b'{"instances": [[0.5, 0.25]]}'
    answer = b'{"predictions": [{"probabilities": [0.1, 0.9], "classes": 1}]}'
    with Stubber(rt) as stub:
        stub.add_response("invoke_endpoint",
                          {"Body": _streaming(answer), "ContentType": "application/json"},
                          {"EndpointName": "ep-1", "Body": body,
                           "ContentType": "application/json", "Accept": "application/json"})
        stub.add_client_error("invoke_endpoint", service_error_code="ModelError",
                              service_message="Received client error (400) from primary",
                              http_status_code=424,
                              modeled_fields={"OriginalStatusCode": 400,
                                              "OriginalMessage": "bad instances"})
        transport = SageMakerRuntimeTransport(rt, "ep-1")
        assert transport.invoke(body, "application/json") == (answer, "application/json")
        with pytest.raises(EndpointError, match="ModelError") as e:
            transport.invoke(body, "application/json")
        assert e.value.status == 400 and e.value.server_message == "bad instances"
        stub.assert_no_pending_responses()
    client = EndpointClient(SageMakerRuntimeTransport(rt, "ep-1"))
    with Stubber(rt) as stub:
        stub.add_response("invoke_endpoint",
                          {"Body": _streaming(answer), "ContentType": "application/json"})
        out = client.predict(np.array([[0.5, 0.25]], np.float32))
    assert out["classes"].tolist() == [1]


def test_infer_sends_the_test_split_through_invoke_endpoint(cfg, session, layout, tmp_path):
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    rng = np.random.default_rng(0)
    n, k = 23, 3
    x = rng.random((n, 6), dtype=np.float32)
    y = rng.integers(0, k, n)
    test_dir = write_split(tmp_path / "test", x, y)
    aws.upload_dir(session.client("s3"), test_dir, layout.processed_split("test"))
    predicted = y.copy()
    predicted[::4] = (predicted[::4] + 1) % k  # some wrong
    cfg.infer.batch_size = 10
    queue = sagemakerruntime_backends[ACCOUNT][REGION].results_queue
    for start in range(0, n, 10):  # one canned answer per request, in order
        rows = [{"probabilities": np.eye(k)[c].tolist(), "classes": int(c)}
                for c in predicted[start:start + 10]]
        queue.append((json.dumps({"predictions": rows}), "application/json", "AllTraffic", ""))
    sent = capture(session, "sagemaker-runtime.InvokeEndpoint")
    deployed = {"EndpointName": f"mnist-endpoint-{RUN_ID}", "EndpointStatus": "InService"}
    request = infer_request(cfg, layout, deployed)
    out = CloudInferRunner(session).run(request, make_ctx(cfg, "infer"))

    assert out["Requests"] == 3 and out["Count"] == n
    assert out["Correct"] == int((predicted == y).sum())
    assert out["Accuracy"] == pytest.approx((predicted == y).mean())
    assert {c["EndpointName"] for c in sent} == {deployed["EndpointName"]}
    assert all(c["ContentType"] == "application/json" for c in sent)
    assert sum(len(json.loads(c["Body"])["instances"]) for c in sent) == n
    assert out["PredictionsUri"] == uris.join(layout.inference, "predictions.parquet")
    assert s3_keys(session, layout.inference) == ["predictions.parquet"]


# ----------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_downloads_scores_and_uploads(cfg, session, layout, tmp_path):
    from support import C, D, save_tiny_model

    from cloud_runners.evaluate import CloudEvaluateRunner
    from local_runners.evaluate import LocalEvaluateRunner

    version_dir = save_tiny_model(tmp_path / "model", seed=3)
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(version_dir, arcname="1")
    rng = np.random.default_rng(1)
    x, y = rng.random((40, D), dtype=np.float32), rng.integers(0, C, 40)
    test_dir = write_split(tmp_path / "test", x, y)
    s3 = session.client("s3")
    model_uri = uris.join(layout.training, "job", "output", "model.tar.gz")
    aws.upload_file(s3, archive, model_uri)
    aws.upload_dir(s3, test_dir, layout.processed_split("test"))
    request = {"ModelArtifacts": model_uri, "TestDataUri": layout.processed_split("test"),
               "OutputUri": layout.evaluation, "Metric": "accuracy", "Threshold": 0.0}
    out = CloudEvaluateRunner(session).run(request, make_ctx(cfg, "evaluate"))

    local = LocalEvaluateRunner().run(
        {**request, "ModelArtifacts": uris.file_uri(archive),
         "TestDataUri": uris.file_uri(test_dir), "OutputUri": uris.file_uri(tmp_path / "ev")},
        make_ctx(cfg, "evaluate"))
    assert out["EvaluationUri"] == uris.join(layout.evaluation, "evaluation.json")
    local_uris = {k for k, v in local.items() if isinstance(v, str) and v.startswith("file://")}
    assert all(out[k].startswith(layout.evaluation + "/") for k in local_uris)
    assert {k: v for k, v in out.items() if k not in local_uris} == \
        {k: v for k, v in local.items() if k not in local_uris}
    assert s3_keys(session, layout.evaluation) == ["confusion_matrix.png", "evaluation.json"]
    bucket, key = aws.split_s3(out["EvaluationUri"])
    report = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert report["ModelArtifacts"] == model_uri
    assert report["TestDataUri"] == layout.processed_split("test")


# ----------------------------------------------------------------------------- step functions


IMAGES_CLOUD = {"training": "acct.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19",
                "serving": "acct.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.19"}


def test_state_machine_upsert_is_idempotent(cfg, session):
    arn = upsert_state_machine(cfg, session, SFN_ROLE, IMAGES_CLOUD, sagemaker_role_arn=SM_ROLE)
    sfn = session.client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=arn)
    assert described["name"] == state_machine_name(cfg) == "mlh-test-pipeline"
    assert json.loads(described["definition"]) == compile_state_machine(
        cfg, IMAGES_CLOUD, role=SM_ROLE, endpoint_poll_s=1)
    assert described["roleArn"] == SFN_ROLE
    tags = sfn.list_tags_for_resource(resourceArn=arn)["tags"]
    assert {"key": "mlharness:project", "value": "mlh-test"} in tags

    cfg.evaluate.threshold = 0.5
    again = upsert_state_machine(cfg, session, SFN_ROLE, IMAGES_CLOUD, sagemaker_role_arn=SM_ROLE)
    assert again == arn
    assert len(sfn.list_state_machines()["stateMachines"]) == 1
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
    assert definition["States"]["Gate"]["Choices"][0]["And"][1][
        "NumericGreaterThanEquals"] == 0.5
    params = definition["States"]["Train"]["Parameters"]
    assert params["RoleArn"] == SM_ROLE


def test_start_execution_and_stream_events(cfg, session):
    arn = upsert_state_machine(cfg, session, SFN_ROLE, IMAGES_CLOUD, sagemaker_role_arn=SM_ROLE)
    payload = execution_input(cfg, run_id=RUN_ID, bucket=BUCKET, prefix=PREFIX,
                              prepared=PREPARED, images=IMAGES_CLOUD)
    execution_arn = start_execution(cfg, session, arn, RUN_ID, payload)
    assert execution_arn.endswith(f":{RUN_ID}")
    # Same name and input while running: AWS (and moto) answer with the same execution.
    assert start_execution(cfg, session, arn, RUN_ID, payload) == execution_arn

    sfn = session.client("stepfunctions")
    events = []

    def on_event(event):
        events.append(event)
        if len(events) == 1:  # moto does not run the states: end the execution ourselves
            sfn.stop_execution(executionArn=execution_arn, error="Test", cause="stop")

    final = stream_events(session, execution_arn, on_event, poll_s=0.001, cfg=cfg,
                          timeout_s=10)
    assert final["status"] in ("ABORTED", "SUCCEEDED", "FAILED")
    assert final["input"] == payload
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert events[0]["type"] == "ExecutionStarted"
    assert all({"id", "type", "timestamp", "step"} <= set(e) for e in events)
    json.dumps(final)
    url = console_url(REGION, execution_arn)
    assert url.startswith("https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1")
    assert url.endswith(execution_arn)


# ----------------------------------------------------------------------------- setup


def test_cloud_setup_uploads_the_code_and_registers_the_glue_job(cfg, session):
    import io

    from cloud_runners.setup import CloudSetup
    outputs = {"BucketName": "ignored-when-configured", "GlueRoleArn": GLUE_ROLE,
               "SageMakerRoleArn": SM_ROLE, "StepFunctionsRoleArn": SFN_ROLE}
    setup = CloudSetup(cfg, session=session, outputs=outputs)
    layout = setup.layout(RUN_ID)
    assert layout.base == f"s3://{BUCKET}/mlharness/runs/{RUN_ID}"
    assert setup.role == SM_ROLE
    jobs = setup.stage_code(layout)
    assert jobs[cfg.etl.job_name]["Role"] == GLUE_ROLE
    assert s3_keys(session, layout.code) == ["glue/mnist_etl.py", "sourcedir.tar.gz"]
    bucket, key = aws.split_s3(layout.sourcedir)
    data = session.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert cfg.train.entry_point in tar.getnames()
    # the ETL runner accepts what the setup registered
    out = CloudEtlRunner(session).run(etl_request(cfg, layout, PREPARED),
                                      make_ctx(cfg, "etl", jobs))
    assert out["JobRunState"] == "SUCCEEDED"
