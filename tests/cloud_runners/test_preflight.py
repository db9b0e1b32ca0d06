"""Preflight: creates nothing (only reads); no credentials -> exit 2; no stack -> bootstrap
first; after bootstrap -> what a run of the workflow creates (said by its steps) and what
it costs, never a secret."""
import json

import pytest
from cloud_support import console, operations, printed, training_only
from support import moto_session

from cloud_runners import stack
from cloud_runners.aws import session_for
from cloud_runners.cloud_run import deploy_workflow
from cloud_runners.credentials import NO_CREDENTIALS_MESSAGE, NoCredentials
from cloud_runners.preflight import NotBootstrapped, preflight, render_report
from cloud_runners.setup import CloudSetup

RUN = "20250101-120000-beef"
SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYzzSECRETzz"
READ_ONLY = ("Get", "Describe", "List", "Head")


@pytest.fixture
def aws(monkeypatch):
    # Explicit keys with a recognisable secret: it must never be printed.
    with moto_session(monkeypatch, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                      aws_secret_access_key=SECRET) as session:
        yield session


def test_no_credentials_exit_2_and_no_call(no_aws, cfg, wf):
    with pytest.raises(NoCredentials) as exc:
        preflight(cfg, session_for(cfg), wf)
    assert exc.value.exit_code == 2
    assert NO_CREDENTIALS_MESSAGE in exc.value.message
    assert no_aws == []


def test_no_stack_says_bootstrap_first_and_creates_nothing(aws, cfg, wf):
    calls = operations(aws)
    with pytest.raises(NotBootstrapped) as exc:
        preflight(cfg, aws, wf)
    assert "run `harness cloud bootstrap` first" in exc.value.message
    assert "'mlharness'" in exc.value.message
    assert calls and all(c.startswith(READ_ONLY) for c in calls), calls
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []


def test_a_configured_bucket_that_is_not_there(aws, cfg, wf):
    stack.bootstrap(cfg, aws, wf)
    cfg.cloud.bucket = "not-the-projects-bucket"
    with pytest.raises(NotBootstrapped) as exc:
        preflight(cfg, aws, wf)
    assert exc.value.field == "cloud.bucket" and "not-the-projects-bucket" in exc.value.message


def test_a_missing_role(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    iam = aws.client("iam")
    name = out["GlueRoleArn"].rsplit("/", 1)[-1]
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    iam.delete_role(RoleName=name)
    with pytest.raises(NotBootstrapped, match=f"the role {name} \\(GlueRoleArn\\) is missing"):
        preflight(cfg, aws, wf)


def test_report_after_bootstrap_says_what_the_steps_create_and_cost(aws, cfg, wf):
    outputs = stack.bootstrap(cfg, aws, wf)
    calls = operations(aws)
    report = preflight(cfg, aws, wf, run_id=RUN)
    assert calls and all(c.startswith(READ_ONLY) for c in calls), calls  # creates nothing
    assert report.account == "123456789012" and report.region == "us-east-1"
    assert report.bucket == outputs["BucketName"]
    assert report.roles == {k: outputs[k] for k in stack.ROLE_OUTPUTS}
    bucket = outputs["BucketName"]
    assert report.creates == [
        ("S3 prefix", f"s3://{bucket}/mlharness/runs/{RUN}/"),
        ("Glue job", "mnist-etl (created)"),
        ("state machine", "mlharness-mnist (created)"),
        ("Step Functions execution", RUN),
        ("S3 objects", f"raw splits under s3://{bucket}/mlharness/runs/{RUN}/data/raw"),
        ("Glue job run", "of mnist-etl (2 x G.1X, Glue 5.1)"),
        ("training job", f"mnist-train-{RUN} (1 x ml.m5.xlarge)"),
        ("processing job", f"mnist-evaluate-{RUN} (1 x ml.m5.xlarge)"),
        ("model", f"mnist-{RUN}"),
        ("endpoint config", f"mnist-config-{RUN}"),
        ("endpoint", f"mnist-endpoint-{RUN} (billed per hour until `harness cloud teardown`)")]
    assert report.notes == ["every resource is tagged mlharness:project=mlharness"]
    assert report.cost is not None and report.cost.run_total > 0
    assert [i.name for i in report.cost.items] == [
        "Glue job mnist-etl", "SageMaker training mnist-train",
        "SageMaker processing mnist-evaluate", "Step Functions",
        "SageMaker endpoint (mnist-config)"]
    text = report.text()
    assert "estimated cost" in text and "per hour until `harness cloud teardown`" in text
    blob = json.dumps(report.to_dict())
    assert json.loads(blob)["run_id"] == RUN
    for out in (text, blob):
        assert SECRET not in out and SECRET[:12] not in out


def test_report_says_what_exists_already(aws, cfg, wf):
    outputs = stack.bootstrap(cfg, aws, wf)
    deploy_workflow(wf, cfg, CloudSetup(cfg, session=aws, outputs=outputs), "bootstrap")
    creates = dict(preflight(cfg, aws, wf, run_id=RUN).creates)
    assert creates["Glue job"] == "mnist-etl (exists: updated)"
    assert creates["state machine"] == "mlharness-mnist (exists: updated)"


def test_report_of_a_pipeline_of_ones_own(aws, cfg):
    wf = training_only()
    stack.bootstrap(cfg, aws, wf)
    report = preflight(cfg, aws, wf, run_id=RUN)
    assert [kind for kind, _ in report.creates] == [
        "S3 prefix", "state machine", "Step Functions execution", "training job"]
    assert dict(report.creates)["state machine"] == "mlharness-digits (created)"


def test_render_report(aws, cfg, wf):
    stack.bootstrap(cfg, aws, wf)
    c = console()
    render_report(preflight(cfg, aws, wf, run_id=RUN), c)
    out = printed(c)
    assert "preflight ok: account 123456789012" in out
    assert f"run {RUN} will create" in out and f"mnist-evaluate-{RUN}" in out
    assert "one run" in out and "note: every resource is tagged" in out
    assert SECRET not in out and SECRET[:12] not in out
