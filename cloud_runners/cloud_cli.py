"""``harness cloud plan|preflight|bootstrap|run|monitor|teardown``: the cloud commands.

``harness.cli`` reaches each through a lazy ``"module:function"`` table (the core never
imports boto3); every command is ``fn(cfg, workflow, console, args) -> exit code`` and
prints a failure as one paragraph (``cli_guard``).
"""
from __future__ import annotations

import json
from typing import Any, Callable

from harness.config import PipelineConfig
from harness.errors import HarnessError


def cli_guard(console, title: str, fn: Callable[[], int]) -> int:
    """Run a cloud command; print a failure as "<title> failed: ..." (missing credentials
    as "<title>: ...") and return its exit code."""
    from cloud_runners.credentials import NoCredentials

    try:
        return fn()
    except NoCredentials as e:
        console.print(f"[bold red]{title}:[/] {e.message}", soft_wrap=True)
        return e.exit_code
    except HarnessError as e:
        console.print(f"[bold red]{title} failed:[/] {e.message}", soft_wrap=True)
        return e.exit_code


def plan(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud plan [--json]`: print the dry run; never calls AWS."""
    from cloud_runners.plan import plan as make_plan
    from cloud_runners.plan import render_plan

    def run() -> int:
        p = make_plan(cfg, wf)
        if getattr(args, "json", False):
            console.out(json.dumps(p, indent=2), highlight=False)
        else:
            render_plan(p, console)
        return 0
    return cli_guard(console, "plan", run)


def preflight(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud preflight`: check and print the report; exit 2 without credentials."""
    from cloud_runners import aws
    from cloud_runners.preflight import preflight as check
    from cloud_runners.preflight import render_report

    def run() -> int:
        render_report(check(cfg, aws.session_for(cfg), wf), console)
        return 0
    return cli_guard(console, "preflight", run)


def bootstrap(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud bootstrap`: the stack (bucket, roles scoped to the pipeline's steps),
    then the Glue jobs and the state machine."""
    from rich.table import Table

    from cloud_runners import aws
    from cloud_runners.cloud_run import deploy_workflow
    from cloud_runners.setup import CloudSetup
    from cloud_runners.stack import OUTPUT_KEYS, TAG_KEY
    from cloud_runners.stack import bootstrap as create_stack

    def run() -> int:
        session = aws.session_for(cfg)
        outputs = create_stack(cfg, session, wf, announce=lambda m: console.print(f"  {m}"))
        table = Table(title=f"stack {cfg.cloud.stack_name} ({aws.region(cfg, session)})")
        table.add_column("output")
        table.add_column("value")
        for k in OUTPUT_KEYS:
            table.add_row(k, outputs[k])
        console.print(table)
        jobs, arn = deploy_workflow(wf, cfg, CloudSetup(cfg, session=session, outputs=outputs),
                                    "bootstrap")
        console.print("".join(f"Glue job {n} {a}; " for n, a in jobs.items())
                      + f"state machine {arn}")
        console.print(f"Resources the runs create are tagged {TAG_KEY}={cfg.cloud.stack_name}; "
                      "`harness cloud teardown` deletes them and the stack.")
        return 0
    return cli_guard(console, "bootstrap", run)


def run(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud run [--dry-run]`: one run of the pipeline on AWS."""
    if getattr(args, "dry_run", False):
        return plan(cfg, wf, console, args)
    return _run_on_cloud(cfg, wf, console)


def _run_on_cloud(cfg: PipelineConfig, wf, console, config_file: str | None = None) -> int:
    """``wf`` on the cloud backend with the live view (``harness run``'s)."""
    from harness.cli import cmd_run_workflow
    cfg = cfg.model_copy(deep=True)
    cfg.backend = "cloud"
    return cmd_run_workflow(cfg, wf, console, config_file=config_file)


def teardown(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud teardown`: delete what the project created, list it."""
    from cloud_runners import aws
    from cloud_runners.teardown import teardown as delete

    def run() -> int:
        session = aws.session_for(cfg)
        deleted = delete(cfg, session, wf, announce=lambda m: console.print(f"  {m}"))
        if not deleted:
            console.print("nothing to delete: the project has nothing in "
                          f"{aws.region(cfg, session)}")
        else:
            console.print(f"[green]teardown done:[/] {len(deleted)} item(s) deleted")
        return 0
    return cli_guard(console, "teardown", run)


def monitor(cfg: PipelineConfig, wf, console, args: Any = None) -> int:
    """`harness cloud monitor RUN`: the drift check of a cloud run's endpoint, now (one
    execution of its monitoring state machine), or on a schedule (`--schedule EXPR`,
    EventBridge Scheduler), or no longer (`--unschedule`)."""
    from cloud_runners import aws
    from cloud_runners.monitor_schedule import monitored, schedule, unschedule, workflow_for

    def run() -> int:
        target, run_cfg, execution = monitored(cfg, args.target)
        if args.unschedule:
            found = unschedule(cfg, aws.session_for(cfg), target.run_id)
            console.print(f"schedule of run {target.run_id}'s monitor "
                          + ("deleted" if found else "not found: nothing to delete"))
            return 0
        mon = workflow_for(cfg, target, run_cfg, execution, window_minutes=args.window or 0,
                           retrain=args.retrain)
        if args.schedule:
            made = schedule(cfg, aws.session_for(cfg), mon, target.run_id, args.schedule,
                            announce=lambda m: console.print(f"  {m}", soft_wrap=True))
            console.print(f"[green]scheduled:[/] {args.schedule} checks endpoint "
                          f"{target.endpoint_name}'s traffic"
                          + (" and retrains on drift" if args.retrain else "")
                          + f"; results under {made['home']}/monitoring/<execution id>/",
                          soft_wrap=True)
            return 0
        return _run_on_cloud(cfg, mon, console, config_file=f"monitoring run {target.run_id}")
    return cli_guard(console, "monitor", run)
