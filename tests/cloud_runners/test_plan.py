"""`harness cloud plan`: the compiled ASL, every step's request and the cost, without any
AWS call; values only a run knows are written ``{$.Path}``."""
import io
import json
import time

import pytest
from cloud_support import training_only, workflow
from rich.console import Console

from cloud_runners.plan import BUCKET, EXAMPLE_RUN_ID, ROLE_PLACEHOLDERS, plan, render_plan
from cloud_runners.setup import CloudImages
from harness.asl_check import validate
from harness.placeholders import readable, with_examples
from harness.tags import resource_tags

pytest.importorskip("sagemaker.core")

PREFIX = f"mlharness/runs/{EXAMPLE_RUN_ID}"
BASE = f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture
def the_plan(cfg, wf):
    return plan(cfg, wf)


def test_plan_makes_no_aws_call_and_is_fast(no_aws, cfg, wf):
    t0 = time.perf_counter()
    p = plan(cfg, wf)
    assert time.perf_counter() - t0 < 10
    assert no_aws == []
    assert p["cost"]["run_total"] > 0
    json.dumps(p)  # plain data


def test_plan_asl_is_the_compiled_workflow(cfg, wf, the_plan):
    sm = the_plan["state_machine"]
    asl = sm["definition"]
    assert validate(asl) == []
    assert sm["name"] == "mlharness-mnist" and sm["role"] == ROLE_PLACEHOLDERS["stepfunctions"]
    ctx = wf.build_context("cloud", CloudImages(cfg), role=ROLE_PLACEHOLDERS["sagemaker"],
                           roles={"glue": ROLE_PLACEHOLDERS["glue"]},
                           tags=resource_tags(cfg, EXAMPLE_RUN_ID),
                           poll_seconds=cfg.cloud.poll_seconds)
    assert asl == wf.definition(ctx)
    assert asl["StartAt"] == "etl"
    assert list(asl["States"])[:11] == [
        "etl", "train", "evaluate", "gate", "gate-check", "gate-missing", "gate-failed",
        "model", "endpoint-config", "endpoint", "endpoint-wait"]
    resources = {name: s.get("Resource") for name, s in asl["States"].items()}
    assert resources["etl"] == "arn:aws:states:::glue:startJobRun.sync"
    assert resources["train"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    assert resources["evaluate"] == "arn:aws:states:::sagemaker:createProcessingJob.sync"
    assert resources["gate"] == "arn:aws:states:::aws-sdk:s3:getObject"
    assert resources["model"] == "arn:aws:states:::sagemaker:createModel"
    assert resources["endpoint-config"] == "arn:aws:states:::sagemaker:createEndpointConfig"
    assert resources["endpoint"] == "arn:aws:states:::sagemaker:createEndpoint"
    assert resources["endpoint-describe"] == "arn:aws:states:::aws-sdk:sagemaker:describeEndpoint"
    assert asl["States"]["gate-check"]["Type"] == "Choice"
    assert asl["States"]["endpoint-wait"]["Seconds"] == cfg.cloud.poll_seconds
    assert [s["name"] for s in the_plan["steps"]] == [s.state_id for s in wf.steps]
    assert {s["name"]: s["runs"] for s in the_plan["steps"]}["prepare"] == "before"
    assert {s["name"]: s["runs"] for s in the_plan["steps"]}["infer"] == "after"


def test_plan_images_come_from_sagemaker_core(the_plan):
    req = the_plan["requests"]
    training = req["train"]["AlgorithmSpecification"]["TrainingImage"]
    serving = req["model"]["PrimaryContainer"]["Image"]
    assert training.endswith(".dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.19-cpu-py312")
    assert serving.endswith(".dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.19-cpu")
    assert req["evaluate"]["AppSpecification"]["ImageUri"] == training
    # The ASL carries the same images.
    asl = json.dumps(the_plan["state_machine"]["definition"])
    assert training in asl and serving in asl


def test_plan_images_and_cost_follow_the_region(cfg):
    cfg.cloud.region = "eu-west-1"
    p = plan(cfg, workflow(cfg))
    assert ".eu-west-1." in p["requests"]["train"]["AlgorithmSpecification"]["TrainingImage"]
    assert p["region"] == p["cost"]["region"] == "eu-west-1"


def test_plan_requests_are_the_steps_requests(cfg, wf, the_plan):
    ctx = wf.build_context("cloud", CloudImages(cfg), role=ROLE_PLACEHOLDERS["sagemaker"],
                           roles={"glue": ROLE_PLACEHOLDERS["glue"]},
                           tags=resource_tags(cfg, EXAMPLE_RUN_ID))
    doc = {"RunId": EXAMPLE_RUN_ID, "Bucket": BUCKET, "Prefix": PREFIX, "BaseUri": BASE,
           "CodeUri": f"{BASE}/code"}
    assert set(the_plan["requests"]) == {s.state_id for s in wf.steps}
    for step in wf.steps:
        assert the_plan["requests"][step.state_id] == readable(
            with_examples(step.request(ctx), doc)), step.state_id
    req = the_plan["requests"]
    assert req["train"]["TrainingJobName"] == f"mnist-train-{EXAMPLE_RUN_ID}"
    assert req["train"]["RoleArn"] == "<SageMakerRoleArn>"
    # JSON-encoded, as the SageMaker SDK sends every hyperparameter of a framework job
    assert req["train"]["HyperParameters"]["sagemaker_submit_directory"] == \
        f'"{BASE}/code/train/sourcedir.tar.gz"'
    assert req["train"]["Tags"] == [{"Key": "mlharness:project", "Value": "mlharness"},
                                    {"Key": "mlharness:run", "Value": EXAMPLE_RUN_ID}]
    assert req["prepare"]["OutputUri"] == f"{BASE}/data/raw"
    assert req["etl"]["Arguments"]["--output_uri"] == f"{BASE}/data/processed"
    assert req["gate"]["Uri"] == f"{BASE}/evaluation/evaluation.json"
    # What is created before the run: the Glue job, on the uploaded script, with its role.
    job = the_plan["setup"]["glue:CreateJob mnist-etl"]
    assert job["Command"]["ScriptLocation"] == f"{BASE}/code/etl/mnist_etl.py"
    assert job["Role"] == "<GlueRoleArn>" and job["WorkerType"] == cfg.etl.worker_type
    assert the_plan["code"] == {"etl/mnist_etl.py": f"{BASE}/code/etl/mnist_etl.py",
                                "train/sourcedir.tar.gz": f"{BASE}/code/train/sourcedir.tar.gz",
                                "evaluate": f"{BASE}/code/evaluate"}
    ex = the_plan["execution_input"]
    assert (ex["RunId"], ex["Bucket"], ex["Prefix"], ex["BaseUri"]) == (
        EXAMPLE_RUN_ID, BUCKET, PREFIX, BASE)
    assert "runs on the client before the execution" in ex["Prepare"]
    assert set(the_plan["execution_input_schema"]["required"]) >= {
        "RunId", "Bucket", "Prefix", "BaseUri", "Prepare"}
    assert the_plan["tags"] == {"mlharness:project": "mlharness"}


def test_plan_writes_what_only_a_run_knows_as_paths(the_plan):
    req = the_plan["requests"]
    assert req["etl"]["Arguments"]["--image_height"] == "{$.Prepare.ImageHeight}"
    assert req["train"]["HyperParameters"]["num_classes"] == "{$.Prepare.NumClasses}"
    model_input = {i["InputName"]: i["S3Input"]["S3Uri"]
                   for i in req["evaluate"]["ProcessingInputs"]}
    assert model_input["model"] == "{$.Train.ModelArtifacts.S3ModelArtifacts}"
    assert model_input["code"] == f"{BASE}/code/evaluate"
    assert req["model"]["PrimaryContainer"]["ModelDataUrl"] == \
        "{$.Train.ModelArtifacts.S3ModelArtifacts}"
    assert req["endpoint-config"]["ProductionVariants"][0]["ModelName"] == \
        f"mnist-{EXAMPLE_RUN_ID}"
    assert req["endpoint"]["EndpointConfigName"] == f"mnist-config-{EXAMPLE_RUN_ID}"
    assert req["infer"]["EndpointName"] == "{$.Endpoint.EndpointName}"
    assert req["infer"]["Endpoint"] == "{$.Endpoint}"
    assert req["infer"]["ExpectedAccuracy"] == "{$.Gate.Body.metrics.accuracy}"
    assert "⟦" not in json.dumps(the_plan, ensure_ascii=False)  # no internal token leaks


def test_plan_of_several_training_instances_enables_the_distribution(cfg):
    cfg.train.instance_count = 2
    p = plan(cfg, workflow(cfg))
    train = p["requests"]["train"]
    assert train["ResourceConfig"]["InstanceCount"] == 2
    assert train["HyperParameters"]["sagemaker_multi_worker_mirrored_strategy_enabled"] == "true"
    assert any(i["detail"].startswith("2 x ml.m5.xlarge") for i in p["cost"]["items"])
    # each instance gets its own part of the training files, all of validation and test
    dist = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
            for c in train["InputDataConfig"]}
    assert dist == {"train": "ShardedByS3Key", "validation": "FullyReplicated",
                    "test": "FullyReplicated"}


def test_plan_of_one_training_instance_replicates_every_channel(cfg):
    train = plan(cfg, workflow(cfg))["requests"]["train"]
    assert train["ResourceConfig"]["InstanceCount"] == 1
    assert "sagemaker_multi_worker_mirrored_strategy_enabled" not in train["HyperParameters"]
    assert {c["DataSource"]["S3DataSource"]["S3DataDistributionType"]
            for c in train["InputDataConfig"]} == {"FullyReplicated"}


def test_plan_follows_poll_seconds(cfg):
    counts = {}
    for seconds in (30, 60):
        cfg.cloud.poll_seconds = seconds
        p = plan(cfg, workflow(cfg))
        assert p["state_machine"]["definition"]["States"]["endpoint-wait"]["Seconds"] == seconds
        counts[seconds] = next(i for i in p["cost"]["items"]
                               if i["name"] == "Step Functions")["quantity"]
    assert counts[30] > counts[60]


def test_plan_of_a_pipeline_of_ones_own(cfg):
    wf = training_only()
    p = plan(cfg, wf)
    assert p["workflow"] == "digits" and p["state_machine"]["name"] == "mlharness-digits"
    assert list(p["state_machine"]["definition"]["States"]) == [
        "fit", "PipelineSucceeded", "PipelineFailed"]
    assert list(p["requests"]) == ["fit"]
    assert p["requests"]["fit"]["TrainingJobName"] == f"digits-fit-{EXAMPLE_RUN_ID}"
    assert p["setup"] == {}
    assert [i["name"] for i in p["cost"]["items"]] == ["SageMaker training digits-fit",
                                                       "Step Functions"]
    assert p["cost"]["endpoint_per_hour"] == 0


def test_render_plan_prints_steps_asl_requests_and_cost(the_plan):
    console = Console(file=io.StringIO(), width=160, color_system=None)
    render_plan(the_plan, console)
    out = console.file.getvalue()
    assert "dry run, no AWS call" in out
    assert "on the client, before the execution" in out and "in the state machine" in out
    assert '"StartAt": "etl"' in out and "step evaluate" in out
    assert "before the run: glue:CreateJob mnist-etl" in out
    assert "{$.Train.ModelArtifacts.S3ModelArtifacts}" in out
    for line in ("Glue job mnist-etl", "SageMaker training", "SageMaker processing",
                 "SageMaker endpoint", "Step Functions", "estimated cost", "one run"):
        assert line in out, line
    assert "per hour until `harness cloud teardown`" in out
