"""The pipeline compiled to Amazon States Language: valid, and carrying the same requests."""
import copy
import re

import pytest

from harness.asl import compile_state_machine, execution_input
from harness.asl_check import validate
from harness.config import load_config
from harness.requests import (
    Layout,
    Names,
    etl_request,
    hosting_requests,
    training_request,
)

IMAGES = {"training": "img-train", "serving": "img-serve"}
ROLE = "arn:aws:iam::111122223333:role/harness-sagemaker"
PREPARED = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10}


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def asl(cfg):
    return compile_state_machine(cfg, IMAGES, role=ROLE)


def _get(doc, path):
    node = doc
    for part in re.findall(r"\.([A-Za-z0-9_]+)", path):
        node = node[part]
    return node


def resolve(params, doc):
    """What Step Functions does with Parameters: .$ keys read the state input."""
    if isinstance(params, dict):
        out = {}
        for k, v in params.items():
            if k.endswith(".$"):
                m = re.fullmatch(r"States\.Format\('(.*)', (.*)\)", v)
                if m:
                    args = [_get(doc, a.strip()) for a in m.group(2).split(",")]
                    out[k[:-2]] = m.group(1).replace("{}", "%s") % tuple(args)
                else:
                    out[k[:-2]] = _get(doc, v)
            else:
                out[k] = resolve(v, doc)
        return out
    if isinstance(params, list):
        return [resolve(v, doc) for v in params]
    return params


def test_definition_follows_the_asl_rules(asl):
    assert validate(asl) == []


def test_success_path_and_gate(asl, cfg):
    s = asl["States"]
    path, name = [], asl["StartAt"]
    while s[name]["Type"] not in ("Succeed", "Fail", "Choice"):
        path.append(name)
        name = s[name]["Next"]
    assert path == ["RunEtl", "Train", "ReadGateMetric", "GateValue"]
    assert s["RunEtl"]["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert s["Train"]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    gate = s["Gate"]
    rule = gate["Choices"][0]["And"][1]
    assert rule["NumericGreaterThanEquals"] == cfg.evaluate.threshold
    assert gate["Choices"][0]["Next"] == "CreateModel"
    assert s[gate["Default"]]["Type"] == "Fail" and "$.Gate.Value" in s[gate["Default"]]["CausePath"]
    assert s["CreateModel"]["Next"] == "CreateEndpointConfig"
    assert s["CreateEndpointConfig"]["Next"] == "CreateEndpoint"
    assert s["CreateEndpoint"]["Resource"] == "arn:aws:states:::sagemaker:createEndpoint"
    loop = s["EndpointInService?"]
    assert loop["Default"] == "WaitForEndpoint" and loop["Choices"][0]["Next"] == "Deployed"
    for name, st in s.items():
        if st["Type"] == "Task":
            assert st["Catch"][0]["Next"] == "PipelineFailed", name
            assert st["Retry"][0]["BackoffRate"] > 1, name


def test_tasks_carry_the_requests_the_local_runners_execute(asl, cfg):
    run_id, bucket, prefix = "20261129-120000-ab12", "my-bucket", "mlharness/runs/r1"
    doc = execution_input(cfg, run_id=run_id, bucket=bucket, prefix=prefix,
                          prepared=PREPARED, images=IMAGES)
    layout, names = Layout(f"s3://{bucket}/{prefix}"), Names(cfg, run_id)
    prepared = dict(PREPARED, RawUri=layout.raw)
    s = asl["States"]
    assert resolve(s["RunEtl"]["Parameters"], doc) == etl_request(cfg, layout, prepared)
    assert resolve(s["Train"]["Parameters"], doc) == training_request(
        cfg, layout, names, prepared, IMAGES["training"], ROLE)
    doc["Training"] = {"ModelArtifacts": {"S3ModelArtifacts": "s3://my-bucket/m.tar.gz"}}
    trio = hosting_requests(cfg, names, "s3://my-bucket/m.tar.gz", IMAGES["serving"], ROLE)
    for state in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert resolve(s[state]["Parameters"], doc) == trio[state]


@pytest.mark.parametrize("break_it,expected", [
    (lambda a: a["States"]["Train"].update(Next="Nowhere"), "Next 'Nowhere' is not a state"),
    (lambda a: a["States"].update(Orphan={"Type": "Succeed"}), "Orphan: cannot be reached"),
    (lambda a: a["States"]["Train"].pop("Resource"), "Task needs a Resource"),
    (lambda a: a["States"]["RunEtl"]["Parameters"].update({"JobName.$": "JobName"}),
     "not a valid JSONPath"),
    (lambda a: a["States"]["Train"].update(End=True), "exactly one of Next or End"),
    (lambda a: a["States"]["Gate"].update(Choices=[]), "non-empty Choices"),
    (lambda a: a["States"]["WaitForEndpoint"].pop("Seconds"), "Wait needs exactly one"),
    (lambda a: a["States"]["BelowThreshold"].update(CausePath="States.Format('{} {}', $.a)"),
     "CausePath is not a reference path or intrinsic"),
    (lambda a: a["States"]["Train"].update(Bogus=1), "'Bogus' is not allowed"),
    (lambda a: a.update(StartAt="Missing"), "StartAt 'Missing' is not a state"),
])
def test_validator_catches_what_aws_rejects(asl, break_it, expected):
    broken = copy.deepcopy(asl)
    break_it(broken)
    assert any(expected in p for p in validate(broken)), validate(broken)


def test_gate_metric_must_exist_in_the_cloud(cfg):
    other = cfg.model_copy(deep=True)
    other.evaluate.metric = "macro_recall"
    from harness.errors import ConfigError
    with pytest.raises(ConfigError, match="evaluate.metric"):
        compile_state_machine(other, IMAGES)
