"""``dwrec prepare``: raw data -> dataset directory, identically for every dataset.

Steps after the reader: rating filter, optional de-duplication, iterative k-core,
dense re-indexing, stable sort by (user, time, original order), per-domain statistics,
atomic write. The same input and flags give the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.dataset import (
    INTERACTIONS_FILE_SCHEMA,
    ITEMS_FILE_SCHEMA,
    SCHEMA_VERSION,
    USERS_FILE_SCHEMA,
)
from dwrec.data.raw import RawData
from dwrec.data.sources import SourceSpec, all_sources, get_source
from dwrec.data.split import SCHEMES, held_out_sizes
from dwrec.errors import DwrecError, UsageError
from dwrec.io import atomic_dir, provenance, read_json, sha256_file, write_json, write_parquet
from dwrec.paths import default_dataset_dir


@dataclass
class PrepareResult:
    path: Path
    meta: dict
    skipped: bool


def prepare(
    name: str,
    source: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    *,
    min_rating: float | None = None,
    min_user_interactions: int | None = None,
    min_item_interactions: int | None = None,
    dedupe: bool = False,
    force: bool = False,
    options: dict[str, Any] | None = None,
    progress: bool = False,
    dataset_name: str | None = None,
) -> PrepareResult:
    """Prepare dataset ``name`` into ``out`` (default ``$DWREC_HOME/datasets/NAME``).

    The default folder name is the dataset's name: ``name`` itself, or for ``amazon`` and
    ``s3rec`` one that says which files were read (``amazon-fashion``, ``s3rec-beauty``).
    ``dataset_name`` (``--name``) overrides it and is the ``name`` in ``dataset.json``.

    A folder that already holds a dataset with another fingerprint (other files or flags)
    is never replaced silently: runs trained on it would be orphaned. That raises a
    :class:`UsageError` saying how to keep both (``--name`` / ``--out``) or replace it
    (``force``). A prepared copy that is up to date is reused without looking at the raw
    files (so without a network), and becomes the most recent dataset again.

    Args:
        source: the downloaded archive or its extracted folder; ``None`` looks in the cache
            (``$DWREC_HOME/raw/NAME``) and downloads what is missing.
        min_rating: keep only interactions rated at least this (rows without a rating are
            then dropped too); ``None`` keeps every interaction.
        min_user_interactions, min_item_interactions: iterative k-core thresholds;
            ``None`` takes the dataset's documented default.
        dedupe: keep only the first interaction of each (user, item) pair.
        force: rebuild even when an identical dataset is already there, and replace a
            different one.
        options: reader options (synthetic generator sizes, Yelp top-N, ...).
        dataset_name: the prepared dataset's name (and folder under the datasets folder).
    """
    spec = get_source(name)
    name = spec.name  # an alias (ml-1m) prepares the dataset it stands for
    options = dict(options or {})
    if dataset_name is not None:
        check_dataset_name(dataset_name)
    filters = {
        "min_rating": min_rating,
        "min_user_interactions": spec.default_min_user
        if min_user_interactions is None
        else min_user_interactions,
        "min_item_interactions": spec.default_min_item
        if min_item_interactions is None
        else min_item_interactions,
        "dedupe": bool(dedupe),
    }
    for flag, value in (
        ("--min-user-interactions", filters["min_user_interactions"]),
        ("--min-item-interactions", filters["min_item_interactions"]),
    ):
        if value < 0:
            raise UsageError(f"{flag} must be >= 0, got {value}")

    request = {"name": name, "filters": filters, "options": _jsonable(options)}
    name_for = spec.extra.get("name_for")
    if source is None and not force and (out is not None or dataset_name or name_for is None):
        # Up to date: no raw files needed, so no download (the copy may come from --source).
        early = Path(out) if out is not None else default_dataset_dir(dataset_name or spec.name)
        if _unchanged(early, request):
            return _reuse(early)

    try:
        folder = _resolve_folder(spec, source, progress)
    except DwrecError as exc:
        if source is not None:
            raise
        raise _with_recorded_source(exc, out, dataset_name or spec.name) from None
    display = dataset_name or spec.name
    if name_for is not None:
        resolved = name_for(folder, options)
        if spec.extra.get("specific_sets") and resolved in {s.name for s in all_sources()}:
            # `s3rec --source DIR` with DIR holding Beauty is `s3rec-beauty --source DIR`.
            spec, name = get_source(resolved), resolved
            options.pop("set", None)
            request = {"name": name, "filters": filters, "options": _jsonable(options)}
        display = dataset_name or resolved
    out_path = Path(out) if out is not None else default_dataset_dir(display)
    if not force and _unchanged(out_path, request, within=folder if source is not None else None):
        return _reuse(out_path)
    if not force:  # other flags: refused before the (possibly long) read
        _refuse_to_replace(out_path, {"request": request, "fingerprint": None, "sources": None})

    raw = spec.reader(folder, options)
    if source is not None and spec.remote:
        from dwrec.data.download import archive_note

        note = archive_note(spec, Path(source))
        if note:
            raw.notes.append(note)
    tables, stats = build_tables(raw, filters)
    meta = _metadata(spec, raw, request, filters, stats, display)
    if not force:
        _refuse_to_replace(out_path, meta)
    with atomic_dir(out_path) as tmp:
        write_parquet(tmp / "interactions.parquet", tables["interactions"])
        write_parquet(tmp / "items.parquet", tables["items"])
        write_parquet(tmp / "users.parquet", tables["users"])
        write_json(tmp / "dataset.json", meta)
    return PrepareResult(out_path, meta, skipped=False)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def check_dataset_name(value: str) -> None:
    """A dataset name is one folder name: letters, digits, ``.``, ``_``, ``+``, ``-``."""
    if not _NAME.match(value) or value in (".", ".."):
        raise UsageError(
            f"--name {value!r}: a dataset name is one folder name (letters, digits, '.', '_', "
            "'+', '-'; no '/'), e.g. --name ml-1m-rating4"
        )


def _reuse(path: Path) -> PrepareResult:
    """An up-to-date prepared copy: touched so that it is the most recent dataset again."""
    meta_path = path / "dataset.json"
    # `dwrec train` without --dataset takes the dataset whose dataset.json changed last.
    with contextlib.suppress(OSError):
        os.utime(meta_path)
    return PrepareResult(path, read_json(meta_path), skipped=True)


_PLAIN_ERRORS = ("DwrecError", "OfflineError")  # constructed from one message


def _with_recorded_source(exc: DwrecError, out, name: str) -> DwrecError:
    """``exc`` plus, when a prepared copy records where it was built from, that folder."""
    meta_path = (Path(out) if out is not None else default_dataset_dir(name)) / "dataset.json"
    try:
        sources = read_json(meta_path).get("sources", []) if meta_path.exists() else []
        paths = [Path(entry["path"]) for entry in sources]
        # One file: that file (e.g. a lone u.data); several: the folder that holds them.
        folder = paths[0] if len(paths) == 1 else (paths[0].parent if paths else None)
    except (DwrecError, AttributeError, KeyError, TypeError, IndexError):
        folder = None
    if folder is None or not folder.exists() or type(exc).__name__ not in _PLAIN_ERRORS:
        return exc
    return type(exc)(
        f"{exc} (The prepared copy {meta_path.parent} was built from {folder}: "
        f"--source {folder} uses those files again.)"
    )


def _refuse_to_replace(out_path: Path, meta: dict) -> None:
    """Raise when ``out_path`` holds a dataset with another fingerprint (runs depend on it).

    ``meta`` is the new dataset's (its fingerprint ``None`` before reading: then only a
    different request, which always changes the fingerprint, is refused)."""
    meta_path = out_path / "dataset.json"
    if not meta_path.exists():
        return
    try:
        old = read_json(meta_path)
    except DwrecError:
        return  # unreadable: nothing can have been trained on it
    if not isinstance(old, dict) or old.get("fingerprint") in (None, meta["fingerprint"]):
        return
    if meta["fingerprint"] is None and old.get("request") == meta["request"]:
        return  # same flags: only the content, known after reading, can tell
    changes = _differences(old, meta)
    raise UsageError(
        f"{out_path} already holds dataset {old.get('name')!r} (fingerprint "
        f"{old.get('fingerprint')}) prepared differently ({'; '.join(changes)}); replacing it "
        "would orphan the runs trained on it. To keep both, give the new one its own folder "
        "with --name NAME (or --out DIR); to replace it, add --force."
    )


def _differences(old: dict, new: dict) -> list[str]:
    changes = []
    old_request, new_request = old.get("request") or {}, new["request"]
    if old_request.get("name") != new_request["name"]:
        changes.append(f"dataset {old_request.get('name')} -> {new_request['name']}")
    for group in ("filters", "options"):
        before, after = old_request.get(group) or {}, new_request[group]
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                flag = key.replace("_", "-")
                changes.append(f"{flag} {before.get(key)} -> {after.get(key)}")
    old_files = {s.get("sha256") for s in old.get("sources", []) if isinstance(s, dict)}
    if new["sources"] is not None and old_files != {s["sha256"] for s in new["sources"]}:
        changes.append("other raw files (sha256 differ)")
    return changes or ["other content"]


def _resolve_folder(spec: SourceSpec, source, progress: bool) -> Path:
    if spec.family == "synthetic":
        return Path(source) if source is not None else Path(".")
    from dwrec.data.download import resolve_source

    return resolve_source(spec, Path(source) if source is not None else None, progress=progress)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _unchanged(out_path: Path, request: dict, within: Path | None = None) -> bool:
    """True when ``out_path`` holds a dataset built by the same request from unchanged files
    (under ``within``, the user's ``--source``, when given)."""
    meta_path = out_path / "dataset.json"
    if not meta_path.exists():
        return False
    try:
        meta = read_json(meta_path)
    except DwrecError:
        return False
    if meta.get("request") != request or meta.get("schema_version") != SCHEMA_VERSION:
        return False
    if "held_out_ties" not in meta:
        return False  # prepared before the tie report: rebuilt (same bytes, same fingerprint)
    root = None if within is None else (within if within.is_dir() else within.parent).resolve()
    for entry in meta.get("sources", []):
        path = Path(entry["path"])
        if root is not None and not path.is_relative_to(root):
            return False
        try:
            stat = path.stat()
        except OSError:
            return False
        if stat.st_size != entry["size"] or int(stat.st_mtime) != entry["mtime"]:
            return False
    return all(
        (out_path / f).exists() for f in ("interactions.parquet", "items.parquet", "users.parquet")
    )


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


def _metadata(
    spec: SourceSpec, raw: RawData, request: dict, filters: dict, stats: dict, name: str
) -> dict:
    sources = []
    for path in sorted({Path(p).resolve() for p in raw.source_files}):
        stat = path.stat()
        sources.append(
            {
                "file": path.name,
                "path": str(path),
                "sha256": sha256_file(path),
                "size": stat.st_size,
                "mtime": int(stat.st_mtime),
            }
        )
    content = {
        "schema_version": SCHEMA_VERSION,
        "request": request,
        "sources": [s["sha256"] for s in sources],
        "counts": stats["counts"],
    }
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    # The fingerprint covers the content only (not the name, notes or tie report), so a
    # dataset prepared again from the same files and flags keeps it and its runs.
    return {
        "name": name,
        "family": spec.family,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "request": request,
        "filters": filters,
        "sources": sources,
        "domain_rule": raw.domain_rule,
        "notes": list(raw.notes),
        "counts": stats["counts"],
        "raw_interactions": stats["raw_interactions"],
        "domains": stats["domains"],
        "held_out_ties": stats["held_out_ties"],
        "id_note": "ids are dense from 0; models use item_id + 1 internally, 0 = padding",
        **provenance(),
    }
