"""Cloud Glue: the job a ``GlueStartJobRunStep`` runs, created or updated before a run.

The job definition is the step's ``CreateJob`` body (``GlueStartJobRunStep.job_definition``:
the very script the local Spark runs, uploaded under the run's prefix, with the stack's
Glue role); it is created, or updated in place when it exists (idempotent). The job run
itself is the state machine's ``glue:startJobRun.sync`` with the step's ``StartJobRun``
request.
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from cloud_runners import aws
from harness.errors import StepFailed

# CreateJob fields that UpdateJob's JobUpdate does not take.
_NOT_UPDATABLE = ("Name", "Tags")


def upsert_glue_job(glue: Any, body: dict[str, Any], tags: dict[str, str] | None = None,
                    step: str = "etl") -> str:
    """Create the job, or update it when it exists; return "created" or "updated"."""
    name = body["Name"]
    try:
        glue.get_job(JobName=name)
        exists = True
    except ClientError as e:
        if aws.error_code(e) != "EntityNotFoundException":
            raise StepFailed(step, f"Glue GetJob {name} failed: {e}") from None
        exists = False
    if not exists:
        try:
            glue.create_job(**body, **({"Tags": tags} if tags else {}))
            return "created"
        except ClientError as e:
            if aws.error_code(e) != "AlreadyExistsException":  # else: created meanwhile
                err = e.response.get("Error", {})
                raise StepFailed(step, f"Glue CreateJob {name} failed: {err.get('Code')}: "
                                 f"{err.get('Message')}") from None
    update = {k: v for k, v in body.items() if k not in _NOT_UPDATABLE}
    aws.aws_call(step, f"Glue UpdateJob {name}", glue.update_job, JobName=name, JobUpdate=update)
    return "updated"
