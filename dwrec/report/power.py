"""Empirical detection power: how often a report cell of ``size`` test cases, drawn from a
domain where a lift is established, would come out significantly positive.

A cell is tested as :mod:`dwrec.report.compare` tests it: the two-sided Wilcoxon
signed-rank test of the per-case differences (each case's value averaged over the seeds),
and significance only when every (group seed, baseline seed) pair's lift has the pooled
lift's sign. Samples are drawn *with* replacement, so each is a new domain of ``size`` cases
with the population's mix of per-case effects (the m-out-of-n bootstrap).
"""

from __future__ import annotations

import numpy as np

from dwrec.report.stats import (
    relative_lift,
    seed_pair_lifts,
    sign_consistent,
    wilcoxon_signed_rank,
)


def sample_cell(
    group: np.ndarray, baseline: np.ndarray, index: np.ndarray
) -> tuple[float, float, bool]:
    """One sample's ``(p, pooled lift, positive in every seed pair)``.

    ``group`` ``[S_g, n]`` and ``baseline`` ``[S_b, n]`` hold per-seed per-case values of the
    population; ``index`` picks the sample's cases (repeats allowed). The sample is
    significantly positive at a threshold ``t`` when ``p < t`` and the third value is true.
    """
    g = np.asarray(group, dtype=np.float64)[:, index]
    b = np.asarray(baseline, dtype=np.float64)[:, index]
    p = wilcoxon_signed_rank(g.mean(axis=0) - b.mean(axis=0))
    lift = float(relative_lift(g.mean(), b.mean()))
    pairs = seed_pair_lifts(g.mean(axis=1), b.mean(axis=1))
    return p, lift, bool(lift > 0 and sign_consistent(pairs, lift))


def detection_power(
    group: np.ndarray,
    baseline: np.ndarray,
    size: int,
    thresholds: tuple[float, ...],
    draws: int,
    rng: np.random.Generator,
) -> tuple[list[float], float]:
    """The share of ``draws`` samples of ``size`` cases significantly positive at each of
    ``thresholds``, and the median of the samples' pooled lifts."""
    n = np.asarray(group).shape[1]
    hits = np.zeros(len(thresholds))
    lifts = np.empty(draws)
    for d in range(draws):
        index = rng.integers(0, n, size)
        p, lifts[d], positive = sample_cell(group, baseline, index)
        hits += [positive and p < t for t in thresholds]
    return [float(h / draws) for h in hits], float(np.median(lifts))
