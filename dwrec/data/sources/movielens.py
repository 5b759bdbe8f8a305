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

import csv
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dwrec.data.raw import RawData, find_raw_file, open_binary, read_bytes, require_whole_lines
from dwrec.data.sources import RemoteFile, SourceSpec, register
from dwrec.errors import DataFormatError, UsageError

NO_GENRES = "(no genres listed)"
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

_SEPARATOR = "\x1f"  # ASCII unit separator: stands in for "::", never in a valid file
_INT = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")

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


# --------------------------------------------------------------------------- parsing


def _arrow_input(path: Path) -> pa.NativeFile:
    """An Arrow stream over ``path``'s bytes, decompressing gzip (detected by magic bytes)."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return pa.input_stream(str(path), compression="gzip" if magic == b"\x1f\x8b" else None)


def _read_table(
    path: Path,
    source: pa.NativeFile | bytes,
    columns: dict[str, pa.DataType],
    *,
    delimiter: str,
    quoted: bool,
    header: Sequence[str] | None,
    check_line: Callable[[str], str | None],
    encoding: str = "utf-8",
) -> pa.Table:
    """Parse delimited text into a typed table; bad input -> DataFormatError naming the line.

    ``source`` is the text itself (already in UTF-8 and with ``::`` replaced) or a stream over
    the file. ``check_line(line) -> problem or None`` re-checks one line of the original file,
    only when Arrow fails, so that the error can name the line.
    """
    if header is not None:
        _check_header(path, header, delimiter)
    # A last line without its newline is a cut file, even when its fields still parse.
    require_whole_lines(path, source if isinstance(source, bytes) else None)
    read_options = pacsv.ReadOptions(
        column_names=list(columns), skip_rows=1 if header is not None else 0
    )
    parse_options = pacsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoted else False,
        double_quote=quoted,
        newlines_in_values=False,
        ignore_empty_lines=True,
    )
    convert_options = pacsv.ConvertOptions(
        column_types=columns,
        null_values=[],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    stream = pa.BufferReader(source) if isinstance(source, bytes) else source
    try:
        table = pacsv.read_csv(
            stream,
            read_options=read_options,
            parse_options=parse_options,
            convert_options=convert_options,
        )
    except (pa.ArrowInvalid, OSError) as exc:
        line, problem = _first_bad_line(path, check_line, encoding, 1 if header else 0)
        if line is None:
            raise DataFormatError(path, f"cannot parse ({exc})") from None
        raise DataFormatError(path, problem, line) from None
    finally:
        if not isinstance(source, bytes):
            source.close()
    if quoted:
        _check_no_line_breaks(path, table, 1 if header else 0)
    return table


def _check_no_line_breaks(path: Path, table: pa.Table, skip: int) -> None:
    """Refuse values spanning lines: Arrow lets an unclosed quote swallow the next line."""
    for name in table.column_names:
        column = table.column(name)
        if not pa.types.is_string(column.type):
            continue
        broken = pc.match_substring_regex(column, "[\r\n]").to_numpy(zero_copy_only=False)
        if broken.any():
            row = int(np.flatnonzero(broken)[0])
            line = _line_of_row(path, row, skip)
            raise DataFormatError(
                path, f"expected {table.num_columns} fields; is a quote left unclosed?", line
            )


def _check_header(path: Path, expected: Sequence[str], delimiter: str) -> None:
    first_line = next(_numbered_lines(path), (1, b""))[1]
    first = first_line.decode("utf-8", "replace").rstrip("\r\n").lstrip("\ufeff")
    names = [name.strip('"') for name in first.split(delimiter)]
    if names != list(expected):
        raise DataFormatError(
            path, f"expected the header {delimiter.join(expected)!r}, found {first[:80]!r}", 1
        )


def _first_bad_line(
    path: Path, check_line: Callable[[str], str | None], encoding: str, skip: int
) -> tuple[int | None, str]:
    """(1-based line number, problem) of the first line ``check_line`` rejects."""
    for number, raw_line in _numbered_lines(path):
        if number <= skip:
            continue
        text_bytes = raw_line.rstrip(b"\r\n")
        if not text_bytes:
            continue
        try:
            text = text_bytes.decode(encoding)
        except UnicodeDecodeError as exc:
            return number, f"cannot decode as {encoding}: {exc.reason}"
        problem = check_line(text)
        if problem is not None:
            return number, f"{problem}: {text[:120]!r}"
    return None, ""


def _numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based number, raw bytes) of each line, streamed; a truncated gzip is a clear error."""
    try:
        with open_binary(path) as handle:
            yield from enumerate(handle, start=1)
    except (EOFError, OSError, zlib.error) as exc:  # zlib.error: corrupt gzip data
        raise DataFormatError(path, f"cannot read ({exc}); is the file truncated?") from None


def _field_checker(
    columns: dict[str, pa.DataType], split: Callable[[str], list[str]]
) -> Callable[[str], str | None]:
    """A ``check_line`` that mirrors Arrow's rules: field count, then each field's type."""
    names = list(columns)

    def check(line: str) -> str | None:
        try:
            fields = split(line)
        except csv.Error as exc:  # e.g. a lone carriage return inside the line
            return f"not valid CSV ({exc})"
        if len(fields) != len(names):
            return f"expected {len(names)} fields, found {len(fields)}"
        for name, value in zip(names, fields, strict=True):
            kind = columns[name]
            if pa.types.is_integer(kind):
                if not _INT.match(value) or abs(int(value)) >= 2**63:
                    return f"field {name!r} is not an integer ({value!r})"
            elif pa.types.is_floating(kind) and not _FLOAT.match(value):
                return f"field {name!r} is not a number ({value!r})"
            elif _SEPARATOR in value:
                return "unexpected control byte 0x1f"
        return None

    return check


def _split_double_colon(line: str) -> list[str]:
    return line.split("::")


def _split_csv(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _read_double_colon(
    path: Path, columns: dict[str, pa.DataType], encoding: str = "utf-8"
) -> pa.Table:
    """Read a ``::``-separated MovieLens ``.dat`` file (no header, no quoting)."""
    data = read_bytes(path)
    if encoding != "utf-8":
        data = data.decode(encoding).encode("utf-8")
    data = data.replace(b"::", _SEPARATOR.encode())
    checker = _field_checker(columns, _split_double_colon)
    return _read_table(
        path,
        data,
        columns,
        delimiter=_SEPARATOR,
        quoted=False,
        header=None,
        check_line=checker,
        encoding=encoding,
    )


# --------------------------------------------------------------------------- tables


def _interactions(ratings: pa.Table) -> pa.Table:
    """The RawData interactions table: integer ids as strings, columns in contract order."""
    return pa.table(
        {
            "user": pc.cast(ratings.column("user"), pa.string()),
            "item": pc.cast(ratings.column("item"), pa.string()),
            "timestamp": ratings.column("timestamp"),
            "rating": ratings.column("rating"),
        }
    )


def _genre_lists(genres: pa.ChunkedArray | pa.Array) -> pa.ListArray:
    """``Action|Comedy`` strings -> lists of genres, without the no-genre markers."""
    lists = pc.split_pattern(genres, "|")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    values = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = pc.and_(pc.not_equal(values, NO_GENRES), pc.not_equal(values, "")).to_numpy(
        zero_copy_only=False
    )
    counts = np.bincount(parents[keep], minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.filter(pa.array(keep)))


def _items(path: Path, ids: pa.ChunkedArray, titles: Any, domains: pa.Array, skip: int) -> pa.Table:
    """The RawData items table; a movie id listed twice is an error naming its line."""
    ids_np = ids.to_numpy()
    unique, first, counts = np.unique(ids_np, return_index=True, return_counts=True)
    if len(unique) != len(ids_np):
        duplicate = int(unique[counts > 1][0])
        second = int(np.flatnonzero(ids_np == duplicate)[1])
        raise DataFormatError(
            path, f"movie id {duplicate} is listed twice", _line_of_row(path, second, skip)
        )
    return pa.table(
        {
            "raw_id": pc.cast(ids, pa.string()),
            "title": titles,
            "domains": domains,
        }
    )


def _line_of_row(path: Path, row: int, skip: int) -> int:
    """The 1-based line number of data row ``row`` (0-based, empty lines not counted)."""
    seen = -1
    for number, raw_line in _numbered_lines(path):
        if number <= skip or not raw_line.strip(b"\r\n"):
            continue
        seen += 1
        if seen == row:
            return number
    return 0


# --------------------------------------------------------------------------- locating


def _locate(root: Path, names: Sequence[str]) -> Path:
    """The ratings file: ``root`` itself when it is a file, else found under ``root``."""
    if root.is_file():
        return root
    return find_raw_file(root, names)  # type: ignore[return-value]


def _locate_optional(root: Path, names: Sequence[str], notes: list[str]) -> Path | None:
    """A metadata file under ``root`` (beside it when ``root`` is a single ratings file)."""
    if not root.is_file():
        return find_raw_file(root, names)
    for name in names:
        for candidate in (root.parent / name, root.parent / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    notes.append(f"{' / '.join(names)} not found beside {root.name}: movies have no genres")
    return None


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise UsageError(f"{name} takes no reader options, got: {', '.join(sorted(options))}")


def _empty_items() -> pa.Table:
    return pa.table(
        {
            "raw_id": pa.array([], pa.string()),
            "title": pa.array([], pa.string()),
            "domains": pa.array([], pa.list_(pa.string())),
        }
    )


# --------------------------------------------------------------------------- readers


def read_ml100k(root: Path, options: dict[str, Any]) -> RawData:
    """MovieLens 100K: ``u.data``, ``u.item`` (Latin-1) and ``u.genre``."""
    _no_options("movielens-100k", options)
    notes = [f"the '{UNKNOWN_GENRE_100K}' genre flag means no genre: such movies have no domain"]
    ratings_path = _locate(Path(root), ["u.data"])
    columns = {
        "user": pa.int64(),
        "item": pa.int64(),
        "rating": pa.float32(),
        "timestamp": pa.int64(),
    }
    ratings = _read_table(
        ratings_path,
        _arrow_input(ratings_path),
        columns,
        delimiter="\t",
        quoted=False,
        header=None,
        check_line=_field_checker(columns, lambda line: line.split("\t")),
    )
    files = [ratings_path]
    genres = ML100K_GENRES
    genre_path = _locate_optional(Path(root), ["u.genre"], notes)
    if genre_path is not None:
        genres = _read_u_genre(genre_path)
        files.append(genre_path)
    item_path = _locate_optional(Path(root), ["u.item"], notes)
    items = _empty_items() if item_path is None else _read_u_item(item_path, genres)
    if item_path is not None:
        files.append(item_path)
    return RawData(_interactions(ratings), items, files, DOMAIN_RULE, notes)


def _read_u_genre(path: Path) -> tuple[str, ...]:
    """Genre names by flag position from ``u.genre`` (``name|index`` lines)."""
    by_index: dict[int, str] = {}
    text = read_bytes(path).decode("latin-1")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not _INT.match(index) or not name:
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
    table = _read_table(
        path,
        text,
        columns,
        delimiter="|",
        quoted=False,
        header=None,
        check_line=_field_checker(columns, lambda line: line.split("|")),
        encoding="latin-1",
    )
    flags = np.stack([table.column(f"genre_{i}").to_numpy() for i in range(len(genres))], axis=1)
    if not np.isin(flags, (0, 1)).all():
        row = int(np.flatnonzero(~np.isin(flags, (0, 1)).all(axis=1))[0])
        raise DataFormatError(path, "genre flags must be 0 or 1", _line_of_row(path, row, 0))
    names = np.array(genres, dtype=object)
    flags[:, names == UNKNOWN_GENRE_100K] = 0
    rows, cols = np.nonzero(flags)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(flags)))])
    domains = pa.ListArray.from_arrays(
        pa.array(offsets.astype(np.int32)), pa.array(names[cols].tolist(), pa.string())
    )
    return _items(path, table.column("item"), table.column("title"), domains, 0)


def _read_dat_movies(path: Path, encoding: str) -> pa.Table:
    columns = {"item": pa.int64(), "title": pa.string(), "genres": pa.string()}
    table = _read_double_colon(path, columns, encoding)
    return _items(
        path, table.column("item"), table.column("title"), _genre_lists(table["genres"]), 0
    )


def _dat_reader(name: str, movies_encoding: str) -> Callable[[Path, dict[str, Any]], RawData]:
    """A reader for the ``::`` layout (ML-1M: ISO-8859-1 movies; ML-10M: UTF-8)."""

    def read(root: Path, options: dict[str, Any]) -> RawData:
        _no_options(name, options)
        notes: list[str] = []
        ratings_path = _locate(Path(root), ["ratings.dat"])
        ratings = _read_double_colon(ratings_path, RATING_COLUMNS)
        files = [ratings_path]
        movies_path = _locate_optional(Path(root), ["movies.dat"], notes)
        items = _empty_items()
        if movies_path is not None:
            items = _read_dat_movies(movies_path, movies_encoding)
            files.append(movies_path)
            notes.append(f"'{NO_GENRES}' means no genre: such movies have no domain")
        return RawData(_interactions(ratings), items, files, DOMAIN_RULE, notes)

    read.__doc__ = (
        f"{name}: ``ratings.dat`` and ``movies.dat`` ({movies_encoding}), ``::``-separated."
    )
    return read


def read_csv_variant(root: Path, options: dict[str, Any], name: str = "movielens-csv") -> RawData:
    """ML-20M, ML-25M and latest-small: ``ratings.csv`` and ``movies.csv`` with headers."""
    _no_options(name, options)
    notes: list[str] = []
    ratings_path = _locate(Path(root), ["ratings.csv"])
    ratings = _read_table(
        ratings_path,
        _arrow_input(ratings_path),
        RATING_COLUMNS,
        delimiter=",",
        quoted=True,
        header=("userId", "movieId", "rating", "timestamp"),
        check_line=_field_checker(RATING_COLUMNS, _split_csv),
    )
    files = [ratings_path]
    movies_path = _locate_optional(Path(root), ["movies.csv"], notes)
    items = _empty_items()
    if movies_path is not None:
        columns = {"item": pa.int64(), "title": pa.string(), "genres": pa.string()}
        movies = _read_table(
            movies_path,
            _arrow_input(movies_path),
            columns,
            delimiter=",",
            quoted=True,
            header=("movieId", "title", "genres"),
            check_line=_field_checker(columns, _split_csv),
        )
        items = _items(
            movies_path,
            movies.column("item"),
            movies.column("title"),
            _genre_lists(movies["genres"]),
            1,
        )
        files.append(movies_path)
        notes.append(f"'{NO_GENRES}' means no genre: such movies have no domain")
    return RawData(_interactions(ratings), items, files, DOMAIN_RULE, notes)


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
