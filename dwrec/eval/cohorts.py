"""Per-domain cohorts (METHODS.md section 8) and the training statistics they rest on.

- ``target`` cohort of domain d: cases whose target item lies in d (an item in several
  domains counts in each).
- ``power`` cohort of d: cases whose user has at least ``power_threshold`` of their
  *training* interactions in d.
- ``general`` cohort of d: cases whose user has at most ``general_threshold`` of them in d
  (a user with no training interaction in d, or none at all, is general).

Shares count an interaction once per domain of its item, divided by the user's number of
training interactions, so a user's shares can sum to more than 1 with multi-domain items.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from dwrec.data.dataset import Dataset
from dwrec.data.split import Split


@dataclass
class TrainingStats:
    """What the training prefixes of a split say about items, users and domains.

    Attributes:
        item_popularity: ``[n_items]`` int64, training interactions per item.
        user_totals: ``[n_users]`` int64, training interactions per user.
        user_domain_counts: ``[n_users, n_domains]`` int64, training interactions per user
            whose item lies in each domain.
        domain_share: ``[n_domains]`` float64, share of all training interactions whose item
            lies in each domain (the sparsity used to order domains in tables).
    """

    item_popularity: np.ndarray
    user_totals: np.ndarray
    user_domain_counts: np.ndarray
    domain_share: np.ndarray

    def user_domain_shares(self) -> np.ndarray:
        """``[n_users, n_domains]`` float64: share of each user's training interactions in d."""
        totals = np.maximum(self.user_totals, 1)[:, None]
        return self.user_domain_counts / totals


def training_stats(dataset: Dataset, split: Split) -> TrainingStats:
    """Count the training interactions (rows before ``split.train_end`` of their user)."""
    rows = np.arange(len(dataset.item_ids))
    in_train = rows < split.train_end[dataset.user_ids]
    users = dataset.user_ids[in_train]
    items = dataset.item_ids[in_train]
    popularity = np.bincount(items, minlength=dataset.n_items).astype(np.int64)
    user_totals = np.bincount(users, minlength=dataset.n_users).astype(np.int64)
    user_item = sp.csr_matrix(
        (np.ones(len(users), dtype=np.int64), (users, items)),
        shape=(dataset.n_users, dataset.n_items),
    )
    item_domain = sp.csr_matrix(dataset.item_domain_matrix.astype(np.int64))
    user_domain_counts = np.asarray((user_item @ item_domain).todense(), dtype=np.int64)
    domain_hits = popularity @ dataset.item_domain_matrix.astype(np.int64)
    total = max(int(popularity.sum()), 1)
    return TrainingStats(popularity, user_totals, user_domain_counts, domain_hits / total)


def cohort_masks(
    dataset: Dataset,
    stats: TrainingStats,
    case_users: np.ndarray,
    case_targets: np.ndarray,
    power_threshold: float,
    general_threshold: float,
) -> dict[str, np.ndarray]:
    """Membership of each case in each domain's cohorts: ``{"target"|"power"|"general":
    bool [n_cases, n_domains]}``."""
    shares = stats.user_domain_shares()[case_users]
    return {
        "target": dataset.item_domain_matrix[case_targets],
        "power": shares >= power_threshold,
        "general": shares <= general_threshold,
    }


def cohort_means(
    values: dict[str, np.ndarray], membership: np.ndarray, domain_names: list[str]
) -> dict[str, dict]:
    """Mean of every per-case value over each domain's members.

    Args:
        values: ``{column: float64 [n_cases]}``.
        membership: bool ``[n_cases, n_domains]``.

    Returns:
        ``{domain: {"n": members, column: mean or None when the cohort is empty}}``.
    """
    names = list(values)
    matrix = np.stack([values[name] for name in names], axis=1) if names else None
    weights = membership.astype(np.float64)
    counts = membership.sum(axis=0)
    sums = weights.T @ matrix if matrix is not None else np.zeros((len(domain_names), 0))
    result = {}
    for index, domain in enumerate(domain_names):
        n = int(counts[index])
        entry: dict = {"n": n}
        for column, name in enumerate(names):
            entry[name] = float(sums[index, column] / n) if n else None
        result[domain] = entry
    return result


def domain_lists(membership: np.ndarray, domain_names: list[str]) -> pa.ListArray:
    """A ``list<string>`` array: per case, the names of the domains it is a member of."""
    rows, cols = np.nonzero(membership)
    offsets = np.zeros(membership.shape[0] + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=membership.shape[0]), out=offsets[1:])
    names = pa.array(domain_names, type=pa.string()).take(pa.array(cols, type=pa.int64()))
    return pa.ListArray.from_arrays(pa.array(offsets), names)
