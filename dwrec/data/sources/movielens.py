"""MovieLens readers: 100K, 1M, 10M, 20M, 25M and latest-small (GroupLens Research).

Every reader returns a :class:`~dwrec.data.raw.RawData` with one row per rating, in the
file's order: user and movie ids as strings (the file's integers), ``timestamp`` in seconds
since the epoch (int64, as published), ``rating`` (float32; stars, halves from ML-10M on).

Domains are the movies' genres; a movie with several genres is in each of them. Two
publisher markers mean "no genre" and give the movie no domain: ML-100K's ``unknown``
flag and the ``(no genres listed)`` label of ML-10M and later.

Formats (any file may also be gzip-compressed, ``ratings.dat.gz``):

=================  =======================================  ============================
variant            ratings                                  movies
=================  =======================================  ============================
ML-100K            ``u.data``: tab-separated, no header      ``u.item``: ``|``-separated,
                                                            Latin-1, 19 genre flags named
                                                            by ``u.genre``
ML-1M              ``ratings.dat``: ``::``-separated         ``movies.dat``: ``::``,
                                                            ISO-8859-1, genres ``|``
ML-10M             ``ratings.dat``: ``::``-separated         ``movies.dat``: ``::``, UTF-8
ML-20M/25M/small   ``ratings.csv``: CSV with header          ``movies.csv``: CSV, quoted
                                                            titles, UTF-8
=================  =======================================  ============================

Parsing is done by ``pyarrow.csv`` (multi-threaded, typed): ``::`` is first replaced by a
single control byte that valid files never contain. Only when Arrow rejects a file is it
scanned line by line, to name the first bad line in a :class:`DataFormatError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dwrec.data.raw import RawData, read_bytes
from dwrec.data.sources import RemoteFile, SourceSpec, register
from dwrec.data.sources.movielens_parsing import (
    INTEGER,
    NO_GENRES,
    arrow_input,
    empty_items,
    field_checker,
    genre_lists,
    interactions_table,
    items_table,
    line_of_row,
    locate,
    locate_optional,
    no_options,
    read_double_colon,
    read_table,
    split_csv,
)
from dwrec.errors import DataFormatError

UNKNOWN_GENRE_100K = "unknown"
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
"""ML-100K's genre flags in column order, as its ``u.genre`` lists them."""


RATING_COLUMNS = {
    "user": pa.int64(),
    "item": pa.int64(),
    "rating": pa.float32(),
    "timestamp": pa.int64(),
}
DOMAIN_RULE = "a domain is a genre; a movie with several genres is in each of them"
LICENCE = (
    "GroupLens MovieLens terms: research use; no redistribution without permission; "
    "cite Harper & Konstan, ACM TiiS 5(4) 2015 (see the README in the archive)"
)


# --------------------------------------------------------------------------- readers


def read_ml100k(root: Path, options: dict[str, Any]) -> RawData:
    """MovieLens 100K: ``u.data``, ``u.item`` (Latin-1) and ``u.genre``."""
    no_options("movielens-100k", options)
    notes = [f"the '{UNKNOWN_GENRE_100K}' genre flag means no genre: such movies have no domain"]
    ratings_path = locate(Path(root), ["u.data"])
    columns = {
        "user": pa.int64(),
        "item": pa.int64(),
        "rating": pa.float32(),
        "timestamp": pa.int64(),
    }
    ratings = read_table(
        ratings_path,
        arrow_input(ratings_path),
        columns,
        delimiter="\t",
        quoted=False,
        header=None,
        check_line=field_checker(columns, lambda line: line.split("\t")),
    )
    files = [ratings_path]
    genres = ML100K_GENRES
    genre_path = locate_optional(Path(root), ["u.genre"], notes)
    if genre_path is not None:
        genres = _read_u_genre(genre_path)
        files.append(genre_path)
    item_path = locate_optional(Path(root), ["u.item"], notes)
    items = empty_items() if item_path is None else _read_u_item(item_path, genres)
    if item_path is not None:
        files.append(item_path)
    return RawData(interactions_table(ratings), items, files, DOMAIN_RULE, notes)


def _read_u_genre(path: Path) -> tuple[str, ...]:
    """Genre names by flag position from ``u.genre`` (``name|index`` lines)."""
    by_index: dict[int, str] = {}
    text = read_bytes(path).decode("latin-1")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not INTEGER.match(index) or not name:
            raise DataFormatError(path, f"expected 'genre|index', found {line!r}", number)
        by_index[int(index)] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise DataFormatError(path, f"genre indices are not 0..{len(by_index) - 1}")
    return tuple(by_index[i] for i in range(len(by_index)))


def _read_u_item(path: Path, genres: Sequence[str]) -> pa.Table:
    """``u.item``: id|title|release|video release|IMDb URL|one 0/1 flag per genre."""
    columns: dict[str, pa.DataType] = {
        "item": pa.int64(),
        "title": pa.string(),
        "release": pa.string(),
        "video_release": pa.string(),
        "url": pa.string(),
    }
    columns.update({f"genre_{i}": pa.int8() for i in range(len(genres))})
    text = read_bytes(path).decode("latin-1").encode("utf-8")
    table = read_table(
        path,
        text,
        columns,
        delimiter="|",
        quoted=False,
        header=None,
        check_line=field_checker(columns, lambda line: line.split("|")),
        encoding="latin-1",
    )
    flags = np.stack([table.column(f"genre_{i}").to_numpy() for i in range(len(genres))], axis=1)
    if not np.isin(flags, (0, 1)).all():
        row = int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=1))[0])
        raise DataFormatError(path, "genre flags must be 0 or 1", line_of_row(path, row, 0))
    names = np.array(genres, dtype=object)
    flags[:, names == UNKNOWN_GENRE_100K] = 0
    rows, cols = np.nonzero(flags)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(flags)))])
    domains = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(names[cols].tolist(), pa.string())
    )
    return items_table(path, table.column("item"), table.column("title"), domains, 0)


def _read_dat_movies(path: Path, encoding: str) -> pa.Table:
    columns = {"item": pa.int64(), "title": pa.string(), "genres": pa.string()}
    table = read_double_colon(path, columns, encoding)
    return items_table(
        path, table.column("item"), table.column("title"), genre_lists(table["genres"]), 0
    )


def _dat_reader(name: str, movies_encoding: str) -> Callable[[Path, dict[str, Any]], RawData]:
    """A reader for the ``::`` layout (ML-1M: ISO-8859-1 movies; ML-10M: UTF-8)."""

    def read(root: Path, options: dict[str, Any]) -> RawData:
        no_options(name, options)
        notes: list[str] = []
        ratings_path = locate(Path(root), ["ratings.dat"])
        ratings = read_double_colon(ratings_path, RATING_COLUMNS)
        files = [ratings_path]
        movies_path = locate_optional(Path(root), ["movies.dat"], notes)
        items = empty_items()
        if movies_path is not None:
            items = _read_dat_movies(movies_path, movies_encoding)
            files.append(movies_path)
            notes.append(f"'{NO_GENRES}' means no genre: such movies have no domain")
        return RawData(interactions_table(ratings), items, files, DOMAIN_RULE, notes)

    read.__doc__ = (
        f"{name}: ``ratings.dat`` and ``movies.dat`` ({movies_encoding}), ``::``-separated."
    )
    return read


def read_csv_variant(root: Path, options: dict[str, Any], name: str = "movielens-csv") -> RawData:
    """ML-20M, ML-25M and latest-small: ``ratings.csv`` and ``movies.csv`` with headers."""
    no_options(name, options)
    notes: list[str] = []
    ratings_path = locate(Path(root), ["ratings.csv"])
    ratings = read_table(
        ratings_path,
        arrow_input(ratings_path),
        RATING_COLUMNS,
        delimiter=",",
        quoted=True,
        header=("userId", "movieId", "rating", "timestamp"),
        check_line=field_checker(RATING_COLUMNS, split_csv),
    )
    files = [ratings_path]
    movies_path = locate_optional(Path(root), ["movies.csv"], notes)
    items = empty_items()
    if movies_path is not None:
        columns = {"item": pa.int64(), "title": pa.string(), "genres": pa.string()}
        movies = read_table(
            movies_path,
            arrow_input(movies_path),
            columns,
            delimiter=",",
            quoted=True,
            header=("movieId", "title", "genres"),
            check_line=field_checker(columns, split_csv),
        )
        items = items_table(
            movies_path,
            movies.column("item"),
            movies.column("title"),
            genre_lists(movies["genres"]),
            1,
        )
        files.append(movies_path)
        notes.append(f"'{NO_GENRES}' means no genre: such movies have no domain")
    return RawData(interactions_table(ratings), items, files, DOMAIN_RULE, notes)


def _csv_reader(name: str) -> Callable[[Path, dict[str, Any]], RawData]:
    def read(root: Path, options: dict[str, Any]) -> RawData:
        return read_csv_variant(root, options, name)

    read.__doc__ = read_csv_variant.__doc__
    return read


# --------------------------------------------------------------------------- registry

_BASE_URL = "https://files.grouplens.org/datasets/movielens/"


def _remote(filename: str, sha256: str, size: int, md5: str | None) -> tuple[RemoteFile, ...]:
    return (
        RemoteFile(url=_BASE_URL + filename, sha256=sha256, filename=filename, size=size, md5=md5),
    )


# sha256 and sizes: tensorflow/datasets url_checksums/movielens.txt (100K, 1M, 20M, 25M,
# latest-small); ML-10M: public code that pins both its sha256 and the publisher's md5.
# md5: the publisher's .md5 files (files.grouplens.org/datasets/movielens/*.zip.md5).
_VARIANTS: tuple[dict[str, Any], ...] = (
    dict(
        name="movielens-100k",
        description="MovieLens 100K (1998): 100,000 ratings, 1-5 stars",
        size="100,000 ratings, 943 users, 1,682 movies",
        domains="genres (18; the 'unknown' flag means no domain)",
        reader=read_ml100k,
        remote=_remote(
            "ml-100k.zip",
            "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            4924029,
            "0e33842e24a9c977be4e0107933c0723",
        ),
    ),
    dict(
        name="movielens-1m",
        description="MovieLens 1M (2003): 1,000,209 ratings, 1-5 stars",
        size="1,000,209 ratings, 6,040 users, 3,706 rated movies (3,883 listed)",
        domains="genres (18)",
        reader=_dat_reader("movielens-1m", "iso-8859-1"),
        remote=_remote(
            "ml-1m.zip",
            "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            5917549,
            "c4d9eecfca2ab87c1945afe126590906",
        ),
    ),
    dict(
        name="movielens-10m",
        description="MovieLens 10M (2009): 10,000,054 ratings, half stars 0.5-5",
        size="10,000,054 ratings, 69,878 users, 10,677 movies",
        domains="genres (19; '(no genres listed)' means no domain)",
        reader=_dat_reader("movielens-10m", "utf-8"),
        remote=_remote(
            "ml-10m.zip",
            "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862",
            65566137,
            "ce571fd55effeba0271552578f2648bd",
        ),
    ),
    dict(
        name="movielens-20m",
        description="MovieLens 20M (2015): 20,000,263 ratings, half stars 0.5-5",
        size="20,000,263 ratings, 138,493 users, 26,744 rated movies (27,278 listed)",
        domains="genres (19; '(no genres listed)' means no domain)",
        reader=_csv_reader("movielens-20m"),
        remote=_remote(
            "ml-20m.zip",
            "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
            198702078,
            "cd245b17a1ae2cc31bb14903e1204af3",
        ),
    ),
    dict(
        name="movielens-25m",
        description="MovieLens 25M (2019): 25,000,095 ratings, half stars 0.5-5",
        size="25,000,095 ratings, 162,541 users, 59,047 rated movies (62,423 listed)",
        domains="genres (19; '(no genres listed)' means no domain)",
        reader=_csv_reader("movielens-25m"),
        remote=_remote(
            "ml-25m.zip",
            "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
            261978986,
            "6b51fb2759a8657d3bfcbfc42b592ada",
        ),
    ),
    dict(
        name="movielens-latest-small",
        description="MovieLens latest-small (2018 release): 100,836 ratings, half stars",
        size="100,836 ratings, 610 users, 9,724 rated movies (9,742 listed)",
        domains="genres (19; '(no genres listed)' means no domain)",
        reader=_csv_reader("movielens-latest-small"),
        # GroupLens may refresh "latest" archives; the pin is the September 2018 release.
        remote=_remote(
            "ml-latest-small.zip",
            "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            978202,
            None,
        ),
    ),
)

for _variant in _VARIANTS:
    register(
        SourceSpec(
            family="movielens",
            licence=LICENCE,
            default_min_user=0,
            default_min_item=0,
            **_variant,
        )
    )
