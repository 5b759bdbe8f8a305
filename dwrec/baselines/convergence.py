"""Validation curves of two training runs and the wall time each takes to reach a target.

A curve is one point per epoch: the cumulative wall time at the end of that epoch
(training, validation and checkpointing included, counted from the start of training) and
the validation NDCG@10 measured then. ``benchmarks/compare_recbole.py`` builds one for
dwrec (from ``dwrec.train``'s per-epoch callback) and one for RecBole (from the driver's
``valid_log``), takes RecBole's best validation NDCG@10 as the target, and reports when
each curve first reaches it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from dwrec.errors import DwrecError


@dataclass(frozen=True)
class Point:
    epoch: int  # 1-based
    wall_seconds: float  # cumulative, at the end of this epoch's validation
    ndcg: float  # validation NDCG@10 after this epoch


@dataclass(frozen=True)
class Reached:
    epoch: int
    wall_seconds: float
    ndcg: float
    # the previous validation's time: the target was crossed somewhere in (before, wall]
    wall_seconds_before: float


def curve(wall_seconds: Sequence[float], ndcgs: Sequence[float]) -> list[Point]:
    """Points from per-epoch cumulative wall times and validation NDCG@10 values.

    Raises :class:`DwrecError` when the lengths differ, a value is not finite, or the wall
    times decrease (they are cumulative).
    """
    if len(wall_seconds) != len(ndcgs):
        raise DwrecError(
            f"curve: {len(wall_seconds)} wall times but {len(ndcgs)} validation values"
        )
    points = []
    previous = 0.0
    for epoch, (wall, ndcg) in enumerate(zip(wall_seconds, ndcgs, strict=True), start=1):
        wall, ndcg = float(wall), float(ndcg)
        if not (math.isfinite(wall) and math.isfinite(ndcg)):
            raise DwrecError(f"curve: epoch {epoch} has a non-finite value ({wall}, {ndcg})")
        if wall < previous:
            raise DwrecError(f"curve: wall time goes back at epoch {epoch} ({previous} -> {wall})")
        points.append(Point(epoch, wall, ndcg))
        previous = wall
    return points


def best(points: Sequence[Point]) -> Point:
    """The first epoch with the highest validation NDCG@10."""
    if not points:
        raise DwrecError("curve: no epochs")
    return max(points, key=lambda p: (p.ndcg, -p.epoch))


def time_to_reach(points: Sequence[Point], target: float) -> Reached | None:
    """The first epoch whose validation NDCG@10 is at least ``target``; ``None`` if none is.

    Validation runs once per epoch, so the target was crossed at some time in
    ``(wall_seconds_before, wall_seconds]``: both are returned.
    """
    before = 0.0
    for point in points:
        if point.ndcg >= target:
            return Reached(point.epoch, point.wall_seconds, point.ndcg, before)
        before = point.wall_seconds
    return None
