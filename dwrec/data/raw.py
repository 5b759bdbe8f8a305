"""The in-memory form every raw-format reader returns, and helpers to find and open raw files.

A reader turns a dataset's raw files into a :class:`RawData`; :mod:`dwrec.data.prepare`
does everything after that (rating filter, de-duplication, k-core, re-indexing, writing),
identically for every dataset.
"""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from dwrec.errors import DataFormatError, DwrecError

INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
    ]
)
"""Raw interactions in the file's own order. ``rating`` is null where the source has none.
``timestamp`` is in seconds since the epoch (UTC)."""

ITEMS_SCHEMA = pa.schema(
    [
        ("raw_id", pa.string()),
        ("title", pa.string()),
        ("domains", pa.list_(pa.string())),
    ]
)
"""Item metadata. Items seen in interactions but absent here get no title and no domains."""


@dataclass
class RawData:
    """What a reader returns.

    Attributes:
        interactions: table with :data:`INTERACTIONS_SCHEMA`, rows in the source's order.
        items: table with :data:`ITEMS_SCHEMA`, one row per raw item id (unique).
        source_files: the files actually read (their sha256 goes into dataset.json).
        notes: sentences for dataset.json and the user, e.g. how domains were chosen.
        domain_rule: one line saying what a domain is for this dataset.
    """

    interactions: pa.Table
    items: pa.Table
    source_files: list[Path]
    domain_rule: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.interactions = self.interactions.select(INTERACTIONS_SCHEMA.names).cast(
            INTERACTIONS_SCHEMA
        )
        self.items = self.items.select(ITEMS_SCHEMA.names).cast(ITEMS_SCHEMA)


def find_raw_file(root: Path, names: Sequence[str], *, required: bool = True) -> Path | None:
    """Find a raw file by name under ``root`` (a folder, searched recursively).

    Each name also matches its gzip-compressed form (``ratings.dat`` or ``ratings.dat.gz``).
    The shallowest match wins, so an extracted archive's top folder and the folder itself
    both work. Raises a :class:`DwrecError` naming the files looked for when none is found
    and ``required``.
    """
    root = Path(root)
    if root.is_file():
        candidates = [root]
    else:
        candidates = sorted(
            (p for p in root.rglob("*") if p.is_file()), key=lambda p: (len(p.parts), str(p))
        )
    wanted = []
    for name in names:
        wanted.extend([name, name + ".gz"])
    for name in wanted:
        for path in candidates:
            if path.name == name:
                return path
    if required:
        raise DwrecError(
            f"{root}: none of {', '.join(names)} (or .gz) found; "
            "--source must be the dataset's archive or its extracted folder"
        )
    return None


def open_binary(path: Path) -> io.BufferedIOBase:
    """Open a raw file for binary reading, transparently decompressing gzip."""
    path = Path(path)
    handle = open(path, "rb")
    magic = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def read_bytes(path: Path) -> bytes:
    """All bytes of a raw file, decompressed if it is gzip. Truncated gzip is a clear error."""
    try:
        with open_binary(path) as handle:
            return handle.read()
    except (EOFError, OSError, zlib.error) as exc:  # zlib.error: corrupt gzip data
        raise DataFormatError(path, f"cannot read ({exc}); is the file truncated?") from None


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its newline) of a raw text file.

    Decoding errors become a :class:`DataFormatError` naming the file and line.
    """
    data = read_bytes(path)
    for number, raw_line in enumerate(data.splitlines(), start=1):
        try:
            yield number, raw_line.decode(encoding)
        except UnicodeDecodeError as exc:
            raise DataFormatError(
                path, f"cannot decode as {encoding}: {exc.reason}", number
            ) from None


def cut_last_line(path: Path, data: bytes | None = None) -> int | None:
    """The number of the last line when it lacks a line ending (the file was cut), else None.

    Line-based raw files end every line, the last one included, with a newline (every
    published file dwrec reads does); a last line without one is what an interrupted download
    or copy leaves, and its last field may look valid though it is cut short (``88125`` for
    ``881250949``). Trailing spaces after the last newline do not count as a line. ``data``
    (the file's decompressed bytes) saves reading the file again.
    """
    if data is None:
        path = Path(path)
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == b"\x1f\x8b"
            if not gzipped:
                handle.seek(0, io.SEEK_END)
                if handle.tell() == 0:
                    return None
                handle.seek(-1, io.SEEK_END)
                if handle.read(1) == b"\n":
                    return None
        data = read_bytes(path)
    tail = data[data.rfind(b"\n") + 1 :]
    if not tail.strip():
        return None
    return data.count(b"\n") + 1


def require_whole_lines(path: Path, data: bytes | None = None) -> None:
    """Raise a :class:`DataFormatError` naming the file and line when the last line is cut."""
    line = cut_last_line(path, data)
    if line is not None:
        raise DataFormatError(
            path,
            "the last line has no line ending: the file looks cut short (an interrupted "
            "download or copy?); get the file again",
            line,
        )
