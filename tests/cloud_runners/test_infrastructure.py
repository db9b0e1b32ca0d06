"""The CloudFormation template (``infrastructure.yaml``): lint-clean, a private encrypted
bucket, and four roles that allow what the compiled state machine and the steps' jobs
do, scoped to the pipeline's name prefixes and the project's key prefix, and nothing
else. Read from the file; no AWS."""
import fnmatch
import json
import re

import pytest
from cloud_support import ACCOUNT, REGION

from cloud_runners.plan import plan
from cloud_runners.stack import OUTPUT_KEYS, PREFIX_PARAMETERS, TEMPLATE, stack_parameters

BUCKET = f"mlharness-{ACCOUNT}-{REGION}"


@pytest.fixture(scope="module")
def template():
    from cfnlint.decode import decode_str

    tpl, matches = decode_str(TEMPLATE.read_text())
    assert not matches, matches
    return tpl


def _resources(tpl, kind):
    return {k: r for k, r in tpl["Resources"].items() if r["Type"] == kind}


def _statements(role):
    for pol in role["Properties"].get("Policies", []):
        yield from pol["PolicyDocument"]["Statement"]


def _listify(x):
    return x if isinstance(x, list) else [x]


def test_cfn_lint_clean():
    import cfnlint.api

    matches = cfnlint.api.lint(TEMPLATE.read_text(), regions=[REGION, "eu-west-1"])
    # No errors, no warnings, no informational findings either.
    assert [str(m) for m in matches] == []


def test_parameters_are_the_workflows_name_prefixes(template, cfg, wf):
    params = template["Parameters"]
    assert set(params) == {"ProjectName", "KeyPrefix", *PREFIX_PARAMETERS}
    # The defaults describe the MNIST pipeline, and every value bootstrap passes fits.
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack_parameters(cfg, wf)}
    assert {k: p["Default"] for k, p in params.items()} == values
    for key, value in values.items():
        assert re.fullmatch(params[key]["AllowedPattern"], value), key


def test_outputs(template):
    assert set(template["Outputs"]) == set(OUTPUT_KEYS)


def test_bucket_encrypted_private_versioned_tls_only(template):
    (name, bucket), = _resources(template, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert {"Key": "mlharness:project", "Value": {"Ref": "ProjectName"}} in props["Tags"]
    (_, policy), = _resources(template, "AWS::S3::BucketPolicy").items()
    assert policy["Properties"]["Bucket"] == {"Ref": name}
    deny = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"]
    assert any(s["Condition"]["Bool"]["aws:SecureTransport"] in ("false", False) for s in deny)


def test_roles_least_privilege(template):
    roles = _resources(template, "AWS::IAM::Role")
    assert set(roles) == {"StepFunctionsRole", "GlueRole", "SageMakerRole", "SchedulerRole"}
    services = {k: r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]
                ["Service"] for k, r in roles.items()}
    assert services == {"StepFunctionsRole": "states.amazonaws.com",
                        "GlueRole": "glue.amazonaws.com",
                        "SageMakerRole": "sagemaker.amazonaws.com",
                        "SchedulerRole": "scheduler.amazonaws.com"}
    # Only inline policies; no managed policy at all, so no *FullAccess.
    assert "FullAccess" not in json.dumps(template["Resources"])
    assert not _resources(template, "AWS::IAM::ManagedPolicy")
    # Actions that may have Resource "*": those without resource-level permissions.
    star_ok = {"ecr:GetAuthorizationToken", "sagemaker:ListTags", "cloudwatch:PutMetricData"}
    for name, role in roles.items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        assert {"Key": "mlharness:project", "Value": {"Ref": "ProjectName"}} in \
            role["Properties"]["Tags"]
        for st in _statements(role):
            assert st["Effect"] == "Allow"
            for action in _listify(st["Action"]):
                assert action != "*" and not action.endswith(":*"), (name, action)
            if "*" in _listify(st["Resource"]):
                assert set(_listify(st["Action"])) <= star_ok, (name, st)
            if "cloudwatch:PutMetricData" in _listify(st["Action"]):
                assert "cloudwatch:namespace" in json.dumps(st["Condition"])


def test_passrole_only_the_sagemaker_role_to_sagemaker(template):
    roles = _resources(template, "AWS::IAM::Role")
    passes = [(name, st) for name, role in roles.items() for st in _statements(role)
              if "iam:PassRole" in _listify(st["Action"])]
    assert len(passes) == 1
    name, st = passes[0]
    assert name == "StepFunctionsRole"
    assert st["Resource"] == {"Fn::GetAtt": ["SageMakerRole", "Arn"]}
    assert st["Condition"]["StringEquals"]["iam:PassedToService"] == "sagemaker.amazonaws.com"


def test_step_functions_statements_name_the_prefixes(template):
    by_sid = {st["Sid"]: st for st in _statements(template["Resources"]["StepFunctionsRole"])}
    assert ":job/${GlueJobName}" in json.dumps(by_sid["GlueJobRun"]["Resource"])
    assert set(by_sid["GlueJobRun"]["Action"]) == {
        "glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"}
    assert "training-job/${TrainingJobPrefix}-*" in json.dumps(by_sid["TrainingJob"])
    assert "processing-job/${ProcessingJobPrefix}-*" in json.dumps(by_sid["ProcessingJob"])
    assert set(by_sid["ProcessingJob"]["Action"]) == {
        "sagemaker:CreateProcessingJob", "sagemaker:DescribeProcessingJob",
        "sagemaker:StopProcessingJob", "sagemaker:AddTags"}
    assert "model/${ModelPrefix}-*" in json.dumps(by_sid["Model"])
    assert "endpoint-config/${EndpointConfigPrefix}-*" in json.dumps(by_sid["EndpointConfig"])
    assert "endpoint/${EndpointPrefix}-*" in json.dumps(by_sid["Endpoint"])
    # A gate reads the JSON file a step wrote: read-only, the project's runs only.
    gate = by_sid["GateReadsRunFiles"]
    assert gate["Action"] == "s3:GetObject"
    assert gate["Resource"] == {"Fn::Sub": "${Bucket.Arn}/${KeyPrefix}/*"}
    events = by_sid["SyncEventsRule"]
    assert set(events["Action"]) == {"events:PutTargets", "events:PutRule", "events:DescribeRule"}
    assert "rule/StepFunctionsGetEventsForSageMakerTrainingJobsRule" in json.dumps(events)
    assert "rule/StepFunctionsGetEventsForSageMakerProcessingJobsRule" in json.dumps(events)
    assert "rule/StepFunctionsGetEventsForSageMakerTuningJobsRule" in json.dumps(events)
    tuning = by_sid["TuningJob"]
    assert tuning["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:sagemaker:${AWS::Region}:"
                                  "${AWS::AccountId}:hyper-parameter-tuning-job/"
                                  "${TuningJobPrefix}-*"}
    assert set(tuning["Action"]) == {
        "sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
        "sagemaker:StopHyperParameterTuningJob",
        "sagemaker:ListTrainingJobsForHyperParameterTuningJob", "sagemaker:AddTags"}


def test_data_roles_scoped_to_the_project_prefix(template):
    glue = {st["Sid"]: st for st in _statements(template["Resources"]["GlueRole"])}
    assert glue["ReadCodeAndRaw"]["Action"] == "s3:GetObject"
    assert "log-group:/aws-glue/*" in json.dumps(glue["GlueLogs"])
    sm = {st["Sid"]: st for st in _statements(template["Resources"]["SageMakerRole"])}
    assert "s3:PutObject" not in json.dumps(sm["ReadProcessedAndCode"])
    assert "s3:DeleteObject" not in json.dumps(sm)
    out = json.dumps(sm["ReadWriteProcessingOutput"]["Resource"])
    assert "/${KeyPrefix}/*/evaluation/*" in out and "/${KeyPrefix}/*/monitoring/*" in out
    assert "repository/tensorflow-training" in json.dumps(sm["PullDeepLearningContainers"])
    assert "log-group:/aws/sagemaker/*" in json.dumps(sm["SageMakerLogs"])
    # No writes outside the bucket's project prefix.
    for role in ("GlueRole", "SageMakerRole"):
        for st in _statements(template["Resources"][role]):
            if any(a in ("s3:PutObject", "s3:DeleteObject") for a in _listify(st["Action"])):
                assert "${KeyPrefix}/" in json.dumps(st["Resource"])


# --- the roles against what the pipeline does -----------------------------------------

def _patterns(resource, subs):
    """The ARN patterns of a statement's Resource, parameters substituted."""
    out = []
    for r in _listify(resource):
        if isinstance(r, dict) and "Fn::Sub" in r:
            r = re.sub(r"\$\{([^}]+)\}", lambda m: subs[m.group(1)], r["Fn::Sub"])
        if isinstance(r, str):
            out.append(r)
    return out


def allows(role, action, arn, subs):
    return any(action in _listify(st["Action"])
               and any(fnmatch.fnmatchcase(arn, p) for p in _patterns(st["Resource"], subs))
               for st in _statements(role))


@pytest.fixture
def subs(cfg, wf):
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack_parameters(cfg, wf)}
    return {**values, "AWS::Partition": "aws", "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT, "Bucket.Arn": f"arn:aws:s3:::{BUCKET}"}


def _needed(resource, params):
    """The IAM actions a Task state needs: its API call, and for .sync what Step Functions
    does to follow the job."""
    tail = resource.split(":::", 1)[1].removeprefix("aws-sdk:")
    service, action = tail.split(":")
    sync = action.endswith(".sync")
    action = action.removesuffix(".sync")
    out = {f"{service}:{action[0].upper()}{action[1:]}"}
    if sync and service == "glue":
        out |= {"glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"}
    if sync and service == "sagemaker":
        noun = action.removeprefix("create")
        out |= {f"sagemaker:Describe{noun}", f"sagemaker:Stop{noun}"}
    if "Tags" in params:
        out.add(f"{service}:AddTags")
    return out


def test_state_machine_role_allows_every_call_of_the_compiled_definition(template, cfg, wf,
                                                                         subs):
    p = plan(cfg, wf)
    role = template["Resources"]["StepFunctionsRole"]
    actions = {a for st in _statements(role) for a in _listify(st["Action"])}
    tasks = [s for s in p["state_machine"]["definition"]["States"].values()
             if s["Type"] == "Task"]
    needed = set().union(*(_needed(s["Resource"], s["Parameters"]) for s in tasks))
    assert needed >= {"glue:StartJobRun", "sagemaker:CreateTrainingJob",
                      "sagemaker:CreateProcessingJob", "s3:GetObject", "sagemaker:CreateModel",
                      "sagemaker:CreateEndpointConfig", "sagemaker:CreateEndpoint",
                      "sagemaker:DescribeEndpoint"}
    assert needed <= actions, needed - actions
    # ... on the resources this pipeline's runs create, and not on other names.
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    req = p["requests"]
    named = [("glue:StartJobRun", f"arn:aws:glue:{REGION}:{ACCOUNT}:job/{req['etl']['JobName']}"),
             ("sagemaker:CreateTrainingJob",
              f"{arn}:training-job/{req['train']['TrainingJobName']}"),
             ("sagemaker:CreateProcessingJob",
              f"{arn}:processing-job/{req['evaluate']['ProcessingJobName']}"),
             ("sagemaker:CreateModel", f"{arn}:model/{req['model']['ModelName']}"),
             ("sagemaker:CreateEndpointConfig",
              f"{arn}:endpoint-config/{req['endpoint-config']['EndpointConfigName']}"),
             ("sagemaker:CreateEndpoint", f"{arn}:endpoint/{req['endpoint']['EndpointName']}"),
             ("sagemaker:CreateEndpoint",
              f"{arn}:endpoint-config/{req['endpoint']['EndpointConfigName']}"),
             ("sagemaker:DescribeEndpoint", f"{arn}:endpoint/{req['endpoint']['EndpointName']}"),
             ("s3:GetObject",
              req["gate"]["Uri"].replace("s3://<bucket>", f"arn:aws:s3:::{BUCKET}"))]
    for action, resource in named:
        assert allows(role, action, resource, subs), (action, resource)
    for action, resource in [("glue:StartJobRun", f"arn:aws:glue:{REGION}:{ACCOUNT}:job/other"),
                             ("sagemaker:CreateTrainingJob", f"{arn}:training-job/other-1"),
                             ("sagemaker:CreateProcessingJob", f"{arn}:processing-job/other-1"),
                             ("sagemaker:CreateModel", f"{arn}:model/other-1"),
                             ("sagemaker:CreateEndpoint", f"{arn}:endpoint/other-1"),
                             ("s3:GetObject", f"arn:aws:s3:::{BUCKET}/elsewhere/x.json"),
                             ("s3:GetObject", "arn:aws:s3:::another-bucket/mlharness/runs/x")]:
        assert not allows(role, action, resource, subs), (action, resource)


def test_job_roles_allow_exactly_the_data_the_steps_read_and_write(template, cfg, wf, subs):
    p = plan(cfg, wf)
    req = p["requests"]

    def obj(uri, *rest):
        return "/".join([uri.replace("s3://<bucket>", f"arn:aws:s3:::{BUCKET}"), *rest])

    glue = template["Resources"]["GlueRole"]
    sm = template["Resources"]["SageMakerRole"]
    job = req["train"]["TrainingJobName"]
    model = obj(req["train"]["OutputDataConfig"]["S3OutputPath"], job, "output", "model.tar.gz")
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in req["evaluate"]["ProcessingInputs"]}
    evaluation = req["evaluate"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    allowed = [
        (glue, "s3:GetObject", obj(p["setup"]["glue:CreateJob mnist-etl"]["Command"]
                                   ["ScriptLocation"])),
        (glue, "s3:GetObject", obj(req["prepare"]["OutputUri"], "train", "part-00000.parquet")),
        (glue, "s3:PutObject", obj(req["etl"]["Arguments"]["--output_uri"], "train", "p.parquet")),
        (sm, "s3:GetObject", obj(json.loads(req["train"]["HyperParameters"]["sagemaker_submit_directory"]))),
        *[(sm, "s3:GetObject", obj(c["DataSource"]["S3DataSource"]["S3Uri"], "p.parquet"))
          for c in req["train"]["InputDataConfig"]],
        (sm, "s3:PutObject", model),
        (sm, "s3:GetObject", model),
        (sm, "s3:GetObject", obj(inputs["code"], "evaluate.py")),
        (sm, "s3:GetObject", obj(inputs["test"], "p.parquet")),
        (sm, "s3:PutObject", obj(evaluation, "evaluation.json")),
    ]
    for role, action, resource in allowed:
        assert allows(role, action, resource, subs), (action, resource)
    denied = [
        (glue, "s3:PutObject", obj(req["prepare"]["OutputUri"], "train", "x.parquet")),
        (glue, "s3:PutObject", model),
        (sm, "s3:PutObject", obj(req["etl"]["Arguments"]["--output_uri"], "train", "x")),
        (sm, "s3:PutObject", obj(json.loads(req["train"]["HyperParameters"]["sagemaker_submit_directory"]))),
        (sm, "s3:GetObject", obj(req["prepare"]["OutputUri"], "train", "part-00000.parquet")),
        (sm, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/outside/the/prefix"),
        (glue, "s3:GetObject", f"arn:aws:s3:::{BUCKET}/outside/the/prefix"),
    ]
    for role, action, resource in denied:
        assert not allows(role, action, resource, subs), (action, resource)


def test_state_machine_role_allows_a_tuning_pipelines_calls_and_no_other_names(template, cfg):
    from cloud_support import workflow

    cfg.tune.enabled = True
    wf = workflow(cfg)
    values = {p["ParameterKey"]: p["ParameterValue"] for p in stack_parameters(cfg, wf)}
    subs = {**values, "AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
            "Bucket.Arn": f"arn:aws:s3:::{BUCKET}"}
    p = plan(cfg, wf)
    role = template["Resources"]["StepFunctionsRole"]
    (tune,) = [s for s in p["state_machine"]["definition"]["States"].values()
               if s.get("Resource", "").endswith("createHyperParameterTuningJob.sync")]
    needed = _needed(tune["Resource"], tune["Parameters"])
    assert needed == {"sagemaker:CreateHyperParameterTuningJob",
                      "sagemaker:DescribeHyperParameterTuningJob",
                      "sagemaker:StopHyperParameterTuningJob", "sagemaker:AddTags"}
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    name = p["requests"]["tune"]["HyperParameterTuningJobName"]
    for action in needed:
        assert allows(role, action, f"{arn}:hyper-parameter-tuning-job/{name}", subs), action
        assert not allows(role, action, f"{arn}:hyper-parameter-tuning-job/other-1", subs)
    # SageMaker names the trials <tuning job>-NNN-xxxxxxxx: the training-job statement
    assert allows(role, "sagemaker:DescribeTrainingJob",
                  f"{arn}:training-job/{name}-001-0a1b2c3d", subs)
    assert allows(role, "events:PutRule", f"arn:aws:events:{REGION}:{ACCOUNT}:rule/"
                  "StepFunctionsGetEventsForSageMakerTuningJobsRule", subs)


def test_the_monitoring_workflow_may_start_only_the_projects_pipelines(template, cfg, subs):
    """The drift monitor's state machine (check, gate, retrain) needs no more than the
    roles allow: its processing job shares the evaluation prefix, the retrain starts the
    project's pipeline state machine and nothing else; the scheduler role starts only the
    project's state machines; endpoints write their captures, the check reads them."""
    from harness.monitor_pipeline import monitoring_workflow

    base = f"s3://{BUCKET}/mlharness/runs/r1"
    mon = monitoring_workflow(cfg, capture_uri=f"{base}/capture",
                              model_data=f"{base}/training/model.tar.gz", endpoint_name="e",
                              retrain=cfg, retrain_from={"BaseUri": base,
                                                         "Prepare": {"Uri": f"{base}/raw"}},
                              name="monitor-r1")
    p = plan(cfg, mon)
    sfn_role = template["Resources"]["StepFunctionsRole"]
    actions = {a for st in _statements(sfn_role) for a in _listify(st["Action"])}
    tasks = [s for s in p["state_machine"]["definition"]["States"].values()
             if s["Type"] == "Task"]
    needed = set().union(*(_needed(s["Resource"], s["Parameters"]) for s in tasks))
    assert {"sagemaker:CreateProcessingJob", "s3:GetObject", "states:StartExecution"} <= needed
    assert needed <= actions, needed - actions
    sm = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine"
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}"
    job = p["requests"]["check"]["ProcessingJobName"]
    assert allows(sfn_role, "sagemaker:CreateProcessingJob", f"{arn}:processing-job/{job}",
                  subs)
    scheduler = template["Resources"]["SchedulerRole"]
    for role in (sfn_role, scheduler):
        assert allows(role, "states:StartExecution", f"{sm}:mlharness-mnist", subs)
        assert allows(role, "states:StartExecution", f"{sm}:mlharness-monitor-r1", subs)
        assert not allows(role, "states:StartExecution", f"{sm}:someone-else", subs)
    assert [a for st in _statements(scheduler) for a in _listify(st["Action"])] == [
        "states:StartExecution"]
    sm_role = template["Resources"]["SageMakerRole"]
    capture = f"arn:aws:s3:::{BUCKET}/mlharness/runs/r1/capture/e/AllTraffic/2026/12/01/15/x.jsonl"
    assert allows(sm_role, "s3:PutObject", capture, subs)
    assert allows(sm_role, "s3:GetObject", capture, subs)
    assert not allows(sm_role, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/elsewhere/x", subs)
