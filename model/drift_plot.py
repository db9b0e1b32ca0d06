"""``drift.png``: the window's distribution of each drifted feature over the baseline's.

One panel per drifted feature (at most 6; the largest KS distances first): overlaid
density histograms of the baseline's stored quantile sample and the window for
numerical features, side-by-side class proportions for ``predicted_class``. With no
drifted feature it draws the four features closest to drifting, titled so. matplotlib
is optional: without it nothing is written and the log says so. Atomic write.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

MAX_PANELS = 6


def plot_drift(features: dict[str, np.ndarray], baseline: Any, results: list[dict[str, Any]],
               path: str | os.PathLike, log: Callable[[str], None] = print) -> bool:
    """Draw the panels to ``path``; returns False (and logs why) when nothing is drawn."""
    path = Path(path)
    try:
        import matplotlib
    except ImportError:
        log(f"matplotlib is not installed: {path.name} is not written")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drifted = [r for r in results if r["drifted"]]
    title = "drifted features: window vs baseline"
    if not drifted:
        drifted = sorted(results, key=lambda r: r["p_value"])[:4]
        title = "no drift detected: the four features with the smallest p-values"
    drifted = sorted(drifted, key=lambda r: r["p_value"])[:MAX_PANELS]
    cols = min(4, len(drifted))
    rows = -(-len(drifted) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows + 0.6), dpi=90,
                             squeeze=False)
    try:
        for ax in axes.flat[len(drifted):]:
            ax.axis("off")
        for ax, r in zip(axes.flat, drifted):
            name = r["name"]
            if "baseline_proportions" in r:
                k = np.arange(len(r["baseline_proportions"]))
                ax.bar(k - 0.2, r["baseline_proportions"], 0.4, label="baseline")
                ax.bar(k + 0.2, r["window_proportions"], 0.4, label="window")
                ax.set_xticks(k)
            else:
                base, win = baseline.samples[name], features[name]
                lo, hi = float(min(base.min(), win.min())), float(max(base.max(), win.max()))
                bins = np.linspace(lo, hi if hi > lo else lo + 1e-6, 31)
                for values, label in ((base, "baseline"), (win, "window")):
                    density = np.histogram(values, bins=bins, density=True)[0]
                    ax.stairs(density, bins, fill=True, alpha=0.5, label=label)
            ax.set_title(f"{name}\n{r['test'].split()[-1]} {r['statistic']:.3g}, "
                         f"p={r['p_value']:.2g}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.locator_params(nbins=4)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle(title, fontsize=9)
        fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=1 - 0.75 / fig.get_figheight(),
                            hspace=0.75, wspace=0.3)         # tight_layout costs a second
        tmp = path.with_name(f".tmp-{path.name}")      # the suffix tells matplotlib: PNG
        try:
            fig.savefig(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return True
