"""A prepared dataset as RecBole atomic files, with the same leave-one-out split as dwrec's.

RecBole sorts by (user, timestamp); dwrec by (user, timestamp, original order). The export
writes each row's rank within its user as the timestamp, so the order is carried by the
timestamp alone and ties cannot be broken differently. The RecBole harness
(:mod:`dwrec.baselines.recbole`) trains and evaluates RecBole on these files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.errors import UsageError
from dwrec.io import atomic_path, write_json

RECBOLE_INTER_HEADER = "user_id:token\titem_id:token\ttimestamp:float"
# Names RecBole must not be given: it silently loads its bundled example for "ml-100k".
RECBOLE_RESERVED_NAMES = ("ml-100k",)


def export_recbole(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, name: str) -> Path:
    """Write a prepared dwrec dataset as RecBole atomic files; return the atomic dir.

    Writes ``out_dir/name/name.inter`` (header :data:`RECBOLE_INTER_HEADER`): one row per
    interaction, in dwrec's order, with ``user_id`` and ``item_id`` the dwrec ids as tokens
    and ``timestamp`` the row's 0-based rank within its user. RecBole's leave-one-out split
    (``eval_args: {split: {LS: valid_and_test}, order: TO}``) then holds out, per user, the
    same test interaction as dwrec's ``loo`` split, and the same validation interaction for
    every user with at least 4 interactions. ``out_dir/name/export.json`` records the source
    dataset, the row count and the users (exactly 3 interactions) whose validation differs.
    """
    if not name or any(c in name for c in "/\\") or name in RECBOLE_RESERVED_NAMES:
        raise UsageError(f"RecBole dataset name {name!r} is not allowed (no slashes; not ml-100k)")
    dataset = load_dataset(dataset_dir)
    indptr = dataset.user_indptr
    rank_in_user = np.arange(len(dataset.user_ids)) - indptr[dataset.user_ids]
    rows = np.column_stack([dataset.user_ids, dataset.item_ids, rank_in_user]).astype(np.int64)
    atomic_dir = Path(out_dir) / name
    atomic_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(atomic_dir / f"{name}.inter") as tmp:
        np.savetxt(tmp, rows, fmt="%d", delimiter="\t", header=RECBOLE_INTER_HEADER, comments="")
    lengths = np.diff(indptr)
    split = make_split(dataset, "loo")
    write_json(
        atomic_dir / "export.json",
        {
            "source": str(Path(dataset_dir).resolve()),
            "dataset_name": dataset.name,
            "dataset_fingerprint": dataset.fingerprint,
            "split_fingerprint": split.fingerprint,
            "interactions": int(len(rows)),
            "users": int(dataset.n_users),
            "items": int(dataset.n_items),
            "test_cases": int(len(split.test)),
            "valid_cases": int(len(split.valid)),
            "users_with_3_interactions": int(np.sum(lengths == 3)),
            "timestamp": "rank of the interaction within its user (dwrec order)",
        },
    )
    return atomic_dir
