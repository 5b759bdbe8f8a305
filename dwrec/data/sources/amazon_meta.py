"""Amazon metadata (``meta_<C>.json``): items, titles and category-path domains.

2014 lines are Python literals (single quotes), parsed with :func:`ast.parse` and
:func:`ast.literal_eval` only (nothing is evaluated), with ``categories`` a list of category
paths; 2018 lines are JSON with ``category`` one path. An item's domains are the categories
right below the root category in each of its paths that starts at the root.
"""

from __future__ import annotations

import ast
import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.sources._parsing import (
    block_lines,
    group_lists,
    iter_blocks,
    read_json_lines,
    require_present,
)
from dwrec.errors import DataFormatError

META_JSON_SCHEMA = pa.schema(
    [
        ("asin", pa.string()),
        ("title", pa.string()),
        ("category", pa.list_(pa.string())),
        ("categories", pa.list_(pa.list_(pa.string()))),
    ]
)


def read_meta(
    path: Path, reviewed: pa.Array, root: str | None, strict_literals: bool = False
) -> tuple[pa.Table, str | None, list[str]]:
    """Items (reviewed ones only) with title and domains, the root used, and notes."""
    if _first_line_is_json(path):
        table = read_json_lines(path, META_JSON_SCHEMA)
        layout = "JSON lines (2018 layout)"
    else:
        table = _read_python_literal_meta(path, strict_literals)
        layout = "Python literals (2014 layout), parsed with ast.literal_eval"
    require_present(path, table, ["asin"])
    item_of_path, paths = _category_paths(table)
    if root is None:
        root = _most_common_root(paths)
    domain_item, domain = _domains_below_root(item_of_path, paths, root)
    items, n_reviewed_with_meta = _meta_items(table, domain_item, domain, reviewed)
    notes = [
        f"Metadata: {path.name}, {layout}; {table.num_rows:,} products, "
        f"{n_reviewed_with_meta:,} of the {len(reviewed):,} reviewed items found in it.",
        f"Domains: for each category path of a product that starts at '{root}', the category "
        "right below it (the first level under the root); a product on several paths gets "
        "each, one with no such path gets no domain. HTML entities in names are decoded.",
    ]
    if len(reviewed) > n_reviewed_with_meta:
        notes.append(
            f"{len(reviewed) - n_reviewed_with_meta:,} reviewed items have no metadata: no "
            "title, no domain."
        )
    return items, root, notes


def _first_line_is_json(path: Path) -> bool:
    for _, block, _ in iter_blocks(path, 1 << 20):
        for line in block_lines(block):
            if line.strip():
                try:
                    return isinstance(json.loads(line), dict)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    return False
        break
    return False


_LITERAL_TYPES = {
    "asin": lambda v: isinstance(v, str),
    "title": lambda v: v is None or isinstance(v, str),
    "categories": lambda v: (
        isinstance(v, list)
        and all(isinstance(p, list) and all(isinstance(x, str) for x in p) for p in v)
    ),
}


def _read_python_literal_meta(path: Path, strict: bool) -> pa.Table:
    """asin, title, categories of a 2014 meta file: one Python dict literal per line.

    Nothing is ever evaluated. Fast path (default): a line must be one ``{...}`` holding an
    ``'asin'`` key; the three fields are cut out with string-aware patterns and decoded as
    literals, and any line the patterns do not fit is parsed in full with :mod:`ast`, so a
    malformed line is reported. ``strict`` parses every line in full with :mod:`ast`
    (about 10x slower: ~250 µs a line, two minutes for Electronics' 498,196 products).
    """
    columns: dict[str, list] = {"asin": [], "title": [], "categories": []}
    for first_line, block, _ in iter_blocks(path):
        for offset, line in enumerate(block_lines(block)):
            record = None if strict else _literal_record_fast(line)
            if record is None:
                record = _literal_record(path, line, first_line + offset)
            for key in columns:
                columns[key].append(record.get(key))
    return pa.table(
        {
            "asin": pa.array(columns["asin"], pa.string()),
            "title": pa.array(columns["title"], pa.string()),
            "category": pa.nulls(len(columns["asin"]), pa.list_(pa.string())),
            "categories": pa.array(columns["categories"], pa.list_(pa.list_(pa.string()))),
        }
    )


_PY_STRING = r"""(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")"""
_ASIN_RE = re.compile(rf"(?<=[{{ ])'asin': ({_PY_STRING})")
_TITLE_RE = re.compile(rf"(?<=[{{ ])'title': ({_PY_STRING})")
_CATEGORIES_RE = re.compile(
    rf"(?<=[{{ ])'categories': (\[(?:\s*\[(?:\s*{_PY_STRING}\s*,?)*\s*\]\s*,?)*\s*\])"
)
_CATEGORY_TOKEN_RE = re.compile(rf"{_PY_STRING}|[\[\]]")


def _py_string(token: str) -> str:
    return token[1:-1] if "\\" not in token else ast.literal_eval(token)


def _literal_record_fast(line: bytes) -> dict[str, Any] | None:
    """The fields of one meta line by pattern, or None when the line needs a full parse."""
    try:
        return _match_literal_fields(line.decode("utf-8").strip())
    except (UnicodeDecodeError, ValueError, SyntaxError):
        return None


def _match_literal_fields(text: str) -> dict[str, Any] | None:
    """The fields of one meta line by pattern; None when a key appears that no pattern fits
    (its value is then not a plain literal, or the line is malformed: a full parse decides)."""
    asin = _ASIN_RE.search(text)
    if not (text.startswith("{") and text.endswith("}")) or asin is None:
        return None
    record: dict[str, Any] = {"asin": _py_string(asin.group(1))}
    title = _TITLE_RE.search(text)
    if title is not None:
        record["title"] = _py_string(title.group(1))
    elif "'title':" in text:
        return None
    categories = _CATEGORIES_RE.search(text)
    if categories is not None:
        record["categories"] = _category_paths_of(categories.group(1))
    elif "'categories':" in text:
        return None
    return record


def _category_paths_of(literal: str) -> list[list[str]]:
    """Decode ``[['a', 'b'], ['c']]`` (already matched by _CATEGORIES_RE)."""
    paths: list[list[str]] = []
    for token in _CATEGORY_TOKEN_RE.findall(literal[1:-1]):
        if token == "[":
            paths.append([])
        elif token != "]":
            paths[-1].append(_py_string(token))
    return paths


def _literal_record(path: Path, line: bytes, number: int) -> dict[str, Any]:
    if not line.strip():
        raise DataFormatError(path, "blank line inside the file", number)
    try:
        node = ast.parse(line.decode("utf-8").strip(), mode="eval").body
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"cannot decode as UTF-8: {exc.reason}", number) from None
    except (SyntaxError, ValueError) as exc:
        raise DataFormatError(path, f"not a Python dict literal ({exc.msg})", number) from None
    if not isinstance(node, ast.Dict):
        raise DataFormatError(path, "not a Python dict literal", number)
    record: dict[str, Any] = {}
    for key, value in zip(node.keys, node.values, strict=True):
        if isinstance(key, ast.Constant) and key.value in _LITERAL_TYPES:
            try:
                converted = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                raise DataFormatError(
                    path, f"{key.value!r} is not a literal value", number
                ) from None
            if not _LITERAL_TYPES[key.value](converted):
                raise DataFormatError(
                    path, f"{key.value!r} has the wrong type: {converted!r:.60}", number
                )
            record[key.value] = converted
    return record


def _category_paths(table: pa.Table) -> tuple[np.ndarray, pa.Array]:
    """(meta row of each category path, the paths as list<string>)."""
    single = table.column("category").combine_chunks()
    single_rows = np.flatnonzero(pc.is_valid(single).to_numpy(zero_copy_only=False))
    many = table.column("categories").combine_chunks()
    many_paths = pc.list_flatten(many)
    many_rows = pc.list_parent_indices(many).to_numpy(zero_copy_only=False)
    paths = pa.concat_arrays([single.take(pa.array(single_rows)), many_paths])
    return np.concatenate([single_rows, many_rows]).astype(np.int64), paths


def _most_common_root(paths: pa.Array) -> str | None:
    lengths = pc.list_value_length(paths).to_numpy(zero_copy_only=False)
    nonempty = paths.filter(pa.array(lengths >= 1))
    if len(nonempty) == 0:
        return None
    roots = pc.list_element(nonempty, 0)
    counts = pc.value_counts(roots).to_pylist()
    return min(counts, key=lambda c: (-c["counts"], c["values"]))["values"]


def _domains_below_root(
    item_of_path: np.ndarray, paths: pa.Array, root: str | None
) -> tuple[np.ndarray, pa.Array]:
    """(meta row, domain) pairs, unique, for paths ``[root, domain, ...]``."""
    if root is None or len(paths) == 0:
        return np.zeros(0, np.int64), pa.array([], pa.string())
    lengths = pc.list_value_length(paths).to_numpy(zero_copy_only=False)
    long_enough = np.flatnonzero(lengths >= 2)
    candidates = paths.take(pa.array(long_enough))
    at_root = pc.equal(pc.list_element(candidates, 0), root).to_numpy(zero_copy_only=False)
    chosen = long_enough[at_root]
    domains = pc.list_element(paths.take(pa.array(chosen)), 1)
    names = pc.unique(domains)
    decoded = pa.array([html.unescape(name).strip() for name in names.to_pylist()], pa.string())
    domain_codes = pc.index_in(domains, value_set=names).to_numpy(zero_copy_only=False)
    rows = item_of_path[chosen]
    # Unique (row, domain) pairs: an item listed twice under one sub-category counts once.
    pair = np.unique(np.stack([rows, domain_codes], axis=1), axis=0)
    return pair[:, 0], decoded.take(pa.array(pair[:, 1]))


def _meta_items(
    table: pa.Table, domain_row: np.ndarray, domain: pa.Array, reviewed: pa.Array
) -> tuple[pa.Table, int]:
    """One row per reviewed asin found in the metadata: its first title, union of domains."""
    reviewed_index = pc.index_in(table.column("asin"), value_set=reviewed)
    reviewed_index = pc.fill_null(reviewed_index, -1).to_numpy(zero_copy_only=False)
    present = np.flatnonzero(reviewed_index >= 0)
    codes, first = np.unique(reviewed_index[present], return_index=True)
    # One extra slot, left at -1, so that rows of products nobody reviewed (index -1) map to
    # -1 rather than wrapping around onto the last reviewed item.
    position_of_code = np.full(len(reviewed) + 1, -1, dtype=np.int64)
    position_of_code[codes] = np.arange(len(codes))
    domain_item = position_of_code[reviewed_index[domain_row]]
    keep = domain_item >= 0
    # Duplicate meta rows (2018) or two paths may repeat a sub-category: keep it once.
    pairs = (
        pa.table({"item": domain_item[keep], "domain": domain.filter(pa.array(keep))})
        .group_by(["item", "domain"], use_threads=False)
        .aggregate([])
    )
    items = pa.table(
        {
            "raw_id": reviewed.take(pa.array(codes)),
            "title": table.column("title").take(pa.array(present[first])),
            "domains": group_lists(
                pairs.column("item").to_numpy(), pairs.column("domain").combine_chunks(), len(codes)
            ),
        }
    )
    return items, len(codes)
