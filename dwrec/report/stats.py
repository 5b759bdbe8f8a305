"""Paired significance tests, multiple-comparison corrections and paired bootstrap CIs.

Each function is a short pure kernel: arrays in, numbers out, with its formula and a
reference in the docstring. Inputs are *paired* per-case values (or their differences
``d = x_group - x_baseline``), one entry per test case, float64. Every test is two-sided.

Degenerate inputs are answered honestly rather than raising: a test that is undefined
(every difference is zero) returns ``p = 1`` and :func:`paired_test` says why in its note;
a test that cannot be run (too few cases) returns ``nan``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import product

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata
from scipy.stats import t as student_t

TESTS = ("wilcoxon", "ttest", "permutation")
CORRECTIONS = ("holm", "bonferroni", "none")

# scipy's switch-over points, kept so that p-values agree with scipy.stats.wilcoxon
_WILCOXON_EXACT_MAX_N = 50
_WILCOXON_ENUMERATE_MAX_N = 13
# work arrays are chunked to about this many float64 entries (~32 MB)
_CHUNK_ENTRIES = 4_000_000


@dataclass(frozen=True)
class TestResult:
    """A p-value with the reason when the test was degenerate (``note`` is ``""`` otherwise)."""

    p: float
    note: str = ""


def wilcoxon_signed_rank(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences ``d`` (shape ``[n]``).

    Zeros are dropped (Wilcoxon's own rule); ``|d|`` of the ``m`` non-zero differences are
    ranked with average ranks for ties; the statistic is ``W+ = sum of ranks of d > 0``.

    - ``n <= 50`` with no ties and no zeros: exact null distribution of ``W+`` (each rank
      signed independently with probability 1/2), ``p = min(1, 2 min(P(W <= w), P(W >= w)))``;
    - ``n <= 13`` with ties or zeros: the same, by enumerating all ``2^m`` sign patterns of
      the (average) ranks;
    - otherwise the normal approximation without continuity correction,
      ``z = (W+ - m(m+1)/4) / sqrt(m(m+1)(2m+1)/24 - sum_t (t^3 - t)/48)``, ``p = 2 Phi(-|z|)``.

    These are the choices of ``scipy.stats.wilcoxon`` (defaults, scipy >= 1.13), so the
    p-values agree with it. Returns 1.0 when every difference is 0 (the test is undefined:
    there is no evidence of a difference). Reference: Wilcoxon (1945), "Individual
    comparisons by ranking methods"; tie correction: Lehmann, *Nonparametrics* (1975), 1.4.
    """
    d = np.asarray(d, dtype=np.float64)
    nonzero = d[d != 0]
    m = nonzero.size
    if m == 0:
        return 1.0
    ranks = rankdata(np.abs(nonzero))
    w_plus = float(ranks[nonzero > 0].sum())
    _, tie_sizes = np.unique(np.abs(nonzero), return_counts=True)
    has_ties = bool((tie_sizes > 1).any())
    if d.size <= _WILCOXON_EXACT_MAX_N and not has_ties and m == d.size:
        return _wilcoxon_exact_p(w_plus, m)
    if d.size <= _WILCOXON_ENUMERATE_MAX_N:
        return _wilcoxon_enumerated_p(w_plus, ranks)
    mean = m * (m + 1) / 4.0
    variance = m * (m + 1) * (2 * m + 1) / 24.0 - float(np.sum(tie_sizes**3 - tie_sizes)) / 48.0
    z = (w_plus - mean) / math.sqrt(variance)
    return float(min(1.0, 2.0 * ndtr(-abs(z))))


def _wilcoxon_exact_p(w_plus: float, m: int) -> float:
    """Exact two-sided p of ``W+`` for ``m`` distinct ranks 1..m (subset-sum counts)."""
    counts = np.zeros(m * (m + 1) // 2 + 1, dtype=np.float64)
    counts[0] = 1.0
    for rank in range(1, m + 1):  # polynomial product prod_r (1 + x^r); exact below 2^53
        counts[rank:] = counts[rank:] + counts[:-rank].copy()
    pmf = counts / 2.0**m
    lower = pmf[: int(math.ceil(w_plus)) + 1].sum()
    upper = pmf[int(math.floor(w_plus)) :].sum()
    return float(min(1.0, 2.0 * min(lower, upper)))


def _wilcoxon_enumerated_p(w_plus: float, ranks: np.ndarray) -> float:
    """Two-sided p of ``W+`` over all ``2^m`` sign patterns of the given (average) ranks."""
    signs = np.array(list(product((0.0, 1.0), repeat=ranks.size)))
    null = signs @ ranks
    tolerance = 1e-12 * max(1.0, abs(w_plus))
    lower = np.mean(null <= w_plus + tolerance)
    upper = np.mean(null >= w_plus - tolerance)
    return float(min(1.0, 2.0 * min(lower, upper)))


def paired_t_test(d: np.ndarray) -> float:
    """Two-sided paired t-test p-value of differences ``d`` (shape ``[n]``, ``n >= 2``).

    ``t = mean(d) / (sd(d) / sqrt(n))`` with ``sd`` the sample standard deviation
    (``ddof = 1``), ``p = 2 P(T_{n-1} >= |t|)`` (Student, 1908). Equals
    ``scipy.stats.ttest_rel``. Degenerate cases: ``n < 2`` gives ``nan``; ``sd = 0`` gives
    1.0 when every difference is 0 (no difference) and 0.0 for a constant non-zero difference.
    """
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    if n < 2:
        return math.nan
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0 or not np.isfinite(sd):
        return 1.0 if mean == 0.0 else 0.0
    t_statistic = mean / (sd / math.sqrt(n))
    return float(min(1.0, 2.0 * student_t.sf(abs(t_statistic), n - 1)))


def sign_flip_test(
    d: np.ndarray, permutations: int = 10_000, rng: np.random.Generator | None = None
) -> float:
    """Two-sided paired permutation (sign-flip) test of the mean difference of ``d``.

    Under H0 each difference is symmetric about 0, so its sign is exchangeable. The
    statistic is ``|sum_i s_i d_i|`` over sign vectors ``s``. Zeros are dropped first (their
    sign changes nothing); with ``m`` non-zero differences:

    - ``2^m <= permutations``: every sign vector is enumerated and
      ``p = #{s : |s.d| >= |d.sum()|} / 2^m`` (exact; the identity counts itself);
    - otherwise ``permutations`` random sign vectors are drawn and
      ``p = (b + 1) / (permutations + 1)`` with ``b`` those at least as extreme
      (Phipson & Smyth, 2010, "Permutation p-values should never be zero").

    Reference: Fisher, *The Design of Experiments* (1935), 21; Good, *Permutation Tests* (2000).
    Returns 1.0 when every difference is 0.
    """
    nonzero = np.asarray(d, dtype=np.float64)
    nonzero = nonzero[nonzero != 0]
    return float(sign_flip_tests(nonzero[:, None], permutations, rng)[0])


def sign_flip_tests(
    differences: np.ndarray, permutations: int = 10_000, rng: np.random.Generator | None = None
) -> np.ndarray:
    """:func:`sign_flip_test` for every column of ``differences`` (``[n, k]``) -> ``[k]``."""
    differences = np.asarray(differences, dtype=np.float64)
    everything = np.ones((differences.shape[0], 1), dtype=bool)
    return sign_flip_subset_tests(differences, everything, permutations, rng)[0]


def sign_flip_subset_tests(
    differences: np.ndarray,
    masks: np.ndarray,
    permutations: int = 10_000,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """:func:`sign_flip_test` of every column of ``differences`` (``[n, k]``) within every
    subset of cases ``masks[:, s]`` (``[n, S]`` bool) -> p-values ``[S, k]``.

    One random sign vector over all ``n`` cases serves every subset and column: restricted to
    a subset it is still a uniform sign vector, which is all the test needs (a zero
    difference contributes 0 whatever its sign, so zeros need not be dropped). A (subset,
    column) whose non-zero count ``m`` has ``2^m <= permutations`` is enumerated exactly.
    """
    differences = np.asarray(differences, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    n, k = differences.shape
    expanded, bounds = _subset_layout(masks)
    values = differences[expanded]
    p_values = np.ones((len(bounds), k))
    random_needed = np.zeros((len(bounds), k), dtype=bool)
    observed = np.zeros((len(bounds), k))
    tolerance = np.zeros((len(bounds), k))
    max_enumerated = int(permutations).bit_length() - 1  # largest m with 2^m <= permutations
    for s, (begin, end) in enumerate(bounds):
        block = values[begin:end]
        observed[s] = np.abs(block.sum(axis=0))
        tolerance[s] = 1e-9 * np.maximum(1.0, np.abs(block).sum(axis=0))
        nonzero_counts = (block != 0).sum(axis=0)
        for column in np.flatnonzero(nonzero_counts > 0):
            if nonzero_counts[column] <= max_enumerated:
                nonzero = block[:, column][block[:, column] != 0]
                signs = np.array(list(product((-1.0, 1.0), repeat=nonzero.size)))
                null = np.abs(signs @ nonzero)
                p_values[s, column] = np.mean(null >= observed[s, column] - tolerance[s, column])
            else:
                random_needed[s, column] = True
    if random_needed.any():
        rng = rng if rng is not None else np.random.default_rng(0)
        extreme = np.zeros((len(bounds), k), dtype=np.int64)
        chunk = max(1, _CHUNK_ENTRIES // max(n, 1))
        for start in range(0, permutations, chunk):
            rows = min(chunk, permutations - start)
            signs = rng.integers(0, 2, size=(rows, n), dtype=np.int8)[:, expanded]
            signs = 2.0 * signs - 1.0
            for s, (begin, end) in enumerate(bounds):
                if random_needed[s].any():
                    null = np.abs(signs[:, begin:end] @ values[begin:end])
                    extreme[s] += (null >= observed[s] - tolerance[s]).sum(axis=0)
        sampled = (extreme + 1.0) / (permutations + 1.0)
        p_values[random_needed] = sampled[random_needed]
    return p_values


def _subset_layout(masks: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Case indices of every subset laid end to end, and each subset's ``(begin, end)`` in
    them, so that a subset's columns of a resampled matrix are one contiguous slice."""
    members = [np.flatnonzero(masks[:, s]) for s in range(masks.shape[1])]
    ends = np.cumsum([m.size for m in members])
    bounds = [(int(e - m.size), int(e)) for e, m in zip(ends, members, strict=True)]
    expanded = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
    return expanded, bounds


def degenerate_result(d: np.ndarray) -> TestResult | None:
    """The honest answer when no test can say anything about ``d``, else ``None``:
    ``n < 2`` -> ``nan`` (no test); every difference 0 -> ``p = 1`` (tests undefined)."""
    if d.size < 2:
        return TestResult(math.nan, f"n = {d.size} < 2: no test")
    if not np.any(d != 0):
        return TestResult(1.0, "every paired difference is 0: the test is undefined, p = 1")
    return None


def paired_test(
    d: np.ndarray,
    test: str = "wilcoxon",
    permutations: int = 10_000,
    rng: np.random.Generator | None = None,
) -> TestResult:
    """Run ``test`` (one of :data:`TESTS`) on differences ``d`` and explain degenerate cases."""
    d = np.asarray(d, dtype=np.float64)
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    degenerate = degenerate_result(d)
    if degenerate is not None:
        return degenerate
    if test == "wilcoxon":
        return TestResult(wilcoxon_signed_rank(d))
    if test == "ttest":
        return TestResult(paired_t_test(d))
    return TestResult(sign_flip_test(d, permutations, rng))


def smallest_p(test: str, cases: int, nonzero: int, permutations: int = 10_000) -> float:
    """The smallest two-sided p that ``test`` can give on ``cases`` paired differences of
    which ``nonzero`` are not 0, whatever their values (all of one sign reach it).

    - Wilcoxon (the regimes of :func:`wilcoxon_signed_rank`): up to 13 cases the ``2^n``
      sign patterns of the ``n`` non-zero differences are enumerated, so ``2 / 2^n``; above,
      the normal approximation, whose largest ``|z|`` comes with every ``|d|`` tied:
      ``W+ - n(n+1)/4 = n(n+1)/4`` over a tie-corrected sd of ``sqrt(n)(n+1)/4``, so
      ``z = sqrt(n)`` and ``p = 2 Phi(-sqrt n)``; with no zero and at most 50 cases the exact
      test serves untied values, so the smaller of the two.
    - sign-flip permutation test: ``2 / 2^n`` while ``2^n <= permutations`` (enumerated), else
      ``1 / (permutations + 1)``.
    - t-test: no floor (``nan``).

    ``nonzero = 0``: 1 (every difference 0)."""
    if nonzero <= 0:
        return 1.0
    enumerated = min(1.0, 2.0 ** (1 - nonzero))  # 2 / 2^n, 0.0 past float range
    if test == "permutation":
        return enumerated if 2**nonzero <= permutations else 1.0 / (permutations + 1.0)
    if test != "wilcoxon":
        return math.nan
    if cases <= _WILCOXON_ENUMERATE_MAX_N:
        return enumerated
    normal = float(2.0 * ndtr(-math.sqrt(nonzero)))
    if nonzero == cases and cases <= _WILCOXON_EXACT_MAX_N:
        return min(enumerated, normal)
    return normal


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate).

    With the ``m`` finite p-values sorted ascending, ``p_(1) <= ... <= p_(m)``:
    ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``; returned in the input order.
    ``nan`` entries are not part of the family and stay ``nan``. Reference: Holm (1979),
    "A simple sequentially rejective multiple test procedure", Scand. J. Statist. 6:65-70.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p_values.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p_values))
    m = finite.size
    if m == 0:
        return adjusted
    order = finite[np.argsort(p_values[finite], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p_values[order])
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def bonferroni(p_values: np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values ``min(1, m p)`` over the ``m`` finite p-values
    (``nan`` stays ``nan``). Reference: Dunn (1961), "Multiple comparisons among means"."""
    p_values = np.asarray(p_values, dtype=np.float64)
    m = int(np.isfinite(p_values).sum())
    return np.minimum(1.0, m * p_values)


def adjust(p_values: np.ndarray, correction: str = "holm") -> np.ndarray:
    """Adjust a family of p-values by ``correction`` (one of :data:`CORRECTIONS`)."""
    if correction == "holm":
        return holm(p_values)
    if correction == "bonferroni":
        return bonferroni(p_values)
    if correction == "none":
        return np.asarray(p_values, dtype=np.float64).copy()
    raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` float64: how often each of ``n`` cases is drawn in each resample of
    ``n`` draws with replacement (multinomial counts, each row sums to ``n``)."""
    draws = rng.integers(0, n, size=(resamples, n))
    draws += np.arange(resamples)[:, None] * n
    counts = np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)
    return counts.astype(np.float64)


def bootstrap_subset_means(
    values: np.ndarray, masks: np.ndarray, resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap means of ``values`` (``[n, k]``) within subsets ``masks`` (``[n, S]`` bool)
    -> ``[resamples, S, k]``.

    Each resample draws ``n`` cases uniformly with replacement from *all* cases (the
    ordinary nonparametric bootstrap of the test set, Efron & Tibshirani, *An Introduction
    to the Bootstrap*, 1993); a subset's mean is the mean of its drawn cases, so its size
    varies between resamples as it would between test sets. One resample is shared by every
    subset and column, which keeps paired columns paired. ``nan`` where a resample drew no
    case of the subset. Vectorised: per chunk of resamples a count matrix ``C`` and, per
    subset, ``C[:, subset] @ values[subset] / C[:, subset].sum(1)``.
    """
    values = np.asarray(values, dtype=np.float64)
    masks = np.asarray(masks, dtype=bool)
    n, k = values.shape
    complete = masks.all(axis=0)  # e.g. "overall": no gather needed, every row sums to n
    expanded, bounds = _subset_layout(masks[:, ~complete])
    gathered = values[expanded]
    means = np.full((resamples, masks.shape[1], k), np.nan)
    if n == 0:
        return means
    partial = np.flatnonzero(~complete)
    chunk = max(1, _CHUNK_ENTRIES // n)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        counts = resample_counts(n, rows, rng)
        if complete.any():
            means[start : start + rows, complete] = (counts @ values / n)[:, None, :]
        counts = counts[:, expanded]
        for s, (begin, end) in zip(partial, bounds, strict=True):
            block = counts[:, begin:end]
            drawn = block.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[start : start + rows, s] = (block @ gathered[begin:end]) / drawn[:, None]
    return means


def bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``values`` (``[n, k]``) over ``resamples`` case resamples -> ``[resamples, k]``;
    one resample is shared by all columns (see :func:`bootstrap_subset_means`)."""
    values = np.asarray(values, dtype=np.float64)
    everything = np.ones((values.shape[0], 1), dtype=bool)
    return bootstrap_subset_means(values, everything, resamples, rng)[:, 0]


def relative_lift(mean_group: np.ndarray, mean_baseline: np.ndarray) -> np.ndarray:
    """Lift ``(mean_group - mean_baseline) / mean_baseline`` (a fraction, not %).

    A zero baseline gives ``+inf``/``-inf`` for a non-zero difference and 0 for none (both
    means 0): the lift of nothing over nothing is no lift.
    """
    mean_group = np.asarray(mean_group, dtype=np.float64)
    mean_baseline = np.asarray(mean_baseline, dtype=np.float64)
    difference = mean_group - mean_baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = difference / mean_baseline
    return np.where(difference == 0, 0.0, lift)


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of ``samples`` (``[B, ...]``) at ``level`` along axis 0.

    Bounds are order statistics (``inverted_cdf``, no interpolation), so infinite samples
    (a resample with a zero baseline mean) give infinite bounds rather than ``nan``; ``nan``
    samples (a resample without any case of a subset) are left out.
    """
    tail = (1.0 - level) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns: nan bounds
        lower = np.nanquantile(samples, tail, axis=0, method="inverted_cdf")
        upper = np.nanquantile(samples, 1.0 - tail, axis=0, method="inverted_cdf")
    return lower, upper


def paired_bootstrap_lift(
    group: np.ndarray,
    baseline: np.ndarray,
    resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """Lift of ``group`` over ``baseline`` (paired per-case values, ``[n]`` each) with its
    paired percentile bootstrap CI: ``(lift, lower, upper)``, fractions.

    Each resample draws the same cases for both, so the CI reflects the paired design.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    values = np.column_stack([np.asarray(group, float), np.asarray(baseline, float)])
    means = bootstrap_means(values, resamples, rng)
    lifts = relative_lift(means[:, 0], means[:, 1])
    lower, upper = percentile_interval(lifts, level)
    point = relative_lift(values[:, 0].mean(), values[:, 1].mean())
    return float(point), float(lower), float(upper)


def seed_resample_weights(seeds: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, seeds]``: the weight of each of a group's ``seeds`` runs in each resample,
    i.e. how often it is drawn among ``seeds`` draws with replacement, divided by ``seeds``
    (one ``rng.integers(0, seeds, (resamples, seeds))`` call; every row sums to 1)."""
    draws = rng.integers(0, seeds, size=(resamples, seeds))
    draws += np.arange(resamples)[:, None] * seeds
    counts = np.bincount(draws.ravel(), minlength=resamples * seeds).reshape(resamples, seeds)
    return counts / float(seeds)


def two_level_bootstrap_means(
    per_seed: list[np.ndarray],
    masks: np.ndarray,
    resamples: int,
    case_rng: np.random.Generator,
    seed_rng: np.random.Generator,
) -> np.ndarray:
    """Two-level bootstrap means: seeds of each group, then test cases, -> ``[B, S, G, k]``.

    ``per_seed[g]`` is ``[S_g, n, k]``: group ``g``'s per-case values of ``k`` metrics in each
    of its ``S_g`` seeds; ``masks`` is ``[n, S]`` (subsets of cases). Resample ``b``:

    1. for each group, in order, ``S_g`` seed indices are drawn with replacement
       (:func:`seed_resample_weights` on ``seed_rng``; the same draw serves every metric);
    2. ``n`` test cases are drawn with replacement from all cases, the same draw for every
       group, seed and metric (paired), as in :func:`bootstrap_subset_means` on ``case_rng``;
    3. a group's value in a subset is the mean, over its drawn seeds, of the mean of the
       drawn cases of the subset: ``sum_s w_bs sum_i c_bi x_si / sum_i c_bi`` over subset cases.

    With one seed per group the first level is the identity and the result equals
    :func:`bootstrap_subset_means` of the values (the same ``case_rng`` stream).
    """
    masks = np.asarray(masks, dtype=bool)
    n = masks.shape[0]
    blocks = [np.asarray(v, dtype=np.float64) for v in per_seed]
    columns = np.concatenate(
        [v.transpose(1, 0, 2).reshape(n, v.shape[0] * v.shape[2]) for v in blocks], axis=1
    )  # column order: group, seed, metric
    boot = bootstrap_subset_means(columns, masks, resamples, case_rng)
    k = blocks[0].shape[2] if blocks else 0
    out = np.full((resamples, masks.shape[1], len(blocks), k), np.nan)
    offset = 0
    for g, block in enumerate(blocks):
        seeds = block.shape[0]
        weights = seed_resample_weights(seeds, resamples, seed_rng)
        part = boot[:, :, offset : offset + seeds * k].reshape(resamples, -1, seeds, k)
        out[:, :, g, :] = np.einsum("bs,bxsk->bxk", weights, part)
        offset += seeds * k
    return out


def seed_pair_lifts(group_means: np.ndarray, baseline_means: np.ndarray) -> np.ndarray:
    """Lifts of every (group seed, baseline seed) pair: ``[S_g] x [S_b] -> [S_g * S_b]``."""
    group_means = np.asarray(group_means, dtype=np.float64)
    baseline_means = np.asarray(baseline_means, dtype=np.float64)
    return relative_lift(group_means[:, None], baseline_means[None, :]).ravel()


def sign_consistent(pair_lifts: np.ndarray, pooled_lift: float) -> bool:
    """True when every seed pair's lift is non-zero with the sign of the pooled lift."""
    pair_lifts = np.asarray(pair_lifts, dtype=np.float64)
    if math.isnan(pooled_lift) or pooled_lift == 0:
        return False
    sign = np.sign(pooled_lift)
    return bool(pair_lifts.size and np.all(np.sign(pair_lifts) == sign))


def ci_holds_both(low: float, high: float, value: float) -> bool:
    """Whether the closed interval ``[low, high]`` holds both 0 and ``value``: a comparison
    whose CI does so cannot tell a lift of that size from none (``nan`` bounds: False)."""
    return low <= min(0.0, value) and high >= max(0.0, value)
