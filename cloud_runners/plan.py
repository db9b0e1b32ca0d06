"""The dry run (`harness cloud plan`): the ASL, every request and the cost, no AWS call.

Images are looked up with sagemaker-core's ``image_uris`` (a table shipped with the
SDK: no network, no account ids in our code). The bucket and role ARNs are placeholders
because finding them would need AWS; `harness cloud preflight` fills them in.
"""
from __future__ import annotations

import json
from typing import Any

from cloud_runners.cost import CostEstimate, estimate
from cloud_runners.images import images_for
from harness.asl import compile_state_machine, execution_input
from harness.asl_check import validate
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.requests import (
    Layout,
    Names,
    etl_request,
    glue_job_definition,
    hosting_requests,
    training_request,
)

BUCKET = "<bucket>"
PREPARED_EXAMPLE = {"ImageHeight": 28, "ImageWidth": 28, "NumClasses": 10}
ROLE_PLACEHOLDERS = {"sagemaker": "<SageMakerRoleArn>", "glue": "<GlueRoleArn>",
                     "stepfunctions": "<StepFunctionsRoleArn>"}
EXAMPLE_RUN_ID = "20250101-000000-abcd"


def plan(cfg: PipelineConfig, run_id: str | None = None) -> dict[str, Any]:
    """Everything a cloud run would send, as plain data."""
    run_id = run_id or EXAMPLE_RUN_ID
    cost = estimate(cfg)  # first: a config error here is the clearest one
    imgs = images_for(cfg)
    prefix = f"{cfg.cloud.prefix.strip('/')}/{run_id}"
    bucket = cfg.cloud.bucket or BUCKET
    layout = Layout(f"s3://{bucket}/{prefix}")
    names = Names(cfg, run_id)
    role = ROLE_PLACEHOLDERS["sagemaker"]
    asl = compile_state_machine(cfg, imgs, role=role)
    problems = validate(asl)
    if problems:
        raise HarnessError("the compiled state machine is not valid ASL: " + "; ".join(problems))
    prepared = {"RawUri": layout.raw, **PREPARED_EXAMPLE}
    training = training_request(cfg, layout, names, prepared, imgs["training"], role)
    model_data = f"{layout.training}/{names.training_job}/output/model.tar.gz"
    from cloud_runners.aws import state_machine_name
    from cloud_runners.infrastructure import TAG_KEY
    return {
        "run_id": run_id,
        "region": cfg.cloud.region,
        "bucket": bucket,
        "prefix": prefix,
        "tags": {TAG_KEY: cfg.cloud.stack_name},
        "images": imgs,
        "state_machine": {"name": state_machine_name(cfg),
                          "role": ROLE_PLACEHOLDERS["stepfunctions"], "definition": asl},
        "execution_input": execution_input(cfg, run_id=run_id, bucket=bucket, prefix=prefix,
                                           prepared=PREPARED_EXAMPLE, images=imgs),
        "requests": {
            "glue_job": glue_job_definition(cfg, layout, ROLE_PLACEHOLDERS["glue"]),
            "glue_start_job_run": etl_request(cfg, layout, prepared),
            "create_training_job": training,
            **hosting_requests(cfg, names, model_data, imgs["serving"], role),
        },
        "cost": cost.to_dict(),
    }


def cost_table(cost: CostEstimate | dict[str, Any]):
    from rich.table import Table

    c = cost if isinstance(cost, dict) else cost.to_dict()
    table = Table(title=f"estimated cost, {c['region']} (approximate on-demand list prices "
                        f"of {c['prices_date']})")
    table.add_column("item")
    table.add_column("detail")
    table.add_column("unit price", justify="right")
    table.add_column(c["currency"], justify="right")
    for i in c["items"]:
        table.add_row(i["name"], i["detail"], f"{i['unit_price']:g}/{i['unit']}",
                      f"{i['amount']:.4f}")
    table.add_row("[bold]one run[/]", "Glue + training + Step Functions", "",
                  f"[bold]{c['run_total']:.2f}[/]")
    table.caption = (f"endpoint: ${c['endpoint_per_hour']:.3f} per hour until "
                     "`harness cloud teardown`")
    return table


def render_plan(p: dict[str, Any], console) -> None:
    from rich.rule import Rule
    from rich.syntax import Syntax

    def block(title: str, data: Any) -> None:
        console.print(Rule(title))
        console.print(Syntax(json.dumps(data, indent=2), "json", word_wrap=True))

    console.print(f"[bold]cloud plan[/] (dry run, no AWS call): run {p['run_id']}, "
                  f"region {p['region']}, s3://{p['bucket']}/{p['prefix']}/")
    console.print(f"training image: {p['images']['training']}")
    console.print(f"serving image:  {p['images']['serving']}")
    block(f"state machine {p['state_machine']['name']} (ASL)", p["state_machine"]["definition"])
    block("execution input", p["execution_input"])
    for name, body in p["requests"].items():
        block(name, body)
    console.print(cost_table(p["cost"]))
    for a in p["cost"]["assumptions"]:
        console.print(f"  assumes: {a}")


def cli_plan(cfg: PipelineConfig, console, as_json: bool) -> int:
    """`harness cloud plan [--json]`: print the dry run; never calls AWS."""
    try:
        p = plan(cfg)
    except HarnessError as e:
        console.print(f"[bold red]plan failed:[/] {e.message}")
        return e.exit_code
    if as_json:
        console.out(json.dumps(p, indent=2), highlight=False)
    else:
        render_plan(p, console)
    return 0
