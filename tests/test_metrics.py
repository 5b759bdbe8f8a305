"""Metric kernels: hand-computed cases and float64 loops as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dwrec.eval import metrics

ranks_strategy = arrays(np.int64, st.integers(0, 40), elements=st.integers(1, 60))


def test_recall_hand_computed():
    assert metrics.recall_at_k(np.array([1, 10, 11, 500]), 10).tolist() == [1.0, 1.0, 0.0, 0.0]


def test_ndcg_hand_computed():
    values = metrics.ndcg_at_k(np.array([1, 2, 3, 10, 11]), 10)
    expected = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(11), 0.0]
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-15)


def test_ndcg_ideal_dcg_counts_one_slot_only():
    # A single target at rank 1 is a perfect list even when K is larger than the catalogue.
    assert metrics.ndcg_at_k(np.array([1]), 50)[0] == 1.0


def test_mrr_hand_computed():
    values = metrics.mrr_at_k(np.array([1, 4, 5, 6]), 5)
    assert values.tolist() == [1.0, 0.25, 0.2, 0.0]


def test_ranks_must_be_one_based():
    with pytest.raises(ValueError):
        metrics.recall_at_k(np.array([0, 1]), 10)
    with pytest.raises(ValueError):
        metrics.mrr_at_k(np.array([1]), 0)


@settings(max_examples=60, deadline=None)
@given(ranks=ranks_strategy, k=st.integers(1, 70))
def test_kernels_match_python_loops(ranks, k):
    recall = [1.0 if r <= k else 0.0 for r in ranks]
    ndcg = [1.0 / math.log2(r + 1.0) if r <= k else 0.0 for r in ranks]
    mrr = [1.0 / r if r <= k else 0.0 for r in ranks]
    np.testing.assert_array_equal(metrics.recall_at_k(ranks, k), recall)
    np.testing.assert_allclose(metrics.ndcg_at_k(ranks, k), ndcg, rtol=1e-15, atol=0)
    np.testing.assert_allclose(metrics.mrr_at_k(ranks, k), mrr, rtol=1e-15, atol=0)


def test_per_case_metrics_names_every_metric_at_every_k():
    values = metrics.per_case_metrics(np.array([1, 15]), [10, 20])
    assert list(values) == ["recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20", "mrr@20"]
    assert values["recall@10"].tolist() == [1.0, 0.0]
    assert values["recall@20"].tolist() == [1.0, 1.0]
    assert all(v.dtype == np.float64 for v in values.values())


def test_catalogue_measures_hand_computed():
    top = np.array([[0, 1, 2], [1, 3, -1]])
    popularity = np.array([10, 20, 30, 40, 50])
    domains = np.array([[1, 0], [1, 1], [0, 0], [0, 1], [0, 0]], dtype=bool)
    assert metrics.coverage_at_k(top, 5, 2) == 3 / 5  # items 0, 1, 3
    assert metrics.coverage_at_k(top, 5, 3) == 4 / 5  # the -1 slot is empty
    assert metrics.mean_popularity_at_k(top, popularity, 3) == (10 + 20 + 30 + 20 + 40) / 5
    share = metrics.recommendation_share_at_k(top, domains, 3)
    np.testing.assert_allclose(share, [3 / 5, 3 / 5])


@settings(max_examples=40, deadline=None)
@given(
    top=arrays(
        np.int64, st.tuples(st.integers(1, 12), st.integers(1, 6)), elements=st.integers(-1, 9)
    ),
    k=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_catalogue_measures_match_loops(top, k, seed):
    rng = np.random.default_rng(seed)
    popularity = rng.integers(0, 100, size=10)
    domains = rng.random((10, 3)) < 0.4
    slots = [int(item) for row in top for item in row[:k] if item >= 0]
    assert metrics.coverage_at_k(top, 10, k) == len(set(slots)) / 10
    pop = metrics.mean_popularity_at_k(top, popularity, k)
    if slots:
        assert pop == pytest.approx(sum(popularity[i] for i in slots) / len(slots), rel=1e-12)
        share = metrics.recommendation_share_at_k(top, domains, k)
        expected = [sum(domains[i, d] for i in slots) / len(slots) for d in range(3)]
        np.testing.assert_allclose(share, expected, rtol=1e-12)
    else:
        assert math.isnan(pop)
