"""MovieLens file parsing shared by the readers of :mod:`dwrec.data.sources.movielens`.

Arrow parses every layout (``::`` is first replaced by a control byte that valid files never
contain); only when Arrow rejects a file is it scanned line by line, to name the first bad
line in a :class:`~dwrec.errors.DataFormatError`. Also: the ratings and items tables every
reader returns, and locating the files in a folder.
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

from dwrec.data.raw import find_raw_file, open_binary, read_bytes, require_whole_lines
from dwrec.errors import DataFormatError, UsageError

NO_GENRES = "(no genres listed)"
_SEPARATOR = "\x1f"  # ASCII unit separator: stands in for "::", never in a valid file
INTEGER = re.compile(r"[+-]?\d+\Z")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


def arrow_input(path: Path) -> pa.NativeFile:
    """An Arrow stream over ``path``'s bytes, decompressing gzip (detected by magic bytes)."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return pa.input_stream(str(path), compression="gzip" if magic == b"\x1f\x8b" else None)


def read_table(
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
            line = line_of_row(path, row, skip)
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


def field_checker(
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
                if not INTEGER.match(value) or abs(int(value)) >= 2**63:
                    return f"field {name!r} is not an integer ({value!r})"
            elif pa.types.is_floating(kind) and not _FLOAT.match(value):
                return f"field {name!r} is not a number ({value!r})"
            elif _SEPARATOR in value:
                return "unexpected control byte 0x1f"
        return None

    return check


def _split_double_colon(line: str) -> list[str]:
    return line.split("::")


def split_csv(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def read_double_colon(
    path: Path, columns: dict[str, pa.DataType], encoding: str = "utf-8"
) -> pa.Table:
    """Read a ``::``-separated MovieLens ``.dat`` file (no header, no quoting)."""
    data = read_bytes(path)
    if encoding != "utf-8":
        data = data.decode(encoding).encode("utf-8")
    data = data.replace(b"::", _SEPARATOR.encode())
    checker = field_checker(columns, _split_double_colon)
    return read_table(
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


def interactions_table(ratings: pa.Table) -> pa.Table:
    """The RawData interactions table: integer ids as strings, columns in contract order."""
    return pa.table(
        {
            "user": pc.cast(ratings.column("user"), pa.string()),
            "item": pc.cast(ratings.column("item"), pa.string()),
            "timestamp": ratings.column("timestamp"),
            "rating": ratings.column("rating"),
        }
    )


def genre_lists(genres: pa.ChunkedArray | pa.Array) -> pa.ListArray:
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


def items_table(
    path: Path, ids: pa.ChunkedArray, titles: Any, domains: pa.Array, skip: int
) -> pa.Table:
    """The RawData items table; a movie id listed twice is an error naming its line."""
    ids_np = ids.to_numpy()
    unique, first, counts = np.unique(ids_np, return_index=True, return_counts=True)
    if len(unique) != len(ids_np):
        duplicate = int(unique[counts > 1][0])
        second = int(np.flatnonzero(ids_np == duplicate)[1])
        raise DataFormatError(
            path, f"movie id {duplicate} is listed twice", line_of_row(path, second, skip)
        )
    return pa.table(
        {
            "raw_id": pc.cast(ids, pa.string()),
            "title": titles,
            "domains": domains,
        }
    )


def line_of_row(path: Path, row: int, skip: int) -> int:
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


def locate(root: Path, names: Sequence[str]) -> Path:
    """The ratings file: ``root`` itself when it is a file, else found under ``root``."""
    if root.is_file():
        return root
    return find_raw_file(root, names)  # type: ignore[return-value]


def locate_optional(root: Path, names: Sequence[str], notes: list[str]) -> Path | None:
    """A metadata file under ``root`` (beside it when ``root`` is a single ratings file)."""
    if not root.is_file():
        return find_raw_file(root, names)
    for name in names:
        for candidate in (root.parent / name, root.parent / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    notes.append(f"{' / '.join(names)} not found beside {root.name}: movies have no genres")
    return None


def no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise UsageError(f"{name} takes no reader options, got: {', '.join(sorted(options))}")


def empty_items() -> pa.Table:
    return pa.table(
        {
            "raw_id": pa.array([], pa.string()),
            "title": pa.array([], pa.string()),
            "domains": pa.array([], pa.list_(pa.string())),
        }
    )
