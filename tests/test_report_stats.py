"""The report's statistics against independent computations: scipy, brute-force enumeration,
hand-worked corrections, simulated coverage."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
import scipy.stats

from dwrec.report import stats


def _vectors():
    rng = np.random.default_rng(7)
    yield "exact, small", rng.normal(0.3, 1, 8)
    yield "exact, n=50", rng.normal(0.2, 1, 50)
    yield "ties and zeros, n=12", np.array([1, -1, 0, 2, 2, 0.5, -0.5, 1, 0, 3, 1, -2.0])
    yield "zeros, n=40", np.where(rng.random(40) < 0.2, 0.0, rng.normal(0.4, 1, 40))
    yield "binary recall diffs, n=600", rng.choice([-1.0, 0.0, 1.0], 600, p=[0.15, 0.6, 0.25])
    yield "continuous, n=3000", rng.normal(0.02, 0.3, 3000)
    yield "ndcg-like, n=200", rng.choice([0.0, 0.5, 1 / math.log2(3), -0.5, -1.0], 200)


@pytest.mark.parametrize(("name", "d"), list(_vectors()), ids=[n for n, _ in _vectors()])
def test_wilcoxon_matches_scipy(name, d):
    expected = scipy.stats.wilcoxon(d).pvalue
    assert stats.wilcoxon_signed_rank(d) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(("name", "d"), list(_vectors()), ids=[n for n, _ in _vectors()])
def test_paired_t_test_matches_scipy(name, d):
    rng = np.random.default_rng(len(d))
    baseline = rng.random(len(d))
    group = baseline + d
    expected = scipy.stats.ttest_rel(group, baseline).pvalue
    assert stats.paired_t_test(group - baseline) == pytest.approx(expected, rel=1e-9)


def test_wilcoxon_with_every_difference_zero_is_p_one_and_says_why():
    d = np.zeros(20)
    assert stats.wilcoxon_signed_rank(d) == 1.0
    result = stats.paired_test(d, "wilcoxon")
    assert result.p == 1.0 and "undefined" in result.note


def test_too_few_cases_give_no_test():
    for test in stats.TESTS:
        result = stats.paired_test(np.array([0.5]), test)
        assert math.isnan(result.p) and "n = 1 < 2" in result.note


def test_t_test_of_constant_difference():
    assert stats.paired_t_test(np.full(5, 0.2)) == 0.0
    assert stats.paired_t_test(np.zeros(5)) == 1.0


def _brute_force_sign_flip_p(d: np.ndarray) -> float:
    """All 2^n sign vectors in a plain loop, zeros included: P(|sum s d| >= |sum d|)."""
    observed = abs(sum(d))
    hits = 0
    total = 0
    for signs in product((-1, 1), repeat=len(d)):
        statistic = abs(sum(s * x for s, x in zip(signs, d, strict=True)))
        hits += statistic >= observed - 1e-12
        total += 1
    return hits / total


@pytest.mark.parametrize(
    "d",
    [
        np.array([0.3, 0.1, -0.2, 0.5, 0.4, 0.0, 0.25, -0.05, 0.6]),
        np.array([1.0, 1.0, -1.0, 1.0, 0.0, 1.0, 1.0]),
        np.array([0.2, -0.2, 0.2, -0.2]),
    ],
)
def test_sign_flip_enumerates_exactly_for_small_n(d):
    expected = _brute_force_sign_flip_p(d)
    assert stats.sign_flip_test(d, permutations=10_000) == pytest.approx(expected, abs=1e-12)


def test_sign_flip_random_flips_approach_exact_p_with_plus_one_rule():
    d = np.array([0.3, 0.1, -0.2, 0.5, 0.4, 0.7, 0.25, -0.05, 0.6, 0.2, -0.1, 0.35])
    exact = _brute_force_sign_flip_p(d)
    # 2^12 = 4096 > 2000 permutations: the random branch runs
    sampled = stats.sign_flip_test(d, permutations=2000, rng=np.random.default_rng(3))
    assert sampled != exact
    assert sampled == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 2000) + 1e-3)
    # never 0: an effect beyond every flip gives (0 + 1) / (P + 1)
    huge = np.full(200, 1.0)
    assert stats.sign_flip_test(huge, permutations=999) == pytest.approx(1 / 1000)


def test_sign_flip_columns_share_flips_and_equal_single_column_tests():
    rng = np.random.default_rng(11)
    columns = rng.normal(0.1, 1.0, size=(300, 3))
    columns[:, 2] = np.where(rng.random(300) < 0.5, 0.0, columns[:, 2])
    joint = stats.sign_flip_tests(columns, permutations=3000, rng=np.random.default_rng(5))
    for k in range(3):
        nonzero = columns[:, k][columns[:, k] != 0]
        exact_normal = scipy.stats.ttest_1samp(nonzero, 0.0).pvalue
        assert joint[k] == pytest.approx(exact_normal, abs=0.04)


def test_holm_matches_hand_worked_example():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    adjusted = stats.holm(p)
    np.testing.assert_allclose(adjusted[:4], [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert math.isnan(adjusted[4])
    np.testing.assert_allclose(stats.holm(np.array([0.5, 0.6])), [1.0, 1.0])


def test_bonferroni_matches_hand_worked_example():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan, 0.3])
    adjusted = stats.bonferroni(p)
    np.testing.assert_allclose(adjusted[[0, 1, 2, 3, 5]], [0.05, 0.2, 0.15, 0.025, 1.0])
    assert math.isnan(adjusted[4])
    np.testing.assert_array_equal(stats.adjust(p[:4], "none"), p[:4])


def test_bootstrap_means_equal_a_gather_with_the_same_draws():
    values = np.random.default_rng(0).random((50, 3))
    means = stats.bootstrap_means(values, 40, np.random.default_rng(9))
    draws = np.random.default_rng(9).integers(0, 50, size=(40, 50))
    np.testing.assert_allclose(means, values[draws].mean(axis=1), rtol=1e-12)


def test_relative_lift_handles_zero_baseline():
    lift = stats.relative_lift(np.array([0.2, 0.0, 0.1]), np.array([0.1, 0.0, 0.0]))
    np.testing.assert_array_equal(lift, [1.0, 0.0, np.inf])
    low, high = stats.percentile_interval(np.array([0.0, 1.0, np.inf, 2.0]), 0.5)
    assert np.isfinite(low)


def test_paired_bootstrap_ci_covers_true_lift_at_nominal_rate():
    """200 simulated paired samples whose true lift is exactly +10%; strongly correlated
    pairs, so an unpaired bootstrap would be far too wide (coverage ~1) and fail the upper
    bound, and a too-narrow one the lower bound."""
    rng = np.random.default_rng(2024)
    simulations, n, covered, widths = 200, 200, 0, []
    true_lift = 0.10
    for _ in range(simulations):
        baseline = rng.lognormal(0.0, 0.5, n)
        group = (1 + true_lift) * baseline + rng.normal(0.0, 0.05, n)
        _, low, high = stats.paired_bootstrap_lift(group, baseline, 1000, 0.95, rng)
        covered += low <= true_lift <= high
        widths.append(high - low)
    coverage = covered / simulations
    assert 0.90 <= coverage <= 0.985, coverage
    assert np.median(widths) < 0.03  # the paired CI is narrow: noise sd 0.05 on mean ~1.13


def test_sign_flip_subsets_equal_single_subset_tests():
    rng = np.random.default_rng(4)
    differences = rng.choice([-1.0, 0.0, 1.0], size=(400, 2), p=[0.2, 0.5, 0.3])
    masks = np.column_stack([np.arange(400) < 6, rng.random(400) < 0.5, np.ones(400, bool)])
    joint = stats.sign_flip_subset_tests(differences, masks, 4000, np.random.default_rng(1))
    for column in range(2):
        small = differences[masks[:, 0], column]  # 6 cases: enumerated exactly
        assert joint[0, column] == pytest.approx(_brute_force_sign_flip_p(small), abs=1e-12)
        for s in (1, 2):
            subset = differences[masks[:, s], column]
            exact_normal = scipy.stats.ttest_1samp(subset[subset != 0], 0.0).pvalue
            assert joint[s, column] == pytest.approx(exact_normal, abs=0.05)


def test_subset_bootstrap_means_equal_a_loop_over_the_same_counts():
    rng = np.random.default_rng(8)
    values = rng.random((30, 2))
    masks = np.column_stack([rng.random(30) < 0.3, np.ones(30, bool)])
    means = stats.bootstrap_subset_means(values, masks, 25, np.random.default_rng(6))
    counts = stats.resample_counts(30, 25, np.random.default_rng(6))
    for b in range(25):
        for s in range(2):
            drawn = np.repeat(np.arange(30), counts[b].astype(int))
            drawn = drawn[masks[drawn, s]]
            expected = values[drawn].mean(axis=0) if drawn.size else np.full(2, np.nan)
            np.testing.assert_allclose(means[b, s], expected, rtol=1e-12)


def test_domain_subset_bootstrap_ci_covers_true_lift_at_nominal_rate():
    """The CI the tables use: resample all cases, take a domain's drawn cases. 200 test sets
    of 500 cases, 30% in the domain, true lift +20% there (0.30 -> 0.36 hit rate)."""
    rng = np.random.default_rng(99)
    simulations, n, covered = 200, 500, 0
    for _ in range(simulations):
        in_domain = rng.random(n) < 0.3
        latent = rng.random(n)
        baseline = (latent < 0.30).astype(float)
        group = (latent < np.where(in_domain, 0.36, 0.30)).astype(float)
        values = np.column_stack([group, baseline])
        boot = stats.bootstrap_subset_means(values, in_domain[:, None], 1000, rng)[:, 0]
        low, high = stats.percentile_interval(stats.relative_lift(boot[:, 0], boot[:, 1]))
        covered += low <= 0.20 <= high
    assert 0.90 <= covered / simulations <= 0.985, covered / simulations


def _all_signs(magnitudes: np.ndarray, zeros: int):
    """Every sign pattern of ``magnitudes``, with ``zeros`` zero differences appended."""
    for signs in product((1.0, -1.0), repeat=magnitudes.size):
        yield np.concatenate([magnitudes * np.array(signs), np.zeros(zeros)])


def test_smallest_p_is_the_minimum_over_every_sign_pattern_and_tie_pattern():
    """stats.smallest_p against brute force: the least p of the test over every sign pattern
    of several magnitude sets (distinct, all tied, partly tied), in each Wilcoxon regime."""
    rng = np.random.default_rng(11)
    for m in range(1, 8):
        sets = (rng.random(m) + 0.1, np.ones(m), rng.integers(1, 3, m) / 3.0)
        for zeros in (0, 2, 15):  # enumerated (n <= 13), and normal approximation (n > 13)
            n = m + zeros
            least = min(
                stats.wilcoxon_signed_rank(d) for mags in sets for d in _all_signs(mags, zeros)
            )
            assert least == pytest.approx(stats.smallest_p("wilcoxon", n, m), rel=1e-9), (m, n)
            # the permutation test enumerates while 2^m <= permutations
            least = min(stats.sign_flip_test(d) for d in _all_signs(sets[0], zeros))
            assert least == pytest.approx(stats.smallest_p("permutation", n, m), rel=1e-12)
    # no zero, 14 <= n <= 50: exact for untied values, the normal approximation for tied ones
    for m in (14, 20):
        untied = stats.wilcoxon_signed_rank(rng.random(m) + 0.1)
        tied = stats.wilcoxon_signed_rank(np.ones(m))
        assert stats.smallest_p("wilcoxon", m, m) == pytest.approx(min(untied, tied), rel=1e-9)
    assert stats.smallest_p("wilcoxon", 30, 0) == 1.0
    assert stats.smallest_p("wilcoxon", 5000, 5000) == 0.0  # far past float range: no error
    assert math.isnan(stats.smallest_p("ttest", 30, 5))
    assert stats.smallest_p("permutation", 40, 20, permutations=1000) == pytest.approx(1 / 1001)
