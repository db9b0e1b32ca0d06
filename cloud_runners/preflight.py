"""Checks before anything is created: credentials, region, the stack's bucket and roles.

The report says what a run will create and what it will cost. It never holds secrets:
only the caller's account and ARN (from ``sts:GetCallerIdentity``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloud_runners import aws
from cloud_runners import stack as infra
from cloud_runners.cost import CostEstimate, estimate
from cloud_runners.credentials import check_region, require_credentials
from harness.config import PipelineConfig
from harness.errors import HarnessError

class NotBootstrapped(HarnessError):
    """The stack, its bucket or a role is missing."""


@dataclass
class PreflightReport:
    account: str
    caller: str
    region: str
    stack: str
    bucket: str
    roles: dict[str, str]
    run_id: str
    creates: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cost: CostEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"account": self.account, "caller": self.caller, "region": self.region,
                "stack": self.stack, "bucket": self.bucket, "roles": self.roles,
                "run_id": self.run_id, "creates": [list(c) for c in self.creates],
                "notes": self.notes, "cost": self.cost.to_dict() if self.cost else None}

    def text(self) -> str:
        lines = [f"account {self.account} as {self.caller}, region {self.region}",
                 f"stack {self.stack}: bucket {self.bucket}"]
        lines += [f"  role {k}: {v}" for k, v in self.roles.items()]
        lines.append(f"run {self.run_id} will create:")
        lines += [f"  {kind}: {name}" for kind, name in self.creates]
        lines += [f"note: {n}" for n in self.notes]
        if self.cost:
            lines.append("estimated cost (approximate on-demand list prices of "
                         f"{self.cost.prices_date}):")
            lines += [f"  {i.name}: {i.detail}: ${i.amount:.4f}" for i in self.cost.items]
            lines.append(f"  {self.cost.summary()}")
        return "\n".join(lines)


def _exists(call, *missing_codes: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        call()
        return True
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in missing_codes:
            return False
        raise


def example_document(wf, run_id: str, bucket: str, prefix: str) -> dict[str, Any]:
    """What a run's placeholders resolve to before it runs (outputs stay placeholders)."""
    from harness.placeholders import (BASE_URI_KEY, BUCKET_KEY, CODE_URI_KEY, PREFIX_KEY,
                                      RUN_ID_KEY, code_uri_of)
    return {RUN_ID_KEY: run_id, BUCKET_KEY: bucket, PREFIX_KEY: prefix,
            BASE_URI_KEY: f"s3://{bucket}/{prefix}",
            CODE_URI_KEY: code_uri_of(f"s3://{bucket}/{prefix}")}


def creates(wf, ctx, doc: dict[str, Any]) -> list[tuple[str, str]]:
    """What the run creates, step by step (the step kinds say it)."""
    from harness.placeholders import readable, with_examples
    out: list[tuple[str, str]] = []
    for step in wf.steps:
        request = readable(with_examples(step.request(ctx), doc))
        out += step.creates(request)
    return out


def preflight(cfg: PipelineConfig, session, wf, run_id: str | None = None) -> PreflightReport:
    """Check the account is ready; say what the run creates and costs. Creates nothing."""
    from harness.runs import new_run_id
    from harness.tags import resource_tags

    ident = require_credentials(cfg, session)
    region = check_region(cfg, session)
    try:
        outputs = infra.stack_outputs(cfg, session)
    except infra.StackMissing as e:
        raise NotBootstrapped(e.problem, field="cloud.stack_name",
                              hint="run `harness cloud bootstrap` first; nothing was created"
                              ) from None
    bucket = cfg.cloud.bucket or outputs["BucketName"]
    s3 = aws.client(session, "s3", cfg)
    if not _exists(lambda: s3.head_bucket(Bucket=bucket), "404", "NoSuchBucket", "403"):
        raise NotBootstrapped(f"the bucket '{bucket}' does not exist or is not yours",
                              field="cloud.bucket" if cfg.cloud.bucket else "cloud.stack_name",
                              hint="run `harness cloud bootstrap` first; nothing was created")
    iam = aws.client(session, "iam", cfg)
    roles = {}
    for key in infra.ROLE_OUTPUTS:
        arn = outputs[key]
        role_name = arn.rsplit("/", 1)[-1]
        if not _exists(lambda: iam.get_role(RoleName=role_name), "NoSuchEntity"):
            raise NotBootstrapped(f"the role {role_name} ({key}) is missing",
                                  field="cloud.stack_name",
                                  hint="run `harness cloud bootstrap` first; nothing was created")
        roles[key] = arn

    run_id = run_id or new_run_id()
    prefix = f"{cfg.cloud.prefix.strip('/')}/{run_id}"
    ctx = wf.build_context("cloud", role=outputs["SageMakerRoleArn"],
                           tags=resource_tags(cfg, run_id),
                           poll_seconds=cfg.cloud.poll_seconds)
    cost = estimate(cfg, wf, wf.definition(ctx))  # a config error (instance type) stops here
    report = PreflightReport(account=ident["Account"], caller=ident["Arn"], region=region,
                             stack=cfg.cloud.stack_name, bucket=bucket, roles=roles,
                             run_id=run_id, cost=cost)
    glue = aws.client(session, "glue", cfg)
    jobs = [name for s in wf.steps for name in [s.name_prefixes().get("glue-job")] if name]
    sfn = aws.client(session, "stepfunctions", cfg)
    sm_name = aws.state_machine_name(cfg, wf.name)
    sm_exists = any(m["name"] == sm_name
                    for m in sfn.list_state_machines().get("stateMachines", []))
    report.creates = [("S3 prefix", f"s3://{bucket}/{prefix}/")]
    for job in jobs:
        exists = _exists(lambda: glue.get_job(JobName=job), "EntityNotFoundException")
        report.creates.append(("Glue job", f"{job} ({'exists: updated' if exists else 'created'})"))
    report.creates += [
        ("state machine", f"{sm_name} ({'exists: updated' if sm_exists else 'created'})"),
        ("Step Functions execution", run_id)]
    report.creates += creates(wf, ctx, example_document(wf, run_id, bucket, prefix))
    report.notes.append(f"every resource is tagged {infra.TAG_KEY}={cfg.cloud.stack_name}")
    return report


def render_report(report: PreflightReport, console) -> None:
    """What the run will create and what it costs (never a secret)."""
    from rich.table import Table

    console.print(f"[green]preflight ok[/]: account {report.account} as {report.caller}, "
                  f"region {report.region}, stack {report.stack}, bucket {report.bucket}")
    table = Table(title=f"run {report.run_id} will create")
    table.add_column("what")
    table.add_column("name")
    for kind, name in report.creates:
        table.add_row(kind, name)
    console.print(table)
    if report.cost:
        from cloud_runners.cost import cost_table
        console.print(cost_table(report.cost))
    for n in report.notes:
        console.print(f"note: {n}")
