"""The picture of a tuning job: each trial's final objective in the order the trials
started, and the best so far, as a PNG beside the trials' records."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_trials(summaries: list[dict[str, Any]], objective_type: str, path: Path) -> Path | None:
    """Write ``path`` (PNG); None when no trial has an objective value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for i, s in enumerate(summaries, start=1):
        final = s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
        if final.get("Value") is not None:
            points.append((i, float(final["Value"]), s.get("TrainingJobStatus", "")))
    if not points:
        return None
    metric = next(((s.get("FinalHyperParameterTuningJobObjectiveMetric") or {})
                   .get("MetricName") for s in summaries), None) or "objective"
    better = max if objective_type == "Maximize" else min
    best, running = [], None
    for _, value, _ in points:
        running = value if running is None else better(running, value)
        best.append(running)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for status, marker in (("Completed", "o"), ("Stopped", "x")):
        chosen = [(i, v) for i, v, st in points if st == status]
        if chosen:
            ax.scatter(*zip(*chosen), marker=marker, label=f"trial ({status.lower()})")
    ax.step([i for i, _, _ in points], best, where="post", color="black",
            label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(summaries)} trials, {objective_type.lower()} {metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
