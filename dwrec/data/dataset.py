"""The prepared dataset directory: its contract, writer and loader.

Contract (schema version 1)::

    interactions.parquet  user_id int32, item_id int32, timestamp int64
                          sorted by (user_id, timestamp, original order)
    items.parquet         item_id int32, raw_id string, title string (nullable),
                          domains list<string>
    users.parquet         user_id int32, raw_id string
    dataset.json          name, sources (files with sha256), filters, counts,
                          per-domain statistics, schema version, dwrec version

Ids are dense from 0 in the files. Models reserve index 0 for padding internally and
use ``item_id + 1``; nothing in the files is shifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

from dwrec.errors import DataFormatError
from dwrec.io import read_json, read_parquet

SCHEMA_VERSION = 1

INTERACTIONS_FILE_SCHEMA = pa.schema(
    [("user_id", pa.int32()), ("item_id", pa.int32()), ("timestamp", pa.int64())]
)
ITEMS_FILE_SCHEMA = pa.schema(
    [
        ("item_id", pa.int32()),
        ("raw_id", pa.string()),
        ("title", pa.string()),
        ("domains", pa.list_(pa.string())),
    ]
)
USERS_FILE_SCHEMA = pa.schema([("user_id", pa.int32()), ("raw_id", pa.string())])


@dataclass
class Dataset:
    """A prepared dataset loaded into numpy arrays.

    Attributes:
        path: the dataset directory.
        meta: the parsed ``dataset.json``.
        user_ids, item_ids, timestamps: interaction columns, sorted by user then time.
        n_users, n_items: sizes of the dense id spaces.
        domain_names: every domain, sorted by name; a domain's index is its position.
        item_domain_indptr, item_domain_indices: CSR map item -> its domain indices.
        item_raw_ids, item_titles: per item, from items.parquet.
    """

    path: Path
    meta: dict
    user_ids: np.ndarray
    item_ids: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int
    domain_names: list[str]
    item_domain_indptr: np.ndarray
    item_domain_indices: np.ndarray
    item_raw_ids: list[str]
    item_titles: list[str | None]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def fingerprint(self) -> str:
        """Identifies the prepared content (inputs + filters + code schema)."""
        return self.meta["fingerprint"]

    @cached_property
    def user_indptr(self) -> np.ndarray:
        """CSR offsets: user u's interactions are rows ``user_indptr[u]:user_indptr[u+1]``."""
        counts = np.bincount(self.user_ids, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr

    @cached_property
    def item_domain_matrix(self) -> np.ndarray:
        """Dense bool matrix ``[n_items, n_domains]``: item i lies in domain d."""
        matrix = np.zeros((self.n_items, len(self.domain_names)), dtype=bool)
        rows = np.repeat(np.arange(self.n_items), np.diff(self.item_domain_indptr))
        matrix[rows, self.item_domain_indices] = True
        return matrix

    def domain_index(self, name: str) -> int:
        from dwrec.errors import UsageError

        try:
            return self.domain_names.index(name)
        except ValueError:
            import difflib

            close = difflib.get_close_matches(name, self.domain_names, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(
                f"domain {name!r} is not in dataset {self.name}.{hint} "
                f"Domains: {', '.join(self.domain_names)}"
            ) from None


def load_dataset(path: str | Path) -> Dataset:
    """Load a prepared dataset directory, checking it against the contract."""
    path = Path(path)
    meta = read_json(path / "dataset.json")
    if not isinstance(meta, dict):
        raise DataFormatError(path / "dataset.json", "expected a JSON object")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DataFormatError(
            path / "dataset.json",
            f"schema_version {meta.get('schema_version')!r}, this dwrec reads {SCHEMA_VERSION}; "
            "re-run `dwrec prepare ... --force`",
        )
    _check_meta(path / "dataset.json", meta)
    interactions = _checked(path / "interactions.parquet", INTERACTIONS_FILE_SCHEMA)
    items = _checked(path / "items.parquet", ITEMS_FILE_SCHEMA)
    n_users = int(meta["counts"]["users"])
    n_items = items.num_rows
    user_ids = interactions.column("user_id").to_numpy()
    item_ids = interactions.column("item_id").to_numpy()
    timestamps = interactions.column("timestamp").to_numpy()
    if len(item_ids) and (item_ids.max() >= n_items or item_ids.min() < 0):
        raise DataFormatError(path / "interactions.parquet", "item_id outside items.parquet")
    if len(user_ids) and (user_ids.max() >= n_users or np.any(np.diff(user_ids) < 0)):
        raise DataFormatError(path / "interactions.parquet", "user_id out of range or unsorted")
    domains_col = items.column("domains").combine_chunks()
    names = sorted(set(domains_col.flatten().to_pylist()))
    lookup = {name: index for index, name in enumerate(names)}
    flat = [lookup[d] for d in domains_col.flatten().to_pylist()]
    offsets = domains_col.offsets.to_numpy().astype(np.int64)
    offsets = offsets - offsets[0]
    return Dataset(
        path=path,
        meta=meta,
        user_ids=user_ids.astype(np.int64),
        item_ids=item_ids.astype(np.int64),
        timestamps=timestamps,
        n_users=n_users,
        n_items=n_items,
        domain_names=names,
        item_domain_indptr=offsets,
        item_domain_indices=np.asarray(flat, dtype=np.int64),
        item_raw_ids=items.column("raw_id").to_pylist(),
        item_titles=items.column("title").to_pylist(),
    )


def _check_meta(path: Path, meta: dict) -> None:
    """The fields of ``dataset.json`` that loading and training read (a hand-edited or
    foreign file would otherwise fail later with a bare KeyError)."""
    for key in ("name", "fingerprint"):
        if not isinstance(meta.get(key), str):
            raise DataFormatError(path, f"missing or invalid {key!r}; re-run `dwrec prepare`")
    users = meta.get("counts", {}).get("users") if isinstance(meta.get("counts"), dict) else None
    if not isinstance(users, int) or users < 0:
        raise DataFormatError(path, "missing or invalid 'counts.users'; re-run `dwrec prepare`")


def _checked(path: Path, schema: pa.Schema) -> pa.Table:
    table = read_parquet(path)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataFormatError(path, f"missing column(s) {', '.join(missing)}")
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataFormatError(path, f"columns do not match the dataset contract ({exc})") from None
