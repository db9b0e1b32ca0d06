"""The CloudFormation template (linted and read for meaning) and bootstrap/teardown on moto."""
import ast
import json

import pytest
from support import moto_session

from cloud_runners import aws as aws_mod
from cloud_runners import infrastructure as infra
from harness.config import PipelineConfig
from harness.errors import ConfigError

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

REGION = "us-east-1"


# --- the template --------------------------------------------------------------------

@pytest.fixture(scope="module")
def template():
    from cfnlint.decode import decode_str

    tpl, matches = decode_str(infra.TEMPLATE.read_text())
    assert not matches, matches
    return tpl


def test_cfn_lint_clean():
    import cfnlint.api

    matches = cfnlint.api.lint(infra.TEMPLATE.read_text(), regions=[REGION, "eu-west-1"])
    # No errors, no warnings, no informational findings either.
    assert [str(m) for m in matches] == []


def _resources(tpl, kind):
    return {k: r for k, r in tpl["Resources"].items() if r["Type"] == kind}


def _statements(role):
    for pol in role["Properties"].get("Policies", []):
        yield from pol["PolicyDocument"]["Statement"]


def _listify(x):
    return x if isinstance(x, list) else [x]


def test_bucket_encrypted_private_tls_only(template):
    (name, bucket), = _resources(template, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    pab = props["PublicAccessBlockConfiguration"]
    assert pab == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                   "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (_, policy), = _resources(template, "AWS::S3::BucketPolicy").items()
    assert policy["Properties"]["Bucket"] == {"Ref": name}
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"]
    assert any(s["Condition"]["Bool"]["aws:SecureTransport"] in ("false", False) for s in deny)


def test_roles_least_privilege(template):
    roles = _resources(template, "AWS::IAM::Role")
    assert set(roles) == {"StepFunctionsRole", "GlueRole", "SageMakerRole"}
    services = {k: r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
                ["Service"] for k, r in roles.items()}
    assert services == {"StepFunctionsRole": "states.amazonaws.com",
                        "GlueRole": "glue.amazonaws.com",
                        "SageMakerRole": "sagemaker.amazonaws.com"}
    # Only inline policies; no managed policy at all, so no *FullAccess.
    assert "FullAccess" not in json.dumps(template["Resources"])
    assert not _resources(template, "AWS::IAM::ManagedPolicy")
    # Actions that may have Resource "*": those without resource-level permissions.
    star_ok = {"ecr:GetAuthorizationToken", "sagemaker:ListTags", "cloudwatch:PutMetricData"}
    for name, role in roles.items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        for st in _statements(role):
            assert st["Effect"] == "Allow"
            for action in _listify(st["Action"]):
                assert action != "*" and not action.endswith(":*"), (name, action)
            if "*" in _listify(st["Resource"]):
                assert set(_listify(st["Action"])) <= star_ok, (name, st)
            if "cloudwatch:PutMetricData" in _listify(st["Action"]):
                assert "cloudwatch:namespace" in json.dumps(st["Condition"])


def test_passrole_only_the_sagemaker_role(template):
    roles = _resources(template, "AWS::IAM::Role")
    passes = [(name, st) for name, role in roles.items() for st in _statements(role)
              if "iam:PassRole" in _listify(st["Action"])]
    assert len(passes) == 1
    name, st = passes[0]
    assert name == "StepFunctionsRole"
    assert st["Resource"] == {"Fn::GetAtt": ["SageMakerRole", "Arn"]}
    assert st["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"


def test_step_functions_role_scoped_to_named_resources(template):
    role = template["Resources"]["StepFunctionsRole"]
    by_sid = {st["Sid"]: st for st in _statements(role)}
    glue = json.dumps(by_sid["GlueJobRun"]["Resource"])
    assert ":job/${GlueJobName}" in glue
    assert set(by_sid["GlueJobRun"]["Action"]) == {
        "glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"}
    assert "training-job/${TrainingJobPrefix}-*" in json.dumps(by_sid["TrainingJob"])
    assert "model/${ModelPrefix}-*" in json.dumps(by_sid["Model"])
    assert "endpoint-config/${ModelPrefix}-config-*" in json.dumps(by_sid["EndpointConfig"])
    assert "endpoint/${ModelPrefix}-endpoint-*" in json.dumps(by_sid["Endpoint"])
    events = by_sid["SyncEventsRule"]
    assert set(events["Action"]) == {"events:PutTargets", "events:PutRule", "events:DescribeRule"}
    assert "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule" in json.dumps(events)
    # Everything the compiled state machine calls is allowed.
    actions = {a for st in _statements(role) for a in _listify(st["Action"])}
    assert {"sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
            "sagemaker:StopTrainingJob", "sagemaker:CreateModel",
            "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
            "sagemaker:DescribeEndpoint", "sagemaker:AddTags"} <= actions


def test_data_roles_scoped_to_project_prefixes(template):
    glue = {st["Sid"]: st for st in _statements(template["Resources"]["GlueRole"])}
    assert glue["ReadCodeAndRaw"]["Action"] == "s3:GetObject"
    read = json.dumps(glue["ReadCodeAndRaw"]["Resource"])
    assert "/${KeyPrefix}/*/code/*" in read and "/${KeyPrefix}/*/data/raw/*" in read
    assert "s3:PutObject" in glue["ReadWriteProcessed"]["Action"]
    assert "/${KeyPrefix}/*/data/processed" in json.dumps(glue["ReadWriteProcessed"])
    assert "log-group:/aws-glue/*" in json.dumps(glue["GlueLogs"])
    sm = {st["Sid"]: st for st in _statements(template["Resources"]["SageMakerRole"])}
    assert "/${KeyPrefix}/*/training/*" in json.dumps(sm["ReadWriteTrainingOutput"])
    assert "s3:PutObject" not in json.dumps(sm["ReadProcessedAndCode"])
    assert "repository/tensorflow-training" in json.dumps(sm["PullDeepLearningContainers"])
    assert "log-group:/aws/sagemaker/*" in json.dumps(sm["SageMakerLogs"])
    # No writes outside the bucket's project prefix.
    for role in ("GlueRole", "SageMakerRole"):
        for st in _statements(template["Resources"][role]):
            if any(a in ("s3:PutObject", "s3:DeleteObject") for a in _listify(st["Action"])):
                assert "${KeyPrefix}/" in json.dumps(st["Resource"])


def test_outputs(template):
    assert set(template["Outputs"]) == set(infra.OUTPUT_KEYS)


def test_stack_parameters_from_config():
    params = {p["ParameterKey"]: p["ParameterValue"]
              for p in infra.stack_parameters(PipelineConfig())}
    assert params == {"ProjectName": "mlharness", "KeyPrefix": "mlharness/runs",
                      "GlueJobName": "mnist-etl", "TrainingJobPrefix": "mnist-train",
                      "ModelPrefix": "mnist"}
    bad = PipelineConfig()
    bad.cloud.stack_name = "My_Stack"
    with pytest.raises(ConfigError, match="cloud.stack_name"):
        infra.stack_parameters(bad)
    bad = PipelineConfig()
    bad.deploy.model_name = "MNIST"
    with pytest.raises(ConfigError, match="deploy.model_name"):
        infra.stack_parameters(bad)


# --- bootstrap and teardown on moto --------------------------------------------------

@pytest.fixture
def aws(monkeypatch):
    with moto_session(monkeypatch, REGION) as session:
        yield session


@pytest.fixture
def cfg():
    return PipelineConfig()


def test_bootstrap_creates_stack(aws, cfg):
    out = infra.bootstrap(cfg, aws)
    assert set(out) == set(infra.OUTPUT_KEYS)
    s3 = aws.client("s3")
    bucket = out["BucketName"]
    s3.head_bucket(Bucket=bucket)
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    iam = aws.client("iam")
    for key in infra.ROLE_OUTPUTS:
        iam.get_role(RoleName=out[key].rsplit("/", 1)[-1])
    # The Step Functions role may pass exactly the SageMaker role.
    sfn_role = out["StepFunctionsRoleArn"].rsplit("/", 1)[-1]
    names = iam.list_role_policies(RoleName=sfn_role)["PolicyNames"]
    doc = iam.get_role_policy(RoleName=sfn_role, PolicyName=names[0])["PolicyDocument"]
    if isinstance(doc, str):  # moto keeps CloudFormation's inline policies as a Python repr
        doc = ast.literal_eval(doc) if doc.startswith("{'") else json.loads(doc)
    passrole = [s for s in doc["Statement"] if s["Action"] == "iam:PassRole"]
    assert passrole[0]["Resource"] == out["SageMakerRoleArn"]
    assert infra.stack_outputs(cfg, aws) == out


def test_bootstrap_is_idempotent(aws, cfg):
    first = infra.bootstrap(cfg, aws)
    said = []
    second = infra.bootstrap(cfg, aws, announce=said.append)
    assert first == second
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    assert [s["StackName"] for s in stacks] == ["mlharness"]
    assert any("up to date" in m or "updating" in m for m in said)


def test_stack_outputs_without_stack(aws, cfg):
    with pytest.raises(infra.StackMissing, match="harness cloud bootstrap"):
        infra.stack_outputs(cfg, aws)


def test_teardown_deletes_exactly_the_project(aws, cfg):
    out = infra.bootstrap(cfg, aws)
    sm = aws.client("sagemaker")
    tags = infra.project_tags(cfg)
    role = out["SageMakerRoleArn"]
    container = {"Image": "123.dkr.ecr.us-east-1.amazonaws.com/x:1"}
    variant = lambda m: [{"VariantName": "AllTraffic", "ModelName": m,  # noqa: E731
                          "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]
    sm.create_model(ModelName="mnist-r1", ExecutionRoleArn=role, PrimaryContainer=container,
                    Tags=tags)
    sm.create_endpoint_config(EndpointConfigName="mnist-config-r1",
                              ProductionVariants=variant("mnist-r1"), Tags=tags)
    sm.create_endpoint(EndpointName="mnist-endpoint-r1", EndpointConfigName="mnist-config-r1",
                       Tags=tags)
    # Not ours: another prefix (even with our tag), and our prefix without the tag.
    sm.create_model(ModelName="other-r1", ExecutionRoleArn=role, PrimaryContainer=container,
                    Tags=tags)
    sm.create_model(ModelName="mnist-handmade", ExecutionRoleArn=role,
                    PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName="other-config",
                              ProductionVariants=variant("other-r1"))
    sm.create_endpoint(EndpointName="other-endpoint", EndpointConfigName="other-config")
    glue = aws.client("glue")
    glue.create_job(Name="mnist-etl", Role=out["GlueRoleArn"],
                    Command={"Name": "glueetl", "ScriptLocation": "s3://b/mnist_etl.py"},
                    Tags={infra.TAG_KEY: cfg.cloud.stack_name})
    glue.create_job(Name="someone-elses-job", Role=out["GlueRoleArn"],
                    Command={"Name": "glueetl", "ScriptLocation": "s3://b/x.py"})
    sfn = aws.client("stepfunctions")
    definition = json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}})
    sfn.create_state_machine(name=aws_mod.state_machine_name(cfg), definition=definition,
                             roleArn=out["StepFunctionsRoleArn"],
                             tags=[{"key": infra.TAG_KEY, "value": cfg.cloud.stack_name}])
    sfn.create_state_machine(name="other-pipeline", definition=definition,
                             roleArn=out["StepFunctionsRoleArn"])
    s3 = aws.client("s3")
    bucket = out["BucketName"]
    for body in (b"1", b"2"):  # two versions of one key
        s3.put_object(Bucket=bucket, Key="mlharness/runs/r1/data/raw/a.gz", Body=body)
    s3.put_object(Bucket=bucket, Key="mlharness/runs/r1/code/sourcedir.tar.gz", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="mlharness/runs/r1/code/sourcedir.tar.gz")  # marker

    deleted = infra.teardown(cfg, aws)

    assert deleted[:5] == ["endpoint mnist-endpoint-r1", "endpoint config mnist-config-r1",
                           "model mnist-r1", "Glue job mnist-etl",
                           "state machine mlharness-pipeline"]
    assert deleted[5] == f"bucket {bucket} emptied (4 object versions)"
    assert deleted[6].startswith("stack mlharness")
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == [
        "mnist-handmade", "other-r1"]
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["other-endpoint"]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [
        "other-config"]
    assert glue.list_jobs()["JobNames"] == ["someone-elses-job"]
    assert [m["name"] for m in sfn.list_state_machines()["stateMachines"]] == ["other-pipeline"]
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    cf = aws.client("cloudformation")
    live = [s for s in cf.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
    assert live == []
    iam_roles = [r["RoleName"] for r in aws.client("iam").list_roles()["Roles"]]
    assert not [r for r in iam_roles if r.startswith("mlharness-")]
    # Nothing left: a second teardown deletes nothing and succeeds.
    assert infra.teardown(cfg, aws) == []


def test_endpoint_url_reaches_every_client(cfg, monkeypatch):
    seen = []

    class FakeSession:
        region_name = REGION

        def client(self, service, **kw):
            seen.append((service, kw))
            return object()

    cfg.cloud.endpoint_url = "http://127.0.0.1:5000"
    for service in ("cloudformation", "s3", "sagemaker", "glue", "stepfunctions", "sts"):
        aws_mod.client(FakeSession(), service, cfg)
    assert all(kw == {"region_name": REGION, "endpoint_url": "http://127.0.0.1:5000"}
               for _, kw in seen)


def test_failed_stack_reports_the_failed_resources():
    from botocore.exceptions import WaiterError

    class Waiter:
        def wait(self, **kw):
            raise WaiterError("StackCreateComplete", "Waiter encountered a terminal failure",
                              {})

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

    with pytest.raises(infra.StackFailed) as exc:
        infra._wait(FakeCf(), "stack_create_complete", "mlharness", "create")
    msg = exc.value.message
    assert "Bucket (AWS::S3::Bucket): CREATE_FAILED: mlharness-123-us-east-1 already exists" in msg
    assert "ROLLBACK_IN_PROGRESS" not in msg


def test_cli_bootstrap_also_creates_the_glue_job_and_state_machine(aws, cfg):
    from rich.console import Console

    console = Console(record=True, width=200)
    assert infra.cli_bootstrap(cfg, console) == 0
    out = infra.stack_outputs(cfg, aws)
    job = aws.client("glue").get_job(JobName=cfg.etl.job_name)["Job"]
    script = job["Command"]["ScriptLocation"]
    assert script.startswith(f"s3://{out['BucketName']}/") and script.endswith("mnist_etl.py")
    bucket, key = script[len("s3://"):].split("/", 1)
    aws.client("s3").head_object(Bucket=bucket, Key=key)
    machines = aws.client("stepfunctions").list_state_machines()["stateMachines"]
    assert [m["name"] for m in machines] == [aws_mod.state_machine_name(cfg)]
    # (a second bootstrap updates both; moto 5.2.5 has no Glue UpdateJob, so the update
    # path is tested with a botocore hook in test_cloud_runners.py)
