"""``harness monitor RUN|ENDPOINT``: check the endpoint's captured traffic for drift
against the baseline its model was trained with (``harness.monitoring``).

``--retrain --labels FILE`` then starts a new pipeline run whose training data adds the
window's labelled captures (``harness.retrain``), only when the check found drift
(``baseline_drift_check`` violations); ``--retrain-always`` retrains whatever the check
found. Exit codes: 0 the check ran (and the retrain run, if any, succeeded); 1 nothing
to check, or the retrain run failed (the gate kept its model from being deployed, or a
step failed); 2 bad flags, configuration or labels."""
from __future__ import annotations

import argparse
import datetime as dt
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from harness.errors import ConfigError


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None],
               func: Callable[..., int]) -> None:
    p = sub.add_parser("monitor", help="check an endpoint's captured traffic for drift "
                       "against its model's baseline")
    common(p)
    p.add_argument("target", metavar="RUN|ENDPOINT", help="a run id or an endpoint name")
    p.add_argument("--since", metavar="TIME", help="window start, ISO 8601 (inclusive)")
    p.add_argument("--until", metavar="TIME", help="window end, ISO 8601 (exclusive)")
    p.add_argument("--last", metavar="MINUTES", type=float,
                   help="window: the last MINUTES minutes (instead of --since)")
    p.add_argument("--retrain", action="store_true",
                   help="when the check finds drift, start a new pipeline run whose training "
                   "data adds the window's captures labelled by --labels (deployed only if it "
                   "passes the gate)")
    p.add_argument("--retrain-always", action="store_true",
                   help="like --retrain, but retrain even when no drift was found")
    p.add_argument("--labels", metavar="FILE",
                   help="ground truth for --retrain: JSON Lines in Model Monitor's format, "
                   '{"groundTruthData": {"data": "7,2", "encoding": "CSV"}, '
                   '"eventMetadata": {"eventId": ...}}, one label per captured instance')
    p.set_defaults(func=func)


def add_cloud_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of `harness cloud monitor` (cloud_runners.cloud_cli.monitor)."""
    p.add_argument("target", metavar="RUN|ENDPOINT",
                   help="a cloud run id or its endpoint's name")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--schedule", metavar="EXPR",
                      help="check on this EventBridge Scheduler schedule, e.g. 'rate(1 hour)' "
                      "(default: check once now)")
    when.add_argument("--unschedule", action="store_true",
                      help="delete the run's monitoring schedule")
    p.add_argument("--window", metavar="MINUTES", type=float,
                   help="check the traffic of the last MINUTES minutes (default: all of it; "
                   "with --schedule, the schedule's period is the usual choice)")
    p.add_argument("--retrain", action="store_true",
                   help="on drift, start the training pipeline's execution (a new run on the "
                   "data the monitored run used; deployed only if it passes its gate)")


def window(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.last is not None:
        if args.since:
            raise ConfigError("--last and --since both set the window's start",
                              field="--last", expected="one of them")
        if not args.last > 0:
            raise ConfigError("the window is a positive number of minutes", field="--last",
                              got=args.last)
        start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=args.last)
        return start.strftime("%Y-%m-%dT%H:%M:%SZ"), args.until
    return args.since, args.until


def monitor(cfg: Any, args: argparse.Namespace, console: Console) -> int:
    """Run the check; print its summary, the drifted features and where the results are;
    then retrain when asked (and, with ``--retrain``, when the check found drift). Exit 0
    whether or not the traffic drifted (the results say), 1 when there was nothing to
    check or the retrain run failed."""
    from harness.monitoring import check, find_target
    from harness.runs import RunStore

    start, end = window(args)
    retrain = _retrain_flags(args)
    store = RunStore(cfg.runs_path())
    target = find_target(store, args.target)
    lines: list[str] = []
    report, folder = check(target, cfg.monitor.model_dump(), start=start, end=end,
                           log=lines.append)
    console.print(f"[bold]Drift check[/bold] of run {target.run_id}, endpoint "
                  f"{target.endpoint_name or '?'}")
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    drifted = [f for f in report.get("features", []) if f.get("drifted")]
    if drifted:
        table = Table(title="drifted features", title_justify="left")
        for col in ("feature", "statistic", "p-value", "baseline mean", "window mean"):
            table.add_column(col)
        for f in drifted:
            table.add_row(f["name"], _num(f.get("statistic")), _num(f.get("p_value")),
                          _num(f.get("baseline_mean")), _num(f.get("window_mean")))
        console.print(table)
    console.print(f"results: {folder}", soft_wrap=True)
    if report.get("status") != "checked":
        if retrain:
            console.print("No retraining: there was nothing to check in the window.")
        return 1
    if not retrain:
        return 0
    if not drifted and not args.retrain_always:
        console.print("No drift found: not retraining (--retrain-always retrains anyway).")
        return 0
    from harness.cli import overrides_of
    return _retrain(store, target, folder, args.labels, start, end, console,
                    overrides_of(args))


def _retrain_flags(args: argparse.Namespace) -> bool:
    retrain = bool(args.retrain or args.retrain_always)
    if retrain and not args.labels:
        raise ConfigError("retraining needs labels for the captured traffic", field="--labels",
                          expected="a ground-truth JSON Lines file keyed by the capture "
                          "records' eventId (Model Monitor's ground-truth merge format)")
    if args.labels and not retrain:
        raise ConfigError("--labels is used only when retraining", field="--labels",
                          expected="--retrain or --retrain-always with --labels")
    if args.labels:
        from pathlib import Path

        from harness.retrain import LabelsError, read_labels
        if not Path(args.labels).exists():
            raise LabelsError("labels file not found", file=args.labels, field="--labels",
                              expected="a JSON Lines file (or a folder of them)")
        read_labels(args.labels)  # no usable label: exit 2 before the check runs
    return retrain


def _retrain(store: Any, target: Any, folder: Any, labels: str, start: str | None,
             end: str | None, console: Console, overrides: dict[str, Any]) -> int:
    from harness.retrain import REASONS, prepare_retrain_data, start_run

    data_dir, info = prepare_retrain_data(target, folder, labels, start, end)
    console.print(f"[bold]Retraining[/bold] run {target.run_id}'s model: "
                  f"{info['captured_examples']} labelled captured digits from "
                  f"{info['captured_records']} capture records added to its "
                  f"{info['original_examples'] or '?'} examples -> {data_dir}", soft_wrap=True)
    if info["unlabelled_records"]:
        console.print(f"  {info['unlabelled_records']} capture record(s) in the window had "
                      "no label", highlight=False)
    for reason, problem in info["label_problems"].items():
        console.print(f"  labels skipped, {reason} ({REASONS.get(reason, '?')}): "
                      f"{problem['count']} (first at "
                      f"{problem['first_at']})", highlight=False, soft_wrap=True)
    code, new_run = start_run(store, target.run_id, data_dir, console, overrides)
    if code == 0:
        console.print(f"retrain run: {new_run} SUCCEEDED (passed the gate, deployed)",
                      soft_wrap=True)
    else:
        console.print(f"retrain run: {new_run or '?'} did not succeed: its model was not "
                      "deployed", soft_wrap=True)
    return 0 if code == 0 else 1


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"
