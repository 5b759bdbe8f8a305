"""``dwrec prepare``: raw data -> dataset directory, identically for every dataset.

Steps after the reader: rating filter, optional de-duplication, iterative k-core,
dense re-indexing, stable sort by (user, time, original order), per-domain statistics,
atomic write. The same input and flags give the same bytes. The tables are built by
:mod:`dwrec.data.build`; this module resolves the source, refuses to replace another
dataset, and writes the files and ``dataset.json``.
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

from dwrec.data.build import TIE_RULE, build_tables, held_out_ties, k_core  # noqa: F401
from dwrec.data.dataset import SCHEMA_VERSION
from dwrec.data.raw import RawData
from dwrec.data.sources import SourceSpec, all_sources, get_source
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
