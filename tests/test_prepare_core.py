"""The dataset-independent part of prepare: filters, k-core, re-indexing, writing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dwrec
from dwrec.data.dataset import load_dataset
from dwrec.data.prepare import build_tables, k_core
from dwrec.data.raw import RawData
from dwrec.errors import DwrecError, UsageError


def _raw(rows, items=None) -> RawData:
    users, item_ids, times, ratings = zip(*rows, strict=True)
    interactions = pa.table(
        {
            "user": list(users),
            "item": list(item_ids),
            "timestamp": pa.array(times, pa.int64()),
            "rating": pa.array(ratings, pa.float32()),
        }
    )
    items = items or {}
    item_table = pa.table(
        {
            "raw_id": list(items),
            "title": [f"title {k}" for k in items],
            "domains": pa.array(list(items.values()), pa.list_(pa.string())),
        }
    )
    return RawData(interactions, item_table, source_files=[], domain_rule="test")


FILTERS = {
    "min_rating": None,
    "min_user_interactions": 0,
    "min_item_interactions": 0,
    "dedupe": False,
}


def _brute_k_core(pairs, min_user, min_item):
    alive = list(range(len(pairs)))
    while True:
        user_counts, item_counts = {}, {}
        for i in alive:
            user_counts[pairs[i][0]] = user_counts.get(pairs[i][0], 0) + 1
            item_counts[pairs[i][1]] = item_counts.get(pairs[i][1], 0) + 1
        survivors = [
            i
            for i in alive
            if user_counts[pairs[i][0]] >= min_user and item_counts[pairs[i][1]] >= min_item
        ]
        if survivors == alive:
            return set(alive)
        alive = survivors


@pytest.mark.parametrize("seed", range(5))
def test_k_core_matches_brute_force_iteration(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 30, 400)
    items = rng.zipf(1.6, 400) % 50
    keep = k_core(users, items, 5, 4)
    expected = _brute_k_core(list(zip(users.tolist(), items.tolist(), strict=True)), 5, 4)
    assert set(np.flatnonzero(keep).tolist()) == expected


def test_ids_are_dense_numeric_order_and_rows_sorted_by_user_time_then_file_order():
    raw = _raw(
        [("10", "b", 5, 1.0), ("2", "a", 7, 1.0), ("10", "a", 5, 1.0), ("2", "c", 1, 1.0)],
        items={"a": ["X"], "b": ["X", "Y"], "c": []},
    )
    tables, stats = build_tables(raw, FILTERS)
    users = tables["users"].column("raw_id").to_pylist()
    assert users == ["2", "10"]  # numeric, not lexicographic
    inter = tables["interactions"].to_pydict()
    items = tables["items"].column("raw_id").to_pylist()
    decoded = [
        (users[u], items[i], t)
        for u, i, t in zip(inter["user_id"], inter["item_id"], inter["timestamp"], strict=True)
    ]
    # user "2" first, by time; user "10": equal timestamps keep the file's order (b before a)
    assert decoded == [("2", "c", 1), ("2", "a", 7), ("10", "b", 5), ("10", "a", 5)]
    assert stats["domains"]["X"] == {"items": 2, "interactions": 3, "share": 0.75}
    assert stats["domains"]["Y"]["interactions"] == 1
    assert stats["counts"]["items_without_domain"] == 1


def test_min_rating_drops_low_and_unrated_rows():
    raw = _raw([("1", "a", 1, 5.0), ("1", "b", 2, 2.0), ("1", "c", 3, None)])
    tables, _ = build_tables(raw, {**FILTERS, "min_rating": 4})
    assert tables["interactions"].num_rows == 1


def test_dedupe_keeps_first_occurrence_only_when_asked():
    rows = [("1", "a", 1, 1.0), ("1", "b", 2, 1.0), ("1", "a", 3, 1.0)]
    kept, _ = build_tables(_raw(rows), FILTERS)
    deduped, _ = build_tables(_raw(rows), {**FILTERS, "dedupe": True})
    assert kept["interactions"].num_rows == 3
    assert deduped["interactions"].column("timestamp").to_pylist() == [1, 2]


def test_filters_that_leave_nothing_are_a_clear_error():
    with pytest.raises(DwrecError, match="no interactions left"):
        build_tables(_raw([("1", "a", 1, 1.0)]), {**FILTERS, "min_user_interactions": 2})


def test_synthetic_prepare_is_byte_deterministic_and_rerun_is_a_noop(tmp_path):
    options = {"users": 60, "items": 80, "domains": 5, "mean_length": 8}
    first = dwrec.prepare("synthetic", out=tmp_path / "a", options=options)
    second = dwrec.prepare("synthetic", out=tmp_path / "b", options=options)
    for name in ("interactions.parquet", "items.parquet", "users.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert not first.skipped and not second.skipped
    mtime = (tmp_path / "a" / "interactions.parquet").stat().st_mtime_ns
    again = dwrec.prepare("synthetic", out=tmp_path / "a", options=options)
    assert again.skipped
    assert (tmp_path / "a" / "interactions.parquet").stat().st_mtime_ns == mtime
    forced = dwrec.prepare("synthetic", out=tmp_path / "a", options=options, force=True)
    assert not forced.skipped


def test_prepared_dir_follows_the_contract_and_loads(tmp_path):
    dwrec.prepare("synthetic", out=tmp_path / "d", options={"users": 50, "items": 60, "domains": 4})
    schema = pq.read_schema(tmp_path / "d" / "interactions.parquet")
    assert [(f.name, str(f.type)) for f in schema] == [
        ("user_id", "int32"),
        ("item_id", "int32"),
        ("timestamp", "int64"),
    ]
    dataset = load_dataset(tmp_path / "d")
    assert dataset.n_users == 50
    assert dataset.user_indptr[-1] == len(dataset.item_ids)
    assert dataset.meta["counts"]["interactions"] == len(dataset.item_ids)
    assert dataset.item_domain_matrix.any(axis=1).all()
    assert list((tmp_path).iterdir()) == [tmp_path / "d"]  # no temporary leftovers


def test_failed_prepare_leaves_no_output(tmp_path, monkeypatch):
    import dwrec.data.prepare as prepare_module

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(prepare_module, "write_json", explode)
    with pytest.raises(RuntimeError):
        dwrec.prepare(
            "synthetic", out=tmp_path / "d", options={"users": 20, "items": 40, "domains": 3}
        )
    assert list(tmp_path.iterdir()) == []


def test_negative_k_core_flag_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--min-user-interactions"):
        dwrec.prepare("synthetic", out=tmp_path, min_user_interactions=-1)
