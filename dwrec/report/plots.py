"""``--plot FILE.png``: lift over the baseline against domain training share (log scale).

matplotlib is an optional dependency (``pip install 'dwrec[plot]'``); everything else in the
report works without it. :func:`lift_points` (pure, tested without matplotlib) gathers what
is drawn; :func:`plot_lift` draws it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from dwrec.errors import UsageError
from dwrec.io import atomic_path
from dwrec.report.tables import OVERALL, Report

INSTALL_HINT = "pip install 'dwrec[plot]'  (or: pip install matplotlib)"


@dataclass(frozen=True)
class LiftPoint:
    """One domain of one compared group: training share (fraction), lift and CI (fractions)."""

    group: str
    metric: str
    domain: str
    share: float
    lift: float
    low: float
    high: float
    significant: bool


def lift_points(report: Report, cohort: str | None = None) -> list[LiftPoint]:
    """Points of the first table (or ``cohort``'s): one per (non-baseline group, metric,
    domain) with a finite, positive share and a finite lift; ``overall`` rows are left out."""
    tables = [t for t in report.tables if cohort is None or t.cohort == cohort]
    if not tables:
        return []
    shares = {row.domain: row.share for row in report.domain_rows}
    points = []
    for row in tables[0].rows:
        share = shares.get(row.domain, math.nan)
        if row.baseline or row.domain == OVERALL or not (math.isfinite(share) and share > 0):
            continue
        for metric, cell in row.cells.items():
            if math.isfinite(cell.lift):
                points.append(
                    LiftPoint(
                        row.group,
                        metric,
                        row.domain,
                        share,
                        cell.lift,
                        cell.lift_low,
                        cell.lift_high,
                        cell.significant,
                    )  # fmt: skip
                )
    return points


def require_matplotlib():
    """Import matplotlib with a non-interactive backend, or explain how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            f"--plot needs matplotlib, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lift(report: Report, path: str | os.PathLike, cohort: str | None = None) -> Path:
    """Draw lift (%) against training share (log x) per metric, one colour per group;
    error bars are the bootstrap CI, filled markers significant comparisons. Written atomically."""
    plt = require_matplotlib()
    points = lift_points(report, cohort)
    if not points:
        raise UsageError("--plot: no domain with a finite lift and a known training share to draw")
    metrics = list(dict.fromkeys(p.metric for p in points))
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        groups = list(dict.fromkeys(p.group for p in points))
        for index, group in enumerate(groups):
            chosen = [p for p in points if p.metric == metric and p.group == group]
            # groups side by side around the true share, so error bars do not overlap
            dodge = 10 ** (0.03 * (index - (len(groups) - 1) / 2))
            xs = [p.share * dodge for p in chosen]
            ys = [100 * p.lift for p in chosen]
            errors = [
                [max(0.0, 100 * (p.lift - p.low)) if math.isfinite(p.low) else 0.0 for p in chosen],
                [
                    max(0.0, 100 * (p.high - p.lift)) if math.isfinite(p.high) else 0.0
                    for p in chosen
                ],
            ]
            bars = axis.errorbar(xs, ys, yerr=errors, fmt="o", capsize=3, label=group, mfc="none")
            filled = [(x, y) for x, y, p in zip(xs, ys, chosen, strict=True) if p.significant]
            if filled:
                axis.plot(*zip(*filled, strict=True), "o", color=bars[0].get_color())
            for x, y, p in zip(xs, ys, chosen, strict=True):
                axis.annotate(
                    p.domain, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
        axis.axhline(0.0, color="grey", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_xlabel("domain training share (log scale)")
        axis.set_ylabel(f"lift in {metric} over {report.baseline} (%)")
        axis.set_title("filled: significant after correction", fontsize=8)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=150)
    plt.close(figure)
    return path
