"""``harness``: run the pipeline, list runs, show one run.

    harness run [--config FILE] [--pipeline MODULE:ATTR] [--backend local|emulator|cloud]
                [--data DIR] [--set section.field=value] [--resume RUN_ID [--from STEP]]
                [--keep-serving]
    harness graph [--mermaid | --svg FILE]
    harness runs
    harness show RUN_ID [--step STEP]
    harness report RUN_ID [--open]
    harness serve RUN|MODEL_DIR|model.tar.gz [--port 8080] [--server embedded|tf-serving-container]
    harness predict FILES... [--url http://127.0.0.1:8080 | --sagemaker-endpoint NAME]
    harness cloud plan|preflight|bootstrap|run|teardown
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import yaml

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from rich.console import Console  # noqa: E402
from rich.progress import (BarColumn, MofNCompleteColumn, SpinnerColumn,  # noqa: E402
                           TextColumn, TimeElapsedColumn)
from rich.table import Table  # noqa: E402
from rich.text import Text  # noqa: E402

from harness.config import load_config  # noqa: E402
from harness.errors import ConfigError, HarnessError  # noqa: E402
from harness.progress import LiveProgress, RichProgress  # noqa: E402
from harness.runs import RunStore, StepRecord  # noqa: E402

STATUS_STYLE = {"SUCCEEDED": "green", "REUSED": "cyan", "FAILED": "bold red",
                "RUNNING": "yellow", "PENDING": "dim", "INTERRUPTED": "magenta"}


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("a --set value must look like section.field=value",
                              field="--set", got=item)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            problem = str(e).splitlines()[0]
            raise ConfigError(f"the value is not valid YAML ({problem})", field=key.strip(),
                              got=value, expected="a YAML scalar, list or mapping, e.g. "
                              "0.99, true, [1, 2] or '\"a: b\"' in quotes") from None
    if getattr(args, "backend", None):
        out["backend"] = args.backend
    if getattr(args, "data", None):
        out["data.source"] = args.data
    if getattr(args, "keep_serving", False):
        out["deploy.keep_serving"] = True
    if getattr(args, "no_cache", False):
        out["cache.enabled"] = False
    if getattr(args, "no_cache_step", None):
        out["cache.skip_steps"] = list(args.no_cache_step)
    if getattr(args, "runs_dir", None):
        out["runs_dir"] = args.runs_dir
    if getattr(args, "pipeline", None):
        out["pipeline"] = args.pipeline
    return out


def _cfg(args: argparse.Namespace):
    if getattr(args, "resume", None):
        return _resume_cfg(args)
    return load_config(args.config, overrides_of(args))


def _resume_cfg(args: argparse.Namespace):
    """A resumed run starts from the earlier run's own configuration (its config.json:
    data source, runs folder, pipeline, every value); the flags given now override only
    what they name."""
    from harness.config import stored_config

    if args.config:
        raise ConfigError("--resume uses the run's own configuration (its config.json)",
                          field="--config", expected="no --config with --resume; change single "
                          "values with --set section.field=value")
    overrides = overrides_of(args)
    located = load_config(None, {k: v for k, v in overrides.items() if k == "runs_dir"})
    store = RunStore(located.runs_path())
    store.load(args.resume)  # a clear error when there is no such run
    return stored_config(store.run_dir(args.resume), located.runs_path(),
                         {k: v for k, v in overrides.items() if k != "runs_dir"})


# --------------------------------------------------------------------------- run
def _workflow(cfg):
    from harness.workflow import load_workflow
    return load_workflow(cfg.pipeline, cfg)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    local_only = args.resume or getattr(args, "from_step", None) or args.keep_serving
    if local_only and args.backend not in (None, "local"):
        raise ConfigError("--resume, --from and --keep-serving apply to the local backend only",
                          field="--backend", expected="local")
    cfg = _cfg(args)
    if cfg.backend != "local" and local_only:
        raise ConfigError("--resume, --from and --keep-serving apply to the local backend only",
                          field="--backend", expected="local")
    return cmd_run_workflow(cfg, _workflow(cfg), console, resume=args.resume,
                            from_step=getattr(args, "from_step", None),
                            config_file=args.config or (
                                f"stored with run {args.resume}" if args.resume else None))


def cmd_run_workflow(cfg, wf, console: Console, *, resume: str | None = None,
                     from_step: str | None = None, config_file: str | None = None) -> int:
    """Run ``wf`` on ``cfg.backend`` with the live view; print the summary or the failure."""
    from harness.backends import backend_for

    backend = backend_for(cfg.backend)
    titles = {s.state_id: f"{s.kind}: {s.comment}" for s in wf.steps}
    progress = LiveProgress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                        transient=False)

    def on_step(rec: StepRecord) -> None:
        style = STATUS_STYLE.get(rec.status, "")
        if rec.status == "RUNNING":
            progress.console.print(f"[bold]▶ {rec.name}[/bold]  {titles.get(rec.name, '')}")
        elif rec.status in ("SUCCEEDED", "REUSED"):
            extra = (f"{rec.duration_s:.1f} s" if rec.status == "SUCCEEDED"
                     and rec.duration_s is not None else
                     f"reused from {rec.reused_from}" if rec.status == "REUSED" else "")
            progress.console.print(f"[{style}]✓ {rec.name}[/{style}]  {extra}")

    def announce(msg: str) -> None:
        progress.console.print(Text(msg, style="bold magenta"), soft_wrap=True)

    console.print(f"[bold]Pipeline[/bold] {wf.name}  backend={cfg.backend}  "
                  f"config={config_file or 'pipeline.yaml'}")
    try:
        with progress:
            result = backend.run(wf, cfg, resume=resume, from_step=from_step,
                                 progress=RichProgress(progress), announce=announce,
                                 on_step=on_step, config_file=config_file)
    except HarnessError as exc:
        _print_failure(console, exc, getattr(exc, "run_record", None))
        return exc.exit_code
    try:
        _print_summary(console, result.summary)
        if cfg.deploy.keep_serving and result.summary.get("endpoint_url"):
            console.print(f"Serving at {result.summary['endpoint_url']} — Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    finally:
        result.close()
    return 0


def _print_error(console: Console, title: str, message: str) -> None:
    """One paragraph, never wrapped mid-path (so it can be copied and grepped)."""
    console.print(Text(title + ": ", style="bold red") + Text(message), soft_wrap=True)


def _print_failure(console: Console, exc: HarnessError, record) -> None:
    title = "Pipeline failed"
    if record is not None and record.status == "INTERRUPTED":
        title = "Interrupted"
    elif record is not None and record.status == "FAILED" and record.failed_step:
        title += f" at step '{record.failed_step}' of run {record.run_id}"
    _print_error(console, title, str(exc))
    if record is not None:
        console.print(f"Record: {record.run_id}  (harness show {record.run_id})",
                      soft_wrap=True)
        if record.resume_command:
            console.print(Text("Resume with: ") + Text(record.resume_command, style="bold"),
                          soft_wrap=True)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    table = Table(title=f"Run {s['run_id']} — {s['status']} ({s['backend']})",
                  show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("artifacts", s["run_dir"])
    for step in s["steps"]:
        secs = step.get("seconds")
        head = step["status"] if secs is None else f"{step['status']}  {secs:.1f} s"
        table.add_row(f"{step['name']} ({step['kind']})", head)
        for key, value in step["facts"].items():
            if value not in (None, ""):
                table.add_row(f"  {key}", _value(value))
    for name, value in (s.get("metrics") or {}).items():
        table.add_row(name, _value(value))
    table.add_row("wall time", f"{s['wall_seconds']:.1f} s")
    console.print(table)


def cmd_graph(args: argparse.Namespace, console: Console) -> int:
    wf = _workflow(_cfg(args))
    graph = wf.render_graph()
    if args.svg:
        console.print(f"graph written to {graph.save(args.svg)}")
        return 0
    if not args.mermaid:
        console.print(repr(graph), markup=False, highlight=False)
        console.rule("Mermaid")
    console.out(graph.mermaid, highlight=False)
    return 0


# -------------------------------------------------------------------- runs/show
def _store(args: argparse.Namespace) -> RunStore:
    return RunStore(_cfg(args).runs_path())


def cmd_runs(args: argparse.Namespace, console: Console) -> int:
    store = _store(args)
    ids = store.list_ids()
    if not ids:
        console.print(f"No runs yet in {store.root}. Start one with: harness run")
        return 0
    table = Table(title=f"Runs in {store.root}")
    table.add_column("run id", no_wrap=True, min_width=20)
    table.add_column("status", no_wrap=True)
    table.add_column("backend")
    table.add_column("started (UTC)", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("pipeline")
    table.add_column("headline metric")
    table.add_column("reused steps")
    for run_id in ids:
        try:
            rec = store.load(run_id)
            summary = store.summary(run_id) or {}
        except HarnessError as exc:
            table.add_row(run_id, "[bold red]UNREADABLE[/bold red]", "", "", "", "",
                          exc.problem, "")
            continue
        metrics = summary.get("metrics") or {}
        name, value = next(iter(metrics.items()), ("", None))
        style = STATUS_STYLE.get(rec.status, "")
        status = rec.status + (f" at {rec.failed_step}" if rec.failed_step else "")
        reused = [s for s in rec.steps if s.status == "REUSED"]
        table.add_row(run_id, f"[{style}]{status}[/{style}]", rec.backend,
                      str(rec.started or "")[:19].replace("T", " "),
                      "" if rec.duration_s is None else f"{rec.duration_s:.0f} s",
                      rec.workflow or "",
                      f"{name} {value:.4f}" if isinstance(value, (int, float)) else "",
                      f"{len(reused)} from {reused[0].reused_from}" if reused else "")
    console.print(table)
    return 0


def _print_step_table(console: Console, step, run_dir) -> None:
    """The step kind's own table of its output (e.g. a tuning job's trials)."""
    from harness.steps import step_table
    from harness.storage import read_json

    if not step.output or not (run_dir / step.output).exists():
        return
    shown = step_table(step.kind, read_json(run_dir / step.output))
    if shown is None:
        return
    columns, rows = shown
    table = Table(title=f"{step.name} ({step.kind})")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[_value(v) for v in row])
    console.print(table)


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    store = _store(args)
    rec = store.load(args.run_id)
    run_dir = store.run_dir(args.run_id)
    if args.step:
        step = next((s for s in rec.steps if s.name == args.step), None)
        if step is None:
            raise ConfigError(f"run {args.run_id} has no step {args.step!r}", field="--step",
                              expected="one of " + ", ".join(s.name for s in rec.steps))
        for label, rel in (("input", step.input), ("output", step.output)):
            if rel and (run_dir / rel).exists():
                console.rule(f"{step.name} {label}")
                console.print_json((run_dir / rel).read_text())
        if step.log and (run_dir / step.log).exists():
            console.rule(f"{step.name} log (last 40 lines)")
            lines = (run_dir / step.log).read_text(errors="replace").splitlines()
            console.print("\n".join(lines[-40:]), markup=False, highlight=False)
        _print_step_table(console, step, run_dir)
        if step.error:
            _print_error(console, "Error", step.error)
        return 0
    table = Table(title=f"Run {rec.run_id} — {rec.status} ({rec.backend})")
    for col in ("step", "status", "started", "seconds", "error"):
        table.add_column(col)
    for s in rec.steps:
        style = STATUS_STYLE.get(s.status, "")
        table.add_row(s.name, f"[{style}]{s.status}[/{style}]", s.started or "",
                      "" if s.duration_s is None else f"{s.duration_s:.1f}",
                      (s.error or "")[:120])
    console.print(table)
    console.print(f"Folder: {run_dir}")
    if rec.resumed_from:
        console.print(f"Resumed from: {rec.resumed_from}")
    if rec.resume_command:
        console.print(Text("Resume with: ") + Text(rec.resume_command, style="bold"),
                      soft_wrap=True)
    summary = store.summary(rec.run_id)
    if summary:
        console.print_json(json.dumps(summary))
    return 0


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from harness.report import report_command
    return report_command(_store(args), args, console)


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="pipeline YAML file (default: pipeline.yaml)")
        p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                       help="override one configuration value (repeatable)")
        p.add_argument("--runs-dir", help="where run records live (default: runs/)")
        p.add_argument("--pipeline", metavar="MODULE:ATTR",
                       help="the pipeline: package.module:attr or path/to/file.py:attr "
                       "(default: pipeline.yaml's 'pipeline', the MNIST pipeline)")

    run = sub.add_parser("run", help="run the whole pipeline")
    common(run)
    run.add_argument("--backend", help="local | emulator | cloud (default: from config)")
    run.add_argument("--data", help="folder, file or s3:// prefix of MNIST IDX pairs, CSV "
                     "or Parquet (default: cache, download, then the bundled sample)")
    run.add_argument("--resume", metavar="RUN_ID", help="reuse this run's outputs up to --from")
    run.add_argument("--from", dest="from_step", metavar="STEP",
                     help="step to resume from (default: the step that failed)")
    run.add_argument("--keep-serving", action="store_true",
                     help="keep the endpoint up after the run until Ctrl-C")
    run.add_argument("--no-cache", action="store_true", help="run every step (no reuse)")
    run.add_argument("--no-cache-step", action="append", metavar="STEP",
                     help="run this step even when cached (repeatable)")
    run.set_defaults(func=cmd_run)

    graph = sub.add_parser("graph", help="the pipeline's graph: steps in order, Mermaid text")
    common(graph)
    graph.add_argument("--mermaid", action="store_true", help="only the Mermaid text")
    graph.add_argument("--svg", metavar="FILE", help="write the graph as an image "
                       "(.svg, .png, .html or .mmd)")
    graph.set_defaults(func=cmd_graph)

    runs = sub.add_parser("runs", help="list runs")
    common(runs)
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="show one run (or one step with --step)")
    common(show)
    show.add_argument("run_id")
    show.add_argument("--step")
    show.set_defaults(func=cmd_show)
    report = sub.add_parser("report", help="rebuild a run's report.html and print its path")
    common(report)
    report.add_argument("run_id")
    report.add_argument("--open", action="store_true", help="open it in the web browser")
    report.set_defaults(func=cmd_report)
    serve = sub.add_parser("serve", help="serve a trained model (TF Serving REST + SageMaker "
                           "/invocations) until Ctrl-C")
    common(serve)
    serve.add_argument("served", metavar="MODEL", help="a run id, a model.tar.gz, or a directory holding "
                       "<version>/saved_model.pb")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--model-name", help="default: deploy.model_name")
    serve.add_argument("--poll-seconds", type=float, help="serve newer <version>/ dirs as they appear")
    serve.add_argument("--capture-dir", help="write SageMaker-format data capture here")
    serve.add_argument("--capture-percent", type=float, default=100.0)
    serve.add_argument("--no-input-range-check", action="store_true",
                       help="answer inputs outside the range the model declares (default: "
                       "400, e.g. pixels outside [0, 1])")
    serve.add_argument("--server", choices=["embedded", "tf-serving-container"],
                       help="default: deploy.server (embedded; the TF Serving container needs "
                       "a Docker engine)")
    serve.set_defaults(func=cmd_serve)

    predict = sub.add_parser("predict", help="send images to a served model, print classes")
    common(predict)
    predict.add_argument("files", nargs="+", help="IDX images files, PNG files or .npy arrays")
    predict.add_argument("--url", default="http://127.0.0.1:8080")
    predict.add_argument("--model-name", help="default: deploy.model_name")
    predict.add_argument("--sagemaker-endpoint", metavar="NAME",
                         help="send to this SageMaker endpoint (InvokeEndpoint, AWS credentials "
                         "and cloud.region) instead of --url")
    predict.set_defaults(func=cmd_predict)

    from harness.monitor_cli import add_parser as add_monitor
    add_monitor(sub, common, _monitor)

    cloud = sub.add_parser("cloud", help="the pipeline on AWS: plan, bootstrap, run, teardown")
    cloud_sub = cloud.add_subparsers(dest="cloud_command", required=True)
    for name, help_text in (
            ("plan", "dry run: the ASL, every request and the cost estimate; no AWS call"),
            ("preflight", "check credentials, region and the stack; what a run creates, costs"),
            ("bootstrap", "create or update the stack: bucket and least-privilege roles"),
            ("run", "upload data and code, run the Step Functions execution, stream events"),
            ("monitor", "check a cloud run's endpoint traffic for drift: now, or on a "
             "schedule (EventBridge Scheduler)"),
            ("teardown", "delete the endpoints and everything else the project created")):
        p = cloud_sub.add_parser(name, help=help_text)
        common(p)
        if name == "plan":
            p.add_argument("--json", action="store_true", help="print the plan as JSON")
        if name == "run":
            p.add_argument("--dry-run", action="store_true",
                           help="print the plan instead of running (no AWS call)")
        if name == "monitor":
            from harness.monitor_cli import add_cloud_arguments
            add_cloud_arguments(p)
    cloud.set_defaults(func=cmd_cloud)
    return parser


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    from harness.serving_cli import serve_command
    return serve_command(_cfg(args), args, console)


def cmd_predict(args: argparse.Namespace, console: Console) -> int:
    from harness.serving_cli import predict_command
    return predict_command(_cfg(args), args, console)


def _monitor(args: argparse.Namespace, console: Console) -> int:
    from harness.monitor_cli import monitor
    return monitor(_cfg(args), args, console)


# Cloud commands live in cloud_runners/, imported by dotted path only when asked for (the
# core stays boto3-free); each is ``fn(cfg, workflow, console, args) -> exit code``.
CLOUD_COMMANDS: dict[str, str] = {
    name: f"cloud_runners.cloud_cli:{name}"
    for name in ("plan", "preflight", "bootstrap", "run", "monitor", "teardown")}


def cmd_cloud(args: argparse.Namespace, console: Console) -> int:
    from harness.backends import load

    cfg = _cfg(args)
    return load(CLOUD_COMMANDS[args.cloud_command])(cfg, _workflow(cfg), console, args)


def main(argv: list[str] | None = None) -> int:
    """The CLI's one boundary: a mistake a user can make is a message and an exit code
    (2 for configuration, 1 for a failed run, 130 for an interruption); anything else is
    an internal error whose traceback goes to a log file, never to the console."""
    from harness.cli_errors import internal_error, terminate_as_interrupt

    args = build_parser().parse_args(argv)
    console = Console()
    try:
        with terminate_as_interrupt():
            return args.func(args, console)
    except HarnessError as exc:
        _print_error(console, "Error", str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("Interrupted.")
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 — the boundary: no traceback on the console
        _print_error(console, "Internal error", internal_error(exc, args))
        return 70


if __name__ == "__main__":
    sys.exit(main())
