"""Amazon product reviews, 2014 (McAuley et al.) and 2018 (Ni, Li & McAuley) layouts.

Review files (one is read):
- 2014: ``reviews_<C>.json`` / ``reviews_<C>_5.json`` (strict JSON lines) or
  ``ratings_<C>.csv`` (``user,item,rating,timestamp``, no header);
- 2018: ``<C>.json`` / ``<C>_5.json`` (JSON lines; ``overall`` may be null).
The fields used are ``reviewerID``, ``asin``, ``overall`` (rating) and ``unixReviewTime``
(seconds). Gzip-compressed copies (``.gz``) are read as they are.

Metadata ``meta_<C>.json`` (optional): 2014 lines are Python literals (single quotes),
parsed with :func:`ast.parse` and :func:`ast.literal_eval` only (nothing is evaluated), with
``categories`` a list of category paths; 2018 lines are JSON with ``category`` one path.

Domain of an item: the category right below the root category (``Electronics``) in each of
its category paths that starts at the root; an item on several paths gets each.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.raw import ITEMS_SCHEMA, RawData, find_raw_file
from dwrec.data.sources import SourceSpec, register
from dwrec.data.sources._parsing import (
    read_delimited,
    read_json_lines,
    require_present,
    resolve_options,
)
from dwrec.data.sources.amazon_meta import META_JSON_SCHEMA, read_meta  # noqa: F401
from dwrec.errors import DwrecError, UsageError

REVIEW_SCHEMA = pa.schema(
    [
        ("reviewerID", pa.string()),
        ("asin", pa.string()),
        ("overall", pa.float64()),
        ("unixReviewTime", pa.int64()),
    ]
)
RATINGS_COLUMNS = {
    "user": pa.string(),
    "item": pa.string(),
    "rating": pa.float64(),
    "timestamp": pa.int64(),
}

AMAZON_DEFAULTS: dict[str, Any] = {
    "category": "",
    "reviews": "",
    "meta": "",
    "root_category": "",
    "strict_meta": False,
}
"""``category``: the file-name stem (``Electronics``, ``AMAZON_FASHION``); ``reviews`` /
``meta``: a file name or path to use instead of searching; ``root_category``: the root of the
category paths (empty: the most frequent first element of the metadata's paths);
``strict_meta``: parse every 2014 metadata line in full (see
:mod:`dwrec.data.sources.amazon_meta`)."""

_REVIEW_PATTERNS = (
    re.compile(r"^reviews_(?P<cat>.+?)(?:_5)?\.json$"),
    re.compile(r"^ratings_(?P<cat>.+)\.csv$"),
    re.compile(r"^(?!meta_)(?!reviews_)(?P<cat>.+?)(?:_5)?\.json$"),
)


def make_amazon_reader(dataset: str, defaults: dict[str, Any]):
    """A reader for ``dataset`` whose unset options take ``defaults`` (category, root)."""

    def read(folder: Path, options: dict[str, Any]) -> RawData:
        merged = {**defaults, **{k: v for k, v in (options or {}).items()}}
        return read_amazon(folder, resolve_options(dataset, merged, AMAZON_DEFAULTS), dataset)

    return read


def read_amazon(folder: Path, opts: dict[str, Any], dataset: str = "amazon") -> RawData:
    """Read one Amazon review file and its metadata (if any) under ``folder``."""
    folder = Path(folder)
    reviews_path, category = _find_reviews(folder, opts, dataset)
    interactions = _read_reviews(reviews_path)
    meta_path = _find_meta(folder, reviews_path, category, opts)
    notes = [
        f"Interactions: the reviews of {reviews_path.name}, rating = 'overall', timestamp = "
        "unixReviewTime (seconds, the review's day)."
    ]
    notes += _review_notes(interactions)
    sources = [reviews_path]
    if meta_path is None:
        items = ITEMS_SCHEMA.empty_table()
        notes.append(
            f"No metadata file (meta_{category or '<category>'}.json[.gz]) found beside the "
            "reviews: items have no title and no domain."
        )
        root = opts["root_category"] or None
    else:
        sources.append(meta_path)
        reviewed = pc.unique(interactions.column("item"))
        items, root, meta_notes = read_meta(
            meta_path, reviewed, opts["root_category"] or None, opts["strict_meta"]
        )
        notes += meta_notes
    return RawData(
        interactions=interactions,
        items=items,
        source_files=sources,
        domain_rule=(
            f"the product's category right below '{root}' in each of its category paths"
            if root
            else "none: no category metadata"
        ),
        notes=notes,
    )


def amazon_name(folder: Path, options: dict[str, Any]) -> str:
    """``amazon-<category>`` for the category file under ``folder`` (``amazon-fashion`` for
    ``AMAZON_FASHION_5.json.gz``), so that two categories prepare into two folders."""
    opts = resolve_options("amazon", options, AMAZON_DEFAULTS)
    _, category = _find_reviews(Path(folder), opts, "amazon")
    slug = re.sub(r"[^a-z0-9]+", "-", category.lower()).strip("-")
    slug = re.sub(r"^amazon-", "", slug)
    return f"amazon-{slug}" if slug and slug != "amazon" else "amazon"


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _find_reviews(folder: Path, opts: dict[str, Any], dataset: str) -> tuple[Path, str]:
    """The review file and its category stem."""
    if opts["reviews"]:
        given = Path(opts["reviews"])
        path = given if given.is_absolute() or given.exists() else folder / given
        if not path.is_file():
            raise UsageError(f"{dataset}: option reviews={opts['reviews']}: no such file")
        return path, opts["category"] or _category_of(path.name) or ""
    if folder.is_file():
        return folder, opts["category"] or _category_of(folder.name) or ""
    category = opts["category"]
    if category:
        names = [
            f"reviews_{category}.json",
            f"reviews_{category}_5.json",
            f"ratings_{category}.csv",
            f"{category}.json",
            f"{category}_5.json",
        ]
        found = [p for p in (find_raw_file(folder, [n], required=False) for n in names) if p]
    else:
        names = ["reviews_<C>[_5].json", "ratings_<C>.csv", "<C>[_5].json"]
        found = sorted(
            p for p in folder.rglob("*") if p.is_file() and _category_of(p.name) is not None
        )
    if not found:
        raise DwrecError(
            f"{folder}: no Amazon review file found (looked for {', '.join(names)}, or .gz); "
            "--source must be the review file or its folder"
        )
    if len(found) > 1:
        raise UsageError(
            f"{folder}: several review files ({', '.join(p.name for p in found)}); choose one "
            "with the option reviews=FILE or pass the file itself as --source"
        )
    return found[0], category or _category_of(found[0].name) or ""


def _category_of(name: str) -> str | None:
    name = _strip_gz(name)
    for pattern in _REVIEW_PATTERNS:
        match = pattern.match(name)
        if match:
            return match.group("cat")
    return None


def _find_meta(
    folder: Path, reviews_path: Path, category: str, opts: dict[str, Any]
) -> Path | None:
    if opts["meta"]:
        given = Path(opts["meta"])
        path = given if given.is_absolute() or given.exists() else reviews_path.parent / given
        if not path.is_file():
            raise UsageError(f"option meta={opts['meta']}: no such file")
        return path
    if not category:
        return None
    name = f"meta_{category}.json"
    root = folder if folder.is_dir() else reviews_path.parent
    return find_raw_file(root, [name], required=False)


def _read_reviews(path: Path) -> pa.Table:
    if _strip_gz(path.name).endswith(".csv"):
        table = read_delimited(path, RATINGS_COLUMNS, delimiter=",", header=False)
        require_present(path, table, ["user", "item"])
        return table
    table = read_json_lines(path, REVIEW_SCHEMA)
    require_present(path, table, ["reviewerID", "asin", "unixReviewTime"])
    return pa.table(
        {
            "user": table.column("reviewerID"),
            "item": table.column("asin"),
            "timestamp": table.column("unixReviewTime"),
            "rating": table.column("overall"),
        }
    )


def _review_notes(interactions: pa.Table) -> list[str]:
    notes = []
    n_null = interactions.column("rating").null_count
    if n_null:
        notes.append(
            f"{n_null} reviews have no rating (null 'overall'): kept with a null rating "
            "(--min-rating drops them)."
        )
    keys = interactions.select(["user", "item", "timestamp"])
    n_unique = keys.group_by(["user", "item", "timestamp"]).aggregate([]).num_rows
    if n_unique < interactions.num_rows:
        notes.append(
            f"{interactions.num_rows - n_unique} reviews repeat an earlier (user, item, day) "
            "(the 2018 files list one review once per product variant); --dedupe keeps only the first interaction of each (user, item)."
        )
    return notes


# --------------------------------------------------------------------------- registration

_ELECTRONICS_URLS = (
    "2014 (McAuley et al.): http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ "
    "(reviews_Electronics_5.json.gz or ratings_Electronics.csv, and meta_Electronics.json.gz); "
    "2018 (Ni, Li & McAuley): https://jmcauley.ucsd.edu/data/amazon_v2/ "
    "(categoryFiles/Electronics.json.gz or categoryFilesSmall/Electronics_5.json.gz, and "
    "metaFiles2/meta_Electronics.json.gz)"
)

register(
    SourceSpec(
        name="amazon-electronics",
        family="amazon",
        description="Amazon reviews, Electronics category (2014 or 2018 release, any layout)",
        domains="the sub-category right below 'Electronics' in each of the product's category paths",
        licence=(
            "research use as distributed by the authors (no licence file); cite McAuley et al. "
            "SIGIR 2015 / He & McAuley WWW 2016 (2014) or Ni, Li & McAuley EMNLP 2019 (2018)"
        ),
        size=(
            "depends on the file: 2014 5-core 1,689,188 reviews; 2014 ratings 7,824,482; "
            "2018 5-core 6,739,590; 2018 full 20,994,353 (figures from the download pages)"
        ),
        reader=make_amazon_reader(
            "amazon-electronics", {"category": "Electronics", "root_category": "Electronics"}
        ),
        default_min_user=5,
        default_min_item=5,
        manual_download=(
            "No checksum is published for these files, so dwrec does not download them. "
            f"Download a review file and the metadata from {_ELECTRONICS_URLS}, put them in "
            "one folder and pass it with --source."
        ),
    )
)

register(
    SourceSpec(
        name="amazon",
        family="amazon",
        description=(
            "Amazon reviews of any category (2014 or 2018 layout): --source is the review "
            "file, meta_<category>.json[.gz] beside it is used when present"
        ),
        domains=(
            "the sub-category right below the root (option root_category; default: the most "
            "frequent first category) in each of the product's category paths"
        ),
        licence="research use as distributed by the authors (no licence file); see amazon-electronics",
        size="depends on the category file",
        reader=make_amazon_reader("amazon", {}),
        extra={"name_for": amazon_name},
        default_min_user=5,
        default_min_item=5,
        manual_download=(
            "Download a category's review file (and meta_ file) from "
            "http://snap.stanford.edu/data/amazon/productGraph/ (2014) or "
            "https://jmcauley.ucsd.edu/data/amazon_v2/ (2018) and pass it with --source."
        ),
    )
)
