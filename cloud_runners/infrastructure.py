"""The project's AWS footprint: bootstrap (CloudFormation stack), outputs, teardown.

``bootstrap`` creates or updates the stack of ``infrastructure.yaml`` idempotently and
returns its outputs (bucket, three role ARNs). ``teardown`` deletes exactly what the
project created: SageMaker endpoints, endpoint configs and models whose names carry the
project's prefixes *and* the project tag, the Glue job, the state machine, every object
version in the project's bucket, then the stack.

Every resource a runner creates carries the tag ``mlharness:project=<stack name>``
(:func:`project_tags`); teardown never deletes a SageMaker resource without it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from cloud_runners import aws
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError
from harness.requests import PROJECT_TAG

TEMPLATE = Path(__file__).with_name("infrastructure.yaml")
TAG_KEY = PROJECT_TAG  # harness.requests.resource_tags puts it on every request
OUTPUT_KEYS = ("BucketName", "StepFunctionsRoleArn", "GlueRoleArn", "SageMakerRoleArn")
ROLE_OUTPUTS = ("StepFunctionsRoleArn", "GlueRoleArn", "SageMakerRoleArn")
NO_UPDATES = "No updates are to be performed"
# Real CloudFormation takes minutes; moto answers at once (the first check passes).
WAITER_CONFIG = {"Delay": 10, "MaxAttempts": 180}


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


def sagemaker_prefixes(cfg: PipelineConfig) -> dict[str, str]:
    """Name prefixes of what a run creates (see harness.requests.Names)."""
    m = cfg.deploy.model_name
    return {"training_job": cfg.train.job_name + "-", "model": m + "-",
            "endpoint_config": m + "-config-", "endpoint": m + "-endpoint-"}


def stack_parameters(cfg: PipelineConfig) -> list[dict[str, str]]:
    for field, value in (("train.job_name", cfg.train.job_name),
                         ("deploy.model_name", cfg.deploy.model_name)):
        # SageMaker ARNs carry lowercased names: the roles' resource patterns must too.
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,40}", value):
            raise ConfigError("SageMaker resource prefixes scope the IAM roles", field=field,
                              expected="lowercase letters, digits and hyphens (at most 41)",
                              got=value)
    prefix = cfg.cloud.prefix.strip("/")
    if not prefix:
        raise ConfigError("the runs need a key prefix in the bucket", field="cloud.prefix",
                          expected="a prefix such as mlharness/runs", got=cfg.cloud.prefix)
    values = {"ProjectName": stack_name(cfg), "KeyPrefix": prefix,
              "GlueJobName": cfg.etl.job_name, "TrainingJobPrefix": cfg.train.job_name,
              "ModelPrefix": cfg.deploy.model_name}
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


# --- stack -------------------------------------------------------------------------

def _client_error_code(exc: Exception) -> tuple[str, str]:
    resp = getattr(exc, "response", {}) or {}
    err = resp.get("Error", {})
    return err.get("Code", ""), err.get("Message", str(exc))


def _describe_stack(cf, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        stacks = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as e:
        code, msg = _client_error_code(e)
        if code == "ValidationError" and "does not exist" in msg:
            return None
        raise
    return stacks[0] if stacks else None


def _outputs(stack: dict[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def stack_outputs(cfg: PipelineConfig, session) -> dict[str, str]:
    """BucketName and the three role ARNs of the project's stack."""
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    stack = _describe_stack(cf, name)
    if stack is None or stack["StackStatus"] in ("DELETE_COMPLETE", "ROLLBACK_COMPLETE"):
        raise StackMissing(f"the stack '{name}' does not exist in {aws.region(cfg, session)}",
                           field="cloud.stack_name", hint="run `harness cloud bootstrap` first")
    outputs = _outputs(stack)
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise StackMissing(f"the stack '{name}' is {stack['StackStatus']} and lacks the "
                           f"outputs {', '.join(missing)}", field="cloud.stack_name",
                           hint="run `harness cloud bootstrap` again")
    return outputs


def _failure_events(cf, name: str, limit: int = 10) -> list[str]:
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


def _wait(cf, waiter: str, name: str, action: str) -> None:
    from botocore.exceptions import WaiterError

    try:
        cf.get_waiter(waiter).wait(StackName=name, WaiterConfig=WAITER_CONFIG)
    except WaiterError as e:
        events = _failure_events(cf, name)
        detail = "; ".join(events) if events else str(e)
        raise StackFailed(f"could not {action} the stack '{name}': {detail}",
                          field="cloud.stack_name",
                          hint="see the stack's events in the CloudFormation console") from None


def bootstrap(cfg: PipelineConfig, session, *, announce: Callable[[str], None] | None = None
              ) -> dict[str, str]:
    """Create or update the stack; wait; return its outputs. Safe to run again."""
    from botocore.exceptions import ClientError

    from cloud_runners.preflight import check_region, require_credentials

    say = announce or (lambda _msg: None)
    require_credentials(cfg, session)
    check_region(cfg, session)
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    args = {"StackName": name, "TemplateBody": TEMPLATE.read_text(),
            "Parameters": stack_parameters(cfg), "Capabilities": ["CAPABILITY_IAM"],
            "Tags": project_tags(cfg)}
    stack = _describe_stack(cf, name)
    if stack is not None and stack["StackStatus"] == "ROLLBACK_COMPLETE":
        # A failed first create leaves a stack that can only be deleted.
        say(f"stack {name} is ROLLBACK_COMPLETE: deleting it before creating it again")
        cf.delete_stack(StackName=name)
        _wait(cf, "stack_delete_complete", name, "delete")
        stack = None
    if stack is not None and stack["StackStatus"].endswith("_IN_PROGRESS"):
        raise StackFailed(f"the stack '{name}' is {stack['StackStatus']}",
                          field="cloud.stack_name", hint="wait until it settles and run again")
    if stack is None:
        say(f"creating stack {name}")
        cf.create_stack(OnFailure="ROLLBACK", **args)
        _wait(cf, "stack_create_complete", name, "create")
    else:
        say(f"updating stack {name}")
        try:
            cf.update_stack(**args)
        except ClientError as e:
            code, msg = _client_error_code(e)
            if not (code == "ValidationError" and NO_UPDATES in msg):
                raise StackFailed(f"could not update the stack '{name}': {msg}",
                                  field="cloud.stack_name") from None
            say(f"stack {name} is up to date")
        else:
            _wait(cf, "stack_update_complete", name, "update")
    outputs = stack_outputs(cfg, session)
    for fix in ensure_bucket_guardrails(cfg, session, outputs["BucketName"]):
        say(fix)
    return outputs


def ensure_bucket_guardrails(cfg: PipelineConfig, session, bucket: str) -> list[str]:
    """Check the bucket is encrypted, versioned and blocks public access; set what is not.

    On AWS the template has set all three and this only reads; an emulator that ignores
    some template properties (moto ignores PublicAccessBlockConfiguration and
    VersioningConfiguration) gets them here. Returns what it had to set.
    """
    from botocore.exceptions import ClientError

    s3 = aws.client(session, "s3", cfg)
    fixed = []
    flags = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    try:
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError:
        pab = {}
    if not all(pab.get(f) for f in flags):
        s3.put_public_access_block(Bucket=bucket,
                                   PublicAccessBlockConfiguration={f: True for f in flags})
        fixed.append(f"bucket {bucket}: public access block set")
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except ClientError:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        fixed.append(f"bucket {bucket}: default encryption (SSE-S3) set")
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        fixed.append(f"bucket {bucket}: versioning enabled")
    return fixed


# --- teardown ----------------------------------------------------------------------

def _paginate(api, method: str, key: str, **kw) -> list[dict[str, Any]]:
    if api.can_paginate(method):
        out: list[dict[str, Any]] = []
        for page in api.get_paginator(method).paginate(**kw):
            out.extend(page.get(key, []))
        return out
    return getattr(api, method)(**kw).get(key, [])


def _tagged(tags: list[dict[str, str]] | dict[str, str], cfg: PipelineConfig) -> bool:
    if isinstance(tags, dict):
        return tags.get(TAG_KEY) == cfg.cloud.stack_name
    return any(t.get("Key") == TAG_KEY and t.get("Value") == cfg.cloud.stack_name
               for t in tags)


def _foreign(tags: dict[str, str], cfg: PipelineConfig) -> bool:
    """Tagged as another project's resource."""
    return TAG_KEY in tags and tags[TAG_KEY] != cfg.cloud.stack_name


def _sagemaker_resources(cfg: PipelineConfig, session, deleted: list[str],
                         problems: list[str]) -> None:
    from botocore.exceptions import ClientError

    sm = aws.client(session, "sagemaker", cfg)
    pre = sagemaker_prefixes(cfg)

    def ours(arn: str) -> bool:
        return _tagged(_paginate(sm, "list_tags", "Tags", ResourceArn=arn), cfg)

    # Training jobs still running cost money: stop them (finished jobs cost nothing
    # and SageMaker has no delete for them).
    for job in _paginate(sm, "list_training_jobs", "TrainingJobSummaries",
                         NameContains=pre["training_job"], StatusEquals="InProgress"):
        name = job["TrainingJobName"]
        if name.startswith(pre["training_job"]) and ours(job["TrainingJobArn"]):
            try:
                sm.stop_training_job(TrainingJobName=name)
                deleted.append(f"training job {name} (stopped)")
            except ClientError as e:
                problems.append(f"training job {name}: {_client_error_code(e)[1]}")

    kinds = [("endpoint", "list_endpoints", "Endpoints", "EndpointName", "EndpointArn",
              "delete_endpoint"),
             ("endpoint_config", "list_endpoint_configs", "EndpointConfigs",
              "EndpointConfigName", "EndpointConfigArn", "delete_endpoint_config"),
             ("model", "list_models", "Models", "ModelName", "ModelArn", "delete_model")]
    for kind, lister, key, name_key, arn_key, deleter in kinds:
        for item in _paginate(sm, lister, key, NameContains=pre[kind]):
            name = item[name_key]
            if not name.startswith(pre[kind]) or not ours(item[arn_key]):
                continue
            try:
                getattr(sm, deleter)(**{name_key: name})
                deleted.append(f"{kind.replace('_', ' ')} {name}")
            except ClientError as e:
                problems.append(f"{kind.replace('_', ' ')} {name}: {_client_error_code(e)[1]}")


def _glue_job(cfg: PipelineConfig, session, deleted: list[str], problems: list[str]) -> None:
    from botocore.exceptions import ClientError

    glue = aws.client(session, "glue", cfg)
    name = cfg.etl.job_name
    try:
        glue.get_job(JobName=name)
    except ClientError as e:
        if _client_error_code(e)[0] == "EntityNotFoundException":
            return
        raise
    region = aws.region(cfg, session)
    account = aws.client(session, "sts", cfg).get_caller_identity()["Account"]
    try:
        tags = glue.get_tags(ResourceArn=f"arn:aws:glue:{region}:{account}:job/{name}")["Tags"]
    except ClientError:
        tags = {}
    if _foreign(tags, cfg):
        problems.append(f"Glue job {name}: tagged for project {tags[TAG_KEY]!r}, left alone")
        return
    glue.delete_job(JobName=name)
    deleted.append(f"Glue job {name}")


def _state_machine(cfg: PipelineConfig, session, deleted: list[str], problems: list[str]
                   ) -> None:
    sfn = aws.client(session, "stepfunctions", cfg)
    name = aws.state_machine_name(cfg)
    for sm in _paginate(sfn, "list_state_machines", "stateMachines"):
        if sm["name"] != name:
            continue
        arn = sm["stateMachineArn"]
        tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(
            resourceArn=arn).get("tags", [])}
        if _foreign(tags, cfg):
            problems.append(f"state machine {name}: tagged for project {tags[TAG_KEY]!r}, "
                            "left alone")
            continue
        for ex in _paginate(sfn, "list_executions", "executions", stateMachineArn=arn,
                            statusFilter="RUNNING"):
            sfn.stop_execution(executionArn=ex["executionArn"], error="Teardown",
                               cause="harness cloud teardown")
            deleted.append(f"execution {ex['name']} (stopped)")
        sfn.delete_state_machine(stateMachineArn=arn)
        deleted.append(f"state machine {name}")


def empty_bucket(cfg: PipelineConfig, session, bucket: str) -> int:
    """Delete every object version and delete marker; return how many."""
    s3 = aws.client(session, "s3", cfg)
    count = 0
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                 for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        for i in range(0, len(batch), 1000):
            chunk = batch[i:i + 1000]
            resp = s3.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
            errors = resp.get("Errors", [])
            if errors:
                raise HarnessError(f"could not empty the bucket {bucket}: "
                                   f"{errors[0].get('Key')}: {errors[0].get('Message')}",
                                   hint="run `harness cloud teardown` again")
            count += len(chunk)
    return count


def teardown(cfg: PipelineConfig, session, *, announce: Callable[[str], None] | None = None
             ) -> list[str]:
    """Delete what the project created; return what was deleted, in order."""
    from cloud_runners.preflight import require_credentials

    say = announce or (lambda _msg: None)
    require_credentials(cfg, session)
    deleted: list[str] = []
    problems: list[str] = []
    _sagemaker_resources(cfg, session, deleted, problems)
    _glue_job(cfg, session, deleted, problems)
    _state_machine(cfg, session, deleted, problems)
    for item in deleted:
        say(f"deleted {item}")
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    stack = _describe_stack(cf, name)
    if stack is not None and stack["StackStatus"] != "DELETE_COMPLETE":
        bucket = _outputs(stack).get("BucketName")
        if bucket:
            n = empty_bucket(cfg, session, bucket)
            deleted.append(f"bucket {bucket} emptied ({n} object versions)")
            say(deleted[-1])
        cf.delete_stack(StackName=name)
        _wait(cf, "stack_delete_complete", name, "delete")
        deleted.append(f"stack {name} (bucket, roles)")
        say(deleted[-1])
    if problems:
        raise HarnessError("teardown left some resources: " + "; ".join(problems),
                           hint="deleted so far: " + (", ".join(deleted) or "nothing")
                           + "; run `harness cloud teardown` again")
    return deleted


# --- CLI ---------------------------------------------------------------------------

def cli_guard(console, title: str, fn: Callable[[], int]) -> int:
    """Run a cloud command; print a failure as "<title> failed: ..." (missing credentials
    as "<title>: ...") and return its exit code."""
    from cloud_runners.preflight import NoCredentials

    try:
        return fn()
    except NoCredentials as e:
        console.print(f"[bold red]{title}:[/] {e.message}")
        return e.exit_code
    except HarnessError as e:
        console.print(f"[bold red]{title} failed:[/] {e.message}")
        return e.exit_code


def cli_bootstrap(cfg: PipelineConfig, console) -> int:
    """`harness cloud bootstrap`: create or update the stack, print its outputs."""
    from rich.table import Table

    def run() -> int:
        session = aws.session_for(cfg)
        outputs = bootstrap(cfg, session, announce=lambda m: console.print(f"  {m}"))
        table = Table(title=f"stack {cfg.cloud.stack_name} ({aws.region(cfg, session)})")
        table.add_column("output")
        table.add_column("value")
        for k in OUTPUT_KEYS:
            table.add_row(k, outputs[k])
        console.print(table)
        from cloud_runners.cloud_run import ensure_pipeline
        from cloud_runners.setup import CloudSetup
        action, arn = ensure_pipeline(cfg, session, CloudSetup(cfg, session=session,
                                                               outputs=outputs), "bootstrap")
        console.print(f"Glue job {cfg.etl.job_name} {action}; state machine {arn}")
        console.print(f"Resources the runs create are tagged {TAG_KEY}={cfg.cloud.stack_name}; "
                      "`harness cloud teardown` deletes them and the stack.")
        return 0

    return cli_guard(console, "bootstrap", run)


def cli_teardown(cfg: PipelineConfig, console) -> int:
    """`harness cloud teardown`: delete what the project created, list it."""

    def run() -> int:
        session = aws.session_for(cfg)
        deleted = teardown(cfg, session, announce=lambda m: console.print(f"  {m}"))
        if not deleted:
            console.print("nothing to delete: the project has nothing in "
                          f"{aws.region(cfg, session)}")
        else:
            console.print(f"[green]teardown done:[/] {len(deleted)} item(s) deleted")
        return 0

    return cli_guard(console, "teardown", run)
