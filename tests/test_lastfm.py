"""Last.fm readers: HetRec 2011 Last.fm 2K (real files) and written fixtures, Last.fm 1K."""

from __future__ import annotations

import calendar
import gzip
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_file

import dwrec
from dwrec.data.sources import get_source
from dwrec.data.sources.lastfm import (
    read_lastfm_1k,
    read_lastfm_2k,
    utc_midnight_seconds,
)
from dwrec.errors import DataFormatError, UsageError

HEADER_DATED = "userID\tartistID\ttagID\tday\tmonth\tyear\r\n"
HEADER_STAMPS = "userID\tartistID\ttagID\ttimestamp\r\n"


def _real_folder() -> Path:
    return shared_file("hetrec2011-lastfm-2k", "user_taggedartists.dat.gz").parent


def _real_rows(folder: Path) -> list[tuple[int, ...]]:
    text = gzip.decompress((folder / "user_taggedartists.dat.gz").read_bytes()).decode()
    return [tuple(int(x) for x in line.split("\t")) for line in text.splitlines()[1:]]


def _brute_force_domains(
    rows, tag_names, top_n=20, max_domains=3, share=0.1, excluded=("seen live",)
):
    """The documented domain rule, computed with plain loops."""
    tag_count = Counter(tag for _, _, tag, *_ in rows)
    ranked = sorted(tag_count, key=lambda t: (-tag_count[t], t))
    top = [t for t in ranked if tag_names[t] not in excluded][:top_n]
    rank = {t: i for i, t in enumerate(top)}
    per_artist = defaultdict(Counter)
    for _, artist, tag, *_ in rows:
        per_artist[artist][tag] += 1
    domains = {}
    for artist, counts in per_artist.items():
        total = sum(counts.values())
        candidates = sorted((t for t in counts if t in rank), key=lambda t: (-counts[t], rank[t]))
        chosen = candidates[:1] + [
            t for t in candidates[1:max_domains] if counts[t] >= share * total
        ]
        domains[str(artist)] = sorted(tag_names[t] for t in chosen)
    return [tag_names[t] for t in top], domains


def _tag_names(folder: Path) -> dict[int, str]:
    lines = (folder / "tags.dat").read_bytes().decode("latin-1").splitlines()[1:]
    return {int(i): name for i, name in (line.split("\t") for line in lines)}


# --------------------------------------------------------------------------- real files


def test_real_counts_match_the_readme():
    folder = _real_folder()
    rows = _real_rows(folder)
    assert len(rows) == 186_479
    raw = read_lastfm_2k(folder, {})
    users = set(raw.interactions.column("user").to_pylist())
    artists = set(raw.interactions.column("item").to_pylist())
    assert (len(users), len(artists)) == (1_892, 12_523)
    events = {(u, a, d, m, y) for u, a, _, d, m, y in rows}
    assert raw.interactions.num_rows == len(events)
    assert any("186,479 tag assignments" in note for note in raw.notes)


def test_real_files_fall_back_to_dates_and_say_so():
    raw = read_lastfm_2k(_real_folder(), {})
    assert any("user_taggedartists-timestamps.dat not found" in n for n in raw.notes)
    first = raw.interactions.slice(0, 1).to_pylist()[0]
    # Line 2 of the file: user 2 tagged artist 52 on 1 April 2009.
    assert first["user"] == "2" and first["item"] == "52"
    assert first["timestamp"] == calendar.timegm((2009, 4, 1, 0, 0, 0))


def test_real_domains_follow_the_documented_rule():
    folder = _real_folder()
    raw = read_lastfm_2k(folder, {})
    top, expected = _brute_force_domains(_real_rows(folder), _tag_names(folder))
    got = {
        rid: sorted(domains or [])
        for rid, domains in zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("domains").to_pylist(),
            strict=True,
        )
    }
    assert {rid: got[rid] for rid in expected} == expected
    used = {d for domains in got.values() for d in domains}
    assert used == set(top) and "seen live" not in used and len(top) == 20
    assert any(", ".join(top) in note for note in raw.notes)


def test_real_tags_are_latin1_and_artists_utf8():
    raw = read_lastfm_2k(_real_folder(), {})
    assert "Text encodings detected: artists.dat utf-8, tags.dat latin-1." in raw.notes


def test_real_prepare_default_five_core(tmp_path):
    result = dwrec.prepare("lastfm", source=_real_folder(), out=tmp_path / "lastfm")
    counts = result.meta["counts"]
    assert result.meta["filters"]["min_user_interactions"] == 5
    assert counts["domains"] == 20
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "lastfm" / "interactions.parquet")
    assert np.bincount(table.column("user_id").to_numpy()).min() >= 5
    assert np.bincount(table.column("item_id").to_numpy()).min() >= 5
    assert table.num_rows == counts["interactions"]


# --------------------------------------------------------------------------- fixtures


def _write_2k(folder: Path, assignments: str, *, stamps: str | None = None, gz: bool = False):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artists.dat").write_text(
        "id\tname\turl\tpictureURL\n1\tBjörk\thttp://a\thttp://b\n2\tMotörhead\thttp://c\t\n"
        "3\tSigur Rós\thttp://d\thttp://e\n",
        encoding="utf-8",
    )
    (folder / "tags.dat").write_bytes(
        "tagID\ttagValue\r\n1\ttropicália\r\n2\trock\r\n3\tseen live\r\n4\tpop\r\n".encode(
            "latin-1"
        )
    )
    data = (HEADER_DATED + assignments).encode()
    if gz:
        (folder / "user_taggedartists.dat.gz").write_bytes(gzip.compress(data))
    else:
        (folder / "user_taggedartists.dat").write_bytes(data)
    if stamps is not None:
        (folder / "user_taggedartists-timestamps.dat").write_text(HEADER_STAMPS + stamps)
    return folder


FIXTURE_ROWS = (
    "10\t1\t1\t1\t4\t2009\r\n"
    "10\t1\t2\t1\t4\t2009\r\n"  # same user, artist, day: same event
    "10\t2\t2\t3\t4\t2009\r\n"
    "11\t3\t4\t28\t2\t2008\r\n"
    "11\t1\t3\t29\t2\t2008\r\n"
)


def test_fixture_dates_collapse_and_latin1_tag(tmp_path):
    raw = read_lastfm_2k(_write_2k(tmp_path / "d", FIXTURE_ROWS, gz=True), {"top_tags": "2"})
    rows = raw.interactions.to_pylist()
    assert [(r["user"], r["item"]) for r in rows] == [
        ("10", "1"),
        ("10", "2"),
        ("11", "3"),
        ("11", "1"),
    ]
    assert rows[3]["timestamp"] == calendar.timegm((2008, 2, 29, 0, 0, 0))
    items = {r["raw_id"]: r for r in raw.items.to_pylist()}
    assert items["1"]["title"] == "Björk" and items["2"]["title"] == "Motörhead"
    # top 2 tags (seen live excluded): rock (2), tropicália (1, lower id than pop).
    assert sorted(items["1"]["domains"]) == ["rock", "tropicália"]
    assert items["3"]["domains"] == []
    assert "tags.dat latin-1" in " ".join(raw.notes)


def test_fixture_timestamps_file_is_preferred(tmp_path):
    stamps = (
        "10\t1\t1\t1238536800000\r\n"
        "10\t1\t2\t1238536800000\r\n"  # same millisecond: one event
        "10\t1\t2\t1238536801999\r\n"  # 1.999 s later: a second event
        "10\t2\t2\t1238540400000\r\n"
    )
    raw = read_lastfm_2k(_write_2k(tmp_path / "s", FIXTURE_ROWS, stamps=stamps), {})
    assert raw.interactions.column("timestamp").to_pylist() == [
        1238536800,
        1238536801,
        1238540400,
    ]
    assert raw.source_files[0].name == "user_taggedartists-timestamps.dat"
    assert not any("not found" in note for note in raw.notes)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ("10\t2\t2\t1\t4\r\n", "expected 6 tab-separated fields"),
        ("10\t2\tx\t1\t4\t2009\r\n", "tagID 'x'"),
        ("10\t2\t2\t31\t4\t2009\r\n", "day does not exist"),
        ("10\t2\t2\t1\t13\t2009\r\n", "month or year out of range"),
        ("\r\n", "blank line"),
    ],
)
def test_fixture_malformed_line_names_its_line(tmp_path, bad_row, message):
    rows = FIXTURE_ROWS + bad_row + "12\t1\t1\t1\t1\t2010\r\n"
    folder = _write_2k(tmp_path / "bad", rows, gz=True)
    with pytest.raises(DataFormatError, match=message) as info:
        read_lastfm_2k(folder, {})
    assert info.value.line == 7
    assert "user_taggedartists.dat.gz" in str(info.value)


def test_fixture_unknown_tag_id_is_an_error(tmp_path):
    folder = _write_2k(tmp_path / "t", FIXTURE_ROWS + "12\t1\t99\t1\t1\t2010\r\n")
    with pytest.raises(DataFormatError, match="tag id 99") as info:
        read_lastfm_2k(folder, {})
    assert info.value.line == 7


def test_options_are_checked(tmp_path):
    folder = _write_2k(tmp_path / "o", FIXTURE_ROWS)
    with pytest.raises(UsageError, match="unknown option 'top_tag'"):
        read_lastfm_2k(folder, {"top_tag": 5})
    with pytest.raises(UsageError, match="top_tags must be >= 1"):
        read_lastfm_2k(folder, {"top_tags": 0})
    with pytest.raises(UsageError, match="min_tag_share"):
        read_lastfm_2k(folder, {"min_tag_share": "2"})


def test_utc_midnight_matches_calendar():
    rng = np.random.default_rng(0)
    year = rng.integers(1900, 2100, 500)
    month = rng.integers(1, 13, 500)
    day = np.array(
        [
            rng.integers(1, calendar.monthrange(y, m)[1] + 1)
            for y, m in zip(year, month, strict=True)
        ]
    )
    got = utc_midnight_seconds(Path("x"), year, month, day, first_row_line=1)
    expected = [
        calendar.timegm((int(y), int(m), int(d), 0, 0, 0))
        for y, m, d in zip(year, month, day, strict=True)
    ]
    assert got.tolist() == expected


def test_prepare_end_to_end_on_fixture(tmp_path):
    folder = _write_2k(tmp_path / "e", FIXTURE_ROWS)
    result = dwrec.prepare(
        "lastfm",
        source=folder,
        out=tmp_path / "out",
        min_user_interactions=1,
        min_item_interactions=1,
    )
    assert result.meta["counts"]["interactions"] == 4
    assert get_source("lastfm").remote[0].sha256.startswith("6738f481")


# --------------------------------------------------------------------------- Last.fm 1K

EVENTS_1K = (
    "user_000001\t2009-05-04T23:08:57Z\tf1b1cf71-bd35-4e99-8624-24a6e15f133a\tDeep Dish\t\tFuck Me Im Famous (Pacha Ibiza)-09-28-2007\n"
    "user_000001\t2009-05-04T13:54:10Z\ta7f7df4a-77d8-4f12-8acd-5c60c93f4de8\t坂本龍一\t\tComposition 0919 (Live_2009_4_15)\n"
    'user_000002\t2009-05-03T10:00:00Z\t\tThe "Quoted" Band\t\tSong\n'
    'user_000002\t2009-05-03T10:05:00Z\t\tThe "Quoted" Band\t\tOther song\n'
)


def _write_1k(folder: Path, text: str, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    name = "userid-timestamp-artid-artname-traid-traname.tsv"
    if gz:
        (folder / (name + ".gz")).write_bytes(gzip.compress(text.encode()))
    else:
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_lastfm_1k_items_are_mbid_or_name(tmp_path):
    raw = read_lastfm_1k(_write_1k(tmp_path / "k", EVENTS_1K, gz=True), {})
    rows = raw.interactions.to_pylist()
    assert [r["item"] for r in rows] == [
        "f1b1cf71-bd35-4e99-8624-24a6e15f133a",
        "a7f7df4a-77d8-4f12-8acd-5c60c93f4de8",
        'The "Quoted" Band',
        'The "Quoted" Band',
    ]
    assert rows[0]["timestamp"] == calendar.timegm((2009, 5, 4, 23, 8, 57))
    titles = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("title").to_pylist(),
            strict=True,
        )
    )
    assert titles["a7f7df4a-77d8-4f12-8acd-5c60c93f4de8"] == "坂本龍一"
    assert all(not d for d in raw.items.column("domains").to_pylist())
    assert any("No domains" in note for note in raw.notes)


def test_lastfm_1k_user_supplied_domains(tmp_path):
    folder = _write_1k(tmp_path / "k", EVENTS_1K)
    mapping = tmp_path / "genres.tsv"
    mapping.write_text(
        'f1b1cf71-bd35-4e99-8624-24a6e15f133a\thouse\nThe "Quoted" Band\trock\n'
        'The "Quoted" Band\tpop\nnot-in-data\tjazz\n'
    )
    raw = read_lastfm_1k(folder, {"artist_domains": str(mapping)})
    domains = dict(
        zip(
            raw.items.column("raw_id").to_pylist(),
            raw.items.column("domains").to_pylist(),
            strict=True,
        )
    )
    assert domains['The "Quoted" Band'] == ["rock", "pop"]
    assert domains["f1b1cf71-bd35-4e99-8624-24a6e15f133a"] == ["house"]
    assert domains["a7f7df4a-77d8-4f12-8acd-5c60c93f4de8"] == []
    assert mapping in raw.source_files


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("user_000003\t2009-05-03 10:00:00\t\tX\t\tY\n", "not in the format"),
        ("user_000003\t2009-05-03T10:00:00Z\t\tX\n", "expected 6 tab-separated fields"),
    ],
)
def test_lastfm_1k_malformed_line(tmp_path, bad, message):
    folder = _write_1k(tmp_path / "b", EVENTS_1K + bad + EVENTS_1K)
    with pytest.raises(DataFormatError, match=message) as info:
        read_lastfm_1k(folder, {})
    assert info.value.line == 5
