"""Last.fm readers: HetRec 2011 Last.fm 2K (``lastfm``) and Last.fm 1K listening events
(``lastfm-1k``).

``lastfm``: the interaction sequence is the users' timestamped tag assignments
(``user_taggedartists-timestamps.dat``, millisecond timestamps) or, when that file is absent,
``user_taggedartists.dat`` whose day/month/year dates are read as 00:00 UTC. The tags one
user gives one artist at the same time are one interaction. Items are artists; an artist's
domains are its most used tags among the dataset's most used tags (rule in
:func:`artist_domains`). ``user_artists.dat`` (listening counts, no time) is not used.

``lastfm-1k``: every listening event of ``userid-timestamp-artid-artname-traid-traname.tsv``
is an interaction; the item is the artist (MusicBrainz id, or the name where the id is
empty). The files carry no genre or tag, so items have no domains unless the user supplies
an ``artist_domains`` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.data.raw import RawData, find_raw_file, read_bytes
from dwrec.data.sources import RemoteFile, SourceSpec, register
from dwrec.data.sources._parsing import (
    decode_text,
    group_lists,
    parse_timestamps,
    raise_at_first,
    read_delimited,
    require_present,
    resolve_options,
)
from dwrec.errors import UsageError

TIMESTAMPS_FILE = "user_taggedartists-timestamps.dat"
DATED_FILE = "user_taggedartists.dat"

LASTFM_2K_DEFAULTS: dict[str, Any] = {
    "top_tags": 20,
    "max_domains_per_artist": 3,
    "min_tag_share": 0.1,
    "exclude_tags": ("seen live",),
}
"""``exclude_tags``: "seen live" says how a user relates to an artist, not what the artist
is, yet it is the 20th most used tag; it is left out of the domain ranking by default."""

LASTFM_1K_DEFAULTS: dict[str, Any] = {"artist_domains": None}


# --------------------------------------------------------------------------- HetRec 2K


def read_lastfm_2k(folder: Path, options: dict[str, Any]) -> RawData:
    """Read the HetRec 2011 Last.fm 2K files under ``folder`` (extracted archive or folder)."""
    opts = _check_2k_options(resolve_options("lastfm", options, LASTFM_2K_DEFAULTS))
    stamps_path = find_raw_file(folder, [TIMESTAMPS_FILE], required=False)
    notes = []
    if stamps_path is not None:
        users, artists, tags, event_time = _read_timestamped(stamps_path)
        seconds = np.floor_divide(event_time, 1000)
        source = stamps_path
        notes.append(
            f"Timestamps: {TIMESTAMPS_FILE} (milliseconds, truncated to seconds; the "
            "publisher's values are mostly local midnights of the tagging day, Europe/Madrid)."
        )
    else:
        source = find_raw_file(folder, [DATED_FILE])
        users, artists, tags, event_time = _read_dated(source)
        seconds = event_time
        notes.append(
            f"{TIMESTAMPS_FILE} not found: timestamps are the day/month/year dates of "
            f"{DATED_FILE} at 00:00 UTC, so one user's events of one day share a timestamp "
            "and keep the file's order (by artist id)."
        )
    n_old = int(np.count_nonzero(seconds < _EPOCH_2002))
    if n_old:
        notes.append(
            f"{n_old} tag assignments are dated before 2002 (Last.fm began in 2002); kept as "
            "in the file."
        )
    first_of_event = collapse_events(users, artists, event_time)
    notes.append(
        f"Interactions are tag events: the {len(users):,} tag assignments were collapsed to "
        f"{len(first_of_event):,} (user, artist, time) events; the several tags one user gives "
        "one artist at the same time are one interaction, not repeats."
    )
    interactions = pa.table(
        {
            "user": pa.array(users[first_of_event]).cast(pa.string()),
            "item": pa.array(artists[first_of_event]).cast(pa.string()),
            "timestamp": pa.array(seconds[first_of_event], pa.int64()),
            "rating": pa.nulls(len(first_of_event), pa.float32()),
        }
    )
    artists_path = find_raw_file(folder, ["artists.dat"])
    tags_path = find_raw_file(folder, ["tags.dat"])
    artist_names, artist_encoding = _read_id_names(artists_path, "id", "name", extra_columns=2)
    tag_names, tag_encoding = _read_id_names(tags_path, "tagID", "tagValue")
    notes.append(
        f"Text encodings detected: artists.dat {artist_encoding}, tags.dat {tag_encoding}."
    )
    unknown_tags = np.setdiff1d(np.unique(tags), np.fromiter(tag_names, dtype=np.int64))
    if len(unknown_tags):
        raise_at_first(
            source,
            np.isin(tags, unknown_tags),
            f"tag id {int(unknown_tags[0])} is not in {tags_path.name}",
            first_row_line=2,
        )
    domain_artists, domain_tags, top_tag_ids = artist_domains(
        artists,
        tags,
        top_tags=opts["top_tags"],
        max_domains_per_artist=opts["max_domains_per_artist"],
        min_tag_share=opts["min_tag_share"],
        excluded_tag_ids=_tag_ids_named(tag_names, opts["exclude_tags"]),
    )
    top_names = [tag_names[int(t)] for t in top_tag_ids]
    notes.append(_domain_note(opts, top_names))
    items = _artist_items(artists, artist_names, tag_names, domain_artists, domain_tags)
    n_unnamed = len(np.setdiff1d(np.unique(artists), np.fromiter(artist_names, np.int64)))
    if n_unnamed:
        notes.append(f"{n_unnamed} tagged artists are missing from artists.dat: no title.")
    notes.append("user_artists.dat (listening counts without time) is not used.")
    return RawData(
        interactions=interactions,
        items=items,
        source_files=[source, artists_path, tags_path],
        domain_rule=(
            f"an artist's domains are its most used tags among the dataset's top "
            f"{opts['top_tags']} tags (see notes)"
        ),
        notes=notes,
    )


_EPOCH_2002 = 1009843200  # 2002-01-01T00:00:00Z


def _check_2k_options(opts: dict[str, Any]) -> dict[str, Any]:
    if opts["top_tags"] < 1:
        raise UsageError(f"lastfm: option top_tags must be >= 1, got {opts['top_tags']}")
    if opts["max_domains_per_artist"] < 1:
        raise UsageError(
            f"lastfm: option max_domains_per_artist must be >= 1, got {opts['max_domains_per_artist']}"
        )
    if not 0.0 <= opts["min_tag_share"] <= 1.0:
        raise UsageError(
            f"lastfm: option min_tag_share must be in [0, 1], got {opts['min_tag_share']}"
        )
    return opts


def _domain_note(opts: dict[str, Any], top_names: list[str]) -> str:
    excluded = ", ".join(repr(t) for t in opts["exclude_tags"]) or "none"
    return (
        f"Domains: the top {opts['top_tags']} tags by number of tag assignments in the whole "
        f"file (ties: lower tag id first; excluded: {excluded}) are "
        f"{', '.join(top_names)}. Each artist gets its most used of these tags, plus up to "
        f"{opts['max_domains_per_artist'] - 1} more of them that each account for at least "
        f"{opts['min_tag_share']:.0%} of all the artist's tag assignments (ties: higher-ranked "
        "tag first); artists never given one of these tags have no domain. Counted on the raw "
        "file, before any filter."
    )


def _read_dated(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, artist, tag, seconds at 00:00 UTC of the day) per line of user_taggedartists.dat."""
    columns = {name: pa.int64() for name in ("userID", "artistID", "tagID", "day", "month", "year")}
    table = read_delimited(path, columns, delimiter="\t", header=True)
    day, month, year = (table.column(c).to_numpy() for c in ("day", "month", "year"))
    seconds = utc_midnight_seconds(path, year, month, day, first_row_line=2)
    return (*(table.column(c).to_numpy() for c in ("userID", "artistID", "tagID")), seconds)


def _read_timestamped(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, artist, tag, milliseconds) per line of user_taggedartists-timestamps.dat."""
    columns = {name: pa.int64() for name in ("userID", "artistID", "tagID", "timestamp")}
    table = read_delimited(path, columns, delimiter="\t", header=True)
    return tuple(table.column(c).to_numpy() for c in columns)  # type: ignore[return-value]


def utc_midnight_seconds(
    path: Path, year: np.ndarray, month: np.ndarray, day: np.ndarray, first_row_line: int
) -> np.ndarray:
    """Seconds since the epoch of 00:00 UTC on each (year, month, day); int64.

    An impossible date (month 13, 31 April, ...) raises :class:`DataFormatError` at its line.
    """
    month_ok = (month >= 1) & (month <= 12) & (year >= 1) & (year <= 9999)
    raise_at_first(path, ~month_ok, "month or year out of range", first_row_line)
    months = ((year - 1970) * 12 + (month - 1)).astype("datetime64[M]")
    dates = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    day_ok = (day >= 1) & (dates.astype("datetime64[M]") == months)
    raise_at_first(path, ~day_ok, "day does not exist in that month", first_row_line)
    return dates.astype(np.int64) * 86400


def collapse_events(users: np.ndarray, artists: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row indices (ascending) of the first row of each distinct (user, artist, time)."""
    n = len(users)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), times, artists, users))
    u, a, t = users[order], artists[order], times[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (u[1:] != u[:-1]) | (a[1:] != a[:-1]) | (t[1:] != t[:-1])
    return np.sort(order[starts])


def artist_domains(
    artists: np.ndarray,
    tags: np.ndarray,
    *,
    top_tags: int,
    max_domains_per_artist: int,
    min_tag_share: float,
    excluded_tag_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each artist's domain tags from its tag assignments (one row per assignment).

    Rule: rank tags by number of assignments (ties: lower tag id first), drop the excluded
    ones, keep the first ``top_tags``. For each artist, order its top tags by its own count
    of them (ties: higher-ranked tag first); keep the first always and each next one (up to
    ``max_domains_per_artist`` in all) whose count is at least ``min_tag_share`` of all the
    artist's assignments (every tag counts in that total).

    Returns (artist id per kept pair, tag id per kept pair, the top tag ids in rank order).
    """
    tag_ids, tag_counts = np.unique(tags, return_counts=True)
    ranked = tag_ids[np.lexsort((tag_ids, -tag_counts))]
    ranked = ranked[~np.isin(ranked, excluded_tag_ids)]
    top = ranked[:top_tags]
    rank_of = {int(tag): rank for rank, tag in enumerate(top)}
    is_top = np.isin(tags, top)
    artist_ids, artist_totals = np.unique(artists, return_counts=True)
    pair_artist_tag, pair_counts = np.unique(
        np.stack([artists[is_top], tags[is_top]], axis=1), axis=0, return_counts=True
    )
    if len(pair_counts) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), top
    pair_artist, pair_tag = pair_artist_tag[:, 0], pair_artist_tag[:, 1]
    pair_rank = np.array([rank_of[int(t)] for t in pair_tag])
    order = np.lexsort((pair_rank, -pair_counts, pair_artist))
    pair_artist, pair_tag, pair_counts = pair_artist[order], pair_tag[order], pair_counts[order]
    first_of_artist = np.ones(len(order), dtype=bool)
    first_of_artist[1:] = pair_artist[1:] != pair_artist[:-1]
    group_start = np.maximum.accumulate(np.where(first_of_artist, np.arange(len(order)), 0))
    position = np.arange(len(order)) - group_start
    totals = artist_totals[np.searchsorted(artist_ids, pair_artist)]
    keep = (position == 0) | (
        (position < max_domains_per_artist) & (pair_counts >= min_tag_share * totals)
    )
    return pair_artist[keep], pair_tag[keep], top


def _tag_ids_named(tag_names: dict[int, str], names: tuple[str, ...]) -> np.ndarray:
    wanted = {name.strip().lower() for name in names}
    return np.array(
        [tag for tag, name in tag_names.items() if name.strip().lower() in wanted], np.int64
    )


def _read_id_names(
    path: Path, id_column: str, name_column: str, extra_columns: int = 0
) -> tuple[dict[int, str], str]:
    """{id: name} of a small tab-separated file with a header; UTF-8, else Latin-1."""
    text, encoding = decode_text(read_bytes(path))
    columns: dict[str, pa.DataType] = {id_column: pa.int64(), name_column: pa.string()}
    for index in range(extra_columns):
        columns[f"extra{index}"] = pa.string()
    table = read_delimited(
        path,
        columns,
        delimiter="\t",
        header=True,
        keep=[id_column, name_column],
        data=text.encode("utf-8"),
    )
    ids = table.column(id_column).to_numpy()
    _, first = np.unique(ids, return_index=True)
    duplicate = np.ones(len(ids), dtype=bool)
    duplicate[first] = False
    raise_at_first(path, duplicate, f"{id_column} appears twice", first_row_line=2)
    return dict(zip(ids.tolist(), table.column(name_column).to_pylist(), strict=True)), encoding


def _artist_items(
    artists: np.ndarray,
    artist_names: dict[int, str],
    tag_names: dict[int, str],
    domain_artists: np.ndarray,
    domain_tags: np.ndarray,
) -> pa.Table:
    all_ids = np.union1d(np.fromiter(artist_names, np.int64), np.unique(artists))
    domains = group_lists(
        np.searchsorted(all_ids, domain_artists),
        pa.array([tag_names[int(t)] for t in domain_tags], pa.string()),
        len(all_ids),
    )
    return pa.table(
        {
            "raw_id": pa.array(all_ids).cast(pa.string()),
            "title": pa.array([artist_names.get(int(a)) for a in all_ids], pa.string()),
            "domains": domains,
        }
    )


# --------------------------------------------------------------------------- Last.fm 1K

EVENTS_1K = "userid-timestamp-artid-artname-traid-traname.tsv"
EVENT_COLUMNS_1K = {
    name: pa.string() for name in ("userid", "timestamp", "artid", "artname", "traid", "traname")
}


def read_lastfm_1k(folder: Path, options: dict[str, Any]) -> RawData:
    """Read the Last.fm 1K listening events under ``folder`` (extracted archive or folder)."""
    opts = resolve_options("lastfm-1k", options, LASTFM_1K_DEFAULTS)
    path = find_raw_file(folder, [EVENTS_1K])
    table = read_delimited(
        path, EVENT_COLUMNS_1K, delimiter="\t", header=False, keep=list(EVENT_COLUMNS_1K)[:4]
    )
    require_present(path, table, ["userid", "timestamp"])
    seconds = parse_timestamps(
        path, table.column("timestamp"), "%Y-%m-%dT%H:%M:%SZ", first_row_line=1, what="timestamp"
    )
    artid, artname = table.column("artid"), table.column("artname")
    item = pc.if_else(pc.equal(artid, ""), artname, artid)
    known = pc.not_equal(item, "")
    n_unknown = len(item) - pc.sum(known).as_py() if len(item) else 0
    events = pa.table(
        {
            "user": table.column("userid"),
            "item": item,
            "timestamp": pa.array(seconds, pa.int64()),
            "rating": pa.nulls(len(item), pa.float32()),
            "artname": artname,
        }
    ).filter(known)
    notes = [
        "Interactions are listening events (every play, repeats included; --dedupe keeps "
        "each user's first play of an artist). Timestamps are the file's UTC ISO times.",
        "Item = artist: its MusicBrainz id, or its name where the id is empty; the title is "
        "the first name seen with it.",
    ]
    if n_unknown:
        notes.append(f"{n_unknown} events without artist id or name were skipped.")
    titles = events.group_by("item", use_threads=False).aggregate([("artname", "first")])
    items = pa.table(
        {
            "raw_id": titles.column("item"),
            "title": titles.column("artname_first"),
            "domains": pa.nulls(titles.num_rows, pa.list_(pa.string())),
        }
    )
    sources = [path]
    domain_rule = "none: the Last.fm 1K files carry no genre or tag"
    if opts["artist_domains"]:
        items, domain_path = _attach_artist_domains(items, Path(opts["artist_domains"]))
        sources.append(domain_path)
        domain_rule = f"the artist's domains listed in {domain_path.name} (user-supplied)"
        notes.append(
            f"Domains from the user-supplied file {domain_path} (artist<TAB>domain lines)."
        )
    else:
        notes.append(
            "No domains: the files carry no genre or tag. Pass the option "
            "artist_domains=FILE (lines 'artist<TAB>domain', artist = MusicBrainz id or name "
            "as above) to assign them."
        )
    return RawData(
        interactions=events.drop_columns(["artname"]),
        items=items,
        source_files=sources,
        domain_rule=domain_rule,
        notes=notes,
    )


def _attach_artist_domains(items: pa.Table, path: Path) -> tuple[pa.Table, Path]:
    if not path.is_file():
        raise UsageError(f"lastfm-1k: option artist_domains={path}: no such file")
    table = read_delimited(
        path, {"artist": pa.string(), "domain": pa.string()}, delimiter="\t", header=False
    )
    require_present(path, table, ["artist", "domain"])
    index = pc.index_in(table.column("artist"), value_set=items.column("raw_id"))
    matched = pc.is_valid(index)
    table, index = table.filter(matched), pc.drop_null(index)
    domains = group_lists(
        index.to_numpy(zero_copy_only=False),
        table.column("domain").combine_chunks(),
        items.num_rows,
    )
    return items.set_column(items.schema.get_field_index("domains"), "domains", domains), path


# --------------------------------------------------------------------------- registration

register(
    SourceSpec(
        name="lastfm",
        family="lastfm",
        description="HetRec 2011 Last.fm 2K: users' timestamped tag assignments to artists",
        domains=(
            "artist tags: each artist's most used tags among the dataset's top 20 "
            "(option top_tags; 'seen live' excluded)"
        ),
        licence=(
            "non-commercial use (readme.txt in the archive); commercial use: contact Last.fm; "
            "cite Last.fm and the HetRec 2011 workshop (Cantador et al., RecSys 2011)"
        ),
        size=(
            "186,479 tag assignments, 1,892 users, 12,523 tagged artists (17,632 in "
            "artists.dat), 11,946 tags"
        ),
        reader=read_lastfm_2k,
        remote=(
            RemoteFile(
                url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
                sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
                filename="hetrec2011-lastfm-2k.zip",
            ),
        ),
        default_min_user=5,
        default_min_item=5,
        extra={"options": dict(LASTFM_2K_DEFAULTS)},
    )
)

register(
    SourceSpec(
        name="lastfm-1k",
        family="lastfm",
        description="Last.fm 1K (Celma 2010): every listening event of ~1,000 users to 2009",
        domains="none in the files; option artist_domains=FILE supplies them",
        licence=(
            "non-commercial use, distributed with permission of Last.fm (README.txt in the "
            "archive); cite O. Celma, Music Recommendation and Discovery, Springer 2010"
        ),
        size="19,150,868 listening events, 992 users, 107,528 artists with MBID + 69,420 without",
        reader=read_lastfm_1k,
        default_min_user=5,
        default_min_item=5,
        manual_download=(
            "Download lastfm-dataset-1K.tar.gz from "
            "http://ocelma.net/MusicRecommendationDataset/lastfm-1K.html "
            "(http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-1K.tar.gz; no archive "
            "checksum is published: the README gives MD5 64747b21563e3d2aa95751e0ddc46b68 for "
            "the events TSV) and pass it, or its extracted folder, with --source."
        ),
        extra={"options": dict(LASTFM_1K_DEFAULTS)},
    )
)
