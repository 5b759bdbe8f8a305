"""dwrec.report.power (benchmarks/detection_power.py's kernel): one sample tested as a report
cell, checked against scipy's Wilcoxon and the seed-sign rule written out; the power of the
sampling against an exact enumeration of the draws. The script itself runs in
tests/test_reproduce_paper.py on real runs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import wilcoxon

from dwrec.report.power import detection_power, sample_cell


def by_hand(group, baseline, index):
    """The cell's p, lift and seed-sign rule, written out without dwrec."""
    g = np.array([[group[s][i] for i in index] for s in range(len(group))], dtype=float)
    b = np.array([[baseline[s][i] for i in index] for s in range(len(baseline))], dtype=float)
    d = g.mean(axis=0) - b.mean(axis=0)
    p = 1.0 if not np.any(d) else float(wilcoxon(d).pvalue)
    with np.errstate(invalid="ignore", divide="ignore"):  # a sample of zero cases only: nan
        lift = g.mean() / b.mean() - 1
        every = all((gs.mean() / bs.mean() - 1) * lift > 0 for gs in g for bs in b)
    return p, lift, bool(lift > 0 and every)


def test_one_sample_is_tested_as_a_report_cell():
    rng = np.random.default_rng(7)
    group = rng.random((3, 40)).round(2)
    baseline = (rng.random((3, 40)) * 0.8).round(2)
    for _ in range(5):
        index = rng.integers(0, 40, 25)
        p, lift, positive = sample_cell(group, baseline, index)
        p_ref, lift_ref, positive_ref = by_hand(group, baseline, index)
        assert p == pytest.approx(p_ref, rel=1e-9)
        assert lift == pytest.approx(lift_ref, rel=1e-12)
        assert positive == positive_ref
    # one seed pair against the pooled sign: not positive in every pair
    group = np.array([[1.0, 1.0, 1.0], [0.1, 0.1, 0.1]])
    baseline = np.array([[0.5, 0.5, 0.5]])
    assert sample_cell(group, baseline, np.arange(3))[2] is False


def test_power_matches_an_exact_enumeration_of_the_draws():
    # 3 cases, samples of 2 drawn with replacement: 9 equally likely ordered draws
    group = np.array([[0.6, 0.2, 0.9], [0.7, 0.1, 0.8]])
    baseline = np.array([[0.3, 0.4, 0.5], [0.2, 0.3, 0.6]])
    threshold = 0.6  # n = 2: p = 0.5 when both differences are positive, 1 otherwise
    outcomes = [by_hand(group, baseline, index) for index in itertools.product(range(3), repeat=2)]
    exact = np.mean([positive and p < threshold for p, _, positive in outcomes])
    assert 0 < exact < 1
    draws = 20_000
    shares, _ = detection_power(group, baseline, 2, (threshold,), draws, np.random.default_rng(1))
    assert abs(shares[0] - exact) < 4 * np.sqrt(exact * (1 - exact) / draws)


def test_power_is_0_without_a_difference_and_1_for_a_large_one():
    rng = np.random.default_rng(3)
    base = rng.random((3, 60))
    thresholds = (0.05 / 84, 0.05)
    shares, lift = detection_power(base, base.copy(), 30, thresholds, 50, rng)
    assert shares == [0.0, 0.0] and lift == 0.0
    shares, _ = detection_power(base + 1.0, base, 30, thresholds, 50, rng)
    assert shares == [1.0, 1.0]


def test_dilution_matches_an_exact_enumeration_with_the_case_nobody_hits():
    # 3 population cases (one where the baseline wins) + the zero case; each draw: a
    # population case with probability keep / 3 each, the zero case with 1 - keep
    group = np.array([[0.6, 0.9, 0.1], [0.7, 0.8, 0.2]])
    baseline = np.array([[0.3, 0.5, 0.4], [0.2, 0.6, 0.5]])
    keep, size, threshold = 0.6, 3, 0.3
    padded_g = np.hstack([group, np.zeros((2, 1))])
    padded_b = np.hstack([baseline, np.zeros((2, 1))])
    chance = [keep / 3] * 3 + [1 - keep]
    exact = 0.0
    for index in itertools.product(range(4), repeat=size):
        p, _, positive = by_hand(padded_g, padded_b, index)
        if positive and p < threshold:
            exact += np.prod([chance[i] for i in index])
    # only samples of three population cases can pass, and not all of them do
    assert 0 < exact < keep**size
    draws = 20_000
    shares, _ = detection_power(group, baseline, size, (threshold,), draws,
                                np.random.default_rng(2), keep=keep)  # fmt: skip
    assert abs(shares[0] - exact) < 4 * np.sqrt(exact * (1 - exact) / draws)
    with pytest.raises(ValueError, match="keep"):
        detection_power(group, baseline, size, (threshold,), 1, np.random.default_rng(), keep=0)
