"""The S3-Rec preprocessed-format reader: fixtures in the real format, and the five real sets."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import dwrec
from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.data.sources import get_source
from dwrec.data.sources.s3rec import DEFAULTS, SETS, dataset_name, domain_attributes
from dwrec.errors import DataFormatError, DwrecError, UsageError
from tests.conftest import SHARED_DATA

# Users 7, 3, 9 (not in id order); item 5 appears twice for user 3; item 8 has no attributes.
SEQUENCES = "7 1 2 3 4 5\n3 5 2 6 5 7\n9 8 1 2 6\n"
ATTRIBUTES = {
    "1": [10, 11, 10],  # a repeated id counts once
    "2": [10, 12],
    "3": [10, 13],
    "4": [11],
    "5": [10, 11, 14],
    "6": [11, 12],
    "7": [12, 99],
    "8": [],
}


def _write_set(folder: Path, name: str = "Beauty", sequences: str = SEQUENCES, attributes=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(sequences)
    data = ATTRIBUTES if attributes is None else attributes
    (folder / f"{name}_item2attributes.json").write_text(json.dumps(data))
    return folder


def _brute_force_domains(attributes: dict, items: list[int], min_items: int, max_share: float):
    counts = Counter(a for item in items for a in set(attributes.get(str(item), [])))
    return {a for a, n in counts.items() if n >= min_items and n <= max_share * len(items)}


def test_fixture_set_prepares_in_line_order_with_the_documented_domain_rule(tmp_path):
    source = _write_set(tmp_path / "raw")
    result = dwrec.prepare(
        "s3rec", source=source, options={"min_items": 2, "max_share": 0.5}, out=tmp_path / "o"
    )
    assert result.meta["name"] == "s3rec-beauty"
    data = load_dataset(result.path)
    raw_users = pq.read_table(result.path / "users.parquet").column("raw_id").to_pylist()
    users = [int(u) for u in raw_users]
    assert users == [3, 7, 9]
    # Each user's items in line order; timestamps are the positions 0, 1, 2, ...
    lines = {int(line.split()[0]): line.split()[1:] for line in SEQUENCES.splitlines()}
    for dense, raw_user in enumerate(users):
        rows = slice(data.user_indptr[dense], data.user_indptr[dense + 1])
        got = [data.item_raw_ids[i] for i in data.item_ids[rows]]
        assert got == lines[raw_user]
        assert data.timestamps[rows].tolist() == list(range(len(got)))
    assert data.meta["counts"]["interactions"] == 14
    # Brute force: 8 items; attr 10 on items 1,2,3,5 (4 = 50%: kept); 11 on 1,4,5,6 (kept);
    # 12 on 2,6,7 (kept); 13, 14, 99 on one item each (< 2: left out).
    expected = _brute_force_domains(ATTRIBUTES, list(range(1, 9)), 2, 0.5)
    assert expected == {10, 11, 12}
    assert data.domain_names == sorted(f"attr-{a}" for a in expected)
    by_item = dict(zip(data.item_raw_ids, range(data.n_items), strict=True))
    matrix = data.item_domain_matrix
    for raw_item, attrs in ATTRIBUTES.items():
        row = matrix[by_item[raw_item]]
        want = {f"attr-{a}" for a in attrs if a in expected}
        assert {data.domain_names[d] for d in np.flatnonzero(row)} == want
    # Item 8 (no attributes) stays, without a domain; item 4 only has attr 11.
    assert data.meta["counts"]["items_without_domain"] == 1
    assert any("1 items have no attributes" in note for note in data.meta["notes"])
    assert data.meta["held_out_ties"]["loo"]["test_ties_validation"] == 0


def test_max_share_drops_an_attribute_on_every_item(tmp_path):
    attributes = {str(i): [2, 100 + i % 2] for i in range(1, 9)}  # id 2 on all items
    source = _write_set(tmp_path / "raw", "Toys_and_Games", attributes=attributes)
    result = dwrec.prepare("s3rec", source=source, options={"min_items": 1}, out=tmp_path / "o")
    assert result.meta["name"] == "s3rec-toys"
    assert sorted(result.meta["domains"]) == ["attr-100", "attr-101"]
    assert "attr-2" in " ".join(result.meta["notes"])


def test_domain_rule_matches_brute_force_on_random_attributes():
    rng = np.random.default_rng(3)
    attributes = {
        item: list(rng.integers(0, 40, size=rng.integers(0, 6))) for item in range(1, 300)
    }
    catalogue = np.arange(1, 300)
    for min_items, share in ((1, 1.0), (5, 0.5), (12, 0.1)):
        chosen, _ = domain_attributes(attributes, catalogue, min_items, share)
        as_text = {str(k): [int(x) for x in v] for k, v in attributes.items()}
        assert chosen == _brute_force_domains(as_text, list(range(1, 300)), min_items, share)


@pytest.mark.parametrize(
    ("sequences", "line", "needle"),
    [
        ("1 1 2 3\n2 4 x 5\n", 2, "'x' is not an integer id"),
        ("1 1 2 3\n2\n", 2, "user 2 has no items"),
        ("1 1 2 3\n\n2 4 5\n", 2, "blank line inside the file"),
        ("1 1 2 3\n1 4 5\n", 2, "user 1 is listed again (first on line 1)"),
        ("1 1 2 3\n2 4 5 6", 2, "the last line has no line ending"),
        ("1 1 2 3\n2 4 -5\n", 2, "ids must be non-negative integers"),
        ("1 1 2 3\n2 4 99999999999999999999\n", 2, "an id is too large"),
    ],
    ids=["garbage", "no-items", "blank", "repeated-user", "cut", "negative", "huge"],
)
def test_malformed_sequence_line_is_an_error_naming_file_and_line(
    tmp_path, capsys, sequences, line, needle
):
    source = _write_set(tmp_path / "raw", sequences=sequences)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["prepare", "s3rec", "--source", str(source), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"Beauty.txt, line {line}" in err and needle in err, err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_missing_attribute_file_is_an_error_naming_it(tmp_path):
    source = _write_set(tmp_path / "raw")
    (source / "Beauty_item2attributes.json").unlink()
    with pytest.raises(DwrecError, match=r"Beauty_item2attributes\.json \(or \.gz\) not found"):
        dwrec.prepare("s3rec", source=source, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"1": [1, 2], "2": [3,', "not valid JSON"),
        ("[[1, 2]]", "expected one JSON object"),
        ('{"1": ["brand"]}', "item 1: expected a list of integer attribute ids"),
        ('{"a": [1]}', "item id 'a' is not an integer"),
    ],
)
def test_malformed_attribute_file_is_an_error_naming_it(tmp_path, text, needle):
    source = _write_set(tmp_path / "raw")
    (source / "Beauty_item2attributes.json").write_text(text)
    with pytest.raises(DataFormatError, match="Beauty_item2attributes.json") as info:
        dwrec.prepare("s3rec", source=source, out=tmp_path / "out")
    assert needle in str(info.value)


def test_gzipped_files_and_a_single_file_source_work(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "Yelp.txt.gz").write_bytes(gzip.compress(SEQUENCES.encode()))
    (folder / "Yelp_item2attributes.json.gz").write_bytes(
        gzip.compress(json.dumps(ATTRIBUTES).encode())
    )
    by_folder = dwrec.prepare("s3rec", source=folder, out=tmp_path / "a")
    by_file = dwrec.prepare("s3rec-yelp", source=folder / "Yelp.txt.gz", out=tmp_path / "b")
    assert by_folder.meta["name"] == by_file.meta["name"] == "s3rec-yelp"
    # `s3rec` on Yelp files is `s3rec-yelp`: the same request, the same fingerprint.
    assert by_folder.meta["fingerprint"] == by_file.meta["fingerprint"]


def test_several_sets_in_one_folder_need_the_set_option(tmp_path):
    folder = _write_set(tmp_path / "data", "Beauty")
    _write_set(folder, "LastFM")
    (folder / "Beauty_sample.txt").write_text("1 2 3\n")  # S3-Rec's negatives: not a set
    with pytest.raises(UsageError, match=r"several S3-Rec sets \(Beauty, LastFM\).*set=NAME"):
        dwrec.prepare("s3rec", source=folder, out=tmp_path / "out")
    result = dwrec.prepare("s3rec", source=folder, options={"set": "LastFM"})
    assert result.meta["name"] == "s3rec-lastfm"
    assert result.path.name == "s3rec-lastfm"
    with pytest.raises(UsageError, match="s3rec-beauty reads set Beauty"):
        dwrec.prepare("s3rec-beauty", source=folder, options={"set": "LastFM"})


def test_unknown_prefix_gets_a_name_from_the_file(tmp_path):
    assert dataset_name("My Books") == "s3rec-my-books"
    source = _write_set(tmp_path / "raw", "Books")
    assert dwrec.prepare("s3rec", source=source).path.name == "s3rec-books"


def test_registered_sets_pin_the_checksums_of_source_md():
    """The pins are the 'sha256 (original)' column of ../shared/data/s3rec-*/SOURCE.md."""
    for prefix, short in SETS.items():
        spec = get_source(f"s3rec-{short}")
        assert spec.default_min_user == spec.default_min_item == 0
        assert [r.filename for r in spec.remote] == [
            f"{prefix}.txt",
            f"{prefix}_item2attributes.json",
        ]
        source_md = SHARED_DATA / f"s3rec-{short}" / "SOURCE.md"
        if source_md.exists():
            text = source_md.read_text()
            for remote in spec.remote:
                row = next(line for line in text.splitlines() if f"`{remote.filename}.gz`" in line)
                assert f"`{remote.sha256}`" in row
                assert f"| {remote.size:,} |" in row


# --------------------------------------------------------------------------- real data

# (folder, users, items, interactions) from ../shared/data/README.md; domains measured with
# the default rule (docs/datasets.md).
REAL = [
    ("s3rec-beauty", "Beauty", 22363, 12101, 198502, 73, 0),
    ("s3rec-sports", "Sports_and_Outdoors", 35598, 18357, 296337, 117, 138),
    ("s3rec-toys", "Toys_and_Games", 19412, 11924, 167597, 68, 145),
    ("s3rec-yelp", "Yelp", 30431, 20033, 316354, 125, 158),
    ("s3rec-lastfm", "LastFM", 1090, 3646, 52551, 116, 15),
]


@pytest.mark.parametrize(
    ("folder", "prefix", "users", "items", "interactions", "domains", "no_domain"),
    REAL,
    ids=[r[0] for r in REAL],
)
def test_real_s3rec_set_has_the_published_counts(
    tmp_path, folder, prefix, users, items, interactions, domains, no_domain
):
    path = SHARED_DATA / folder
    if not (path / f"{prefix}.txt.gz").exists():
        pytest.skip(f"{path} not found: real-data test needs ../shared/data beside the repo")
    result = dwrec.prepare(folder, source=path, out=tmp_path / "out")
    counts = result.meta["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (
        users,
        items,
        interactions,
    )
    assert (counts["domains"], counts["items_without_domain"]) == (domains, no_domain)
    # Independent count of the domain rule from the raw files.
    attributes = json.loads(gzip.open(path / f"{prefix}_item2attributes.json.gz").read())
    catalogue = {
        int(item)
        for line in gzip.open(path / f"{prefix}.txt.gz").read().decode().splitlines()
        for item in line.split()[1:]
    }
    expected = _brute_force_domains(
        attributes, sorted(catalogue), DEFAULTS["min_items"], DEFAULTS["max_share"]
    )
    assert sorted(result.meta["domains"]) == sorted(f"attr-{a}" for a in expected)
    # Positions never tie.
    assert result.meta["held_out_ties"]["loo"]["test_ties_validation"] == 0
