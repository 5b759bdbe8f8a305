"""Fast, strict parsing of line-oriented raw files (JSON lines and tab/comma-separated text).

Shared by the Last.fm, Amazon and Yelp readers. Files are read in blocks of whole lines
(gzip is decompressed transparently) and each block is parsed by pyarrow, so a
multi-gigabyte file never sits in memory as text and no Python code runs per line unless a
block fails to parse. Then, and only then, that block is scanned line by line to name the
first bad line.

Strictness contract, relied on by the readers: every non-blank line is exactly one record
and blank lines are an error (except at the end of the file). Hence **row r of a returned
table comes from line r + 1 of the file** (r + 2 when the file has a header line), and a
reader that finds a bad value in row r can name its line without re-reading the file.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from dwrec.data.raw import open_binary, require_whole_lines
from dwrec.errors import DataFormatError, UsageError

BLOCK_BYTES = 64 << 20
"""Bytes of text parsed at once: large enough for pyarrow's threads, small enough for memory."""


def iter_blocks(path: Path, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[int, bytes, bool]]:
    """Yield (number of the block's first line, block, is_final) for blocks of whole lines.

    Each block but the final one ends with a newline; the final one has trailing blank
    lines removed (an empty file yields nothing).
    """
    first_line = 1
    carry = b""
    pending: bytes | None = None
    try:
        with open_binary(path) as handle:
            while chunk := handle.read(block_bytes):
                cut = chunk.rfind(b"\n") + 1
                if cut == 0:
                    carry += chunk
                    continue
                if pending is not None:
                    yield first_line, pending, False
                    first_line += pending.count(b"\n")
                # One copy per block: the previous tail joined to this chunk's whole lines.
                pending = b"".join((carry, memoryview(chunk)[:cut]))
                carry = chunk[cut:]
    except (EOFError, OSError, zlib.error) as exc:  # zlib.error: corrupt gzip data
        raise DataFormatError(path, f"cannot read ({exc}); is the file truncated?") from None
    if carry.strip():
        # Every line ends with a newline; a last line without one was cut (see
        # dwrec.data.raw.cut_last_line), even when what is left of it still parses.
        line = first_line + (pending.count(b"\n") if pending is not None else 0)
        raise DataFormatError(
            path,
            "the last line has no line ending: the file looks cut short (an interrupted "
            "download or copy?); get the file again",
            line,
        )
    final = ((pending or b"") + carry).rstrip()
    if final:
        yield first_line, final, True


def block_lines(block: bytes) -> list[bytes]:
    """The lines of a block from :func:`iter_blocks`, without line endings (LF or CRLF)."""
    lines = block.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _count_lines(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


# --------------------------------------------------------------------------- JSON lines

_PY_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "int64": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "list<item: string>": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "list<item: list<item: string>>": lambda v: (
        isinstance(v, list)
        and all(isinstance(p, list) and all(isinstance(x, str) for x in p) for p in v)
    ),
}


def _json_line_problem(line: bytes, schema: pa.Schema) -> str | None:
    """Why one JSON line is malformed for ``schema``, or None when it is fine."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError as exc:
        return f"cannot decode as UTF-8: {exc.reason}"
    except json.JSONDecodeError as exc:
        return f"not one JSON object ({exc.msg} at column {exc.colno})"
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    for field in schema:
        value = record.get(field.name)
        check = _PY_TYPES.get(str(field.type))
        if value is not None and check is not None and not check(value):
            return f"field {field.name!r} should be {field.type}, got {value!r:.60}"
    return None


def read_json_lines(path: Path, schema: pa.Schema, block_bytes: int = BLOCK_BYTES) -> pa.Table:
    """The ``schema`` fields of a JSON-lines file, one row per line, in file order.

    Other fields are ignored; a missing field is null. Raises :class:`DataFormatError` naming
    the line for a line that is not exactly one JSON object, a field of the wrong type, or a
    blank line before the end of the file.
    """
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    read_options = pa_json.ReadOptions(block_size=max(1 << 20, min(block_bytes, 1 << 30)))
    tables = []
    for first_line, block, _ in iter_blocks(path, block_bytes):
        if not block.lstrip().startswith(b"{"):
            # Every valid line is an object; and pyarrow 26's JSON reader crashes the process
            # (SIGSEGV) on input whose first value is ``null``, so such a block never reaches it.
            _raise_json_problem(path, block, first_line, schema, "the first line is not an object")
        error = None
        try:
            table = pa_json.read_json(
                pa.BufferReader(block), read_options=read_options, parse_options=options
            )
            # Arrow's JSON parser copies string bytes without checking UTF-8; a full
            # validation finds invalid UTF-8 here, so the line scan below can name the line.
            table.validate(full=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            error, table = str(exc), None
        if table is None or table.num_rows != _count_lines(block):
            _raise_json_problem(path, block, first_line, schema, error)
        tables.append(table.select(schema.names))
    if not tables:
        return schema.empty_table()
    return pa.concat_tables(tables)


def _raise_json_problem(path, block, first_line, schema, arrow_error) -> None:
    lines = block_lines(block)
    for offset, line in enumerate(lines):
        if not line.strip():
            # Blocks never end in blank lines (iter_blocks strips the file's last ones).
            raise DataFormatError(path, "blank line inside the file", first_line + offset)
        problem = _json_line_problem(line, schema)
        if problem:
            raise DataFormatError(path, problem, first_line + offset)
    raise DataFormatError(
        path,
        f"lines {first_line}-{first_line + len(lines) - 1} do not parse: {arrow_error}",
    )


# --------------------------------------------------------------------------- delimited text


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode a small text file: UTF-8 when it is valid UTF-8, else Latin-1 (never fails).

    Returns (text, encoding used). Latin-1 maps every byte, so it is the honest fallback for
    the older files that were written in it (HetRec's tags.dat).
    """
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def read_delimited(
    path: Path,
    columns: Mapping[str, pa.DataType],
    *,
    delimiter: str,
    header: bool,
    keep: list[str] | None = None,
    data: bytes | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> pa.Table:
    """A delimited text file whose lines have exactly ``len(columns)`` fields, no quoting.

    ``columns`` maps each field, in file order, to its type; ``keep`` selects the columns
    returned (all by default). ``data`` (UTF-8 bytes) replaces reading ``path``, for a file
    the caller has already decoded. The header line, when ``header``, is skipped unread.
    Raises :class:`DataFormatError` naming the first line with a wrong number of fields, a
    value that does not convert, invalid UTF-8, or a blank line before the end of the file.
    """
    names = list(columns)
    keep = keep or names
    if data is not None:
        require_whole_lines(path, data)
        blocks = [(1, data.rstrip(), True)] if data.strip() else []
    else:
        blocks = iter_blocks(path, block_bytes)
    tables = []
    for first_line, block, _ in blocks:
        skip = 1 if header and first_line == 1 else 0
        if skip and _count_lines(block) == 1:
            continue  # a header without data lines
        read_options = pa_csv.ReadOptions(
            column_names=names, skip_rows=skip, block_size=1 << 24, use_threads=True
        )
        parse_options = pa_csv.ParseOptions(
            delimiter=delimiter, quote_char=False, escape_char=False, ignore_empty_lines=False
        )
        convert_options = pa_csv.ConvertOptions(
            column_types=dict(columns),
            include_columns=keep,
            null_values=[],
            strings_can_be_null=False,
        )
        try:
            table = pa_csv.read_csv(
                pa.BufferReader(block), read_options, parse_options, convert_options
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            _raise_delimited_problem(path, block, first_line, skip, columns, delimiter, str(exc))
        if table.num_rows != _count_lines(block) - skip:
            _raise_delimited_problem(path, block, first_line, skip, columns, delimiter, "")
        tables.append(table)
    if not tables:
        return pa.schema([(name, columns[name]) for name in keep]).empty_table()
    return pa.concat_tables(tables)


def _field_converts(value: str, data_type: pa.DataType) -> bool:
    if pa.types.is_string(data_type):
        return True
    try:
        pa.array([value]).cast(data_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _raise_delimited_problem(path, block, first_line, skip, columns, delimiter, arrow_error):
    lines = block_lines(block)
    separator = delimiter.encode()
    types = list(columns.values())
    names = list(columns)
    for offset in range(skip, len(lines)):
        line, number = lines[offset], first_line + offset
        if not line.strip():
            raise DataFormatError(path, "blank line inside the file", number)
        try:
            fields = line.decode("utf-8").split(delimiter)
        except UnicodeDecodeError as exc:
            raise DataFormatError(path, f"cannot decode as UTF-8: {exc.reason}", number) from None
        if len(fields) != len(names):
            raise DataFormatError(
                path,
                f"expected {len(names)} {_separator_name(separator)}-separated fields "
                f"({', '.join(names)}), got {len(fields)}",
                number,
            )
        for name, data_type, value in zip(names, types, fields, strict=True):
            if not _field_converts(value, data_type):
                raise DataFormatError(
                    path, f"{name} {value!r:.60} is not a valid {data_type}", number
                )
    raise DataFormatError(
        path, f"lines {first_line}-{first_line + len(lines) - 1} do not parse: {arrow_error}"
    )


def _separator_name(separator: bytes) -> str:
    return {b"\t": "tab", b",": "comma"}.get(separator, repr(separator.decode()))


# --------------------------------------------------------------------------- checks on columns


def raise_at_first(path: Path, bad: np.ndarray, message: str, first_row_line: int) -> None:
    """Raise a :class:`DataFormatError` at the first True of ``bad`` (one flag per row).

    ``first_row_line`` is the line number of row 0 (1, or 2 after a header line).
    """
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(path, message, first_row_line + row)


def require_present(path: Path, table: pa.Table, names: list[str], first_row_line: int = 1) -> None:
    """Every row must have a non-null, non-empty value in each column of ``names``."""
    for name in names:
        column = table.column(name)
        missing = pc.is_null(column)
        if pa.types.is_string(column.type):
            missing = pc.or_(missing, pc.equal(pc.fill_null(column, ""), ""))
        raise_at_first(
            path,
            missing.to_numpy(zero_copy_only=False),
            f"missing or empty {name!r}",
            first_row_line,
        )


def parse_timestamps(
    path: Path, strings: pa.ChunkedArray, fmt: str, first_row_line: int, what: str
) -> np.ndarray:
    """Seconds since the epoch (int64) of timestamp strings in ``fmt``, read as UTC."""
    parsed = pc.strptime(strings, format=fmt, unit="s", error_is_null=True)
    bad = pc.and_(pc.is_null(parsed), pc.is_valid(strings)).to_numpy(zero_copy_only=False)
    if bad.any():
        value = strings[int(np.argmax(bad))].as_py()
        raise_at_first(path, bad, f"{what} {value!r} is not in the format {fmt}", first_row_line)
    return parsed.cast(pa.int64()).to_numpy(zero_copy_only=False)


# --------------------------------------------------------------------------- reader options


def resolve_options(
    dataset: str, options: Mapping[str, Any] | None, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    """Reader options with defaults filled in and values coerced to the defaults' types.

    Values may come from the command line as strings (``"20"``, ``"a,b"``). An unknown key or
    a value that does not convert raises :class:`UsageError` naming the option.
    """
    resolved = dict(defaults)
    for key, value in (options or {}).items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise UsageError(f"{dataset}: unknown option {key!r} (known options: {known})")
        resolved[key] = _coerce(dataset, key, value, defaults[key])
    return resolved


def _coerce(dataset: str, key: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return value.lower() in {"true", "1", "yes"}
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, str):
                return tuple(part.strip() for part in value.split(",") if part.strip())
            return tuple(str(part) for part in value)
        if default is None or isinstance(default, str):
            return None if value is None else str(value)
    except (TypeError, ValueError):
        pass
    raise UsageError(f"{dataset}: option {key}={value!r} is not a valid {type(default).__name__}")


# --------------------------------------------------------------------------- building tables


def group_lists(group_of_value: np.ndarray, values: pa.Array, n_groups: int) -> pa.ListArray:
    """A list per group 0..n_groups-1 holding ``values`` whose group it is, in their order.

    Groups without values get an empty list. Vectorised: one stable sort and one bincount.
    """
    group_of_value = np.asarray(group_of_value, dtype=np.int64)
    order = np.argsort(group_of_value, kind="stable")
    counts = np.bincount(group_of_value, minlength=n_groups)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.take(pa.array(order)))
