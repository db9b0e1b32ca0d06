"""The default pipeline compiled to Amazon States Language: generated from the workflow,
valid, and carrying the very requests the local runners execute."""
import copy
import re
from pathlib import Path

import pytest

from harness.asl import SUCCEEDED, execution_input, transitions
from harness.asl_check import validate
from harness.config import PROJECT_ROOT, load_config
from harness.placeholders import resolve
from harness.tags import resource_tags
from harness.workflow import load_workflow

ROLE = "arn:aws:iam::111122223333:role/harness-sagemaker"
PREPARED = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10, "RawUri": "s3://x"}


class Images:
    def image(self, framework, version, scope, instance_type, py_version=None):
        return f"img-{framework}-{scope}-{version}"


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def wf(cfg):
    return load_workflow(cfg.pipeline, cfg)


@pytest.fixture(scope="module")
def ctx(wf, cfg):
    return wf.build_context("cloud", Images(), role=ROLE, roles={"glue": "arn:glue-role"},
                            tags=resource_tags(cfg))


@pytest.fixture(scope="module")
def asl(wf, ctx):
    return wf.definition(ctx)


def _get(doc, path):
    node = doc
    for name, index in re.findall(r"\.([A-Za-z0-9_]+)|\[(\d+)\]", path):
        node = node[name] if name else node[int(index)]
    return node


def sfn_parameters(params, doc):
    """What Step Functions does with Parameters: .$ keys read the state input."""
    if isinstance(params, dict):
        out = {}
        for k, v in params.items():
            if k.endswith(".$"):
                m = re.fullmatch(r"States\.Format\('(.*)', (.*)\)", v)
                if m:
                    args = [_get(doc, a.strip()) for a in m.group(2).split(",")]
                    template = m.group(1).replace("\\'", "'").replace("\\{", "{{") \
                        .replace("\\}", "}}")
                    out[k[:-2]] = template.format(*args)
                else:
                    out[k[:-2]] = _get(doc, v)
            else:
                out[k] = sfn_parameters(v, doc)
        return out
    if isinstance(params, list):
        return [sfn_parameters(v, doc) for v in params]
    return params


def test_definition_follows_the_asl_rules(asl):
    assert validate(asl) == []


def test_every_state_comes_from_a_step_in_order(asl, wf):
    path = transitions(asl)["states"]
    assert path == ["etl", "train", "evaluate", "gate", "gate-check", "model",
                    "endpoint-config", "endpoint", "endpoint-wait", "endpoint-describe",
                    "endpoint-in-service", SUCCEEDED]
    s = asl["States"]
    assert s["etl"]["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert s["train"]["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    assert s["evaluate"]["Resource"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    assert s["gate"]["Resource"] == "arn:aws:states:::aws-sdk:s3:getObject"
    for name, st in s.items():
        if st["Type"] == "Task":
            assert st["Catch"][0]["Next"] == "PipelineFailed", name
            assert st["Retry"][0]["BackoffRate"] > 1, name
    assert transitions(asl)["loops"] == [["endpoint-wait", "endpoint-describe",
                                          "endpoint-in-service"]]
    # Nothing runs on the client inside the machine: prepare and infer are not states.
    assert "prepare" not in s and "infer" not in s


def test_the_gate_reads_evaluation_json_and_compares_the_configured_metric(cfg):
    other = cfg.model_copy(deep=True)
    other.evaluate.metric, other.evaluate.threshold, other.evaluate.direction = \
        "loss", 0.2, "<="
    wf = load_workflow(other.pipeline, other)
    s = wf.definition()["States"]
    assert s["gate"]["Parameters"] == {
        "Bucket.$": "$.Bucket",
        "Key.$": "States.Format('{}/evaluation/evaluation.json', $.Prefix)"}
    assert s["gate"]["ResultSelector"] == {"Body.$": "States.StringToJson($.Body)"}
    rule = s["gate-check"]["Choices"][1]["And"][1]
    assert rule == {"Variable": "$.Gate.Body.metrics.loss", "NumericLessThanEquals": 0.2}
    assert "$.Gate.Body.metrics.loss" in s["gate-failed"]["CausePath"]
    # The evaluation job writes that file where the gate reads it.
    out = s["evaluate"]["Parameters"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]
    assert out["S3Uri.$"] == "States.Format('{}/evaluation', $.BaseUri)"


def test_tasks_carry_the_requests_the_local_runners_execute(asl, wf, ctx):
    doc = execution_input(wf, run_id="20261129-120000-ab12", bucket="my-bucket",
                          prefix="mlharness/runs/r1", before={"prepare": PREPARED})
    doc["Train"] = {"ModelArtifacts": {"S3ModelArtifacts": "s3://my-bucket/m.tar.gz"}}
    for step in wf.machine_steps():
        local = resolve(step.request(ctx), doc, step.state_id)
        cloud = sfn_parameters(asl["States"][step.state_id]["Parameters"], doc)
        if step.kind == "gate":  # getObject takes the file's URI as bucket and key
            assert f"s3://{cloud['Bucket']}/{cloud['Key']}" == local["Uri"]
        else:
            assert cloud == local, step.state_id
    train = resolve(wf.step("train").request(ctx), doc)
    assert train["HyperParameters"]["image_height"] == "28"
    assert train["RoleArn"] == ROLE and train["Tags"][1]["Value"] == "20261129-120000-ab12"


@pytest.mark.parametrize("break_it,expected", [
    (lambda a: a["States"]["train"].update(Next="Nowhere"), "Next 'Nowhere' is not a state"),
    (lambda a: a["States"].update(Orphan={"Type": "Succeed"}), "Orphan: cannot be reached"),
    (lambda a: a["States"]["train"].pop("Resource"), "Task needs a Resource"),
    (lambda a: a["States"]["etl"]["Parameters"].update({"JobName.$": "JobName"}),
     "not a valid JSONPath"),
    (lambda a: a["States"]["train"].update(End=True), "exactly one of Next or End"),
    (lambda a: a["States"]["gate-check"].update(Choices=[]), "non-empty Choices"),
    (lambda a: a["States"]["endpoint-wait"].pop("Seconds"), "Wait needs exactly one"),
    (lambda a: a["States"]["gate-failed"].update(CausePath="States.Format('{} {}', $.a)"),
     "CausePath is not a reference path or intrinsic"),
    (lambda a: a["States"]["train"].update(Bogus=1), "'Bogus' is not allowed"),
    (lambda a: a.update(StartAt="Missing"), "StartAt 'Missing' is not a state"),
])
def test_validator_catches_what_aws_rejects(asl, break_it, expected):
    broken = copy.deepcopy(asl)
    break_it(broken)
    assert any(expected in p for p in validate(broken)), validate(broken)


CORE = ["harness/asl.py", "harness/executor.py", "harness/cli.py", "harness/backends.py",
        "harness/workflow.py", "harness/graph.py", "cloud_runners/cloud_run.py",
        "cloud_runners/cost.py", "cloud_runners/plan.py", "cloud_runners/preflight.py",
        "cloud_runners/emulator/backend.py", "cloud_runners/cloud_cli.py"]


def test_no_step_of_the_default_pipeline_is_named_outside_its_module(wf):
    """The compiler, the executor, the cloud run, the cost estimate and the CLI walk the
    workflow; none of them names one of its steps."""
    names = [s.state_id for s in wf.steps]
    for rel in CORE:
        text = (PROJECT_ROOT / rel).read_text()
        for name in names:
            assert not re.search(rf"""["']{re.escape(name)}["']""", text), (rel, name)
