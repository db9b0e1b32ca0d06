"""The dry run (ASL, requests, images, cost) without any AWS call, and the cost estimate."""
import io
import json
import os
import time

import pytest
from rich.console import Console

from cloud_runners import cost as cost_mod
from cloud_runners import images as images_mod
from cloud_runners.images import images_for as images
from cloud_runners.plan import EXAMPLE_RUN_ID, cli_plan, plan, render_plan
from harness.asl_check import validate
from harness.config import PipelineConfig
from harness.errors import ConfigError
from harness.requests import Layout, Names, training_request

pytest.importorskip("sagemaker.core")


@pytest.fixture(scope="module", autouse=True)
def image_cache(tmp_path_factory):
    """Keep the image-URI cache out of the home directory."""
    path = tmp_path_factory.mktemp("cache") / "image_uris.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_mod, "IMAGE_CACHE", path)
        yield path


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No credentials, a dead endpoint, and any AWS API call fails the test."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    (tmp_path / "empty").write_text("")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "empty"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    calls = []

    def no_call(self, operation, params):
        calls.append(operation)
        raise AssertionError(f"AWS called: {operation}")

    monkeypatch.setattr("botocore.client.BaseClient._make_api_call", no_call)
    return calls


@pytest.fixture(scope="module")
def the_plan():
    return plan(PipelineConfig())


def test_plan_offline_and_fast(offline):
    t0 = time.perf_counter()
    p = plan(PipelineConfig())
    assert time.perf_counter() - t0 < 10
    assert offline == []
    assert p["cost"]["run_total"] > 0


def test_plan_asl_is_valid(the_plan):
    asl = the_plan["state_machine"]["definition"]
    assert validate(asl) == []
    assert asl["StartAt"] == "RunEtl"
    assert asl["States"]["RunEtl"]["Resource"] == "arn:aws:states:::glue:startJobRun.sync"
    assert the_plan["state_machine"]["name"] == "mlharness-pipeline"


def test_plan_images_from_sagemaker_core(the_plan):
    imgs = the_plan["images"]
    assert "tensorflow-training:2.19" in imgs["training"]
    assert "py312" in imgs["training"]
    assert "tensorflow-inference:2.19" in imgs["serving"]
    assert ".us-east-1." in imgs["training"]
    train = the_plan["requests"]["create_training_job"]
    assert train["AlgorithmSpecification"]["TrainingImage"] == imgs["training"]
    assert the_plan["requests"]["CreateModel"]["PrimaryContainer"]["Image"] == imgs["serving"]
    # The ASL carries the same images.
    asl = json.dumps(the_plan["state_machine"]["definition"])
    assert imgs["training"] in asl and imgs["serving"] in asl


def test_images_lookup_and_cache(image_cache):
    cfg = PipelineConfig()
    direct = images(cfg, cache=None)
    assert direct["training"].endswith("/tensorflow-training:2.19-cpu-py312")
    assert direct["serving"].endswith("/tensorflow-inference:2.19-cpu")
    assert images(cfg) == direct  # cached or looked up: the same answer
    cached = json.loads(image_cache.read_text())
    assert direct in cached.values()
    gpu = PipelineConfig()
    gpu.train.instance_type = "ml.g4dn.xlarge"
    assert "-gpu-" in images(gpu)["training"]


def test_plan_images_follow_region():
    cfg = PipelineConfig()
    cfg.cloud.region = "eu-west-1"
    p = plan(cfg)
    assert ".eu-west-1." in p["images"]["training"]
    assert p["cost"]["region"] == "eu-west-1"


def test_plan_requests_are_the_builders(the_plan):
    cfg = PipelineConfig()
    prefix = f"mlharness/runs/{EXAMPLE_RUN_ID}"
    layout = Layout(f"s3://<bucket>/{prefix}")
    expected = training_request(cfg, layout, Names(cfg, EXAMPLE_RUN_ID),
                                {"RawUri": layout.raw, "ImageHeight": 28, "ImageWidth": 28,
                                 "NumClasses": 10},
                                the_plan["images"]["training"], "<SageMakerRoleArn>")
    assert the_plan["requests"]["create_training_job"] == expected
    assert the_plan["requests"]["create_training_job"]["HyperParameters"][
        "sagemaker_submit_directory"] == f"s3://<bucket>/{prefix}/code/sourcedir.tar.gz"
    assert the_plan["requests"]["glue_job"]["Command"]["ScriptLocation"] == (
        f"s3://<bucket>/{prefix}/code/glue/mnist_etl.py")
    assert the_plan["execution_input"]["Data"] == {"ImageHeight": "28", "ImageWidth": "28",
                                                   "NumClasses": "10"}
    assert the_plan["execution_input"]["Bucket"] == "<bucket>"
    for k in ("CreateModel", "CreateEndpointConfig", "CreateEndpoint"):
        assert k in the_plan["requests"]
    assert the_plan["tags"] == {"mlharness:project": "mlharness"}
    json.dumps(the_plan)  # plain data


def test_cli_plan_json_and_rich(offline):
    console = Console(file=io.StringIO(), width=160, color_system=None)
    assert cli_plan(PipelineConfig(), console, as_json=True) == 0
    data = json.loads(console.file.getvalue())
    assert data["cost"]["run_total"] > 0
    console = Console(file=io.StringIO(), width=160, color_system=None)
    assert cli_plan(PipelineConfig(), console, as_json=False) == 0
    out = console.file.getvalue()
    assert '"StartAt": "RunEtl"' in out and "one run" in out
    assert "per hour until `harness cloud teardown`" in out
    assert offline == []


def test_cli_plan_bad_instance_type_exit_2():
    cfg = PipelineConfig()
    cfg.train.instance_type = "ml.p99.huge"
    console = Console(file=io.StringIO(), width=200, color_system=None)
    assert cli_plan(cfg, console, as_json=False) == 2
    assert "train.instance_type" in console.file.getvalue()


# --- cost ------------------------------------------------------------------------------

def test_prices_file_has_date_source_and_types():
    prices = cost_mod.load_prices()
    assert prices["date"] and prices["source"] and prices["approximate"] is True
    types = {"ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
             "ml.g4dn.xlarge"}
    for region in ("us-east-1", "eu-west-1"):
        for use in ("training", "hosting"):
            assert types <= set(prices["sagemaker"][region][use])
        assert prices["glue"]["dpu_hour"][region] == 0.44
        assert prices["stepfunctions"]["per_1000_state_transitions"][region] > 0


def test_estimate_adds_up():
    cfg = PipelineConfig()
    cfg.train.instance_count = 2
    cfg.etl.worker_type = "G.2X"
    cfg.etl.number_of_workers = 3
    prices = cost_mod.load_prices()
    est = cost_mod.estimate(cfg)
    items = {i.name: i for i in est.items}
    glue = 3 * 2 * cost_mod.EXPECTED_ETL_HOURS * 0.44
    train = 2 * prices["sagemaker"]["us-east-1"]["training"]["ml.m5.xlarge"] * \
        cost_mod.EXPECTED_TRAINING_HOURS
    sfn = items["Step Functions"].quantity * 0.025 / 1000
    assert items["Glue ETL"].amount == pytest.approx(glue, abs=1e-6)
    assert items["SageMaker training"].amount == pytest.approx(train, abs=1e-6)
    assert items["Step Functions"].amount == pytest.approx(sfn, abs=1e-6)
    assert est.run_total == pytest.approx(glue + train + sfn, abs=1e-5)
    assert est.endpoint_per_hour == prices["sagemaker"]["us-east-1"]["hosting"]["ml.m5.large"]
    assert est.prices_date == prices["date"]
    assert "per hour until `harness cloud teardown`" in est.summary()


def test_glue_minimum_billing(monkeypatch):
    monkeypatch.setattr(cost_mod, "EXPECTED_ETL_HOURS", 0.001)  # 3.6 s: billed as 60 s
    est = cost_mod.estimate(PipelineConfig())
    glue = next(i for i in est.items if i.name == "Glue ETL")
    assert glue.amount == pytest.approx(2 * 1 * (60 / 3600) * 0.44, abs=1e-6)


@pytest.mark.parametrize("field,attr", [("train.instance_type", ("train", "instance_type")),
                                        ("deploy.instance_type", ("deploy", "instance_type"))])
def test_unknown_instance_type_names_field(field, attr):
    cfg = PipelineConfig()
    setattr(getattr(cfg, attr[0]), attr[1], "ml.p99.huge")
    with pytest.raises(ConfigError) as exc:
        cost_mod.estimate(cfg)
    assert exc.value.field == field
    assert "ml.p99.huge" in exc.value.message and "ml.m5.large" in exc.value.message


def test_unknown_region_names_field():
    cfg = PipelineConfig()
    cfg.cloud.region = "ap-south-2"
    with pytest.raises(ConfigError) as exc:
        cost_mod.estimate(cfg)
    assert exc.value.field == "cloud.region" and "us-east-1" in exc.value.message


def test_render_plan_prints_cost_table(the_plan):
    console = Console(file=io.StringIO(), width=160, color_system=None)
    render_plan(the_plan, console)
    out = console.file.getvalue()
    assert "Glue ETL" in out and "SageMaker training" in out and "estimated cost" in out
