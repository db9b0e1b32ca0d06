"""`harness cloud teardown` on moto: deletes exactly what the project created for the
pipeline's steps (name prefix *and* project tag), stops its running jobs and executions,
empties the bucket, deletes the stack; touches nothing else; a second run deletes nothing."""
import json

import pytest
from cloud_support import ACCOUNT, REGION, capture, training_only

from cloud_runners import stack
from cloud_runners.aws import session_for, state_machine_name
from cloud_runners.credentials import NoCredentials
from cloud_runners.teardown import teardown
from harness.errors import HarnessError

IMAGE = "123.dkr.ecr.us-east-1.amazonaws.com/x:1"
DEFINITION = json.dumps({"StartAt": "A", "States": {"A": {"Type": "Succeed"}}})


def _tags(project="mlharness"):
    return [{"Key": stack.TAG_KEY, "Value": project}]


def _jobs(aws, out, names_tags, status):
    """Training and processing jobs in moto, then given ``status``."""
    from moto.sagemaker.models import sagemaker_backends

    sm = aws.client("sagemaker")
    backend = sagemaker_backends[ACCOUNT][REGION]
    role = out["SageMakerRoleArn"]
    for name, tags in names_tags:
        if "-train-" in name:
            sm.create_training_job(
                TrainingJobName=name, RoleArn=role, Tags=tags,
                AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
                OutputDataConfig={"S3OutputPath": "s3://bkt/out"},
                ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                "VolumeSizeInGB": 10},
                StoppingCondition={"MaxRuntimeInSeconds": 60})
            backend.training_jobs[name].training_job_status = status
        else:
            sm.create_processing_job(
                ProcessingJobName=name, RoleArn=role, Tags=tags,
                AppSpecification={"ImageUri": IMAGE},
                ProcessingResources={"ClusterConfig": {"InstanceCount": 1,
                                                       "InstanceType": "ml.m5.xlarge",
                                                       "VolumeSizeInGB": 10}},
                StoppingCondition={"MaxRuntimeInSeconds": 60})
            backend.processing_jobs[name].processing_job_status = status


def stop_training_jobs(aws):
    """SageMaker StopTrainingJob, which moto 5.2.5 lacks: the job becomes Stopped; the
    calls are returned."""
    from botocore.awsrequest import AWSResponse
    from moto.sagemaker.models import sagemaker_backends

    calls = []

    def stop(params, **kw):
        calls.append(json.loads(params["body"]))
        job = sagemaker_backends[ACCOUNT][REGION].training_jobs[calls[-1]["TrainingJobName"]]
        job.training_job_status = "Stopped"
        return AWSResponse("https://aws", 200, {}, None), {}

    aws.events.register("before-call.sagemaker.StopTrainingJob", stop)
    return calls


def test_teardown_deletes_exactly_the_project(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    sm = aws.client("sagemaker")
    ours, theirs = _tags(), _tags("team-b")
    role = out["SageMakerRoleArn"]
    container = {"Image": IMAGE}

    def variant(model):
        return [{"VariantName": "AllTraffic", "ModelName": model, "InitialInstanceCount": 1,
                 "InstanceType": "ml.m5.large"}]

    # Running jobs of the project are stopped; finished ones and anyone else's are left.
    _jobs(aws, out, [("mnist-train-r1", ours), ("mnist-train-hand", []),
                     ("other-train-r1", ours), ("mnist-evaluate-r1", ours),
                     ("mnist-evaluate-hand", []), ("other-evaluate-r1", ours)], "InProgress")
    _jobs(aws, out, [("mnist-train-r0", ours), ("mnist-evaluate-r0", ours)], "Completed")
    stopped_training = stop_training_jobs(aws)

    sm.create_model(ModelName="mnist-r1", ExecutionRoleArn=role, PrimaryContainer=container,
                    Tags=ours)
    sm.create_endpoint_config(EndpointConfigName="mnist-config-r1",
                              ProductionVariants=variant("mnist-r1"), Tags=ours)
    sm.create_endpoint(EndpointName="mnist-endpoint-r1", EndpointConfigName="mnist-config-r1",
                       Tags=ours)
    # Not ours: another prefix (even with our tag), our prefix without the tag or with
    # another project's tag.
    sm.create_model(ModelName="other-r1", ExecutionRoleArn=role, PrimaryContainer=container,
                    Tags=ours)
    sm.create_model(ModelName="mnist-handmade", ExecutionRoleArn=role,
                    PrimaryContainer=container)
    sm.create_model(ModelName="mnist-teamb", ExecutionRoleArn=role, PrimaryContainer=container,
                    Tags=theirs)
    sm.create_endpoint_config(EndpointConfigName="other-config",
                              ProductionVariants=variant("other-r1"))
    sm.create_endpoint(EndpointName="other-endpoint", EndpointConfigName="other-config")
    sm.create_endpoint(EndpointName="mnist-endpoint-teamb", EndpointConfigName="other-config",
                       Tags=theirs)

    glue = aws.client("glue")
    glue.create_job(Name="mnist-etl", Role=out["GlueRoleArn"],
                    Command={"Name": "glueetl", "ScriptLocation": "s3://bkt/mnist_etl.py"},
                    Tags={stack.TAG_KEY: cfg.cloud.stack_name})
    glue.create_job(Name="someone-elses-job", Role=out["GlueRoleArn"],
                    Command={"Name": "glueetl", "ScriptLocation": "s3://bkt/x.py"})

    # State machines are found by the project tag: this pipeline's and another pipeline's
    # of the project; not an untagged one nor another project's.
    sfn = aws.client("stepfunctions")
    sfn_role = out["StepFunctionsRoleArn"]
    machines = {}
    for name, tags in [(state_machine_name(cfg, wf.name), "mlharness"),
                       ("mlharness-digits", "mlharness"), ("other-pipeline", None),
                       ("team-b-mnist", "team-b")]:
        machines[name] = sfn.create_state_machine(
            name=name, definition=DEFINITION, roleArn=sfn_role,
            tags=[{"key": stack.TAG_KEY, "value": tags}] if tags else [])["stateMachineArn"]
    running = sfn.start_execution(stateMachineArn=machines["mlharness-mnist"],
                                  name="20250101-000000-abcd", input="{}")["executionArn"]
    theirs_running = sfn.start_execution(stateMachineArn=machines["team-b-mnist"],
                                         name="x", input="{}")["executionArn"]

    s3 = aws.client("s3")
    bucket = out["BucketName"]
    for body in (b"1", b"2"):  # two versions of one key
        s3.put_object(Bucket=bucket, Key="mlharness/runs/r1/data/raw/a.gz", Body=body)
    s3.put_object(Bucket=bucket, Key="mlharness/runs/r1/code/sourcedir.tar.gz", Body=b"x")
    s3.delete_object(Bucket=bucket, Key="mlharness/runs/r1/code/sourcedir.tar.gz")  # marker

    stopped_executions = capture(aws, "stepfunctions.StopExecution")
    said = []
    deleted = teardown(cfg, aws, wf, announce=said.append)

    assert deleted[:6] == ["training job mnist-train-r1 (stopped)",
                           "processing job mnist-evaluate-r1 (stopped)",
                           "endpoint mnist-endpoint-r1", "endpoint config mnist-config-r1",
                           "model mnist-r1", "Glue job mnist-etl"]
    assert sorted(deleted[6:9]) == ["execution 20250101-000000-abcd (stopped)",
                                    "state machine mlharness-digits",
                                    "state machine mlharness-mnist"]
    assert deleted[9:] == [f"bucket {bucket} emptied (4 object versions)",
                           "stack mlharness (bucket, roles)"]
    assert said == [f"deleted {d}" for d in deleted[:9]] + deleted[9:]

    assert stopped_training == [{"TrainingJobName": "mnist-train-r1"}]
    statuses = {j["ProcessingJobName"]: j["ProcessingJobStatus"]
                for j in sm.list_processing_jobs()["ProcessingJobSummaries"]}
    assert statuses == {"mnist-evaluate-r1": "Stopped", "mnist-evaluate-hand": "InProgress",
                        "other-evaluate-r1": "InProgress", "mnist-evaluate-r0": "Completed"}
    assert sorted(m["ModelName"] for m in sm.list_models()["Models"]) == [
        "mnist-handmade", "mnist-teamb", "other-r1"]
    assert sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]) == [
        "mnist-endpoint-teamb", "other-endpoint"]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == [
        "other-config"]
    assert glue.list_jobs()["JobNames"] == ["someone-elses-job"]
    assert sorted(m["name"] for m in sfn.list_state_machines()["stateMachines"]) == [
        "other-pipeline", "team-b-mnist"]
    assert [c["executionArn"] for c in stopped_executions] == [running]
    assert sfn.describe_execution(executionArn=theirs_running)["status"] == "RUNNING"
    assert bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    cf = aws.client("cloudformation")
    assert [s for s in cf.list_stacks()["StackSummaries"]
            if s["StackStatus"] != "DELETE_COMPLETE"] == []
    assert not [r for r in aws.client("iam").list_roles()["Roles"]
                if r["RoleName"].startswith("mlharness-")]
    # Nothing left: a second teardown deletes nothing and succeeds.
    assert teardown(cfg, aws, wf) == []


def test_another_projects_glue_job_is_left_and_reported(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    glue = aws.client("glue")
    glue.create_job(Name="mnist-etl", Role=out["GlueRoleArn"],
                    Command={"Name": "glueetl", "ScriptLocation": "s3://bkt/mnist_etl.py"},
                    Tags={stack.TAG_KEY: "team-b"})
    with pytest.raises(HarnessError) as exc:
        teardown(cfg, aws, wf)
    msg = exc.value.message
    assert "Glue job mnist-etl: tagged for project 'team-b', left alone" in msg
    assert "stack mlharness (bucket, roles)" in msg  # what was deleted meanwhile
    assert "run `harness cloud teardown` again" in msg
    assert glue.list_jobs()["JobNames"] == ["mnist-etl"]


def test_a_pipeline_without_hosting_leaves_endpoints_alone(aws, cfg):
    wf = training_only()
    out = stack.bootstrap(cfg, aws, wf)
    sm = aws.client("sagemaker")
    sm.create_model(ModelName="mnist-r1", ExecutionRoleArn=out["SageMakerRoleArn"],
                    PrimaryContainer={"Image": IMAGE}, Tags=_tags())
    assert teardown(cfg, aws, wf) == [
        f"bucket {out['BucketName']} emptied (0 object versions)",
        "stack mlharness (bucket, roles)"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["mnist-r1"]


def test_teardown_without_credentials_touches_nothing(no_aws, cfg, wf):
    with pytest.raises(NoCredentials):
        teardown(cfg, session_for(cfg), wf)
    assert no_aws == []


def test_a_tuning_pipelines_running_tuning_jobs_are_stopped(aws, cfg):
    """Tuning jobs of the project (its tuning prefix and tag) still InProgress are stopped
    (which stops their trials); finished ones and anyone else's are left."""
    from botocore.awsrequest import AWSResponse
    from cloud_support import workflow
    from moto.sagemaker.models import sagemaker_backends

    cfg.tune.enabled = True
    wf = workflow(cfg)
    assert wf.name_prefixes()["tuning-job"] == "mnist-tune"
    out = stack.bootstrap(cfg, aws, wf)
    sm = aws.client("sagemaker")
    backend = sagemaker_backends[ACCOUNT][REGION]
    definition = {"AlgorithmSpecification": {"TrainingImage": IMAGE,
                                             "TrainingInputMode": "File"},
                  "RoleArn": out["SageMakerRoleArn"],
                  "OutputDataConfig": {"S3OutputPath": "s3://bkt/out"},
                  "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                     "VolumeSizeInGB": 10},
                  "StoppingCondition": {"MaxRuntimeInSeconds": 60}}
    config = {"Strategy": "Random", "ResourceLimits": {"MaxNumberOfTrainingJobs": 2,
                                                       "MaxParallelTrainingJobs": 1}}
    for name, tags, status in [("mnist-tune-r1", _tags(), "InProgress"),
                               ("mnist-tune-r0", _tags(), "Completed"),
                               ("mnist-tune-hand", [], "InProgress"),
                               ("mnist-tune-teamb", _tags("team-b"), "InProgress"),
                               ("other-tune-r1", _tags(), "InProgress")]:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name, HyperParameterTuningJobConfig=config,
            TrainingJobDefinition=definition, Tags=tags)
        backend.hyper_parameter_tuning_jobs[name].hyper_parameter_tuning_job_status = status
    calls = []

    def stop(params, **kw):  # StopHyperParameterTuningJob, which moto 5.2.5 lacks
        calls.append(json.loads(params["body"]))
        job = backend.hyper_parameter_tuning_jobs[calls[-1]["HyperParameterTuningJobName"]]
        job.hyper_parameter_tuning_job_status = "Stopped"
        return AWSResponse("https://aws", 200, {}, None), {}

    aws.events.register("before-call.sagemaker.StopHyperParameterTuningJob", stop)
    deleted = teardown(cfg, aws, wf)
    assert deleted[0] == "tuning job mnist-tune-r1 (stopped)"
    assert calls == [{"HyperParameterTuningJobName": "mnist-tune-r1"}]
    statuses = {n: j.hyper_parameter_tuning_job_status
                for n, j in backend.hyper_parameter_tuning_jobs.items()}
    assert statuses == {"mnist-tune-r1": "Stopped", "mnist-tune-r0": "Completed",
                        "mnist-tune-hand": "InProgress", "mnist-tune-teamb": "InProgress",
                        "other-tune-r1": "InProgress"}


def test_the_projects_monitoring_schedules_go_with_their_group(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    scheduler = aws.client("scheduler")
    scheduler.create_schedule_group(Name="mlharness", Tags=_tags())
    scheduler.create_schedule_group(Name="team-b", Tags=_tags("team-b"))
    target = {"Arn": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:mlharness-monitor-r1",
              "RoleArn": out["SchedulerRoleArn"]}
    for group in ("mlharness", "team-b"):
        scheduler.create_schedule(Name=f"{group}-monitor-r1", GroupName=group,
                                  ScheduleExpression="rate(1 hour)", Target=target,
                                  FlexibleTimeWindow={"Mode": "OFF"})
    deleted = teardown(cfg, aws, wf)
    assert "schedule group mlharness (1 schedule(s): mlharness-monitor-r1)" in deleted
    groups = [g["Name"] for g in scheduler.list_schedule_groups()["ScheduleGroups"]]
    assert "mlharness" not in groups and "team-b" in groups
    assert [s["Name"] for s in scheduler.list_schedules(GroupName="team-b")["Schedules"]] == [
        "team-b-monitor-r1"]
