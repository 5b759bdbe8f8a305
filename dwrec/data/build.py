"""Raw data -> the three dataset tables: rating filter, de-duplication, iterative k-core,
dense re-indexing, the stable (user, time, original order) sort, and the per-domain
statistics and held-out ties that ``dataset.json`` records (:mod:`dwrec.data.prepare` writes
them)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.dataset import INTERACTIONS_FILE_SCHEMA, ITEMS_FILE_SCHEMA, USERS_FILE_SCHEMA
from dwrec.data.raw import RawData
from dwrec.data.split import SCHEMES, held_out_sizes
from dwrec.errors import DwrecError


def _dense_ids(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list[str]]:
    """Dense int ids for string ids, ordered numerically when every id is an integer."""
    numeric = _as_integers(values)
    if numeric is not None:
        uniques, inverse = np.unique(numeric, return_inverse=True)
        return inverse.astype(np.int64), [str(v) for v in uniques.tolist()]
    unique = pc.unique(values)
    raw = unique.to_pylist()
    if raw and all(v.isdigit() for v in raw):
        order = sorted(range(len(raw)), key=lambda i: (int(raw[i]), raw[i]))
    else:
        order = sorted(range(len(raw)), key=lambda i: raw[i])
    sorted_raw = [raw[i] for i in order]
    index = pc.index_in(values, value_set=pa.array(sorted_raw, type=pa.string()))
    return index.to_numpy(zero_copy_only=False).astype(np.int64), sorted_raw


def _as_integers(values) -> np.ndarray | None:
    """The ids as int64 when every one is a canonical non-negative integer ("7", not "07")."""
    try:
        numbers = pc.cast(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if numbers.null_count or len(numbers) == 0:
        return None
    array = (
        numbers.to_numpy()
        if isinstance(numbers, pa.Array)
        else np.concatenate([chunk.to_numpy() for chunk in numbers.chunks])
    )
    if array.min() < 0:
        return None
    # "07" and "7" would collapse into one id: only accept strings that round-trip exactly.
    uniques = np.unique(array)
    back = pc.cast(pa.array(uniques), pa.string())
    if not pc.all(pc.is_in(back, value_set=pc.unique(values))).as_py():
        return None
    return array


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of rows that survive iterative k-core filtering.

    Repeatedly drops users with fewer than ``min_user`` rows and items with fewer than
    ``min_item`` rows until neither condition removes anything (duplicates count).
    """
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    while True:
        user_counts = np.bincount(users[keep], minlength=n_users)
        item_counts = np.bincount(items[keep], minlength=n_items)
        bad = keep & ((user_counts[users] < min_user) | (item_counts[items] < min_item))
        if not bad.any():
            return keep
        keep &= ~bad


def build_tables(raw: RawData, filters: dict) -> tuple[dict[str, pa.Table], dict]:
    """Apply the filters to ``raw`` and build the three dataset tables and their statistics."""
    inter = raw.interactions
    n_raw = inter.num_rows
    if filters["min_rating"] is not None:
        mask = pc.fill_null(pc.greater_equal(inter.column("rating"), filters["min_rating"]), False)
        inter = inter.filter(mask)
    user_idx, user_raw = _dense_ids(inter.column("user"))
    item_idx, item_raw = _dense_ids(inter.column("item"))
    timestamps = inter.column("timestamp").to_numpy()
    order_in_file = np.arange(len(user_idx))
    # Stable order (user, time, original order) before de-duplication and k-core.
    order = np.lexsort((order_in_file, timestamps, user_idx))
    user_idx, item_idx, timestamps = user_idx[order], item_idx[order], timestamps[order]
    if filters["dedupe"]:
        pair = user_idx * max(len(item_raw), 1) + item_idx
        _, first = np.unique(pair, return_index=True)
        keep = np.zeros(len(pair), dtype=bool)
        keep[first] = True
        user_idx, item_idx, timestamps = user_idx[keep], item_idx[keep], timestamps[keep]
    keep = k_core(
        user_idx, item_idx, filters["min_user_interactions"], filters["min_item_interactions"]
    )
    user_idx, item_idx, timestamps = user_idx[keep], item_idx[keep], timestamps[keep]
    if len(user_idx) == 0:
        raise DwrecError(
            "no interactions left after filtering "
            f"(min_rating={filters['min_rating']}, k-core users>={filters['min_user_interactions']}, "
            f"items>={filters['min_item_interactions']}); loosen the filters"
        )
    # Re-index to the survivors, keeping the numeric/lexicographic order of raw ids.
    used_users = np.unique(user_idx)
    used_items = np.unique(item_idx)
    user_map = np.full(len(user_raw), -1, dtype=np.int64)
    user_map[used_users] = np.arange(len(used_users))
    item_map = np.full(len(item_raw), -1, dtype=np.int64)
    item_map[used_items] = np.arange(len(used_items))
    user_idx, item_idx = user_map[user_idx], item_map[item_idx]
    users_raw = [user_raw[i] for i in used_users]
    items_raw = [item_raw[i] for i in used_items]

    meta_by_id = _item_metadata(raw.items)
    titles, domains = [], []
    for rid in items_raw:
        title, item_domains = meta_by_id.get(rid, (None, []))
        titles.append(title)
        domains.append(sorted(set(item_domains)))

    interactions = pa.table(
        [
            pa.array(user_idx.astype(np.int32)),
            pa.array(item_idx.astype(np.int32)),
            pa.array(timestamps.astype(np.int64)),
        ],
        schema=INTERACTIONS_FILE_SCHEMA,
    )
    items = pa.table(
        [
            pa.array(np.arange(len(items_raw), dtype=np.int32)),
            pa.array(items_raw, type=pa.string()),
            pa.array(titles, type=pa.string()),
            pa.array(domains, type=pa.list_(pa.string())),
        ],
        schema=ITEMS_FILE_SCHEMA,
    )
    users = pa.table(
        [pa.array(np.arange(len(users_raw), dtype=np.int32)), pa.array(users_raw, pa.string())],
        schema=USERS_FILE_SCHEMA,
    )
    stats = _statistics(user_idx, item_idx, domains, len(users_raw), len(items_raw))
    stats["raw_interactions"] = int(n_raw)
    stats["held_out_ties"] = held_out_ties(user_idx, timestamps, len(users_raw))
    return {"interactions": interactions, "items": items, "users": users}, stats


TIE_RULE = (
    "interactions are sorted by (user, timestamp, order in the raw file); when held-out "
    "interactions share a timestamp, the one later in the raw file is held out later "
    "(test before validation, validation before training)"
)


def held_out_ties(user_idx: np.ndarray, timestamps: np.ndarray, n_users: int) -> dict:
    """Per split scheme: users whose held-out boundaries fall between equal timestamps.

    ``test_ties_validation``: users whose first test interaction has the timestamp of their
    last validation interaction (under ``loo``: the two held-out items tie), so only the
    file order decides which is the test item. ``validation_ties_training``: the same
    between the first validation and the last training interaction. ``users``: users with
    held-out interactions (3 or more interactions). ``user_idx`` must be sorted.
    """
    counts = np.bincount(user_idx, minlength=n_users).astype(np.int64)
    ends = np.cumsum(counts)
    report: dict[str, Any] = {"rule": TIE_RULE}
    for scheme in SCHEMES:
        n_valid, n_test = held_out_sizes(counts, scheme)
        held = np.flatnonzero(n_test > 0)
        test_start = (ends - n_test)[held]
        valid_start = test_start - n_valid[held]
        test_ties = timestamps[test_start] == timestamps[test_start - 1]
        valid_ties = timestamps[valid_start] == timestamps[valid_start - 1]
        report[scheme] = {
            "users": int(len(held)),
            "test_ties_validation": int(np.count_nonzero(test_ties)),
            "validation_ties_training": int(np.count_nonzero(valid_ties)),
        }
    return report


def _item_metadata(items: pa.Table) -> dict[str, tuple[str | None, list[str]]]:
    ids = items.column("raw_id").to_pylist()
    titles = items.column("title").to_pylist()
    domains = items.column("domains").to_pylist()
    return {rid: (title, doms or []) for rid, title, doms in zip(ids, titles, domains, strict=True)}


def _statistics(
    user_idx: np.ndarray, item_idx: np.ndarray, domains: list[list[str]], n_users: int, n_items: int
) -> dict:
    n = len(user_idx)
    item_counts = np.bincount(item_idx, minlength=n_items)
    per_domain: dict[str, dict[str, Any]] = {}
    for item, item_domains in enumerate(domains):
        for domain in item_domains:
            entry = per_domain.setdefault(domain, {"items": 0, "interactions": 0})
            entry["items"] += 1
            entry["interactions"] += int(item_counts[item])
    for entry in per_domain.values():
        entry["share"] = entry["interactions"] / n if n else 0.0
    no_domain = sum(1 for d in domains if not d)
    return {
        "counts": {
            "users": n_users,
            "items": n_items,
            "interactions": n,
            "density": n / (n_users * n_items) if n_users and n_items else 0.0,
            "domains": len(per_domain),
            "items_without_domain": no_domain,
            "interactions_without_domain": int(
                sum(int(item_counts[i]) for i, d in enumerate(domains) if not d)
            ),
        },
        "domains": dict(sorted(per_domain.items())),
    }
