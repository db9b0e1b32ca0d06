"""``harness cloud teardown``: delete exactly what the project created.

SageMaker endpoints, endpoint configs and models whose names carry the pipeline's
prefixes *and* the project tag; running tuning, training and processing jobs of the project
(stopped: finished jobs cost nothing and cannot be deleted); the Glue jobs and state
machines tagged for the project; the monitoring schedules (the project's schedule group); every object version in the project's bucket; then the
stack. Nothing without the project's tag is touched.
"""
from __future__ import annotations

from typing import Any, Callable

from cloud_runners import aws
from cloud_runners.bucket import empty_bucket
from cloud_runners.credentials import require_credentials
from cloud_runners.stack import (
    TAG_KEY,
    client_error_code,
    describe_stack,
    stack_output_values,
    wait_for_stack,
    stack_name,
)
from harness.config import PipelineConfig
from harness.errors import HarnessError


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


def _sagemaker_resources(cfg: PipelineConfig, session, prefixes: dict[str, str],
                         deleted: list[str], problems: list[str]) -> None:
    from botocore.exceptions import ClientError

    sm = aws.client(session, "sagemaker", cfg)

    def ours(arn: str) -> bool:
        return _tagged(_paginate(sm, "list_tags", "Tags", ResourceArn=arn), cfg)

    # Jobs still running cost money: stop them (finished jobs cost nothing and SageMaker
    # has no delete for them).
    # Tuning jobs first: stopping one stops its training jobs too.
    jobs = [("tuning job", "tuning-job", "list_hyper_parameter_tuning_jobs",
             "HyperParameterTuningJobSummaries", "HyperParameterTuningJobName",
             "HyperParameterTuningJobArn", "stop_hyper_parameter_tuning_job"),
            ("training job", "training-job", "list_training_jobs", "TrainingJobSummaries",
             "TrainingJobName", "TrainingJobArn", "stop_training_job"),
            ("processing job", "processing-job", "list_processing_jobs",
             "ProcessingJobSummaries", "ProcessingJobName", "ProcessingJobArn",
             "stop_processing_job")]
    for what, kind, lister, key, name_key, arn_key, stopper in jobs:
        if kind not in prefixes:
            continue
        pre = prefixes[kind] + "-"
        for job in _paginate(sm, lister, key, NameContains=pre, StatusEquals="InProgress"):
            name = job[name_key]
            if name.startswith(pre) and ours(job[arn_key]):
                try:
                    getattr(sm, stopper)(**{name_key: name})
                    deleted.append(f"{what} {name} (stopped)")
                except ClientError as e:
                    problems.append(f"{what} {name}: {client_error_code(e)[1]}")

    kinds = [("endpoint", "list_endpoints", "Endpoints", "EndpointName", "EndpointArn",
              "delete_endpoint"),
             ("endpoint-config", "list_endpoint_configs", "EndpointConfigs",
              "EndpointConfigName", "EndpointConfigArn", "delete_endpoint_config"),
             ("model", "list_models", "Models", "ModelName", "ModelArn", "delete_model")]
    for kind, lister, key, name_key, arn_key, deleter in kinds:
        if kind not in prefixes:
            continue
        pre = prefixes[kind] + "-"
        for item in _paginate(sm, lister, key, NameContains=pre):
            name = item[name_key]
            if not name.startswith(pre) or not ours(item[arn_key]):
                continue
            try:
                getattr(sm, deleter)(**{name_key: name})
                deleted.append(f"{kind.replace('-', ' ')} {name}")
            except ClientError as e:
                problems.append(f"{kind.replace('-', ' ')} {name}: {client_error_code(e)[1]}")


def _glue_job(cfg: PipelineConfig, session, name: str, deleted: list[str],
              problems: list[str]) -> None:
    from botocore.exceptions import ClientError

    glue = aws.client(session, "glue", cfg)
    try:
        glue.get_job(JobName=name)
    except ClientError as e:
        if client_error_code(e)[0] == "EntityNotFoundException":
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


def _state_machines(cfg: PipelineConfig, session, deleted: list[str], problems: list[str]
                    ) -> None:
    """Every state machine tagged for the project (one per pipeline name)."""
    sfn = aws.client(session, "stepfunctions", cfg)
    for sm in _paginate(sfn, "list_state_machines", "stateMachines"):
        arn, name = sm["stateMachineArn"], sm["name"]
        tags = {t["key"]: t["value"] for t in sfn.list_tags_for_resource(
            resourceArn=arn).get("tags", [])}
        if tags.get(TAG_KEY) != cfg.cloud.stack_name:
            continue
        for ex in _paginate(sfn, "list_executions", "executions", stateMachineArn=arn,
                            statusFilter="RUNNING"):
            sfn.stop_execution(executionArn=ex["executionArn"], error="Teardown",
                               cause="harness cloud teardown")
            deleted.append(f"execution {ex['name']} (stopped)")
        sfn.delete_state_machine(stateMachineArn=arn)
        deleted.append(f"state machine {name}")


def _schedules(cfg: PipelineConfig, session, deleted: list[str], problems: list[str]
               ) -> None:
    """The monitoring schedules: the schedule group named after the stack, if it is the
    project's (deleting a group deletes its schedules)."""
    from botocore.exceptions import ClientError

    scheduler = aws.client(session, "scheduler", cfg)
    group = cfg.cloud.stack_name
    try:
        arn = scheduler.get_schedule_group(Name=group)["Arn"]
    except ClientError as e:
        if client_error_code(e)[0] == "ResourceNotFoundException":
            return
        raise
    tags = {t["Key"]: t["Value"] for t in scheduler.list_tags_for_resource(
        ResourceArn=arn).get("Tags", [])}
    if tags.get(TAG_KEY) != cfg.cloud.stack_name:
        problems.append(f"schedule group {group}: not tagged for the project, left alone")
        return
    names = [s["Name"] for s in _paginate(scheduler, "list_schedules", "Schedules",
                                          GroupName=group)]
    scheduler.delete_schedule_group(Name=group)
    deleted.append(f"schedule group {group} ({len(names)} schedule(s): "
                   f"{', '.join(names) or 'none'})")


def teardown(cfg: PipelineConfig, session, wf, *,
             announce: Callable[[str], None] | None = None) -> list[str]:
    """Delete what the project created for ``wf``'s steps; return what was deleted, in
    order."""
    say = announce or (lambda _msg: None)
    require_credentials(cfg, session)
    deleted: list[str] = []
    problems: list[str] = []
    prefixes = wf.name_prefixes()
    _sagemaker_resources(cfg, session, prefixes, deleted, problems)
    if "glue-job" in prefixes:
        _glue_job(cfg, session, prefixes["glue-job"], deleted, problems)
    _schedules(cfg, session, deleted, problems)
    _state_machines(cfg, session, deleted, problems)
    for item in deleted:
        say(f"deleted {item}")
    cf = aws.client(session, "cloudformation", cfg)
    name = stack_name(cfg)
    stack = describe_stack(cf, name)
    if stack is not None and stack["StackStatus"] != "DELETE_COMPLETE":
        bucket = stack_output_values(stack).get("BucketName")
        if bucket:
            n = empty_bucket(cfg, session, bucket)
            deleted.append(f"bucket {bucket} emptied ({n} object versions)")
            say(deleted[-1])
        cf.delete_stack(StackName=name)
        wait_for_stack(cf, "stack_delete_complete", name, "delete")
        deleted.append(f"stack {name} (bucket, roles)")
        say(deleted[-1])
    if problems:
        raise HarnessError("teardown left some resources: " + "; ".join(problems),
                           hint="deleted so far: " + (", ".join(deleted) or "nothing")
                           + "; run `harness cloud teardown` again")
    return deleted
