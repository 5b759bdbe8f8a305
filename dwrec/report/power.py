"""Empirical detection power: how often a report cell of ``size`` test cases, drawn from a
domain where a lift is established, would come out significantly positive.

A cell is tested as :mod:`dwrec.report.compare` tests it: the two-sided Wilcoxon
signed-rank test of the per-case differences (each case's value averaged over the seeds),
and significance only when every (group seed, baseline seed) pair's lift has the pooled
lift's sign. Samples are drawn *with* replacement, so each is a new domain of ``size`` cases
with the population's mix of per-case effects (the m-out-of-n bootstrap); optionally
diluted with cases neither group hits, to match a domain where the baseline hits less often.
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
    keep: float = 1.0,
) -> tuple[list[float], float]:
    """The share of ``draws`` samples of ``size`` cases significantly positive at each of
    ``thresholds``, and the median of the samples' pooled lifts.

    ``keep < 1`` dilutes the population to a domain where the baseline hits ``keep`` times
    as often: each drawn case is, with probability ``1 - keep``, one that neither group hits
    in any seed (value 0 everywhere, a zero difference the Wilcoxon test drops), else one of
    the population's. The relative lift is unchanged; fewer cases can show it."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must lie in (0, 1], not {keep}")
    group = np.asarray(group, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    n = group.shape[1]
    if keep < 1:  # the case nobody hits, at index n
        group = np.hstack([group, np.zeros((group.shape[0], 1))])
        baseline = np.hstack([baseline, np.zeros((baseline.shape[0], 1))])
    hits = np.zeros(len(thresholds))
    lifts = np.empty(draws)
    for d in range(draws):
        index = rng.integers(0, n, size)
        if keep < 1:
            index[rng.random(size) >= keep] = n
        p, lifts[d], positive = sample_cell(group, baseline, index)
        hits += [positive and p < t for t in thresholds]
    return [float(h / draws) for h in hits], float(np.median(lifts))
