"""The project's CloudFormation stack: its name and parameters, bootstrap, its outputs.

``bootstrap`` creates or updates the stack of ``infrastructure.yaml`` idempotently and
returns its outputs (bucket, four role ARNs). The roles are scoped to what the
pipeline's steps create: the template's name-prefix parameters come from the workflow
(``Workflow.name_prefixes``), so a pipeline of one's own gets roles for its own jobs.
Every resource a runner creates carries the tag ``mlharness:project=<stack name>``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from cloud_runners import aws
from cloud_runners.bucket import ensure_bucket_guardrails
from cloud_runners.credentials import check_region, require_credentials
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError
from harness.tags import PROJECT_TAG

TEMPLATE = Path(__file__).with_name("infrastructure.yaml")
TAG_KEY = PROJECT_TAG  # harness.tags.resource_tags puts it on every request
OUTPUT_KEYS = ("BucketName", "StepFunctionsRoleArn", "GlueRoleArn", "SageMakerRoleArn",
               "SchedulerRoleArn")
ROLE_OUTPUTS = ("StepFunctionsRoleArn", "GlueRoleArn", "SageMakerRoleArn", "SchedulerRoleArn")
NO_UPDATES = "No updates are to be performed"
# Real CloudFormation takes minutes; moto answers at once (the first check passes).
WAITER_CONFIG = {"Delay": 10, "MaxAttempts": 180}
# Template parameter -> the resource kind whose name prefix it holds (Step.name_prefixes).
PREFIX_PARAMETERS = {"GlueJobName": "glue-job", "TrainingJobPrefix": "training-job",
                     "TuningJobPrefix": "tuning-job",
                     "ProcessingJobPrefix": "processing-job", "ModelPrefix": "model",
                     "EndpointConfigPrefix": "endpoint-config", "EndpointPrefix": "endpoint"}
# A prefix for a kind the pipeline does not use: the role allows nothing real.
UNUSED = "unused"


class StackMissing(HarnessError):
    """The project's stack does not exist (yet)."""


class StackFailed(HarnessError):
    """CloudFormation could not create, update or delete the stack."""


# --- names -------------------------------------------------------------------------

def stack_name(cfg: PipelineConfig) -> str:
    name = cfg.cloud.stack_name
    if not re.fullmatch(r"[a-z][a-z0-9-]{1,29}", name):
        raise ConfigError("the stack name also names the bucket", field="cloud.stack_name",
                          expected="2-30 lowercase letters, digits or hyphens, starting with "
                                   "a letter", got=name)
    return name


def project_tags(cfg: PipelineConfig) -> list[dict[str, str]]:
    """The tag every created resource carries (SageMaker/CloudFormation list form)."""
    return [{"Key": TAG_KEY, "Value": cfg.cloud.stack_name}]


def stack_parameters(cfg: PipelineConfig, wf) -> list[dict[str, str]]:
    """The template's parameters: the project, the key prefix, and the name prefix of each
    kind of resource the workflow's steps create (the roles are scoped to them)."""
    prefixes = wf.name_prefixes()
    values = {"ProjectName": stack_name(cfg)}
    prefix = cfg.cloud.prefix.strip("/")
    if not prefix:
        raise ConfigError("the runs need a key prefix in the bucket", field="cloud.prefix",
                          expected="a prefix such as mlharness/runs", got=cfg.cloud.prefix)
    values["KeyPrefix"] = prefix
    for param, kind in PREFIX_PARAMETERS.items():
        value = prefixes.get(kind, UNUSED)
        if kind == "glue-job":
            ok = re.fullmatch(r"[A-Za-z0-9_-]{1,255}", value)
            expected = "letters, digits, '_' and '-'"
        else:
            # SageMaker ARNs carry lowercased names: the roles' resource patterns must too.
            ok = re.fullmatch(r"[a-z0-9][a-z0-9-]{0,60}", value)
            expected = "lowercase letters, digits and hyphens"
        if not ok:
            raise ConfigError(f"the {kind} name prefix scopes the IAM roles",
                              field=f"{kind} name of the pipeline's steps",
                              expected=expected, got=value)
        values[param] = value
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]
# --- stack -------------------------------------------------------------------------

def client_error_code(exc: Exception) -> tuple[str, str]:
    resp = getattr(exc, "response", {}) or {}
    err = resp.get("Error", {})
    return err.get("Code", ""), err.get("Message", str(exc))


def describe_stack(cf, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as e:
        code, msg = client_error_code(e)
        if code == "ValidationError" and "does not exist" in msg:
            return None
        raise
    return stacks[0] if stacks else None


def stack_output_values(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def stack_outputs(cfg: PipelineConfig, session) -> dict[str, str]:
    """BucketName and the four role ARNs of the project's stack."""
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    stack = describe_stack(cf, name)
    if stack is None or stack["StackStatus"] in ("DELETE_COMPLETE", "ROLLBACK_COMPLETE"):
        raise StackMissing(f"the stack '{name}' does not exist in {aws.region(cfg, session)}",
                           field="cloud.stack_name", hint="run `harness cloud bootstrap` first")
    outputs = stack_output_values(stack)
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise StackMissing(f"the stack '{name}' is {stack['StackStatus']} and lacks the "
                           f"outputs {', '.join(missing)}", field="cloud.stack_name",
                           hint="run `harness cloud bootstrap` again")
    return outputs


def failure_events(cf, name: str, limit: int = 10) -> list[str]:
    try:
        events = cf.describe_stack_events(StackName=name)["StackEvents"]
    except Exception:  # the stack may be gone already
        return []
    out = []
    for ev in events:
        if ev.get("ResourceStatus", "").endswith("_FAILED"):
            out.append(f"{ev.get('LogicalResourceId')} ({ev.get('ResourceType')}): "
                       f"{ev.get('ResourceStatus')}: {ev.get('ResourceStatusReason', '')}")
        if len(out) >= limit:
            break
    return out


def wait_for_stack(cf, waiter: str, name: str, action: str) -> None:
    from botocore.exceptions import WaiterError

    try:
        cf.get_waiter(waiter).wait(StackName=name, WaiterConfig=WAITER_CONFIG)
    except WaiterError as e:
        events = failure_events(cf, name)
        detail = "; ".join(events) if events else str(e)
        raise StackFailed(f"could not {action} the stack '{name}': {detail}",
                          field="cloud.stack_name",
                          hint="see the stack's events in the CloudFormation console") from None


def bootstrap(cfg: PipelineConfig, session, wf, *,
              announce: Callable[[str], None] | None = None) -> dict[str, str]:
    """Create or update the stack for ``wf``'s steps; wait; return its outputs. Safe to
    run again."""
    from botocore.exceptions import ClientError

    say = announce or (lambda _msg: None)
    require_credentials(cfg, session)
    check_region(cfg, session)
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    args = {"StackName": name, "TemplateBody": TEMPLATE.read_text(),
            "Parameters": stack_parameters(cfg, wf), "Capabilities": ["CAPABILITY_IAM"],
            "Tags": project_tags(cfg)}
    stack = describe_stack(cf, name)
    if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
        # A failed first create leaves a stack that can only be deleted.
        say(f"stack {name} is ROLLBACK_COMPLETE: deleting it before creating it again")
        cf.delete_stack(StackName=name)
        wait_for_stack(cf, "stack_delete_complete", name, "delete")
        stack = None
    if stack is not None and stack["StackStatus"].endswith("_IN_PROGRESS"):
        raise StackFailed(f"the stack '{name}' is {stack['StackStatus']}",
                          field="cloud.stack_name", hint="wait until it settles and run again")
    if stack is None:
        say(f"creating stack {name}")
        cf.create_stack(OnFailure="ROLLBACK", **args)
        wait_for_stack(cf, "stack_create_complete", name, "create")
    else:
        say(f"updating stack {name}")
        try:
            cf.update_stack(**args)
        except ClientError as e:
            code, msg = client_error_code(e)
            if not (code == "ValidationError" and NO_UPDATES in msg):
                raise StackFailed(f"could not update the stack '{name}': {msg}",
                                  field="cloud.stack_name") from None
            say(f"stack {name} is up to date")
        else:
            wait_for_stack(cf, "stack_update_complete", name, "update")
    outputs = stack_outputs(cfg, session)
    for fix in ensure_bucket_guardrails(cfg, session, outputs["BucketName"]):
        say(fix)
    return outputs
