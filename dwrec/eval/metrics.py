"""Ranking metrics as pure array-in / array-out kernels (one target per case).

Every kernel takes the 1-based rank of each case's single target among the ranked items
(``ranks``: int array ``[N]``, values >= 1) and a cut-off ``k >= 1``, and returns one float64
value per case, so per-case values can be kept, paired across runs and averaged by any
grouping afterwards. With one relevant item the ideal DCG is 1 (the single relevant item at
rank 1); slots that cannot be filled by a relevant item are never counted in the ideal.

The catalogue-level measures (coverage, mean popularity, per-domain share of the
recommendations) take the top-K item lists ``[N, K]`` (item ids, ``-1`` marks an empty
slot, e.g. when fewer than K items were left unmasked).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "METRICS",
    "coverage_at_k",
    "mean_popularity_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "per_case_metrics",
    "recall_at_k",
    "recommendation_share_at_k",
]


def _checked_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = np.asarray(ranks)
    if ranks.size and ranks.min() < 1:
        raise ValueError("ranks are 1-based: every rank must be >= 1")
    return ranks


def recall_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """Recall@K (= hit rate for one target): ``1 if rank <= K else 0``."""
    ranks = _checked_ranks(ranks, k)
    return (ranks <= k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K for one target: ``1 / log2(rank + 1) if rank <= K else 0``.

    DCG = sum over hit positions of ``1 / log2(position + 1)``; with a single relevant item
    the ideal DCG is ``1 / log2(2) = 1``, so NDCG equals the DCG of the target's position.
    """
    ranks = _checked_ranks(ranks, k)
    values = 1.0 / np.log2(ranks.astype(np.float64) + 1.0)
    return np.where(ranks <= k, values, 0.0)


def mrr_at_k(ranks: np.ndarray, k: int) -> np.ndarray:
    """MRR@K (reciprocal rank cut at K): ``1 / rank if rank <= K else 0``."""
    ranks = _checked_ranks(ranks, k)
    return np.where(ranks <= k, 1.0 / ranks.astype(np.float64), 0.0)


METRICS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "recall": recall_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
}
"""Per-case metric kernels by name; columns are named ``f"{name}@{k}"``."""


def per_case_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` at every K: ``{"recall@10": [N] float64, ...}``.

    Keys are ordered by K, then by metric name in :data:`METRICS` order.
    """
    return {f"{name}@{k}": kernel(ranks, k) for k in ks for name, kernel in METRICS.items()}


def _slots(top_items: np.ndarray, k: int) -> np.ndarray:
    """The filled slots of the first ``k`` columns of ``top_items``, flattened."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    top = np.asarray(top_items)[:, :k].reshape(-1)
    return top[top >= 0]


def coverage_at_k(top_items: np.ndarray, n_items: int, k: int) -> float:
    """Catalogue coverage@K: ``|union of the cases' top-K items| / n_items`` (in [0, 1])."""
    slots = _slots(top_items, k)
    if n_items <= 0:
        return 0.0
    return float(np.unique(slots).size / n_items)


def mean_popularity_at_k(top_items: np.ndarray, popularity: np.ndarray, k: int) -> float:
    """Mean popularity of the recommended items: ``mean over filled top-K slots of pop[item]``.

    ``popularity[i]`` is item i's number of training interactions; NaN when no slot is filled.
    """
    slots = _slots(top_items, k)
    if slots.size == 0:
        return float("nan")
    return float(np.asarray(popularity, dtype=np.float64)[slots].mean())


def recommendation_share_at_k(
    top_items: np.ndarray, item_domain_matrix: np.ndarray, k: int
) -> np.ndarray:
    """Per-domain share of the recommendations: ``#(filled top-K slots whose item lies in d)
    / #(filled top-K slots)``, one float64 per domain (column of ``item_domain_matrix``,
    a bool ``[n_items, n_domains]``). An item in several domains counts in each, so shares
    can sum to more than 1; all zeros when no slot is filled.
    """
    slots = _slots(top_items, k)
    n_domains = item_domain_matrix.shape[1]
    if slots.size == 0:
        return np.zeros(n_domains, dtype=np.float64)
    hits = np.asarray(item_domain_matrix)[slots].sum(axis=0, dtype=np.int64)
    return hits.astype(np.float64) / slots.size
