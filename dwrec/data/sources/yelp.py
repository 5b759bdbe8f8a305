"""Yelp Open Dataset reader (``yelp``).

Interactions: every line of ``yelp_academic_dataset_review.json`` (user_id, business_id,
stars, date ``YYYY-MM-DD HH:MM:SS``). Items are businesses; their names and categories come
from ``yelp_academic_dataset_business.json``, where ``categories`` is one comma-separated
string (a list in releases before 2018) and may be null. The ``.excerpt.json`` names of the
test excerpts are accepted too.

Domain rule (:func:`business_domains`): the top-N categories by number of reviews are
domains; a business gets each of its categories among them, and a business whose
categories are all outside them gets the single domain ``Other``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.raw import ITEMS_SCHEMA, RawData, find_raw_file
from dwrec.data.sources import SourceSpec, register
from dwrec.data.sources._parsing import (
    group_lists,
    parse_timestamps,
    raise_at_first,
    read_json_lines,
    require_present,
    resolve_options,
)
from dwrec.errors import DataFormatError, UsageError

REVIEW_FILES = ["yelp_academic_dataset_review.json", "yelp_academic_dataset_review.excerpt.json"]
BUSINESS_FILES = [
    "yelp_academic_dataset_business.json",
    "yelp_academic_dataset_business.excerpt.json",
]
REVIEW_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("business_id", pa.string()),
        ("stars", pa.float64()),
        ("date", pa.string()),
    ]
)
OTHER = "Other"
YELP_DEFAULTS: dict[str, Any] = {"top_categories": 20}


def read_yelp(folder: Path, options: dict[str, Any]) -> RawData:
    """Read the Yelp review file and, when present, the business file under ``folder``."""
    opts = resolve_options("yelp", options, YELP_DEFAULTS)
    if opts["top_categories"] < 1:
        raise UsageError(f"yelp: option top_categories must be >= 1, got {opts['top_categories']}")
    review_path = find_raw_file(folder, REVIEW_FILES)
    reviews = read_json_lines(review_path, REVIEW_SCHEMA)
    require_present(review_path, reviews, ["user_id", "business_id", "date"])
    seconds = parse_timestamps(
        review_path, reviews.column("date"), "%Y-%m-%d %H:%M:%S", first_row_line=1, what="date"
    )
    interactions = pa.table(
        {
            "user": reviews.column("user_id"),
            "item": reviews.column("business_id"),
            "timestamp": pa.array(seconds, pa.int64()),
            "rating": reviews.column("stars"),
        }
    )
    notes = [
        f"Interactions: every review of {review_path.name}; rating = stars; timestamp = the "
        "review's date and time read as UTC (Yelp gives no time zone; they are local times)."
    ]
    business_path = find_raw_file(folder, BUSINESS_FILES, required=False)
    if business_path is None:
        notes.append("No business file found: items have no name and no domain.")
        return RawData(
            interactions=interactions,
            items=ITEMS_SCHEMA.empty_table(),
            source_files=[review_path],
            domain_rule="none: no business file",
            notes=notes,
        )
    businesses = read_businesses(business_path)
    domains, top = business_domains(
        businesses.column("business_id").combine_chunks(),
        businesses.column("categories").combine_chunks(),
        interactions.column("item"),
        opts["top_categories"],
    )
    notes += _domain_notes(opts["top_categories"], top, businesses, interactions)
    items = pa.table(
        {
            "raw_id": businesses.column("business_id"),
            "title": businesses.column("name"),
            "domains": domains,
        }
    )
    return RawData(
        interactions=interactions,
        items=items,
        source_files=[review_path, business_path],
        domain_rule=(
            f"the business's categories among the {opts['top_categories']} most reviewed; "
            f"'{OTHER}' when it has none of them"
        ),
        notes=notes,
    )


def read_businesses(path: Path) -> pa.Table:
    """business_id, name, categories (list<string>, null where none) of a business file.

    ``categories`` is a comma-separated string in releases since 2018 and a list before;
    both are accepted. Names are split at commas and trimmed; empty names are dropped.
    """
    string_schema = pa.schema(
        [("business_id", pa.string()), ("name", pa.string()), ("categories", pa.string())]
    )
    try:
        table = read_json_lines(path, string_schema)
        split = pc.split_pattern(table.column("categories"), ",")
    except DataFormatError as string_error:
        list_schema = string_schema.set(2, pa.field("categories", pa.list_(pa.string())))
        try:
            table = read_json_lines(path, list_schema)
        except DataFormatError:
            raise string_error from None
        split = table.column("categories")
    require_present(path, table, ["business_id"])
    ids = table.column("business_id").combine_chunks()
    _, first = np.unique(
        pc.index_in(ids, value_set=pc.unique(ids)).to_numpy(zero_copy_only=False),
        return_index=True,
    )
    duplicate = np.ones(len(ids), dtype=bool)
    duplicate[first] = False
    raise_at_first(path, duplicate, "business_id appears on an earlier line", 1)
    categories = _trim_lists(split.combine_chunks())
    return table.set_column(2, "categories", categories)


def _trim_lists(lists: pa.ListArray) -> pa.ListArray:
    """Trim every string of every list and drop empty strings; null lists stay null."""
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    keep = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)
    trimmed = group_lists(parent[keep], flat.filter(pa.array(keep)), len(lists))
    return pa.ListArray.from_arrays(trimmed.offsets, trimmed.values, mask=lists.is_null())


def business_domains(
    business_ids: pa.Array,
    categories: pa.ListArray,
    reviewed_business: pa.ChunkedArray,
    top_categories: int,
) -> tuple[pa.ListArray, list[tuple[str, int]]]:
    """Each business's domains, and the top categories with their review counts.

    A category's weight is the number of reviews (in the review file, before any filter) of
    businesses listing it. The ``top_categories`` heaviest are domains (ties: more
    businesses, then name). A business gets its categories among them, in rank order; one
    with categories but none among them gets ``Other``; one without categories (null or
    empty) gets no domain.
    """
    reviews_per_business = _reviews_per_business(business_ids, reviewed_business)
    parent = pc.list_parent_indices(categories).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(categories)
    pairs = pa.table({"category": flat, "reviews": reviews_per_business[parent]})
    totals = pairs.group_by("category", use_threads=False).aggregate(
        [("reviews", "sum"), ("reviews", "count")]
    )
    names = totals.column("category").to_pylist()
    review_totals = totals.column("reviews_sum").to_numpy()
    business_totals = totals.column("reviews_count").to_numpy()
    order = sorted(
        range(len(names)), key=lambda i: (-review_totals[i], -business_totals[i], names[i])
    )
    top = [(names[i], int(review_totals[i])) for i in order[:top_categories]]
    rank = pc.index_in(flat, value_set=pa.array([name for name, _ in top], pa.string()))
    in_top = pc.is_valid(rank).to_numpy(zero_copy_only=False)
    n_categories = np.bincount(parent, minlength=len(categories))
    n_top = np.bincount(parent[in_top], minlength=len(categories))
    rank_values = pc.fill_null(rank, 0).to_numpy(zero_copy_only=False)
    chosen = np.flatnonzero(in_top)
    chosen = chosen[np.lexsort((rank_values[chosen], parent[chosen]))]
    other = np.flatnonzero((n_top == 0) & (n_categories > 0))
    group = np.concatenate([parent[chosen], other])
    values = pa.concat_arrays(
        [flat.take(pa.array(chosen)), pa.array([OTHER] * len(other), pa.string())]
    )
    return group_lists(group, values, len(categories)), top


def _reviews_per_business(business_ids: pa.Array, reviewed: pa.ChunkedArray) -> np.ndarray:
    index = pc.index_in(reviewed, value_set=business_ids)
    index = pc.drop_null(index).to_numpy(zero_copy_only=False)
    return np.bincount(index, minlength=len(business_ids)).astype(np.int64)


def _domain_notes(
    top_categories: int, top: list[tuple[str, int]], businesses: pa.Table, interactions: pa.Table
) -> list[str]:
    listed = ", ".join(f"{name} ({count:,})" for name, count in top)
    notes = [
        f"Domains: the {top_categories} categories with most reviews (reviews of businesses "
        "listing the category, counted in the review file before any filter; ties: more "
        f"businesses, then name) are: {listed or 'none'}. A business gets each of its "
        f"categories among them; one whose categories are all outside them gets '{OTHER}'; "
        "one with no categories (null or empty) gets no domain.",
    ]
    known = pc.is_in(interactions.column("item"), value_set=businesses.column("business_id"))
    n_missing = len(known) - pc.sum(known).as_py() if len(known) else 0
    if n_missing:
        notes.append(
            f"{n_missing:,} of {interactions.num_rows:,} reviews are of businesses missing from "
            "the business file: those items have no name and no domain."
        )
    return notes


register(
    SourceSpec(
        name="yelp",
        family="yelp",
        description="Yelp Open Dataset: users' reviews of businesses",
        domains=(
            "business categories: the 20 most reviewed categories (option top_categories), "
            "every other category grouped as 'Other'"
        ),
        licence=(
            "Yelp Dataset Terms of Use: non-commercial academic use, no redistribution "
            "(https://www.yelp.com/dataset)"
        ),
        size=(
            "depends on the release; the 2022 release (as published): 6,990,280 reviews, "
            "150,346 businesses"
        ),
        reader=read_yelp,
        default_min_user=5,
        default_min_item=5,
        manual_download=(
            "Yelp requires accepting its Dataset Terms of Use (non-commercial academic use) "
            "before downloading: get the JSON dataset from https://www.yelp.com/dataset, "
            "extract it and pass the folder holding yelp_academic_dataset_review.json and "
            "yelp_academic_dataset_business.json with --source."
        ),
        extra={"options": dict(YELP_DEFAULTS)},
    )
)
