"""Step Functions on moto: the workflow's state machine created or updated in place, one
execution started per run id, its events streamed."""
import json

import pytest
from cloud_support import REGION, Images, workflow

from cloud_runners.aws import state_machine_name
from cloud_runners.stepfunctions import (
    console_url,
    find_state_machine,
    start_execution,
    stream_events,
    upsert_state_machine,
)
from harness.asl import execution_input
from harness.errors import HarnessError

SFN_ROLE = "arn:aws:iam::123456789012:role/mlharness-states"
SM_ROLE = "arn:aws:iam::123456789012:role/mlharness-sagemaker"
RUN = "20261129-120000-ab12"
PREPARED = {"RawUri": "s3://bkt/p/data/raw", "ImageHeight": 28, "ImageWidth": 28,
            "NumClasses": 10}


def definition(wf):
    return wf.definition(wf.build_context("cloud", Images(), role=SM_ROLE))


def test_upsert_is_idempotent_and_updates_in_place(aws, cfg, wf):
    name = state_machine_name(cfg, wf.name)
    arn = upsert_state_machine(cfg, aws, name, definition(wf), SFN_ROLE, run_id=RUN)
    sfn = aws.client("stepfunctions")
    described = sfn.describe_state_machine(stateMachineArn=arn)
    assert described["name"] == name == "mlharness-mnist"
    assert json.loads(described["definition"]) == definition(wf)
    assert described["roleArn"] == SFN_ROLE
    tags = sfn.list_tags_for_resource(resourceArn=arn)["tags"]
    assert {"key": "mlharness:project", "value": "mlharness"} in tags
    assert {"key": "mlharness:run", "value": RUN} in tags

    cfg.evaluate.threshold = 0.5
    changed = definition(workflow(cfg))
    assert upsert_state_machine(cfg, aws, name, changed, SFN_ROLE) == arn
    assert find_state_machine(sfn, name) == arn
    assert len(sfn.list_state_machines()["stateMachines"]) == 1
    stored = json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"])
    assert stored["States"]["gate-check"]["Choices"][1]["And"][1][
        "NumericGreaterThanEquals"] == 0.5
    assert stored["States"]["train"]["Parameters"]["RoleArn"] == SM_ROLE


def test_start_execution_and_stream_its_events(aws, cfg, wf):
    arn = upsert_state_machine(cfg, aws, state_machine_name(cfg, wf.name), definition(wf),
                               SFN_ROLE)
    doc = execution_input(wf, run_id=RUN, bucket="bkt", prefix=f"mlharness/runs/{RUN}",
                          before={"prepare": PREPARED})
    execution_arn = start_execution(cfg, aws, arn, RUN, doc)
    assert execution_arn.endswith(f":{RUN}")
    sfn = aws.client("stepfunctions")
    described = sfn.describe_execution(executionArn=execution_arn)
    assert described["name"] == RUN and json.loads(described["input"]) == doc
    events = []

    def on_event(event):
        events.append(event)
        if len(events) == 1:  # moto does not run the states: end the execution ourselves
            sfn.stop_execution(executionArn=execution_arn, error="Test", cause="stop")

    final = stream_events(aws, execution_arn, on_event, poll_s=0.001, cfg=cfg, timeout_s=10)
    assert final["status"] in ("ABORTED", "SUCCEEDED", "FAILED")
    assert final["input"] == doc
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert events[0]["type"] == "ExecutionStarted" and events[0]["step"] is None
    assert all({"id", "type", "timestamp", "step"} <= set(e) for e in events)
    json.dumps(final)
    url = console_url(REGION, execution_arn)
    assert url.startswith("https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1")
    assert url.endswith(execution_arn)


def test_a_second_execution_with_the_run_id_is_refused(aws, cfg, wf):
    arn = upsert_state_machine(cfg, aws, state_machine_name(cfg, wf.name), definition(wf),
                               SFN_ROLE)
    doc = execution_input(wf, run_id=RUN, bucket="bkt", prefix="p", before={"prepare": PREPARED})
    start_execution(cfg, aws, arn, RUN, doc)
    with pytest.raises(HarnessError, match=f"an execution named {RUN} already exists"):
        start_execution(cfg, aws, arn, RUN, {**doc, "Prefix": "other"})


def test_stream_events_gives_up_after_its_timeout(aws, cfg, wf):
    arn = upsert_state_machine(cfg, aws, state_machine_name(cfg, wf.name), definition(wf),
                               SFN_ROLE)
    doc = execution_input(wf, run_id=RUN, bucket="bkt", prefix="p", before={"prepare": PREPARED})
    execution_arn = start_execution(cfg, aws, arn, RUN, doc)
    with pytest.raises(HarnessError, match="still running after"):
        stream_events(aws, execution_arn, lambda e: None, poll_s=0.001, cfg=cfg, timeout_s=0.05)
