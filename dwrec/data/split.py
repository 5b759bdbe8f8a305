"""Train / validation / test splits (METHODS.md section 8), identical for every model and loss.

A split never copies the interactions: it stores, per user, where the training prefix ends
and, for validation and test, one *case* per held-out interaction. A case's history is the
user's interactions before the target (``item_ids[user_indptr[user]:history_end]``), and its
id is the target's row in ``interactions.parquet``.

Schemes:
    ``loo``: users with at least 3 interactions give their last one to test and the second
        last to validation; the rest trains. Users with fewer than 3 only train.
    ``ratio``: per-user chronological 70/10/20 (PinnerFormerLite): the last
        ``max(1, round(0.2 n))`` interactions are test cases, the ``max(1, round(0.1 n))``
        before them validation cases, the rest trains; every held-out interaction is a case
        whose history is everything before it (rolling evaluation). Users with fewer than 3
        interactions only train.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dwrec.data.dataset import Dataset
from dwrec.errors import UsageError

SCHEMES = ("loo", "ratio")


@dataclass
class Cases:
    """Held-out cases. All arrays have one entry per case.

    Attributes:
        user: user id.
        target: the held-out item id.
        history_end: absolute row where the history stops (exclusive); the history starts at
            ``dataset.user_indptr[user]``.
        row: absolute row of the target in interactions.parquet (the case id).
    """

    user: np.ndarray
    target: np.ndarray
    history_end: np.ndarray
    row: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Split:
    scheme: str
    train_end: np.ndarray
    """Per user, the absolute row where the training prefix ends (exclusive)."""
    valid: Cases
    test: Cases
    fingerprint: str

    def cases(self, which: str) -> Cases:
        if which not in ("valid", "test"):
            raise UsageError(f"--split must be 'valid' or 'test', got {which!r}")
        return self.valid if which == "valid" else self.test


def make_split(dataset: Dataset, scheme: str = "loo") -> Split:
    """Split ``dataset`` by ``scheme`` (``loo`` or ``ratio``)."""
    if scheme not in SCHEMES:
        raise UsageError(f"--split must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    indptr = dataset.user_indptr
    starts, ends = indptr[:-1], indptr[1:]
    n_valid, n_test = held_out_sizes(ends - starts, scheme)
    train_end = ends - n_test - n_valid
    valid = _cases(dataset, train_end, train_end + n_valid)
    test = _cases(dataset, train_end + n_valid, ends)
    digest = hashlib.sha256()
    digest.update(dataset.fingerprint.encode())
    digest.update(scheme.encode())
    for array in (train_end, valid.row, test.row):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return Split(scheme, train_end.astype(np.int64), valid, test, digest.hexdigest()[:16])


def held_out_sizes(lengths: np.ndarray, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(validation, test) interactions per user of ``lengths`` interactions under ``scheme``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    eligible = lengths >= 3
    if scheme == "loo":
        n_test = np.where(eligible, 1, 0).astype(np.int64)
        n_valid = np.where(eligible, 1, 0).astype(np.int64)
    else:
        n_test = np.where(eligible, np.maximum(1, np.rint(0.2 * lengths)), 0).astype(np.int64)
        n_valid = np.where(eligible, np.maximum(1, np.rint(0.1 * lengths)), 0).astype(np.int64)
    return n_valid, n_test


def _cases(dataset: Dataset, begin: np.ndarray, end: np.ndarray) -> Cases:
    counts = (end - begin).astype(np.int64)
    total = int(counts.sum())
    user = np.repeat(np.arange(len(begin), dtype=np.int64), counts)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.repeat(begin, counts) + (np.arange(total) - offsets)
    rows = rows.astype(np.int64)
    return Cases(user=user, target=dataset.item_ids[rows], history_end=rows, row=rows)
