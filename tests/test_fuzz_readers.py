"""Fuzz every raw-format reader with mutated, real-format input.

Each case writes a small valid input in the dataset's published layout (bytes written by the
test itself, never taken from the real data), then lets hypothesis mutate one of its files:
delete, duplicate or insert bytes, truncate, swap separators, replace a field with garbage,
insert invalid UTF-8, or empty the file. ``dwrec prepare`` must then either build a dataset
that loads and is self-consistent, or stop with a :class:`~dwrec.errors.DwrecError` (a clear
one-line message). Any other exception is a reader bug.

The examples are derandomized so the suite is repeatable; set ``DWREC_FUZZ_EXAMPLES=500``
(and ``DWREC_FUZZ_RANDOM=1`` for fresh random draws) to fuzz harder by hand.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dwrec.data.dataset import load_dataset
from dwrec.data.prepare import prepare
from dwrec.data.sources import get_source
from dwrec.errors import DwrecError

EXAMPLES = int(os.environ.get("DWREC_FUZZ_EXAMPLES", "30"))
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=os.environ.get("DWREC_FUZZ_RANDOM", "") != "1",
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------- valid inputs
#
# Each builder writes a valid folder in the real layout and returns the files a mutation
# may hit. Values are invented; layouts follow each publisher's README.

RATINGS = [
    (1, 10, 4.0, 881250949),
    (1, 20, 3.0, 881250950),
    (2, 10, 5.0, 881250960),
    (2, 30, 1.0, 881250970),
    (3, 20, 2.0, 881250980),
    (3, 30, 4.0, 881250990),
]
MOVIES = [(10, "Toy Story (1995)", "Animation|Comedy"), (20, "Heat (1995)", "Action")]
MOVIES += [(30, "Nadja (1994)", "Drama")]


def _ml100k(folder: Path) -> list[Path]:
    genres = ["unknown", "Action", "Animation", "Comedy", "Drama"]
    data = "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in RATINGS)
    (folder / "u.data.gz").write_bytes(gzip.compress(data.encode(), mtime=0))
    (folder / "u.genre").write_text("".join(f"{g}|{k}\n" for k, g in enumerate(genres)) + "\n")
    lines = []
    for item, title, names in MOVIES:
        flags = ["1" if g in names.split("|") else "0" for g in genres]
        lines.append("|".join([str(item), title, "01-Jan-1995", "", "http://x", *flags]) + "\n")
    (folder / "u.item").write_bytes("".join(lines).replace("Nadja", "Nädja").encode("latin-1"))
    return [folder / "u.data.gz", folder / "u.genre", folder / "u.item"]


def _ml1m(folder: Path) -> list[Path]:
    (folder / "ratings.dat").write_text(
        "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in RATINGS)
    )
    movies = "".join(f"{i}::{title}::{g}\n" for i, title, g in MOVIES)
    (folder / "movies.dat").write_bytes(movies.replace("Nadja", "Nädja").encode("latin-1"))
    return [folder / "ratings.dat", folder / "movies.dat"]


def _ml_csv(folder: Path) -> list[Path]:
    ratings = "userId,movieId,rating,timestamp\n"
    ratings += "".join(f"{u},{i},{r:.1f},{t}\n" for u, i, r, t in RATINGS)
    (folder / "ratings.csv").write_text(ratings)
    movies = "movieId,title,genres\n" + "".join(
        f'{i},"{title}, The",{g}\n' for i, title, g in MOVIES
    )
    (folder / "movies.csv").write_text(movies)
    return [folder / "ratings.csv", folder / "movies.csv"]


def _lastfm_2k(folder: Path) -> list[Path]:
    (folder / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n1\tBjörk\thttp://a\thttp://b\n2\tMotörhead\thttp://c\t\n"
        "3\tSigur Rós\thttp://d\thttp://e\n"
    )
    (folder / "tags.dat").write_bytes(
        "tagID\ttagValue\r\n1\ttropicália\r\n2\trock\r\n3\tseen live\r\n".encode("latin-1")
    )
    rows = "userID\tartistID\ttagID\tday\tmonth\tyear\r\n"
    rows += "10\t1\t1\t1\t4\t2009\r\n10\t2\t2\t3\t4\t2009\r\n11\t3\t2\t28\t2\t2008\r\n"
    rows += "11\t1\t3\t29\t2\t2008\r\n12\t2\t1\t5\t5\t2010\r\n"
    (folder / "user_taggedartists.dat").write_text(rows)
    return [folder / "user_taggedartists.dat", folder / "artists.dat", folder / "tags.dat"]


def _lastfm_2k_timestamps(folder: Path) -> list[Path]:
    """The 2K layout with ``user_taggedartists-timestamps.dat`` (milliseconds), gzipped."""
    files = _lastfm_2k(folder)
    rows = "userID\tartistID\ttagID\ttimestamp\r\n"
    rows += "10\t1\t1\t1238536800000\r\n10\t2\t2\t1238709600000\r\n"
    rows += "11\t3\t2\t1203980400000\r\n12\t2\t1\t1273010400000\r\n"
    path = folder / "user_taggedartists-timestamps.dat.gz"
    path.write_bytes(gzip.compress(rows.encode(), mtime=0))
    return [path, *files[1:]]


def _lastfm_1k(folder: Path) -> list[Path]:
    mbid = "a74b1b7f-71a5-4011-9441-d0b5e4122711"
    text = (
        f"user_000001\t2009-05-04T23:08:57Z\t{mbid}\tRadiohead\t\tCreep\n"
        "user_000001\t2009-05-04T13:54:10Z\t\tSome Band\t\tSong\n"
        f"user_000002\t2009-05-03T10:00:00Z\t{mbid}\tRadiohead\t\tKarma Police\n"
        'user_000002\t2009-05-03T10:05:00Z\t\tThe "Quoted" Band\t\tOther\n'
    )
    path = folder / "userid-timestamp-artid-artname-traid-traname.tsv"
    path.write_text(text)
    return [path]


REVIEWS = [("U1", "B001", 5.0, 1300000000), ("U1", "B002", 3.0, 1300000100)]
REVIEWS += [("U2", "B001", 4.0, 1300000200), ("U3", "B003", 2.0, 1300000400)]


def _json_reviews() -> str:
    return "".join(
        json.dumps({"reviewerID": u, "asin": a, "overall": r, "unixReviewTime": t}) + "\n"
        for u, a, r, t in REVIEWS
    )


def _amazon_2014(folder: Path) -> list[Path]:
    (folder / "reviews_Electronics_5.json").write_text(_json_reviews())
    meta = [
        {"asin": "B001", "title": "Cam", "categories": [["Electronics", "Camera & Photo"]]},
        {"asin": "B002", "categories": [["Electronics", "Computers"], ["Books"]]},
        {"asin": "B003", "title": 'It\'s "x"', "categories": [["Electronics", "Computers"]]},
    ]
    (folder / "meta_Electronics.json").write_text("".join(repr(m) + "\n" for m in meta))
    return [folder / "reviews_Electronics_5.json", folder / "meta_Electronics.json"]


def _amazon_2018(folder: Path) -> list[Path]:
    (folder / "Electronics_5.json").write_text(_json_reviews())
    meta = [
        {"asin": "B001", "title": "A", "category": ["Electronics", "Camera &amp; Photo"]},
        {"asin": "B002", "title": "B", "category": ["Electronics", "Computers"]},
        {"asin": "B003", "title": "C", "category": []},
    ]
    (folder / "meta_Electronics.json").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return [folder / "Electronics_5.json", folder / "meta_Electronics.json"]


def _amazon_csv(folder: Path) -> list[Path]:
    text = "".join(f"{u},{a},{r},{t}\n" for u, a, r, t in REVIEWS)
    (folder / "ratings_Electronics.csv").write_text(text)
    return [folder / "ratings_Electronics.csv"]


def _yelp(folder: Path) -> list[Path]:
    reviews = [("u1", "b1", 5.0, "2015-07-03 20:38:25"), ("u1", "b2", 4.0, "2016-01-01 00:00:00")]
    reviews += [("u2", "b2", 3.0, "2016-01-02 12:00:00"), ("u3", "b3", 1.0, "2017-05-05 05:05:05")]
    lines = [
        json.dumps({"review_id": f"r{n}", "user_id": u, "business_id": b, "stars": s, "date": d})
        for n, (u, b, s, d) in enumerate(reviews)
    ]
    review_path = folder / "yelp_academic_dataset_review.json"
    review_path.write_text("\n".join(lines) + "\n")
    businesses = [
        {"business_id": "b1", "name": "Pizza", "categories": "Pizza, Restaurants"},
        {"business_id": "b2", "name": "Bar", "categories": "Bars, Nightlife, Restaurants"},
        {"business_id": "b3", "name": "Garage", "categories": None},
    ]
    business_path = folder / "yelp_academic_dataset_business.json"
    business_path.write_text("".join(json.dumps(b) + "\n" for b in businesses))
    return [review_path, business_path]


def _s3rec(folder: Path) -> list[Path]:
    """S3-Rec's layout: ``user item item ...`` lines and an item -> attribute-ids object."""
    sequences = folder / "Beauty.txt"
    sequences.write_text("1 1 2 3 4\n2 2 3 5\n3 4 1 5 2 3\n")
    attributes = folder / "Beauty_item2attributes.json.gz"
    table = {"1": [1, 2], "2": [2, 3], "3": [1], "4": [2, 2], "5": []}
    attributes.write_bytes(gzip.compress(json.dumps(table).encode()))
    return [sequences, attributes]


@dataclass(frozen=True)
class Format:
    dataset: str
    build: Callable[[Path], list[Path]]


FORMATS = {
    "movielens-100k": Format("movielens-100k", _ml100k),
    "movielens-1m": Format("movielens-1m", _ml1m),
    "movielens-latest-small": Format("movielens-latest-small", _ml_csv),
    "lastfm-hetrec-2k": Format("lastfm", _lastfm_2k),
    "lastfm-hetrec-2k-timestamps": Format("lastfm", _lastfm_2k_timestamps),
    "lastfm-1k": Format("lastfm-1k", _lastfm_1k),
    "amazon-2014-json": Format("amazon-electronics", _amazon_2014),
    "amazon-2018-json": Format("amazon-electronics", _amazon_2018),
    "amazon-ratings-csv": Format("amazon-electronics", _amazon_csv),
    "yelp": Format("yelp", _yelp),
    "s3rec": Format("s3rec-beauty", _s3rec),
}

# --------------------------------------------------------------------------- mutations

SEPARATORS = [b"\t", b",", b"::", b"|", b";", b" ", b"\n", b"\r\n", b":"]
NASTY = [
    b"\n",
    b"\n\n",
    b"\r",
    b"\t",
    b",",
    b"::",
    b"|",
    b'"',
    b"'",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\\",
    b"\x00",
    b"\xff\xfe",
    b"\xc3",
    b"\x1f",
    b"\x1f\x8b",
    b"-1",
    b"0",
    b"1e999",
    b"NaN",
    b"null",
    b"99999999999999999999",
    b"-9223372036854775809",
    b"2009-13-45T99:00:00Z",
    b"\xef\xbb\xbf",
    b"(no genres listed)",
]
_FIELD = re.compile(rb"[^\t,:|\n\r{}\[\]\"' ]+")

payloads = st.one_of(st.sampled_from(NASTY), st.binary(min_size=1, max_size=6))
operations = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 40)),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000), st.integers(1, 80)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), payloads),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("swap"), st.sampled_from(SEPARATORS), st.sampled_from(SEPARATORS)),
    st.tuples(st.just("field"), st.integers(0, 10_000), payloads),
    st.tuples(st.just("utf8"), st.integers(0, 10_000)),
    st.tuples(st.just("empty")),
)


def mutate(data: bytes, operation: tuple) -> bytes:
    """Apply one mutation; positions are taken modulo the data's length."""
    kind, *args = operation
    at = (lambda n: n % (len(data) + 1)) if data else (lambda n: 0)
    if kind == "delete":
        start = at(args[0])
        return data[:start] + data[start + args[1] :]
    if kind == "duplicate":
        start = at(args[0])
        return data[: start + args[1]] + data[start : start + args[1]] + data[start + args[1] :]
    if kind == "insert":
        start = at(args[0])
        return data[:start] + args[1] + data[start:]
    if kind == "truncate":
        return data[: at(args[0])]
    if kind == "swap":
        return data.replace(args[0], args[1])
    if kind == "field":
        fields = list(_FIELD.finditer(data))
        if not fields:
            return data + args[1]
        match = fields[args[0] % len(fields)]
        return data[: match.start()] + args[1] + data[match.end() :]
    if kind == "utf8":
        start = at(args[0])
        return data[:start] + b"\xc3\x28\xa0\xa1" + data[start:]
    return b""


# --------------------------------------------------------------------------- the property

NO_CORE = {"min_user_interactions": 0, "min_item_interactions": 0}
"""The seeds are tiny: no k-core, so a valid input always leaves interactions."""


def check_prepare(fmt: Format, root: Path, file_index: int, ops: list[tuple]) -> None:
    """Mutate one file of a fresh valid input; prepare must succeed validly or raise DwrecError."""
    folder = root / "raw"
    folder.mkdir()
    files = fmt.build(folder)
    target = files[file_index % len(files)]
    data = target.read_bytes()
    for operation in ops:
        data = mutate(data, operation)
    target.write_bytes(data)
    out = root / "prepared"
    try:
        result = prepare(fmt.dataset, source=folder, out=out, **NO_CORE)
    except DwrecError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message
        assert not out.exists(), "a failed prepare left a dataset dir"
        return
    assert result.path == out
    dataset = load_dataset(out)
    counts = dataset.meta["counts"]
    assert len(dataset.item_ids) == counts["interactions"] > 0
    assert dataset.n_items == counts["items"] and dataset.n_users == counts["users"]
    assert np.all(np.bincount(dataset.user_ids, minlength=dataset.n_users) > 0)
    assert np.all(np.bincount(dataset.item_ids, minlength=dataset.n_items) > 0)
    assert np.all(np.diff(dataset.user_ids) >= 0)
    same_user = np.diff(dataset.user_ids) == 0
    assert np.all(np.diff(dataset.timestamps)[same_user] >= 0)  # each user's history in time order


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_unmutated_input_prepares(tmp_path, name):
    """The fuzz seeds are valid: without mutation every reader builds a dataset."""
    fmt = FORMATS[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    fmt.build(folder)
    result = prepare(fmt.dataset, source=folder, out=tmp_path / "out", **NO_CORE)
    assert load_dataset(result.path).meta["counts"]["interactions"] > 0


@pytest.mark.parametrize("name", sorted(FORMATS))
@FUZZ_SETTINGS
@given(file_index=st.integers(0, 5), ops=st.lists(operations, min_size=1, max_size=3))
def test_mutated_input_prepares_or_fails_cleanly(tmp_path, name, file_index, ops):
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        check_prepare(FORMATS[name], Path(root), file_index, ops)


# --------------------------------------------------------------------------- regressions
#
# Inputs the fuzzer found that used to escape as another exception (or crash the process).

FOUND = [
    # empty review file: IndexError in the Amazon metadata join
    ("amazon-2014-json", 0, [("empty",)], "no interactions"),
    # invalid UTF-8 inside a JSON string: pyarrow does not check it, to_pylist raised later
    ("amazon-2018-json", 0, [("field", 3, b"\x80")], "line 1"),
    ("yelp", 1, [("field", 3, b"\x80")], "line 1"),
    # corrupt deflate data in a .gz file: zlib.error is not an OSError
    ("movielens-100k", 0, [("delete", 3, 1)], "u.data.gz"),
    # a lone carriage return: csv.Error while naming the bad line
    ("movielens-latest-small", 0, [("field", 4, b"\r")], "ratings.csv"),
]


@pytest.mark.parametrize(("name", "file_index", "ops", "needle"), FOUND)
def test_inputs_the_fuzzer_found_fail_cleanly(tmp_path, name, file_index, ops, needle):
    fmt = FORMATS[name]
    folder = tmp_path / "raw"
    folder.mkdir()
    target = fmt.build(folder)[file_index]
    data = target.read_bytes()
    for operation in ops:
        data = mutate(data, operation)
    target.write_bytes(data)
    with pytest.raises(DwrecError, match=re.escape(needle)):
        prepare(fmt.dataset, source=folder, out=tmp_path / "out", **NO_CORE)


def test_json_lines_starting_with_null_do_not_crash_the_process(tmp_path):
    """pyarrow 26's JSON reader segfaults when the first value is ``null``: run it in a child
    process so that a regression fails this test instead of killing the test run."""
    path = tmp_path / "reviews.json"
    path.write_bytes(b'null{"reviewerID": "U1"}\n')
    code = (
        "import sys; from pathlib import Path\n"
        "from dwrec.data.sources._parsing import read_json_lines\n"
        "from dwrec.data.sources.amazon import REVIEW_SCHEMA\n"
        "from dwrec.errors import DataFormatError\n"
        "try:\n"
        "    read_json_lines(Path(sys.argv[1]), REVIEW_SCHEMA)\n"
        "except DataFormatError as exc:\n"
        "    print(exc)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, (child.returncode, child.stderr)
    assert "reviews.json, line 1" in child.stdout


def test_amazon_domains_of_unreviewed_products_stay_with_them(tmp_path):
    """A metadata row of a product nobody reviewed used to lend its domains to the last
    reviewed item (a -1 index wrapping around)."""
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "reviews_Electronics_5.json").write_text(
        "".join(
            json.dumps({"reviewerID": u, "asin": a, "overall": 5.0, "unixReviewTime": 1}) + "\n"
            for u, a in [("U1", "B001"), ("U2", "B002")]
        )
    )
    meta = [
        {"asin": "B002", "title": "x", "categories": [["Electronics", "Cameras"]]},
        {"asin": "B009", "title": "unreviewed", "categories": [["Electronics", "Books"]]},
    ]
    (folder / "meta_Electronics.json").write_text("".join(repr(m) + "\n" for m in meta))
    raw = get_source("amazon-electronics").reader(folder, {})
    assert raw.items.to_pylist() == [{"raw_id": "B002", "title": "x", "domains": ["Cameras"]}]
