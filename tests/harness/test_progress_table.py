"""The live table of the CLI's progress view (a tuning job's trials): shown below the bars
while its block runs, printed once, final, when it ends."""
from __future__ import annotations

import io

from rich.console import Console

from harness.progress import LiveProgress, RichProgress


def test_a_table_is_live_below_the_bars_and_printed_final_when_it_ends():
    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)
    live = LiveProgress(console=console, transient=False)
    progress = RichProgress(live)
    with live:
        with progress.task("tune t", total=2), \
                progress.table("tuning job t: trials", ["trial", "lr", "status"]) as table:
            table.row("t-001", {"trial": "001", "lr": "0.01", "status": "InProgress"})
            table.row("t-002", {"trial": "002", "lr": "0.1", "status": "InProgress"})
            renderables = list(live.get_renderables())
            assert len(renderables) == 2  # the bars, then the table
            table.row("t-001", {"status": "Completed"})
            table.row("t-002", {"status": "Failed", "_style": "red"})
        assert list(live.get_renderables())[1:] == []  # gone from the live view
    text = out.getvalue()
    assert "tuning job t: trials" in text
    lines = [line for line in text.splitlines() if "t-00" in line or "00" in line]
    assert any("001" in line and "0.01" in line and "Completed" in line for line in lines)
    assert any("002" in line and "0.1" in line and "Failed" in line for line in lines)
    assert "InProgress" not in text.split("tuning job t: trials")[-1]

