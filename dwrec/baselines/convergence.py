"""Validation curves of two training runs and the wall time each takes to reach a target.

A curve is one point per epoch: the cumulative wall time at the end of that epoch
(training, validation and checkpointing included, counted from the start of training) and
the validation NDCG@10 measured then. ``benchmarks/compare_recbole.py`` builds one for
dwrec (from ``dwrec.train``'s per-epoch callback) and one for RecBole (from the driver's
``valid_log``), takes RecBole's best validation NDCG@10 as the target, and reports when
each curve first reaches it.

An epoch is not the same amount of training on both sides: dwrec's trains each user's window
once (a target at every position), RecBole's every prefix sample once (one target each).
:func:`training_units` counts both, and :func:`matched_patience` converts RecBole's
patience into the dwrec epochs that cover as many training targets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def training_units(dataset, max_len: int) -> dict[str, int]:
    """What one epoch trains on under the ``loo`` split: dwrec's windows (one per user with at
    least 2 training items) and their target positions (at most the last ``max_len``), and
    RecBole's prefix samples (every training item after a user's first, one target each)."""
    from dwrec.data.split import make_split

    split = make_split(dataset, "loo")
    lengths = split.train_end - dataset.user_indptr[:-1]
    with_target = lengths >= 2
    positions = np.minimum(lengths[with_target], max_len + 1) - 1
    return {
        "windows": int(with_target.sum()),
        "positions": int(positions.sum()),
        "prefixes": int((lengths[with_target] - 1).sum()),
    }


def matched_patience(patience: int, recbole_targets: int, dwrec_targets: int) -> int:
    """The fewest dwrec epochs whose training targets reach those of ``patience`` RecBole
    epochs: ``ceil(patience * recbole_targets / dwrec_targets)``, in exact integers."""
    if patience < 1:
        raise DwrecError(f"patience must be >= 1, not {patience}")
    if dwrec_targets < 1:
        raise DwrecError("dwrec has no training target: no user has 2 training interactions")
    return -(-patience * recbole_targets // dwrec_targets)
