"""The cost estimate: one line per priced step, Step Functions transitions counted from the
compiled definition, the endpoint per hour; no AWS call."""
import io
import math

import pytest
from cloud_support import Images, training_only, workflow
from rich.console import Console

from cloud_runners import cost as cost_mod
from harness.asl import transitions
from harness.errors import ConfigError

TYPES = {"ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
         "ml.g4dn.xlarge"}
HAPPY_PATH = ["etl", "train", "evaluate", "gate", "gate-check", "model", "endpoint-config",
              "endpoint", "endpoint-wait", "endpoint-describe", "endpoint-in-service",
              "PipelineSucceeded"]


def definition(wf, poll_seconds=30):
    return wf.definition(wf.build_context("cloud", Images(), role="arn:role",
                                          poll_seconds=poll_seconds))


def estimate(cfg, wf, poll_seconds=30):
    return cost_mod.estimate(cfg, wf, definition(wf, poll_seconds))


def test_prices_file_has_date_source_and_every_use():
    prices = cost_mod.load_prices()
    assert prices["date"] and prices["source"] and prices["approximate"] is True
    for region in ("us-east-1", "eu-west-1"):
        for use in ("training", "hosting", "processing"):
            assert TYPES <= set(prices["sagemaker"][region][use]), (region, use)
        assert prices["glue"]["dpu_hour"][region] == 0.44
        assert prices["stepfunctions"]["per_1000_state_transitions"][region] > 0
    assert prices["glue"]["dpu_per_worker"]["G.2X"] == 2


def test_one_line_per_priced_step_and_they_add_up(cfg):
    cfg.train.instance_count = 2
    cfg.etl.worker_type = "G.2X"
    cfg.etl.number_of_workers = 3
    cfg.evaluate.instance_type = "ml.c5.xlarge"
    wf = workflow(cfg)
    prices = cost_mod.load_prices()
    sm = prices["sagemaker"]["us-east-1"]
    est = estimate(cfg, wf)
    assert [i.name for i in est.items] == [
        "Glue job mnist-etl", "SageMaker training mnist-train",
        "SageMaker processing mnist-evaluate", "Step Functions",
        "SageMaker endpoint (mnist-config)"]
    items = {i.name: i for i in est.items}
    glue = 3 * 2 * wf.step("etl").expected_hours * 0.44
    train = 2 * sm["training"]["ml.m5.xlarge"] * wf.step("train").expected_hours
    processing = sm["processing"]["ml.c5.xlarge"] * wf.step("evaluate").expected_hours
    sfn = items["Step Functions"].quantity * 0.025 / 1000
    assert items["Glue job mnist-etl"].amount == pytest.approx(glue, abs=1e-6)
    assert items["Glue job mnist-etl"].detail.startswith("3 x G.2X (6 DPU)")
    assert items["SageMaker training mnist-train"].amount == pytest.approx(train, abs=1e-6)
    assert items["SageMaker processing mnist-evaluate"].amount == pytest.approx(processing,
                                                                                abs=1e-6)
    assert items["Step Functions"].amount == pytest.approx(sfn, abs=1e-6)
    assert est.run_total == pytest.approx(glue + train + processing + sfn, abs=1e-5)
    # The endpoint is not in the run total: it costs per hour until teardown.
    assert est.endpoint_per_hour == sm["hosting"]["ml.m5.large"]
    assert items["SageMaker endpoint (mnist-config)"].unit == "instance-hour per hour"
    assert est.prices_date == prices["date"]
    assert "per hour until `harness cloud teardown`" in est.summary()
    assert any("'train' (training) runs ~0.25 h" in a for a in est.assumptions)


def test_step_functions_transitions_counted_from_the_definition(cfg, wf):
    asl = definition(wf)
    counted = transitions(asl)
    assert counted["states"] == HAPPY_PATH
    assert counted["loops"] == [["endpoint-wait", "endpoint-describe", "endpoint-in-service"]]
    polls = math.ceil(cost_mod.EXPECTED_ENDPOINT_CREATION_S / 30)
    expected = len(HAPPY_PATH) + 3 * (polls - 1)
    sfn = next(i for i in cost_mod.estimate(cfg, wf, asl).items if i.name == "Step Functions")
    assert sfn.quantity == expected == 69
    assert sfn.detail == f"~{expected} state transitions ({len(HAPPY_PATH)} states, {polls} polls)"


@pytest.mark.parametrize("seconds,expected", [(30, 69), (60, 39), (600, 12), (1200, 12)])
def test_poll_seconds_changes_the_transition_count(cfg, wf, seconds, expected):
    sfn = next(i for i in estimate(cfg, wf, seconds).items if i.name == "Step Functions")
    assert sfn.quantity == expected


def test_a_pipeline_without_endpoint_has_no_polls_and_no_hourly_cost(cfg):
    wf = training_only()
    est = estimate(cfg, wf)
    assert [i.name for i in est.items] == ["SageMaker training digits-fit", "Step Functions"]
    assert est.items[1].quantity == 2  # fit, PipelineSucceeded
    assert est.endpoint_per_hour == 0
    assert est.run_total == pytest.approx(est.items[0].amount + est.items[1].amount)


def test_glue_minimum_billing(cfg, wf):
    wf.step("etl").expected_hours = 0.001  # 3.6 s: billed as 60 s
    glue = estimate(cfg, wf).items[0]
    assert glue.amount == pytest.approx(2 * 1 * (60 / 3600) * 0.44, abs=1e-6)


@pytest.mark.parametrize("section,field", [("train", "train.instance_type"),
                                           ("evaluate", "evaluate.instance_type"),
                                           ("deploy", "endpoint-config.instance_type")])
def test_unknown_instance_type_names_the_steps_field(cfg, section, field):
    setattr(getattr(cfg, section), "instance_type", "ml.p99.huge")
    with pytest.raises(ConfigError) as exc:
        estimate(cfg, workflow(cfg))
    assert exc.value.field == field
    assert "ml.p99.huge" in exc.value.message and "ml.m5.large" in exc.value.message


def test_unknown_region_names_the_field(cfg, wf):
    cfg.cloud.region = "ap-south-2"
    with pytest.raises(ConfigError) as exc:
        estimate(cfg, wf)
    assert exc.value.field == "cloud.region" and "us-east-1" in exc.value.message


def test_cost_table(cfg, wf):
    est = estimate(cfg, wf)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(cost_mod.cost_table(est))
    console.print(cost_mod.cost_table(est.to_dict()))
    out = console.file.getvalue()
    assert out.count("Glue job mnist-etl") == 2 and "SageMaker processing mnist-evaluate" in out
    assert f"{est.run_total:.2f}" in out and "one run" in out
    assert "per hour until `harness cloud teardown`" in out
