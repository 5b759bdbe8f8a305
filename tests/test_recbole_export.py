"""RecBole export (dwrec/data/export.py): the written atomic file makes RecBole's
leave-one-out split equal dwrec's ``loo`` split. RecBole itself is not needed: its
procedure (stable sort by timestamp then user, one sample per prefix, the last sample of
each user to test and the one before to validation, keeping at least one for training) is
re-enacted here from its documented rules on a file whose rows were shuffled first, so only
the timestamps can carry the order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from dwrec.baselines.recbole import sasrec_config
from dwrec.data.dataset import (
    INTERACTIONS_FILE_SCHEMA,
    ITEMS_FILE_SCHEMA,
    SCHEMA_VERSION,
    USERS_FILE_SCHEMA,
    load_dataset,
)
from dwrec.data.export import export_recbole
from dwrec.data.split import make_split
from dwrec.errors import DwrecError, UsageError
from dwrec.io import read_json, write_json, write_parquet

# Per user: (item, timestamp) in dwrec's order (time, then original order). Equal
# timestamps within a user are frequent, and the item order inside a tie is neither sorted
# nor reverse-sorted, so any rule other than "original order" gives different targets.
USER_ROWS = [
    [(5, 10), (3, 10), (7, 10), (1, 10), (4, 10)],  # all tied
    [(2, 1), (6, 2), (0, 2), (5, 2), (3, 9), (1, 9)],  # ties at the end
    [(4, 7), (2, 7), (6, 7)],  # 3 interactions: RecBole has no validation case
    [(1, 3), (0, 3)],  # 2: training only
    [(7, 0)],  # 1: training only
    [(0, 5), (6, 5), (2, 6), (3, 6), (5, 6), (4, 8), (7, 8)],
]
N_ITEMS = 8


def write_dataset(path: Path) -> Path:
    """A prepared dataset dir in the dwrec contract, rows in (user, time, original) order."""
    users, items, stamps = [], [], []
    for user, rows in enumerate(USER_ROWS):
        for item, stamp in rows:
            users.append(user)
            items.append(item)
            stamps.append(stamp)
    path.mkdir(parents=True)
    interactions = pa.table(
        [pa.array(users, pa.int32()), pa.array(items, pa.int32()), pa.array(stamps, pa.int64())],
        schema=INTERACTIONS_FILE_SCHEMA,
    )
    item_table = pa.table(
        [
            pa.array(range(N_ITEMS), pa.int32()),
            pa.array([f"i{i}" for i in range(N_ITEMS)]),
            pa.array([None] * N_ITEMS, pa.string()),
            pa.array([["A"]] * N_ITEMS, pa.list_(pa.string())),
        ],
        schema=ITEMS_FILE_SCHEMA,
    )
    user_table = pa.table(
        [
            pa.array(range(len(USER_ROWS)), pa.int32()),
            pa.array([f"u{u}" for u in range(len(USER_ROWS))]),
        ],
        schema=USERS_FILE_SCHEMA,
    )
    write_parquet(path / "interactions.parquet", interactions)
    write_parquet(path / "items.parquet", item_table)
    write_parquet(path / "users.parquet", user_table)
    write_json(
        path / "dataset.json",
        {
            "name": "ties",
            "schema_version": SCHEMA_VERSION,
            "fingerprint": "0123456789abcdef",
            "counts": {"users": len(USER_ROWS), "items": N_ITEMS, "interactions": len(users)},
        },
    )
    return path


def read_inter(path: Path) -> tuple[str, np.ndarray]:
    lines = path.read_text().splitlines()
    rows = np.array([[float(v) for v in line.split("\t")] for line in lines[1:]])
    return lines[0], rows


def recbole_leave_one_out(rows: np.ndarray, seed: int) -> dict[int, dict[str, int | None]]:
    """RecBole 1.2.1's sequential LS split, re-enacted on shuffled rows of the .inter file.

    Interaction.sort sorts stably by each key from the last to the first (timestamp, then
    user); data_augmentation makes one sample per position after each user's first;
    _split_index_by_leave_one_out gives the last min(2, samples - 1) samples to valid/test.
    """
    shuffled = rows[np.random.default_rng(seed).permutation(len(rows))]
    by_time = shuffled[np.argsort(shuffled[:, 2], kind="stable")]
    ordered = by_time[np.argsort(by_time[:, 0], kind="stable")]
    held_out: dict[int, dict[str, int | None]] = {}
    for user in np.unique(ordered[:, 0]).astype(int):
        items = ordered[ordered[:, 0] == user, 1].astype(int).tolist()
        sample_targets = items[1:]
        leave = min(2, len(sample_targets) - 1) if sample_targets else 0
        test = sample_targets[-1] if leave >= 1 else None
        valid = sample_targets[-2] if leave == 2 else None
        held_out[user] = {"test": test, "valid": valid}
    return held_out


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[Path, Path]:
    dataset_dir = write_dataset(tmp_path / "dataset")
    return dataset_dir, export_recbole(dataset_dir, tmp_path / "atomic", "ties")


def test_header_and_tokens_are_dwrec_ids(exported):
    dataset_dir, atomic_dir = exported
    header, rows = read_inter(atomic_dir / "ties.inter")
    dataset = load_dataset(dataset_dir)
    assert header == "user_id:token\titem_id:token\ttimestamp:float"
    assert atomic_dir.name == "ties"
    np.testing.assert_array_equal(rows[:, 0], dataset.user_ids)
    np.testing.assert_array_equal(rows[:, 1], dataset.item_ids)


def test_timestamps_alone_carry_dwrec_order(exported):
    _, atomic_dir = exported
    _, rows = read_inter(atomic_dir / "ties.inter")
    expected = [stamp for rows_of_user in USER_ROWS for stamp in range(len(rows_of_user))]
    np.testing.assert_array_equal(rows[:, 2], expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recbole_test_targets_equal_dwrec_loo_test_targets(exported, seed):
    dataset_dir, atomic_dir = exported
    dataset = load_dataset(dataset_dir)
    split = make_split(dataset, "loo")
    held_out = recbole_leave_one_out(read_inter(atomic_dir / "ties.inter")[1], seed)
    recbole_test = {u: h["test"] for u, h in held_out.items() if h["test"] is not None}
    dwrec_test = dict(zip(split.test.user.tolist(), split.test.target.tolist(), strict=True))
    assert recbole_test == dwrec_test
    assert dwrec_test[0] == 4 and dwrec_test[1] == 1  # last of a tie, by original order


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recbole_valid_targets_equal_dwrec_for_users_with_4_or_more(exported, seed):
    dataset_dir, atomic_dir = exported
    dataset = load_dataset(dataset_dir)
    split = make_split(dataset, "loo")
    held_out = recbole_leave_one_out(read_inter(atomic_dir / "ties.inter")[1], seed)
    lengths = np.diff(dataset.user_indptr)
    dwrec_valid = dict(zip(split.valid.user.tolist(), split.valid.target.tolist(), strict=True))
    for user, held in held_out.items():
        if lengths[user] >= 4:
            assert held["valid"] == dwrec_valid[user]
        else:
            assert held["valid"] is None
    assert dwrec_valid[0] == 1 and dwrec_valid[1] == 3


def test_raw_timestamps_would_not_reproduce_the_split(exported):
    """The reason for the rank encoding: with the original timestamps, shuffled ties land
    in another order, and RecBole's held-out items differ from dwrec's."""
    dataset_dir, atomic_dir = exported
    dataset = load_dataset(dataset_dir)
    _, rows = read_inter(atomic_dir / "ties.inter")
    raw = rows.copy()
    raw[:, 2] = dataset.timestamps
    split = make_split(dataset, "loo")
    dwrec_test = dict(zip(split.test.user.tolist(), split.test.target.tolist(), strict=True))
    differs = [
        {u: h["test"] for u, h in recbole_leave_one_out(raw, seed).items() if h["test"] is not None}
        != dwrec_test
        for seed in range(5)
    ]
    assert any(differs)


def test_export_json_counts_the_users_whose_validation_differs(exported):
    _, atomic_dir = exported
    meta = read_json(atomic_dir / "export.json")
    assert meta["users_with_3_interactions"] == 1
    assert meta["interactions"] == sum(len(rows) for rows in USER_ROWS)
    assert meta["test_cases"] == 4 and meta["valid_cases"] == 4
    assert meta["dataset_fingerprint"] == "0123456789abcdef"


def test_reserved_and_path_names_are_refused(tmp_path):
    dataset_dir = write_dataset(tmp_path / "dataset")
    for name in ("ml-100k", "a/b", ""):
        with pytest.raises(UsageError):
            export_recbole(dataset_dir, tmp_path / "atomic", name)


def test_missing_dataset_is_a_dwrec_error_naming_the_file(tmp_path):
    with pytest.raises(DwrecError, match="dataset.json"):
        export_recbole(tmp_path / "nowhere", tmp_path / "atomic", "x")


def test_sasrec_config_maps_dwrec_hyperparameters():
    config = sasrec_config(epochs=7, patience=5, batch_size=64, hidden=32, dropout=0.1)
    assert config["stopping_step"] == 4  # RecBole stops once its counter exceeds this
    assert config["inner_size"] == 128 and config["hidden_size"] == 32
    assert config["hidden_dropout_prob"] == config["attn_dropout_prob"] == 0.1
    assert config["loss_type"] == "CE" and config["train_neg_sample_args"] is None
    assert config["learner"] == "adamw" and config["weight_decay"] == 0.0
    assert config["eval_args"]["split"] == {"LS": "valid_and_test"}
    assert config["eval_args"]["order"] == "TO" and config["eval_args"]["mode"] == "full"
    assert config["MAX_ITEM_LIST_LENGTH"] == 200
    assert "timestamp" in config["load_col"]["inter"]
