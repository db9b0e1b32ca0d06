"""Checks before anything is created: credentials, region, the stack's bucket and roles.

The report says what a run will create and what it will cost. It never holds secrets:
only the caller's account and ARN (from ``sts:GetCallerIdentity``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloud_runners import aws
from cloud_runners import infrastructure as infra
from cloud_runners.cost import CostEstimate, estimate
from harness.config import PipelineConfig
from harness.errors import ConfigError, HarnessError
from harness.requests import Names

NO_CREDENTIALS_MESSAGE = ("no AWS credentials found: set AWS_PROFILE or "
                          "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or run `aws configure`); "
                          "nothing was created")


class NoCredentials(HarnessError):
    """No AWS credentials in the environment: nothing can be (or was) created."""

    exit_code = 2

    def __init__(self, problem: str = NO_CREDENTIALS_MESSAGE, **kw):
        super().__init__(problem, **kw)


class NotBootstrapped(HarnessError):
    """The stack, its bucket or a role is missing."""


def require_credentials(cfg: PipelineConfig, session) -> dict[str, str]:
    """The caller's identity (Account, Arn); NoCredentials when there are none."""
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        creds = session.get_credentials()
    except PartialCredentialsError:
        creds = None
    if creds is None:
        raise NoCredentials()
    try:
        ident = aws.client(session, "sts", cfg).get_caller_identity()
    except (NoCredentialsError, PartialCredentialsError):
        raise NoCredentials() from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        raise HarnessError(f"AWS rejected the credentials ({code})",
                           expected="valid, unexpired credentials for the account",
                           hint="refresh them (e.g. `aws sso login`) and try again; "
                                "nothing was created") from None
    except EndpointConnectionError as e:
        raise HarnessError(f"cannot reach AWS STS ({e})", field="cloud.endpoint_url"
                           if cfg.cloud.endpoint_url else "cloud.region",
                           hint="check the network; nothing was created") from None
    except BotoCoreError as e:  # e.g. an expired SSO token
        raise NoCredentials(f"AWS credentials could not be loaded ({type(e).__name__}: {e})",
                            hint="refresh them (e.g. `aws sso login`) and try again; nothing "
                                 "was created") from None
    return {"Account": ident["Account"], "Arn": ident["Arn"]}


def check_region(cfg: PipelineConfig, session) -> str:
    region = aws.region(cfg, session)
    known = session.get_available_regions("sagemaker")
    if region not in known:
        raise ConfigError(f"'{region}' is not a region with SageMaker", field="cloud.region",
                          expected="one of " + ", ".join(sorted(known)))
    return region


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


def preflight(cfg: PipelineConfig, session, run_id: str | None = None) -> PreflightReport:
    """Check the account is ready; say what the run creates and costs. Creates nothing."""
    from harness.runs import new_run_id

    ident = require_credentials(cfg, session)
    region = check_region(cfg, session)
    cost = estimate(cfg)  # a config error (unknown instance type) stops here too
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
    names = Names(cfg, run_id)
    prefix = f"{cfg.cloud.prefix.strip('/')}/{run_id}"
    report = PreflightReport(account=ident["Account"], caller=ident["Arn"], region=region,
                             stack=cfg.cloud.stack_name, bucket=bucket, roles=roles,
                             run_id=run_id, cost=cost)
    glue = aws.client(session, "glue", cfg)
    glue_exists = _exists(lambda: glue.get_job(JobName=names.glue_job),
                          "EntityNotFoundException")
    sfn = aws.client(session, "stepfunctions", cfg)
    sm_name = aws.state_machine_name(cfg)
    sm_exists = any(m["name"] == sm_name
                    for m in sfn.list_state_machines().get("stateMachines", []))
    report.creates = [
        ("S3 prefix", f"s3://{bucket}/{prefix}/"),
        ("Glue job", f"{names.glue_job} ({'exists: updated' if glue_exists else 'created'}; "
                     f"{cfg.etl.number_of_workers} x {cfg.etl.worker_type}, Glue "
                     f"{cfg.etl.glue_version})"),
        ("Glue job run", f"of {names.glue_job}"),
        ("state machine", f"{sm_name} ({'exists: updated' if sm_exists else 'created'})"),
        ("Step Functions execution", run_id),
        ("training job", f"{names.training_job} ({cfg.train.instance_count} x "
                         f"{cfg.train.instance_type})"),
        ("model", names.model),
        ("endpoint config", names.endpoint_config),
        ("endpoint", f"{names.endpoint} ({cfg.deploy.initial_instance_count} x "
                     f"{cfg.deploy.instance_type}, billed per hour until teardown)"),
    ]
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
        from cloud_runners.plan import cost_table
        console.print(cost_table(report.cost))
    for n in report.notes:
        console.print(f"note: {n}")


def cli_preflight(cfg: PipelineConfig, console) -> int:
    """`harness cloud preflight`: check and print the report; exit 2 without credentials."""
    def run() -> int:
        render_report(preflight(cfg, aws.session_for(cfg)), console)
        return 0
    return infra.cli_guard(console, "preflight", run)
