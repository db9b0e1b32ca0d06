"""The workflow's graph for people: Mermaid text, an SVG image, a terminal listing.

Drawn from the same workflow object the ASL is compiled from: what you see is what the
state machine runs. Steps on the client (before or after the execution) sit outside the
"state machine" box; a gate's failing branch ends in a stop node. ``statuses`` (step ->
SUCCEEDED, FAILED, RUNNING, REUSED, PENDING) colours the steps.
"""
from __future__ import annotations

import html
import io
from typing import TYPE_CHECKING

from harness.steps.base import BEFORE, MACHINE

if TYPE_CHECKING:
    from harness.workflow import Workflow

COLOURS = {"SUCCEEDED": "#c8e6c9", "REUSED": "#b2ebf2", "FAILED": "#ffcdd2",
           "RUNNING": "#fff9c4", "PENDING": "#eeeeee", None: "#ffffff"}
EDGE_LABELS = {"otherwise": "below threshold"}


def edges(wf: "Workflow") -> list[tuple[str, str, str]]:
    """(from, to, label): ``to`` is a step id, or ``<id>:stop`` for a gate's failure."""
    out: list[tuple[str, str, str]] = []
    for s in wf.steps:
        if s.next_step is not None:
            out.append((s.state_id, s.next_step.state_id, ""))
        for b in s.branches():
            out.append((s.state_id, b.state_id, "otherwise"))
        if s.can_stop():
            out.append((s.state_id, f"{s.state_id}:stop", "not met"))
    return out


def mermaid(wf: "Workflow", statuses: dict[str, str] | None = None) -> str:
    statuses = statuses or {}

    def node(s) -> str:
        label = f"{s.state_id}<br/><small>{s.kind}</small>"
        if s.placement == MACHINE:
            return f'    {_mid(s.state_id)}["{label}"]'
        return f'    {_mid(s.state_id)}[/"{label}"/]'

    lines = ["flowchart TD"]
    before = [s for s in wf.steps if s.placement == BEFORE]
    machine = [s for s in wf.steps if s.placement == MACHINE]
    after = [s for s in wf.steps if s.placement not in (BEFORE, MACHINE)]
    lines += [node(s) for s in before]
    lines.append('  subgraph sm["state machine"]')
    lines += ["  " + node(s) for s in machine]
    for a, b, _ in edges(wf):
        if b.endswith(":stop"):
            lines.append(f'    {_mid(b)}(["stop: gate not met"])')
    lines.append("  end")
    lines += [node(s) for s in after]
    for a, b, label in edges(wf):
        arrow = f"-->|{EDGE_LABELS.get(label, label)}|" if label else "-->"
        lines.append(f"  {_mid(a)} {arrow} {_mid(b)}")
    for s in wf.steps:
        status = statuses.get(s.state_id)
        if status:
            lines.append(f"  style {_mid(s.state_id)} fill:{COLOURS.get(status, '#fff')}")
    return "\n".join(lines) + "\n"


def _mid(state_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in state_id)


def text(wf: "Workflow", statuses: dict[str, str] | None = None) -> str:
    """One line per step, in order, for a terminal."""
    statuses = statuses or {}
    where = {BEFORE: "client, before", MACHINE: "state machine"}
    lines = []
    for s in wf.steps:
        status = statuses.get(s.state_id)
        lines.append(f"{'->' if s is not wf.start else '  '} {s.state_id:<20} {s.kind:<16} "
                     f"{where.get(s.placement, 'client, after'):<16}"
                     + (f" {status}" if status else ""))
        for b in s.branches():
            lines.append(f"   {'':<20} otherwise -> {b.state_id}")
        if s.can_stop():
            lines.append(f"   {'':<20} not met -> stop")
    return "\n".join(lines)


def svg(wf: "Workflow", statuses: dict[str, str] | None = None) -> str:
    """The graph as a self-contained SVG (matplotlib; no fonts or scripts fetched)."""
    return image(wf, statuses, "svg").decode()


def image(wf: "Workflow", statuses: dict[str, str] | None = None, fmt: str = "svg") -> bytes:
    """The graph drawn with matplotlib, as ``svg`` or ``png`` bytes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    statuses = statuses or {}
    pos: dict[str, tuple[float, float]] = {}
    for row, s in enumerate(wf.main_path):
        pos[s.state_id] = (0.0, -row)
    for s in wf.steps[len(wf.main_path):]:
        parent = next((a for a, b, _ in edges(wf) if b == s.state_id), None)
        x, y = pos.get(parent, (0.0, 0.0))
        pos[s.state_id] = (x + 1.6, y - 0.5)
    stops = [(a, b) for a, b, _ in edges(wf) if b.endswith(":stop")]
    for a, b in stops:
        x, y = pos[a]
        pos[b] = (x + 1.6, y)
    height = max(1, len(wf.main_path))
    fig, ax = plt.subplots(figsize=(6.5, 0.75 * height + 0.6))
    try:
        ax.set_xlim(-1.0, 2.8)
        ax.set_ylim(-height + 0.4, 0.6)
        ax.axis("off")
        machine_rows = [pos[s.state_id][1] for s in wf.main_path if s.placement == MACHINE]
        if machine_rows:
            top, bottom = max(machine_rows) + 0.42, min(machine_rows) - 0.42
            ax.add_patch(FancyBboxPatch((-0.92, bottom), 3.65, top - bottom,
                                        boxstyle="round,pad=0.02", fc="#f5f9ff", ec="#90a4ae",
                                        ls="--", lw=1))
            ax.text(2.68, top - 0.08, "state machine", ha="right", va="top", fontsize=8,
                    color="#546e7a")
        for a, b, label in edges(wf):
            (x1, y1), (x2, y2) = pos[a], pos[b]
            half = 0.45 if b.endswith(":stop") else 0.7
            start = (x1 + (0.7 if x2 > x1 else 0), y1 - (0.22 if x2 == x1 else 0))
            end = (x2 - (half if x2 > x1 else 0), y2 + (0.22 if x2 == x1 else 0))
            ax.annotate("", xy=end, xytext=start,
                        arrowprops={"arrowstyle": "->", "color": "#455a64", "lw": 1})
            if label:
                ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.06,
                        EDGE_LABELS.get(label, label), fontsize=7, color="#c62828",
                        ha="center", va="bottom")
        for s in wf.steps:
            x, y = pos[s.state_id]
            fill = COLOURS.get(statuses.get(s.state_id), "#ffffff")
            style = "round,pad=0.02" if s.placement == MACHINE else "sawtooth,pad=0.02"
            ax.add_patch(FancyBboxPatch((x - 0.7, y - 0.2), 1.4, 0.4, boxstyle=style,
                                        fc=fill, ec="#37474f", lw=1))
            ax.text(x, y + 0.04, s.state_id, ha="center", va="center", fontsize=9,
                    weight="bold")
            ax.text(x, y - 0.12, s.kind + ("" if s.placement == MACHINE else " (client)"),
                    ha="center", va="center", fontsize=7, color="#546e7a")
        for a, b in stops:
            x, y = pos[b]
            ax.add_patch(FancyBboxPatch((x - 0.45, y - 0.15), 0.9, 0.3, boxstyle="round,pad=0.02",
                                        fc="#ffebee", ec="#c62828", lw=1))
            ax.text(x, y, "stop", ha="center", va="center", fontsize=8, color="#c62828")
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight", dpi=110)
    finally:
        plt.close(fig)
    return buf.getvalue()


class WorkflowGraph:
    """``str(graph)``/``graph.mermaid``: Mermaid text; in a notebook, an SVG image;
    ``graph.save(path)`` writes ``.svg``, ``.png``, ``.mmd`` or ``.html``."""

    def __init__(self, wf: "Workflow", statuses: dict[str, str] | None = None):
        self.workflow = wf
        self.statuses = dict(statuses or {})
        self.mermaid = mermaid(wf, self.statuses)

    def __str__(self) -> str:
        return self.mermaid

    def __repr__(self) -> str:
        return text(self.workflow, self.statuses)

    def svg(self) -> str:
        return svg(self.workflow, self.statuses)

    def _repr_svg_(self) -> str:
        return self.svg()

    def html(self) -> str:
        return (f"<figure><figcaption>{html.escape(self.workflow.name)}</figcaption>"
                f"{self.svg()}<details><summary>Mermaid</summary><pre>"
                f"{html.escape(self.mermaid)}</pre></details></figure>")

    def save(self, path) -> str:
        """Write the graph; the format follows the suffix (.mmd, .html, .png, else SVG)."""
        from pathlib import Path

        from harness.errors import HarnessError

        p = Path(path)
        try:
            if p.suffix == ".mmd":
                p.write_text(self.mermaid)
            elif p.suffix == ".html":
                p.write_text(self.html())
            elif p.suffix == ".png":
                p.write_bytes(image(self.workflow, self.statuses, "png"))
            else:
                p.write_text(self.svg())
        except OSError as e:
            raise HarnessError(f"cannot write the graph ({e.strerror})", file=str(p),
                               expected="a path in a folder this user can write") from None
        return str(p)
