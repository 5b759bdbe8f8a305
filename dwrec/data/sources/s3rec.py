"""The S3-Rec paper's published preprocessed datasets (Zhou et al., CIKM 2020).

The repository github.com/RUCAIBox/CIKM2020-S3Rec publishes, per dataset ``<Name>``
(``Beauty``, ``Sports_and_Outdoors``, ``Toys_and_Games``, ``Yelp``, ``LastFM``):

- ``<Name>.txt``: one user per line, ``user item item ...`` (space-separated integers, the
  items in time order; the last one is S3-Rec's test item, the one before it validation);
- ``<Name>_item2attributes.json``: one JSON object ``{"item": [attribute, ...], ...}``
  (brand and category ids for Amazon, business categories for Yelp, tags for Last.fm),
  ids only, no names.

There are no timestamps: an interaction's ``timestamp`` is its position in the user's line
(0, 1, 2, ...), which keeps the published order and never ties. There are no attribute names
either: domain ``attr-13`` is attribute id 13.

Which attributes are domains (:func:`domain_attributes`): an attribute is a domain when at
least ``min_items`` items of the catalogue carry it (default 100) and at most ``max_share``
of them (default 0.5). The first bound keeps the hundreds of brands and small categories
out of the domain list; the second drops attributes that say nothing about an item, like
Sports' and Toys' id 2 (the top category, on every item) and Yelp's id 1 (on 69% of
businesses). An item keeps every one of its attributes that is a domain; an item left
without any (its attributes are all rare or all too common, or it has none, like Yelp item
12182) stays in the data with no domain, counted in ``dataset.json``
(``items_without_domain``). Repeated ids in an item's list (Last.fm: one entry per tag
assignment) count once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dwrec.data.raw import RawData, find_raw_file, read_bytes, require_whole_lines
from dwrec.data.sources import RemoteFile, SourceSpec, register
from dwrec.data.sources._parsing import resolve_options
from dwrec.errors import DataFormatError, DwrecError, UsageError

ATTRIBUTES_SUFFIX = "_item2attributes.json"

DEFAULTS: dict[str, Any] = {"set": "", "min_items": 100, "max_share": 0.5}
"""``set``: the ``<Name>`` of the files to read (empty: the only set in the folder);
``min_items`` / ``max_share``: the domain rule's bounds (see the module docstring)."""

SETS: dict[str, str] = {
    "Beauty": "beauty",
    "Sports_and_Outdoors": "sports",
    "Toys_and_Games": "toys",
    "Yelp": "yelp",
    "LastFM": "lastfm",
}
"""The published sets: file prefix -> the short name in ``s3rec-<short>``."""

COMMIT = "2a81540ae18615d88ef88227b0c066e5b74781e5"
_RAW_URL = f"https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/{COMMIT}/data/"

# (file, sha256, bytes) of the files at COMMIT, as checked against the repository's blobs.
_FILES: dict[str, tuple[tuple[str, str, int], tuple[str, str, int]]] = {
    "Beauty": (
        ("Beauty.txt", "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", 1090094),
        (
            "Beauty_item2attributes.json",
            "129e40f67486f6877eff0f5318cfa8530ee8ac23d8b0d1de04e1bb7a2ba0b2d4",
            305674,
        ),
    ),
    "Sports_and_Outdoors": (
        (
            "Sports_and_Outdoors.txt",
            "2a095e0648872beb9982408958290f5d655db5be2911c3756b5446de9f0b8de2",
            1707483,
        ),
        (
            "Sports_and_Outdoors_item2attributes.json",
            "7fb10733ac4f1811384a52144cdefa7fcc7536fa80a7232c5da9bd789155c34b",
            653780,
        ),
    ),
    "Toys_and_Games": (
        (
            "Toys_and_Games.txt",
            "176c680c688d497598c4a89a03b402c0fe78d795e5db335c2e78dd5f2d778a3f",
            922166,
        ),
        (
            "Toys_and_Games_item2attributes.json",
            "d371acd25101eedac04afc727626464b7acec770c4eda708705d51eb76eb1ad0",
            327536,
        ),
    ),
    "Yelp": (
        ("Yelp.txt", "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed", 1814224),
        (
            "Yelp_item2attributes.json",
            "f25acd5e1e680e0b22fd4e3f4fb6be4b2a7461e9222610616e3e1ee6702dd58d",
            600360,
        ),
    ),
    "LastFM": (
        ("LastFM.txt", "9ded486adb5b0fe9dc761950afa0a9a05e93ff018992e0c52bf11afec529f802", 239312),
        (
            "LastFM_item2attributes.json",
            "a4ccd678dc9ff6d43fe5073f491db5c9b02eb98dfa4f8c0382913a784be217ef",
            524368,
        ),
    ),
}

DOMAIN_RULE = (
    "a domain is an attribute id (attr-<id>; S3-Rec publishes no names) carried by at least "
    "min_items items and at most max_share of the catalogue"
)


def dataset_name(prefix: str) -> str:
    """``s3rec-<short>`` for a file prefix: ``Beauty`` -> ``s3rec-beauty``."""
    short = SETS.get(prefix) or re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")
    return f"s3rec-{short or 'data'}"


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name[:-4] if name.endswith(".txt") else name


def find_files(folder: Path, wanted: str = "") -> tuple[str, Path, Path]:
    """(set name, sequences file, attribute file) of the set ``wanted`` (or the only one)."""
    folder = Path(folder)
    if folder.is_file():
        prefix = _stem(folder)
        if wanted and wanted != prefix:
            raise UsageError(f"--source {folder} is set {prefix!r}, but --option set={wanted}")
        sequences, search = folder, folder.parent
    else:
        prefix = wanted or _only_set(folder)
        sequences = find_raw_file(folder, [f"{prefix}.txt"])  # type: ignore[assignment]
        search = sequences.parent
    attributes = find_raw_file(search, [prefix + ATTRIBUTES_SUFFIX], required=False)
    if attributes is None:
        raise DwrecError(
            f"{search}: {prefix}{ATTRIBUTES_SUFFIX} (or .gz) not found beside {sequences.name}; "
            "an S3-Rec set is the two files <Name>.txt and <Name>_item2attributes.json"
        )
    return prefix, sequences, attributes


def _only_set(folder: Path) -> str:
    """The one ``<Name>`` whose ``<Name>.txt`` lies under ``folder``."""
    found = sorted(
        {
            _stem(p)
            for p in folder.rglob("*")
            if p.is_file()
            and p.name.endswith((".txt", ".txt.gz"))
            and not _stem(p).endswith("_sample")
        }
    )
    with_attributes = [
        name
        for name in found
        if find_raw_file(folder, [name + ATTRIBUTES_SUFFIX], required=False) is not None
    ]
    candidates = with_attributes or found
    if not candidates:
        raise DwrecError(
            f"{folder}: no <Name>.txt (or .gz) found; --source must hold an S3-Rec set "
            "(<Name>.txt and <Name>_item2attributes.json)"
        )
    if len(candidates) > 1:
        raise UsageError(
            f"{folder} holds several S3-Rec sets ({', '.join(candidates)}); choose one with "
            f"--option set=NAME (e.g. --option set={candidates[0]})"
        )
    return candidates[0]


def name_for(folder: Path, options: dict[str, Any]) -> str:
    """The prepared dataset's name for the set that ``folder`` holds."""
    opts = resolve_options("s3rec", options, DEFAULTS)
    prefix, _, _ = find_files(folder, opts["set"])
    return dataset_name(prefix)


def read_sequences(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user id, item id, position) per interaction of a ``user item item ...`` file."""
    data = read_bytes(path)
    require_whole_lines(path, data)
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    users: list[int] = []
    items: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            raise DataFormatError(path, "blank line inside the file", number)
        try:
            ids = np.array(tokens, dtype=np.int64)
        except (ValueError, OverflowError):
            bad = next((t for t in tokens if not t.isdigit()), None)
            problem = (
                "an id is too large for a 64-bit integer"
                if bad is None
                else f"{bad.decode('utf-8', 'replace')[:40]!r} is not an integer id"
            )
            raise DataFormatError(
                path, f"{problem}; expected 'user item item ...' (space-separated integers)", number
            ) from None
        if ids.min() < 0 or not all(t.isdigit() for t in tokens):
            raise DataFormatError(path, "ids must be non-negative integers", number)
        if len(ids) < 2:
            raise DataFormatError(
                path, f"user {ids[0]} has no items; expected 'user item item ...'", number
            )
        user = int(ids[0])
        if user in first_line:
            raise DataFormatError(
                path, f"user {user} is listed again (first on line {first_line[user]})", number
            )
        first_line[user] = number
        users.append(user)
        items.append(ids[1:])
    if not users:
        raise DataFormatError(path, "no users: the file is empty")
    lengths = np.array([len(a) for a in items], dtype=np.int64)
    user_col = np.repeat(np.array(users, dtype=np.int64), lengths)
    item_col = np.concatenate(items)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(item_col), dtype=np.int64) - starts
    return user_col, item_col, position


def read_attributes(path: Path) -> dict[int, list[int]]:
    """``item -> distinct attribute ids`` (first-seen order) of an ``_item2attributes.json``."""
    try:
        table = json.loads(read_bytes(path))
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"cannot decode as UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"not valid JSON ({exc.msg})", exc.lineno) from None
    if not isinstance(table, dict):
        raise DataFormatError(
            path, f"expected one JSON object item -> [attribute, ...], got {type(table).__name__}"
        )
    result: dict[int, list[int]] = {}
    for key, values in table.items():
        if not key.isdigit():
            raise DataFormatError(path, f"item id {key[:40]!r} is not an integer")
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise DataFormatError(
                path, f"item {key}: expected a list of integer attribute ids, got {values!r:.60}"
            )
        result[int(key)] = list(dict.fromkeys(values))
    return result


def domain_attributes(
    attributes: dict[int, list[int]], catalogue: np.ndarray, min_items: int, max_share: float
) -> tuple[set[int], dict[int, int]]:
    """(attributes that are domains, items per attribute) over the ``catalogue`` items.

    An attribute is a domain when ``min_items <= n_items <= max_share * len(catalogue)``,
    where ``n_items`` counts the catalogue's items that carry it (each item once).
    """
    counts: dict[int, int] = {}
    for item in catalogue.tolist():
        for attribute in set(attributes.get(item, ())):
            counts[attribute] = counts.get(attribute, 0) + 1
    cap = max_share * len(catalogue)
    chosen = {a for a, n in counts.items() if min_items <= n <= cap}
    return chosen, counts


def read_s3rec(folder: Path, options: dict[str, Any], dataset: str = "s3rec") -> RawData:
    """Read one S3-Rec set (``<Name>.txt`` and ``<Name>_item2attributes.json``)."""
    opts = resolve_options(dataset, options, DEFAULTS)
    if opts["min_items"] < 1:
        raise UsageError(f"{dataset}: option min_items must be >= 1, got {opts['min_items']}")
    if not 0 < opts["max_share"] <= 1:
        raise UsageError(f"{dataset}: option max_share must be in (0, 1], got {opts['max_share']}")
    prefix, sequences_path, attributes_path = find_files(folder, opts["set"])
    users, items, position = read_sequences(sequences_path)
    attributes = read_attributes(attributes_path)
    catalogue = np.unique(items)
    chosen, counts = domain_attributes(attributes, catalogue, opts["min_items"], opts["max_share"])
    item_domains = [
        [f"attr-{a}" for a in sorted(a for a in attributes.get(item, ()) if a in chosen)]
        for item in catalogue.tolist()
    ]
    without_attributes = sum(1 for item in catalogue.tolist() if not attributes.get(item))
    too_common = sorted(a for a, n in counts.items() if n > opts["max_share"] * len(catalogue))
    too_rare = sum(1 for n in counts.values() if n < opts["min_items"])
    notes = [
        f"S3-Rec set {prefix} ({sequences_path.name}, {attributes_path.name}): no timestamps; "
        "an interaction's timestamp is its position in the user's line (0, 1, 2, ...).",
        f"Domains: {len(chosen)} of the {len(counts):,} attribute ids, those on at least "
        f"{opts['min_items']} items and at most {opts['max_share']:.0%} of the "
        f"{len(catalogue):,} items (options min_items, max_share). Left out: {too_rare:,} rarer "
        f"ids and {len(too_common)} on more than {opts['max_share']:.0%} of the items"
        + (f" ({', '.join(f'attr-{a}' for a in too_common[:5])})" if too_common else "")
        + ". Attribute names are not published.",
    ]
    if without_attributes:
        notes.append(
            f"{without_attributes} items have no attributes in {attributes_path.name}: no domain."
        )
    unused = len(set(attributes) - set(catalogue.tolist()))
    if unused:
        notes.append(f"{unused} items of {attributes_path.name} never occur in the sequences.")
    interactions = pa.table(
        {
            "user": pa.array(users).cast(pa.string()),
            "item": pa.array(items).cast(pa.string()),
            "timestamp": pa.array(position, pa.int64()),
            "rating": pa.nulls(len(users), pa.float32()),
        }
    )
    item_table = pa.table(
        {
            "raw_id": pa.array(catalogue).cast(pa.string()),
            "title": pa.nulls(len(catalogue), pa.string()),
            "domains": pa.array(item_domains, pa.list_(pa.string())),
        }
    )
    return RawData(
        interactions=interactions,
        items=item_table,
        source_files=[sequences_path, attributes_path],
        domain_rule=DOMAIN_RULE,
        notes=notes,
    )


def _reader(dataset: str, prefix: str):
    def read(folder: Path, options: dict[str, Any]) -> RawData:
        opts = dict(options)
        if opts.get("set") not in (None, "", prefix):
            raise UsageError(f"{dataset} reads set {prefix}; for another set use `s3rec`")
        opts["set"] = prefix
        return read_s3rec(folder, opts, dataset)

    return read


_TERMS = (
    "no licence file in the S3-Rec repository; the underlying data keep their publishers' "
    "terms (research use); cite Zhou et al., CIKM 2020"
)
_COUNTS = {
    "Beauty": "198,502 interactions, 22,363 users, 12,101 items, 637 attribute ids",
    "Sports_and_Outdoors": "296,337 interactions, 35,598 users, 18,357 items, 2,277 attribute ids",
    "Toys_and_Games": "167,597 interactions, 19,412 users, 11,924 items, 1,027 attribute ids",
    "Yelp": "316,354 interactions, 30,431 users, 20,033 items, 1,001 attribute ids",
    "LastFM": "52,551 interactions, 1,090 users, 3,646 items, 388 attribute ids",
}
_WHAT = {
    "Beauty": "Amazon 2014 Beauty 5-core; attributes: brand and category path",
    "Sports_and_Outdoors": "Amazon 2014 Sports and Outdoors 5-core; attributes: brand, categories",
    "Toys_and_Games": "Amazon 2014 Toys and Games 5-core; attributes: brand and categories",
    "Yelp": "Yelp 2019 reviews 5-core; attributes: business categories",
    "LastFM": "HetRec Last.fm 2K tag events 5-core; attributes: tags",
}

register(
    SourceSpec(
        name="s3rec",
        family="s3rec",
        description=(
            "any S3-Rec preprocessed set: --source holds <Name>.txt and "
            "<Name>_item2attributes.json; prepared as s3rec-<name>"
        ),
        domains="attribute ids on >= 100 items and <= 50% of the catalogue (options)",
        licence=_TERMS,
        size="depends on the set",
        reader=read_s3rec,
        manual_download=(
            "Download <Name>.txt and <Name>_item2attributes.json from "
            "https://github.com/RUCAIBox/CIKM2020-S3Rec/tree/master/data and pass their "
            "folder with --source (or use s3rec-beauty, s3rec-yelp, ...)."
        ),
        extra={"options": dict(DEFAULTS), "name_for": name_for, "specific_sets": True},
    )
)

for _prefix, _short in SETS.items():
    register(
        SourceSpec(
            name=f"s3rec-{_short}",
            family="s3rec",
            description=f"S3-Rec preprocessed {_prefix}: {_WHAT[_prefix]}",
            domains="attribute ids on >= 100 items and <= 50% of the catalogue (options)",
            licence=_TERMS,
            size=_COUNTS[_prefix],
            reader=_reader(f"s3rec-{_short}", _prefix),
            remote=tuple(
                RemoteFile(url=_RAW_URL + name, sha256=sha256, filename=name, size=size)
                for name, sha256, size in _FILES[_prefix]
            ),
            extra={"options": dict(DEFAULTS, set=_prefix)},
        )
    )
