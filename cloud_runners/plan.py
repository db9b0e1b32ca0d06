"""The dry run (`harness cloud plan`): the ASL, every request and the cost, no AWS call.

Images are looked up with sagemaker-core's ``image_uris`` (a table shipped with the
SDK: no network, no account ids in our code). The bucket and role ARNs are placeholders
because finding them would need AWS; `harness cloud preflight` fills them in. Values
only a run knows (an earlier step's output) are written ``{$.Path}``.
"""
from __future__ import annotations

import json
from typing import Any

from cloud_runners.aws import state_machine_name
from cloud_runners.cost import cost_table, estimate
from cloud_runners.preflight import example_document
from cloud_runners.setup import CloudImages
from harness.asl import input_schema
from harness.asl_check import validate
from harness.config import PipelineConfig
from harness.errors import HarnessError
from harness.placeholders import readable, with_examples
from harness.tags import PROJECT_TAG, resource_tags

BUCKET = "<bucket>"
ROLE_PLACEHOLDERS = {"sagemaker": "<SageMakerRoleArn>", "glue": "<GlueRoleArn>",
                     "stepfunctions": "<StepFunctionsRoleArn>"}
EXAMPLE_RUN_ID = "20250101-000000-abcd"


def plan(cfg: PipelineConfig, wf, run_id: str | None = None) -> dict[str, Any]:
    """Everything a cloud run of ``wf`` would send, as plain data."""
    run_id = run_id or EXAMPLE_RUN_ID
    prefix = f"{cfg.cloud.prefix.strip('/')}/{run_id}"
    bucket = cfg.cloud.bucket or BUCKET
    ctx = wf.build_context("cloud", images=CloudImages(cfg),
                           role=ROLE_PLACEHOLDERS["sagemaker"],
                           roles={"glue": ROLE_PLACEHOLDERS["glue"]},
                           tags=resource_tags(cfg, run_id),
                           poll_seconds=cfg.cloud.poll_seconds)
    asl = wf.definition(ctx)
    problems = validate(asl)
    if problems:
        raise HarnessError("the compiled state machine is not valid ASL: " + "; ".join(problems))
    cost = estimate(cfg, wf, asl)
    doc = example_document(wf, run_id, bucket, prefix)
    example_input = dict(doc)
    for key, typ in wf.execution_input.schema.items():
        example_input[key] = f"<{typ.__name__}>"
    for step in wf.before_steps():
        example_input[step.result_key] = f"<the output of step '{step.state_id}', which " \
                                         "runs on the client before the execution>"
    code_uris = {a.target: f"s3://{bucket}/{prefix}/code/{a.target}" for a in wf.code()}
    return {
        "run_id": run_id,
        "workflow": wf.name,
        "region": cfg.cloud.region,
        "bucket": bucket,
        "prefix": prefix,
        "tags": {PROJECT_TAG: cfg.cloud.stack_name},
        "steps": [{"name": s.state_id, "kind": s.kind, "runs": s.placement}
                  for s in wf.steps],
        "state_machine": {"name": state_machine_name(cfg, wf.name),
                          "role": ROLE_PLACEHOLDERS["stepfunctions"], "definition": asl},
        "execution_input": example_input,
        "execution_input_schema": input_schema(wf),
        "code": code_uris,
        "setup": {f"{r.service}:{r.action} {r.name}": r.body
                  for s in wf.steps for r in s.setup_requests(code_uris, ctx)},
        "requests": {s.state_id: readable(with_examples(s.request(ctx), doc))
                     for s in wf.steps},
        "cost": cost.to_dict(),
    }


def render_plan(p: dict[str, Any], console) -> None:
    from rich.rule import Rule
    from rich.syntax import Syntax

    def block(title: str, data: Any) -> None:
        console.print(Rule(title))
        console.print(Syntax(json.dumps(data, indent=2), "json", word_wrap=True))

    console.print(f"[bold]cloud plan[/] (dry run, no AWS call): pipeline {p['workflow']}, "
                  f"run {p['run_id']}, region {p['region']}, s3://{p['bucket']}/{p['prefix']}/")
    for s in p["steps"]:
        where = {"before": "on the client, before the execution",
                 "after": "on the client, after the execution"}.get(s["runs"],
                                                                     "in the state machine")
        console.print(f"  {s['name']:<20} {s['kind']:<16} {where}")
    block(f"state machine {p['state_machine']['name']} (ASL)", p["state_machine"]["definition"])
    block("execution input", p["execution_input"])
    for name, body in p["setup"].items():
        block(f"before the run: {name}", body)
    for name, body in p["requests"].items():
        block(f"step {name}", body)
    console.print(cost_table(p["cost"]))
    for a in p["cost"]["assumptions"]:
        console.print(f"  assumes: {a}")
