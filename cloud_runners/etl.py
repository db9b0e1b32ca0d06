"""Cloud ``etl``: the Glue job runs the very ``glue_etl/`` script the local Spark runs.

The job definition is the ``CreateJob`` body registered for the run (``ctx.glue_jobs``,
built by ``harness.requests.glue_job_definition`` with the stack's Glue role): it is
created, or updated in place when it exists (idempotent). The run is ``StartJobRun``
with exactly the request's ``JobName`` and ``Arguments``; the runner polls ``GetJobRun``
every ``cloud.poll_seconds`` until the run ends.
"""
from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from cloud_runners import aws
from harness.errors import StepFailed
from harness.stages import StageContext
from local_runners.etl import registered_glue_job

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED")
FAILED = ("FAILED", "STOPPED", "TIMEOUT", "ERROR", "EXPIRED")
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


class CloudEtlRunner(aws.CloudStageRunner):
    kind = "etl"

    def _job(self, name: str, ctx: StageContext) -> dict[str, Any]:
        job = registered_glue_job(name, ctx)
        if not job.get("Role"):
            raise StepFailed(ctx.step, f"Glue job '{name}' has no role", field="Role",
                             expected="the stack's Glue role ARN (harness cloud bootstrap "
                             "creates it)")
        location = (job.get("Command") or {}).get("ScriptLocation", "")
        bucket, key = aws.split_s3(location)
        try:
            self.client(ctx, "s3").head_object(Bucket=bucket, Key=key)
        except ClientError:
            raise StepFailed(ctx.step, "the Glue job script is not in S3", file=location,
                             field="Command.ScriptLocation",
                             expected="the uploaded glue_etl script") from None
        return job

    def run(self, request: dict[str, Any], ctx: StageContext) -> dict[str, Any]:
        name = request.get("JobName")
        arguments = dict(request.get("Arguments") or {})
        output_uri = arguments.get("--output_uri")
        if not output_uri:
            raise StepFailed(ctx.step, "the job run has no output location",
                             field="Arguments.--output_uri", expected="an s3:// URI")
        job = self._job(name, ctx)
        glue = self.client(ctx, "glue")
        action = upsert_glue_job(glue, job, aws.glue_tags(ctx.config, ctx.run_id), ctx.step)
        ctx.log.info("Glue job %s %s (script %s, Glue %s, %s x %s)", name, action,
                     job["Command"]["ScriptLocation"], job.get("GlueVersion"),
                     job.get("NumberOfWorkers"), job.get("WorkerType"))

        started = aws.aws_call(ctx.step, f"Glue StartJobRun {name}", glue.start_job_run,
                               JobName=name, Arguments=arguments)
        run_id = started["JobRunId"]
        ctx.log.info("Glue job %s run %s started", name, run_id)
        seen: list[str] = []
        with ctx.progress.task(f"Glue job {name}", total=None) as task:
            def on_update(answer: dict[str, Any]) -> None:
                state = answer["JobRun"].get("JobRunState", "?")
                if not seen or seen[-1] != state:
                    seen.append(state)
                    ctx.log.info("Glue job run %s: %s", run_id, state)
                    task.update(description=f"  Glue job {name}: {state}")

            answer = aws.poll(
                lambda: aws.aws_call(ctx.step, f"Glue GetJobRun {run_id}", glue.get_job_run,
                                     JobName=name, RunId=run_id),
                lambda a: a["JobRun"].get("JobRunState") in TERMINAL,
                ctx.config.cloud.poll_seconds, on_update)
        job_run = aws.jsonable(answer["JobRun"])
        state = job_run.get("JobRunState")
        if state in FAILED:
            raise StepFailed(ctx.step, f"Glue job run {run_id} {state}: "
                             f"{job_run.get('ErrorMessage') or '(no error message)'}",
                             hint="the job's logs are in CloudWatch "
                             f"({job_run.get('LogGroupName', '/aws-glue/jobs')})")
        return {**job_run, "OutputUri": output_uri}
