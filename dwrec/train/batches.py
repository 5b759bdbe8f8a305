"""Training data as one padded int tensor, built once; a batch is an index slice.

Per user, the training prefix (``item_ids[user_indptr[u]:split.train_end[u]]``) gives one
window: its last ``max_len + 1`` items as tokens (``item_id + 1``), left-padded with 0.
Users whose training prefix has fewer than 2 items have no (input, target) pair and get no
window.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dwrec.data.dataset import Dataset
from dwrec.data.split import Split


@dataclass
class TrainingWindows:
    """Attributes:
    tokens: ``[U, max_len + 1]`` int64 tokens, left-padded with 0.
    users: ``[U]`` the user id of each window.
    """

    tokens: torch.Tensor
    users: torch.Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def target_items(self) -> np.ndarray:
        """Dataset item ids of every training positive of a next-item model (every window
        token after the first real one), in window order."""
        tokens = self.tokens.numpy()
        return tokens[:, 1:][tokens[:, :-1] > 0] - 1

    def target_users(self) -> np.ndarray:
        """User id of each entry of :meth:`target_items`."""
        has_target = self.tokens[:, :-1].numpy() > 0
        return np.repeat(self.users.numpy(), has_target.sum(axis=1))


def training_windows(dataset: Dataset, split: Split, max_len: int) -> TrainingWindows:
    """Build every user's training window at once (vectorised; no loop over users)."""
    width = max_len + 1
    starts = dataset.user_indptr[:-1]
    ends = split.train_end
    lengths = ends - starts
    users = np.flatnonzero(lengths >= 2)
    taken = np.minimum(lengths[users], width)
    window_of = np.repeat(np.arange(len(users)), taken)
    offset_in_window = np.arange(int(taken.sum())) - np.repeat(np.cumsum(taken) - taken, taken)
    column = width - taken[window_of] + offset_in_window
    source_row = ends[users][window_of] - taken[window_of] + offset_in_window
    tokens = np.zeros((len(users), width), dtype=np.int64)
    tokens[window_of, column] = dataset.item_ids[source_row] + 1
    return TrainingWindows(torch.from_numpy(tokens), torch.from_numpy(users.astype(np.int64)))


def training_item_counts(dataset: Dataset, split: Split) -> np.ndarray:
    """``[n_items]`` int64: interactions per item over every user's whole training prefix."""
    in_training = np.arange(len(dataset.item_ids)) < np.repeat(
        split.train_end, np.diff(dataset.user_indptr)
    )
    return np.bincount(dataset.item_ids[in_training], minlength=dataset.n_items).astype(np.int64)


def batch_slices(
    n_windows: int, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """One epoch: a random permutation of window indices, cut into ``batch_size`` slices
    (the last one may be shorter). Draws exactly one permutation from ``generator``."""
    order = torch.randperm(n_windows, generator=generator)
    yield from order.split(batch_size)


BATCH_ORDERS = ("random", "by-length")
POOL_BATCHES = 50
"""``by-length`` sorts windows by length within pools of this many batches."""


def window_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """``[U]`` real (non-padding) tokens per window."""
    return (tokens != 0).sum(dim=1)


def length_grouped_slices(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch in which windows of similar length share a batch (``--batch-order
    by-length``): a random permutation, cut into pools of ``POOL_BATCHES`` batches, each pool
    sorted by length (ties keep their random order) and cut into batches, then the batches in
    a random order. Every window once; a batch of short windows then carries little padding,
    which the trainer trims. Draws two permutations from ``generator``."""
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * POOL_BATCHES):
        ranked = pool[torch.argsort(lengths[pool], stable=True)]
        batches.extend(ranked.split(batch_size))
    shuffled = torch.randperm(len(batches), generator=generator)
    return [batches[int(i)] for i in shuffled]


def n_batches(n_windows: int, batch_size: int) -> int:
    return -(-n_windows // batch_size)
