"""``runs/<run_id>/report.html``: one self-contained page per run.

Built from what the run folder holds (``record.json``, ``graph.mmd``, ``steps/*/``, the
training job's ``metrics.json``, ``evaluation/``, the tuner's ``trials.png``,
``monitoring/*/drift_report.json``): the run's header, its graph coloured by step status,
every step with its input, output and log tail, the training curves, the confusion matrix
and per-class metrics, the tuning trials and the newest drift check. Images are embedded
as ``data:`` URIs; the page loads nothing (no script, no stylesheet, no font). A missing
or malformed file never stops the report: its section says what is missing.

``build_report(run_dir)`` writes it (temporary file, then rename); every local and cloud
run calls ``write_report_safely`` when it ends; ``harness report RUN`` rebuilds it. The
sections are read by ``harness.report_sections``; this module draws the graph, lists the
steps and renders the template.
"""
from __future__ import annotations

import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

from harness.report_sections import (_cell, _drift, _evaluation, _inside,
                                     _kind_table, _log_tail, _png_bytes_uri, _pretty_json,
                                     _read_json, _text, _training, _tuning)
from harness.steps.base import AFTER, BEFORE, MACHINE

REPORT = "report.html"
TEMPLATE = "report.html.j2"
TEMPLATES = Path(__file__).with_name("templates")
log = logging.getLogger("harness.report")


class _Node:
    """The part of a step ``harness.graph`` draws, read back from ``graph.mmd``."""

    def __init__(self, state_id: str, kind: str, placement: str):
        self.state_id, self.kind, self.placement = state_id, kind, placement
        self.next_step: _Node | None = None
        self._branches: list[_Node] = []
        self._stop = False

    def branches(self) -> list["_Node"]:
        return self._branches

    def can_stop(self) -> bool:
        return self._stop


class _Shape:
    """A workflow's shape (start, main path, steps) for ``harness.graph.image``."""

    def __init__(self, nodes: list[_Node]):
        self.start = nodes[0]
        self.main_path, seen, step = [], set(), self.start
        while step is not None and id(step) not in seen:
            seen.add(id(step))
            self.main_path.append(step)
            step = step.next_step
        self.steps = self.main_path + [n for n in nodes if id(n) not in seen]


_NODE = re.compile(r'^\s*(n_\w+)(\[/?)"([^"<]+)<br/><small>([^<]*)</small>"')
_EDGE = re.compile(r"^\s*(n_\w+)\s+-->(?:\|([^|]*)\|)?\s+(n_\w+)\s*$")


def parse_mermaid(text: str) -> _Shape | None:
    """The shape of the graph ``harness.graph.mermaid`` wrote (None if it is not one)."""
    nodes: dict[str, _Node] = {}
    placement = BEFORE
    for line in text.splitlines():
        if line.strip().startswith("subgraph"):
            placement = MACHINE
        elif line.strip() == "end":
            placement = AFTER
        elif m := _NODE.match(line):
            where = MACHINE if m.group(2) == "[" else placement
            nodes[m.group(1)] = _Node(m.group(3), m.group(4), where)
    if not nodes:
        return None
    for line in text.splitlines():
        if not (m := _EDGE.match(line)):
            continue
        a, label, b = nodes.get(m.group(1)), m.group(2), m.group(3)
        if a is None:
            continue
        if b not in nodes:
            a._stop = a._stop or b.endswith("_stop")
        elif label:
            a._branches.append(nodes[b])
        else:
            a.next_step = nodes[b]
    targets = {id(n.next_step) for n in nodes.values()} | {
        id(b) for n in nodes.values() for b in n._branches}
    start = next((n for n in nodes.values() if id(n) not in targets), None)
    ordered = list(nodes.values())
    if start is not None:
        ordered.remove(start)
        ordered.insert(0, start)
    return _Shape(ordered)


def _graph(run_dir: Path, steps: list[Any], workflow: Any, missing: list[str]
           ) -> tuple[str | None, str | None]:
    """(PNG data URI of the graph coloured by status, its Mermaid text)."""
    from harness.graph import image

    statuses = {s.name: s.status for s in steps}
    mermaid = _text(run_dir / "graph.mmd")
    shape = parse_mermaid(mermaid) if mermaid else None
    if shape is None and workflow is not None:
        shape = workflow
    if shape is None and steps:
        nodes = [_Node(s.name, s.kind, MACHINE) for s in steps]
        for a, b in zip(nodes, nodes[1:]):
            a.next_step = b
        shape = _Shape(nodes)
        missing.append("graph: graph.mmd missing or unreadable; drawn from the record's "
                       "steps in order")
    if shape is None:
        missing.append("graph: no graph.mmd and no steps in the record")
        return None, mermaid
    try:
        return _png_bytes_uri(image(shape, statuses, "png")), mermaid
    except Exception as e:  # noqa: BLE001 - a report never fails on a drawing
        missing.append(f"graph: could not be drawn ({type(e).__name__}: {e})")
        return None, mermaid


# ------------------------------------------------------------------------ sections
def _steps(run_dir: Path, steps: list[Any]) -> list[dict[str, Any]]:
    out = []
    for s in steps:
        output_path = _inside(run_dir, s.output)
        out.append({
            "name": s.name, "kind": s.kind, "status": s.status, "started": s.started,
            "ended": s.ended,
            "duration": None if s.duration_s is None else f"{s.duration_s:.2f} s",
            "cache": (f"REUSED from {s.reused_from}" if s.reused_from
                      else "REUSED" if s.status == "REUSED"
                      else "ran" if s.status in ("SUCCEEDED", "FAILED") else ""),
            "error": s.error,
            "input": _pretty_json(_inside(run_dir, s.input)),
            "output": _pretty_json(output_path),
            "log": _log_tail(_inside(run_dir, s.log)),
            "table": _kind_table(s.kind, output_path),
        })
    return out


def _context(run_dir: Path, workflow: Any) -> dict[str, Any]:
    from harness.errors import HarnessError
    from harness.runs import RunRecord

    missing: list[str] = []
    raw = _read_json(run_dir / "record.json", missing, "run record")
    record = None
    if raw is not None:
        try:
            record = RunRecord.from_dict(raw, str(run_dir / "record.json"))
        except HarnessError as e:
            missing.append(f"run record: {e}")
    steps = record.steps if record is not None else []
    summary = _read_json(run_dir / "summary.json", [], "summary")
    metrics = summary.get("metrics") if isinstance(summary, dict) else None
    graph, mermaid = _graph(run_dir, steps, workflow, missing)
    step_rows = _steps(run_dir, steps)
    return {
        "run_id": record.run_id if record else run_dir.name,
        "record": record,
        "workflow": (record.workflow if record else None) or getattr(workflow, "name", None),
        "duration": record.duration_s if record else None,
        "headline": [(k, _cell(v)) for k, v in (metrics or {}).items()],
        "graph": graph, "mermaid": mermaid, "steps": step_rows,
        "training": _training(run_dir, steps, missing),
        "evaluation": _evaluation(run_dir, steps, missing),
        "tuning": _tuning(run_dir, step_rows),
        "drift": _drift(run_dir, missing),
        "missing": missing,
    }


def render(run_dir: Path, *, workflow: Any = None) -> str:
    """The report's HTML."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template(TEMPLATE).render(**_context(Path(run_dir), workflow))


def build_report(run_dir: Path, *, workflow: Any = None) -> Path:
    """Write ``run_dir/report.html`` (temporary file, then rename); its path."""
    run_dir = Path(run_dir)
    html = render(run_dir, workflow=workflow)
    target = run_dir / REPORT
    tmp = run_dir / f".{REPORT}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(html, encoding="utf-8")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def write_report_safely(run_dir: Path, workflow: Any = None) -> Path | None:
    """``build_report`` at the end of a run: a failure (or a Ctrl-C while it draws) is a
    warning in the log, never a change to the run."""
    try:
        return build_report(run_dir, workflow=workflow)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001
        log.warning("the run's report was not written (%s: %s)", type(e).__name__, e)
        return None


def report_command(store: Any, args: Any, console: Any) -> int:
    """``harness report RUN [--open]``: rebuild the run's report, print its path."""
    store.load(args.run_id)  # the same error as ``harness show`` for an unknown run
    path = build_report(store.run_dir(args.run_id))
    console.out(str(path), highlight=False)
    if getattr(args, "open", False):
        import webbrowser
        webbrowser.open(path.resolve().as_uri())
    return 0
