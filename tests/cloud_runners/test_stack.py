"""The project's stack: parameters from the workflow's name prefixes, bootstrap on moto
(idempotent, guardrails, roles), outputs, failures named."""
import ast
import json

import pytest
from botocore.exceptions import WaiterError
from cloud_support import REGION, training_only, workflow

from cloud_runners import stack
from cloud_runners.credentials import NoCredentials
from harness.config import PROJECT_ROOT
from harness.errors import ConfigError
from harness.steps import TrainingStep
from harness.workflow import Workflow, run_path


def params(cfg, wf):
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack.stack_parameters(cfg, wf)}


def test_parameters_come_from_the_workflows_name_prefixes(cfg, wf):
    assert params(cfg, wf) == {
        "ProjectName": "mlharness", "KeyPrefix": "mlharness/runs",
        "GlueJobName": "mnist-etl", "TrainingJobPrefix": "mnist-train",
        "TuningJobPrefix": stack.UNUSED,
        "ProcessingJobPrefix": "mnist-evaluate", "ModelPrefix": "mnist",
        "EndpointConfigPrefix": "mnist-config", "EndpointPrefix": "mnist-endpoint"}
    cfg.etl.job_name = "digits_etl"
    cfg.train.job_name = "digits-fit"
    cfg.evaluate.job_name = "digits-check"
    cfg.deploy.model_name = "digits"
    cfg.cloud.prefix = "/team/runs/"
    assert params(cfg, workflow(cfg)) == {
        "ProjectName": "mlharness", "KeyPrefix": "team/runs",
        "GlueJobName": "digits_etl", "TrainingJobPrefix": "digits-fit",
        "TuningJobPrefix": stack.UNUSED,
        "ProcessingJobPrefix": "digits-check", "ModelPrefix": "digits",
        "EndpointConfigPrefix": "digits-config", "EndpointPrefix": "digits-endpoint"}


def test_kinds_the_workflow_does_not_use_allow_nothing_real(cfg):
    values = params(cfg, training_only())
    assert values["TrainingJobPrefix"] == "digits-fit"
    for key in ("GlueJobName", "TuningJobPrefix", "ProcessingJobPrefix", "ModelPrefix",
                "EndpointConfigPrefix", "EndpointPrefix"):
        assert values[key] == stack.UNUSED, key


def test_a_tuning_pipeline_scopes_its_tuning_and_training_jobs_to_its_prefix(cfg):
    cfg.tune.enabled = True
    cfg.tune.job_name = "digits-hpo"
    values = params(cfg, workflow(cfg))
    # the trials are training jobs named <tuning job>-NNN-xxxxxxxx: the same prefix
    assert values["TuningJobPrefix"] == values["TrainingJobPrefix"] == "digits-hpo"
    assert values["ProcessingJobPrefix"] == "mnist-evaluate"


def test_two_prefixes_for_one_kind_is_a_config_error(cfg):
    def fit(state_id, job_name):
        return TrainingStep(state_id, job_name=job_name, source_dir=PROJECT_ROOT / "model",
                            entry_point="train.py", output_path=run_path("training", state_id),
                            inputs={"train": run_path("data")})

    wf = Workflow("two", fit("fit-a", "alpha-train") >> fit("fit-b", "beta-train"))
    with pytest.raises(ConfigError) as exc:
        stack.stack_parameters(cfg, wf)
    msg = exc.value.message
    assert "'fit-a'" in msg and "'fit-b'" in msg and "alpha-train" in msg and "beta-train" in msg
    assert "one name prefix per resource kind" in msg


def test_an_uppercase_prefix_is_a_config_error(cfg):
    cfg.deploy.model_name = "MNIST"
    with pytest.raises(ConfigError) as exc:
        stack.stack_parameters(cfg, workflow(cfg))
    assert exc.value.got == "MNIST"
    assert "lowercase" in exc.value.message and "model" in exc.value.field


@pytest.mark.parametrize("field,value", [("stack_name", "My_Stack"), ("prefix", "/")])
def test_bad_stack_name_or_key_prefix(cfg, wf, field, value):
    setattr(cfg.cloud, field, value)
    with pytest.raises(ConfigError) as exc:
        stack.stack_parameters(cfg, wf)
    assert exc.value.field == f"cloud.{field}"


def test_bootstrap_without_credentials_creates_nothing(no_aws, cfg, wf):
    from cloud_runners.aws import session_for

    with pytest.raises(NoCredentials):
        stack.bootstrap(cfg, session_for(cfg), wf)
    assert no_aws == []


# --- on moto ---------------------------------------------------------------------------

def test_bootstrap_creates_the_stack_with_the_workflows_parameters(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    assert set(out) == set(stack.OUTPUT_KEYS)
    described, = aws.client("cloudformation").describe_stacks(StackName="mlharness")["Stacks"]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]} == \
        params(cfg, wf)
    assert {"Key": "mlharness:project", "Value": "mlharness"} in described["Tags"]
    s3 = aws.client("s3")
    bucket = out["BucketName"]
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    iam = aws.client("iam")
    for key in stack.ROLE_OUTPUTS:
        iam.get_role(RoleName=out[key].rsplit("/", 1)[-1])
    # The Step Functions role may pass exactly the SageMaker role.
    sfn_role = out["StepFunctionsRoleArn"].rsplit("/", 1)[-1]
    names = iam.list_role_policies(RoleName=sfn_role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=sfn_role, PolicyName=names[0])["PolicyDocument"]
    if isinstance(doc, str):  # moto keeps CloudFormation's inline policies as a Python repr
        doc = ast.literal_eval(doc) if doc.startswith("{'") else json.loads(doc)
    passrole = [s for s in doc["Statement"] if s["Action"] == "iam:PassRole"]
    assert passrole[0]["Resource"] == out["SageMakerRoleArn"]
    assert stack.stack_outputs(cfg, aws) == out


def test_bootstrap_is_idempotent_and_follows_the_workflow(aws, cfg, wf):
    first = stack.bootstrap(cfg, aws, wf)
    said = []
    assert stack.bootstrap(cfg, aws, wf, announce=said.append) == first
    assert said == ["updating stack mlharness", "stack mlharness is up to date"]
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    assert [s["StackName"] for s in stacks] == ["mlharness"]
    # Another pipeline: the same stack, its roles re-scoped to that pipeline's names.
    other = training_only()
    stack.bootstrap(cfg, aws, other)
    described, = aws.client("cloudformation").describe_stacks(StackName="mlharness")["Stacks"]
    values = {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}
    assert values["TrainingJobPrefix"] == "digits-fit" and values["ModelPrefix"] == stack.UNUSED


def test_stack_outputs_without_stack(aws, cfg):
    with pytest.raises(stack.StackMissing) as exc:
        stack.stack_outputs(cfg, aws)
    assert "harness cloud bootstrap" in exc.value.message and REGION in exc.value.message


def test_a_failed_stack_names_the_failed_resources():
    class Waiter:
        def wait(self, **kw):
            raise WaiterError("StackCreateComplete", "Waiter encountered a terminal failure", {})

    class FakeCf:
        def get_waiter(self, name):
            return Waiter()

        def describe_stack_events(self, StackName):
            return {"StackEvents": [
                {"LogicalResourceId": "mlharness", "ResourceType": "AWS::CloudFormation::Stack",
                 "ResourceStatus": "ROLLBACK_IN_PROGRESS"},
                {"LogicalResourceId": "Bucket", "ResourceType": "AWS::S3::Bucket",
                 "ResourceStatus": "CREATE_FAILED",
                 "ResourceStatusReason": "mlharness-123-us-east-1 already exists"}]}

    with pytest.raises(stack.StackFailed) as exc:
        stack.wait_for_stack(FakeCf(), "stack_create_complete", "mlharness", "create")
    msg = exc.value.message
    assert "could not create the stack 'mlharness'" in msg
    assert "Bucket (AWS::S3::Bucket): CREATE_FAILED: mlharness-123-us-east-1 already exists" in msg
    assert "ROLLBACK_IN_PROGRESS" not in msg
