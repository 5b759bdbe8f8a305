"""Amazon reviews reader: the real 2018 AMAZON_FASHION 5-core file, 2014 and 2018 fixtures."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import shared_file

import dwrec
from dwrec.data.sources import get_source
from dwrec.errors import DataFormatError, UsageError


def _read(name: str, source: Path, **options):
    return get_source(name).reader(source, options)


def _domains(raw) -> dict[str, list[str]]:
    return {
        rid: sorted(domains or [])
        for rid, domains in zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("domains").to_pylist(),
            strict=True,
        )
    }


# --------------------------------------------------------------------------- real file


def test_real_fashion_file_parses_without_metadata():
    path = shared_file("amazon2018-fashion", "AMAZON_FASHION_5.json.gz")
    raw = _read("amazon", path)
    records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    inter = raw.interactions
    assert inter.num_rows == len(records) == 3_176
    assert len(set(inter.column("user").to_pylist())) == 406
    assert len(set(inter.column("item").to_pylist())) == 31
    assert inter.column("user").to_pylist() == [r["reviewerID"] for r in records]
    assert inter.column("timestamp").to_pylist() == [r["unixReviewTime"] for r in records]
    ratings = inter.column("rating").to_pylist()
    assert ratings[1] is None  # line 2 has "overall": null (SOURCE.md)
    assert ratings[0] == 5.0 and sum(r is None for r in ratings) == 1
    assert raw.items.num_rows == 0
    assert any("No metadata file" in note for note in raw.notes)
    assert any("no rating" in note for note in raw.notes)


def test_real_fashion_prepares_with_five_core(tmp_path):
    path = shared_file("amazon2018-fashion", "AMAZON_FASHION_5.json.gz")
    result = dwrec.prepare("amazon", source=path, out=tmp_path / "fashion")
    assert result.meta["filters"]["min_user_interactions"] == 5
    assert result.meta["counts"]["items_without_domain"] == result.meta["counts"]["items"]


# --------------------------------------------------------------------------- 2014 layout

META_2014 = [
    {
        "asin": "B001",
        "title": "Cable, 2 m",
        "related": {"also_bought": ["B002", "B003"]},
        "salesRank": {"Electronics": 3},
        "categories": [
            ["Electronics", "Computers & Accessories", "Cables & Accessories"],
            ["Electronics", "Camera & Photo"],
            ["Cell Phones & Accessories", "Accessories"],
        ],
    },
    {
        "asin": "B002",
        "title": 'Children\'s "best" camera \\ tripod',
        "categories": [["Electronics", "Camera & Photo", "Tripods"], ["Electronics"]],
        "description": "It's {'categories': [['Fake']]} in text",
    },
    {"asin": "B003", "categories": [["Electronics", "Computers & Accessories"]]},
    {"asin": "B004", "title": "Not reviewed", "categories": [["Electronics", "Car"]]},
    {"asin": "B005", "title": "Only root", "categories": [["Electronics"]]},
]
REVIEWS = [
    ("U1", "B001", 5.0, 1300000000),
    ("U1", "B002", 3.0, 1300000100),
    ("U2", "B003", 4.0, 1300000200),
    ("U2", "B005", 1.0, 1300000300),
    ("U3", "B999", 2.0, 1300000400),
]


def _json_reviews(rows) -> str:
    return "".join(
        json.dumps(
            {"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t, "reviewText": "ok"}
        )
        + "\n"
        for u, a, r, t in rows
    )


def _write(path: Path, text: str, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _write_2014(folder: Path, gz: bool = True, ratings_csv: bool = False) -> Path:
    if ratings_csv:
        text = "".join(f"{u},{a},{r},{t}\n" for u, a, r, t in REVIEWS)
        _write(folder / "ratings_Electronics.csv", text, gz)
    else:
        _write(folder / "reviews_Electronics_5.json", _json_reviews(REVIEWS), gz)
    meta = "".join(repr(record) + "\n" for record in META_2014)
    _write(folder / "meta_Electronics.json", meta, gz)
    return folder


EXPECTED_DOMAINS = {
    "B001": ["Camera & Photo", "Computers & Accessories"],
    "B002": ["Camera & Photo"],
    "B003": ["Computers & Accessories"],
    "B005": [],
}


@pytest.mark.parametrize("ratings_csv", [False, True])
def test_2014_layout_domains_below_electronics(tmp_path, ratings_csv):
    raw = _read("amazon-electronics", _write_2014(tmp_path / "a", ratings_csv=ratings_csv))
    assert raw.interactions.column("item").to_pylist() == [a for _, a, _, _ in REVIEWS]
    assert raw.interactions.column("rating").to_pylist() == [r for _, _, r, _ in REVIEWS]
    assert _domains(raw) == EXPECTED_DOMAINS  # B004 not reviewed, B999 has no metadata
    titles = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles["B002"] == 'Children\'s "best" camera \\ tripod'
    assert titles["B003"] is None
    assert any("Python literals" in note for note in raw.notes)
    assert any("1 reviewed items have no metadata" in note for note in raw.notes)


def test_2014_fast_and_strict_literal_parsing_agree(tmp_path):
    folder = _write_2014(tmp_path / "a")
    fast = _read("amazon-electronics", folder)
    strict = _read("amazon-electronics", folder, strict_meta="true")
    assert fast.items.equals(strict.items)


def test_2014_meta_line_is_never_evaluated(tmp_path):
    folder = _write_2014(tmp_path / "a", gz=False)
    marker = tmp_path / "evaluated"
    evil = f"{{'asin': 'B006', 'title': __import__('pathlib').Path({str(marker)!r}).touch()}}\n"
    meta = folder / "meta_Electronics.json"
    meta.write_text(meta.read_text() + evil)
    with pytest.raises(DataFormatError, match="'title' is not a literal value") as info:
        _read("amazon-electronics", folder)
    assert info.value.line == 6 and not marker.exists()


def test_2014_truncated_meta_line_is_reported(tmp_path):
    folder = _write_2014(tmp_path / "a", gz=False)
    meta = folder / "meta_Electronics.json"
    lines = meta.read_text().splitlines()
    lines[2] = lines[2][:-10]
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="not a Python dict literal") as info:
        _read("amazon-electronics", folder)
    assert info.value.line == 3


# --------------------------------------------------------------------------- 2018 layout


def _write_2018(folder: Path, gz: bool) -> Path:
    reviews = _json_reviews(REVIEWS[:2]) + json.dumps(
        {"reviewerID": "U2", "asin": "B003", "overall": None, "unixReviewTime": 1300000200}
    )
    _write(folder / "Electronics_5.json", reviews + "\n", gz)
    meta = [
        {"asin": "B001", "title": "A", "category": ["Electronics", "Computers &amp; Accessories"]},
        {"asin": "B001", "title": "A again", "category": ["Electronics", "Camera &amp; Photo"]},
        {"asin": "B002", "title": "B", "category": ["Electronics", "Computers & Accessories"]},
        {"asin": "B003", "title": "C", "category": []},
    ]
    _write(folder / "meta_Electronics.json", "".join(json.dumps(m) + "\n" for m in meta), gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_2018_layout_domains_and_duplicate_meta_rows(tmp_path, gz):
    raw = _read("amazon-electronics", _write_2018(tmp_path / "b", gz))
    assert raw.interactions.column("rating").to_pylist() == [5.0, 3.0, None]
    assert _domains(raw) == {
        "B001": ["Camera & Photo", "Computers & Accessories"],
        "B002": ["Computers & Accessories"],
        "B003": [],
    }
    titles = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles["B001"] == "A"
    assert any("JSON lines (2018 layout)" in note for note in raw.notes)


def test_generic_reader_infers_root_from_metadata(tmp_path):
    folder = _write_2018(tmp_path / "b", gz=True)
    raw = _read("amazon", folder / "Electronics_5.json.gz")
    assert "below 'Electronics'" in raw.domain_rule
    assert _domains(raw)["B002"] == ["Computers & Accessories"]


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            '{"reviewerID": "U9", "asin": "B001", "overall": 5.0, "unixReviewTime": 13',
            "not one JSON",
        ),
        (
            '{"reviewerID": "U9", "asin": "B001", "overall": "five", "unixReviewTime": 1}',
            "'overall'",
        ),
        ('{"reviewerID": "U9", "overall": 5.0, "unixReviewTime": 1}', "missing or empty 'asin'"),
        ('{"reviewerID": "U9", "asin": "B1"}{"reviewerID": "U9", "asin": "B2"}', "Extra data"),
        ("[1, 2]", "expected a JSON object"),
        ("", "blank line"),
    ],
)
def test_malformed_review_line_names_its_line(tmp_path, bad, message):
    text = _json_reviews(REVIEWS[:3]) + bad + "\n" + _json_reviews(REVIEWS[3:])
    path = _write(tmp_path / "c" / "reviews_Electronics_5.json", text, gz=True)
    with pytest.raises(DataFormatError, match=message) as info:
        _read("amazon-electronics", path.parent)
    assert info.value.line == 4 and path.name in str(info.value)


def test_malformed_ratings_csv_line(tmp_path):
    text = "U1,B001,5.0,1300000000\nU2,B002,5.0\nU3,B003,4.0,1\n"
    path = _write(tmp_path / "d" / "ratings_Electronics.csv", text, gz=False)
    with pytest.raises(DataFormatError, match="expected 4 comma-separated fields") as info:
        _read("amazon-electronics", path.parent)
    assert info.value.line == 2


def test_several_review_files_need_a_choice(tmp_path):
    folder = _write_2014(tmp_path / "e")
    _write(folder / "Electronics.json", _json_reviews(REVIEWS), gz=False)
    with pytest.raises(UsageError, match="several review files"):
        _read("amazon-electronics", folder)
    raw = _read("amazon-electronics", folder, reviews="Electronics.json")
    assert raw.interactions.num_rows == len(REVIEWS)


def test_missing_review_file_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(dwrec.errors.DwrecError, match="no Amazon review file found"):
        _read("amazon-electronics", tmp_path / "empty")
