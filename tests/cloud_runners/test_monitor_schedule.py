"""`harness cloud monitor --schedule` on moto: the monitoring state machine is deployed
with its code under the schedule's home, and an EventBridge Scheduler schedule in the
project's (tagged) group starts it with the stack's scheduler role and an input whose run
id EventBridge Scheduler fills in per execution. Bad expressions and local runs are
refused before anything is created."""
import json

import pytest
from cloud_support import ACCOUNT, REGION

from cloud_runners import stack
from cloud_runners.monitor_schedule import (SCHEDULER_EXECUTION_ID, monitored, schedule,
                                            static_before, unschedule)
from harness.errors import ConfigError, HarnessError
from harness.monitor_pipeline import monitoring_workflow

BUCKET = f"mlharness-{ACCOUNT}-{REGION}"
BASE = f"s3://{BUCKET}/mlharness/runs/r1"


def monitor(cfg, **kw):
    return monitoring_workflow(cfg, capture_uri=f"{BASE}/capture",
                               model_data=f"{BASE}/training/model.tar.gz",
                               endpoint_name="mnist-endpoint-r1", name="monitor-r1", **kw)


def test_the_schedule_starts_the_deployed_monitor_with_a_fresh_run_id(aws, cfg, wf):
    out = stack.bootstrap(cfg, aws, wf)
    made = schedule(cfg, aws, monitor(cfg), "r1", "rate(1 hour)")
    sfn = aws.client("stepfunctions")
    assert made["state_machine"].endswith(":stateMachine:mlharness-monitor-r1")
    assert sfn.describe_state_machine(stateMachineArn=made["state_machine"])["roleArn"] == \
        out["StepFunctionsRoleArn"]
    scheduler = aws.client("scheduler")
    group = scheduler.get_schedule_group(Name="mlharness")
    tags = scheduler.list_tags_for_resource(ResourceArn=group["Arn"])["Tags"]
    assert {"Key": stack.TAG_KEY, "Value": "mlharness"} in tags
    got = scheduler.get_schedule(Name="mlharness-monitor-r1", GroupName="mlharness")
    assert got["ScheduleExpression"] == "rate(1 hour)" and got["State"] == "ENABLED"
    target = got["Target"]
    assert target["Arn"] == made["state_machine"]
    assert target["RoleArn"] == out["SchedulerRoleArn"]
    doc = json.loads(target["Input"])
    # every execution gets its own run id (its processing job's name, its results folder)
    assert doc["RunId"] == SCHEDULER_EXECUTION_ID
    assert doc["BaseUri"] == f"s3://{BUCKET}/mlharness/runs/monitor-r1"
    assert doc["Stage"] == {"Uris": {"endpointdata": f"{BASE}/capture/mnist-endpoint-r1",
                                     "baseline": f"{BASE}/training/model.tar.gz"}}
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(
        Bucket=BUCKET, Prefix="mlharness/runs/monitor-r1/code/")["Contents"]]
    assert "mlharness/runs/monitor-r1/code/check/drift_check.py" in keys
    # again with another expression: the same schedule, updated
    schedule(cfg, aws, monitor(cfg), "r1", "rate(30 minutes)")
    listed = scheduler.list_schedules(GroupName="mlharness")["Schedules"]
    assert [s["Name"] for s in listed] == ["mlharness-monitor-r1"]
    assert scheduler.get_schedule(Name="mlharness-monitor-r1", GroupName="mlharness")[
        "ScheduleExpression"] == "rate(30 minutes)"
    assert unschedule(cfg, aws, "r1") is True
    assert unschedule(cfg, aws, "r1") is False


@pytest.mark.parametrize("expression", ["every hour", "rate(1 fortnight)", "", "at(tomorrow)"])
def test_a_bad_expression_is_refused_before_anything_is_created(aws, cfg, wf, expression):
    stack.bootstrap(cfg, aws, wf)
    with pytest.raises(ConfigError) as e:
        schedule(cfg, aws, monitor(cfg), "r1", expression)
    assert "--schedule" in str(e.value) and "rate(1 hour)" in str(e.value)
    assert not [m for m in aws.client("stepfunctions").list_state_machines()["stateMachines"]
                if "monitor" in m["name"]]


def test_a_schedule_cannot_upload_local_files(cfg):
    local = monitoring_workflow(cfg, capture_uri="file:///tmp/capture",
                                model_data="file:///tmp/model.tar.gz", endpoint_name="e")
    with pytest.raises(ConfigError) as e:
        static_before(local)
    assert "stage" in str(e.value) and "S3" in str(e.value)


def test_a_local_run_is_pointed_to_harness_monitor(cfg, tmp_path):
    steps = tmp_path / "runs" / "r1" / "steps"
    for step, doc in (("config", {"EndpointConfigName": "c1", "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "m1"}],
            "DataCaptureConfig": {"DestinationS3Uri": "file:///x/capture"}}),
            ("model", {"ModelName": "m1", "PrimaryContainer": {
                "ModelDataUrl": "file:///x/model.tar.gz"}})):
        (steps / step).mkdir(parents=True)
        (steps / step / "input.json").write_text(json.dumps(doc))
    (tmp_path / "runs" / "r1" / "record.json").write_text("{}")
    with pytest.raises(HarnessError) as e:
        monitored(cfg, "r1")
    assert "harness monitor r1" in str(e.value) and "file:///x/capture" in str(e.value)
