"""Yelp reader: the real (non-joining) excerpts and written fixtures."""

from __future__ import annotations

import calendar
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import shared_file

import dwrec
from dwrec.data.sources.yelp import read_yelp
from dwrec.errors import DataFormatError, UsageError


def test_real_excerpts_parse_every_line():
    review_path = shared_file("yelp", "yelp_academic_dataset_review.excerpt.json.gz")
    business_path = shared_file("yelp", "yelp_academic_dataset_business.excerpt.json")
    raw = read_yelp(review_path.parent, {})
    review_lines = gzip.decompress(review_path.read_bytes()).splitlines()
    business_lines = business_path.read_bytes().splitlines()
    assert raw.interactions.num_rows == len(review_lines) == 3_610
    assert raw.items.num_rows == len(business_lines) == 249
    first = json.loads(review_lines[0])
    row = raw.interactions.slice(0, 1).to_pylist()[0]
    assert (row["user"], row["item"], row["rating"]) == (
        first["user_id"],
        first["business_id"],
        first["stars"],
    )
    # The excerpts come from different releases: no review's business is in the file.
    assert any("3,610 of 3,610 reviews are of businesses missing" in n for n in raw.notes)


# --------------------------------------------------------------------------- fixtures

BUSINESSES = [
    {"business_id": "b1", "name": "Pizza Place", "categories": "Pizza, Restaurants"},
    {"business_id": "b2", "name": "Bar", "categories": "Bars, Nightlife, Restaurants"},
    {"business_id": "b3", "name": "Garage", "categories": "Auto Repair"},
    {"business_id": "b4", "name": "Nothing", "categories": None},
    {"business_id": "b5", "name": "Empty", "categories": ""},
]
REVIEWS = [
    ("u1", "b1", 5.0, "2015-07-03 20:38:25"),
    ("u1", "b2", 4.0, "2016-01-01 00:00:00"),
    ("u2", "b2", 3.0, "2016-01-02 12:00:00"),
    ("u2", "b3", 1.0, "2017-05-05 05:05:05"),
    ("u3", "b4", 2.0, "2018-02-28 23:59:59"),
    ("u3", "b9", 4.0, "2018-03-01 00:00:00"),
]


def _review_lines(rows) -> list[str]:
    return [
        json.dumps(
            {
                "review_id": f"r{i}",
                "user_id": u,
                "business_id": b,
                "stars": s,
                "text": "t",
                "date": d,
            }
        )
        for i, (u, b, s, d) in enumerate(rows)
    ]


def _write_yelp(folder: Path, review_lines: list[str], businesses=BUSINESSES, gz=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    reviews = ("\n".join(review_lines) + "\n").encode()
    if gz:
        (folder / "yelp_academic_dataset_review.json.gz").write_bytes(gzip.compress(reviews))
    else:
        (folder / "yelp_academic_dataset_review.json").write_bytes(reviews)
    (folder / "yelp_academic_dataset_business.json").write_text(
        "".join(json.dumps(b) + "\n" for b in businesses)
    )
    return folder


def _brute_force_domains(top_n: int) -> dict[str, list[str]]:
    reviews_of = Counter(b for _, b, _, _ in REVIEWS)
    weight, businesses = Counter(), Counter()
    cats = {}
    for b in BUSINESSES:
        names = [c.strip() for c in (b["categories"] or "").split(",") if c.strip()]
        cats[b["business_id"]] = names
        for c in names:
            weight[c] += reviews_of[b["business_id"]]
            businesses[c] += 1
    top = sorted(weight, key=lambda c: (-weight[c], -businesses[c], c))[:top_n]
    out = {}
    for bid, names in cats.items():
        chosen = sorted((c for c in names if c in top), key=top.index)
        out[bid] = chosen if chosen or not names else ["Other"]
    return out


@pytest.mark.parametrize("top_n", [1, 2, 3, 20])
def test_domains_are_top_categories_by_reviews_else_other(tmp_path, top_n):
    raw = read_yelp(_write_yelp(tmp_path / "y", _review_lines(REVIEWS)), {"top_categories": top_n})
    got = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("domains").to_pylist(),
            strict=True,
        )
    )
    assert got == _brute_force_domains(top_n)


def test_reviews_fields_and_missing_business_note(tmp_path):
    raw = read_yelp(_write_yelp(tmp_path / "y", _review_lines(REVIEWS)), {})
    rows = raw.interactions.to_pylist()
    assert [r["item"] for r in rows] == [b for _, b, _, _ in REVIEWS]
    assert rows[4]["timestamp"] == calendar.timegm((2018, 2, 28, 23, 59, 59))
    assert [r["rating"] for r in rows] == [s for _, _, s, _ in REVIEWS]
    assert any("1 of 6 reviews are of businesses missing" in n for n in raw.notes)


def test_pre_2018_list_categories_are_accepted(tmp_path):
    def as_list(text):
        return None if text is None else [c.strip() for c in text.split(",") if c.strip()]

    listed = [{**b, "categories": as_list(b["categories"])} for b in BUSINESSES]
    folder = _write_yelp(tmp_path / "y", _review_lines(REVIEWS), businesses=listed, gz=False)
    raw = read_yelp(folder, {"top_categories": 2})
    got = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("domains").to_pylist(),
            strict=True,
        )
    )
    assert got == _brute_force_domains(2)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"user_id": "u9", "business_id": "b1", "stars": 5, "date": "2015-07-03', "not one JSON"),
        (
            '{"user_id": "u9", "business_id": "b1", "stars": 5, "date": "03/07/2015"}',
            "not in the format",
        ),
        (
            '{"user_id": "u9", "stars": 5, "date": "2015-07-03 20:38:25"}',
            "missing or empty 'business_id'",
        ),
        (
            '{"user_id": "u9", "business_id": "b1", "stars": "5", "date": "2015-07-03 20:38:25"}',
            "'stars'",
        ),
    ],
)
def test_malformed_review_line_names_its_line(tmp_path, bad, message):
    lines = _review_lines(REVIEWS)
    lines.insert(2, bad)
    folder = _write_yelp(tmp_path / "y", lines)
    with pytest.raises(DataFormatError, match=message) as info:
        read_yelp(folder, {})
    assert info.value.line == 3 and "yelp_academic_dataset_review.json.gz" in str(info.value)


def test_duplicate_business_is_an_error(tmp_path):
    folder = _write_yelp(
        tmp_path / "y", _review_lines(REVIEWS), businesses=BUSINESSES + BUSINESSES[:1]
    )
    with pytest.raises(DataFormatError, match="business_id appears on an earlier line") as info:
        read_yelp(folder, {})
    assert info.value.line == 6


def test_bad_option_and_prepare_end_to_end(tmp_path):
    folder = _write_yelp(tmp_path / "y", _review_lines(REVIEWS))
    with pytest.raises(UsageError, match="top_categories"):
        read_yelp(folder, {"top_categories": "many"})
    result = dwrec.prepare(
        "yelp",
        source=folder,
        out=tmp_path / "out",
        min_user_interactions=1,
        min_item_interactions=1,
    )
    assert result.meta["counts"]["interactions"] == len(REVIEWS)
    assert result.meta["domains"]["Restaurants"]["interactions"] == 3
