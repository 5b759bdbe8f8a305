"""Atomic file and directory writes, hashing, and JSON helpers.

Every output dwrec writes goes through here: it is written under a temporary name in the
same folder and renamed into place, so a killed process never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def current_umask() -> int:
    """The process umask: from ``/proc/self/status`` on Linux (a plain read), elsewhere by
    setting and restoring it (there is no read-only call)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open()`` / ``mkdir()`` would have under the umask.

    ``tempfile.mkstemp`` and ``mkdtemp`` create 0600 files and 0700 folders whatever the
    umask; a file renamed into place from them would keep that private mode, so a team
    sharing ``$DWREC_HOME`` or a runs folder could not read each other's outputs.
    """
    base = 0o777 if directory else 0o666
    os.chmod(path, base & ~current_umask())


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` on success.

    The renamed file gets the mode the umask gives new files (0644 under umask 022), not the
    private 0600 of the temporary file. On any exception the temporary file is removed and ``final`` is left untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            apply_umask(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``final``; swap it into place on success.

    An existing ``final`` is replaced only after the new content is complete. The folder
    gets the mode the umask gives new folders (0755 under umask 022); files written into it
    with :func:`atomic_path` / :func:`write_json` / :func:`write_parquet` follow the umask too.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        apply_umask(tmp, directory=True)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
            old.rmdir()
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike) -> Any:
    from dwrec.errors import DataFormatError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise DataFormatError(
            path, f"not valid JSON ({exc.__class__.__name__}: {exc})", line
        ) from None


def write_parquet(path: str | os.PathLike, table: pa.Table) -> None:
    """Write a Parquet file atomically, with settings that give identical bytes for identical tables."""
    with atomic_path(path) as tmp:
        write_parquet_to(tmp, table)


def write_parquet_to(where: Any, table: pa.Table) -> None:
    """:func:`write_parquet`'s encoding, to a path or a binary buffer (not atomic)."""
    pq.write_table(table, where, compression="zstd", write_statistics=True, store_schema=True)


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    from dwrec.errors import DataFormatError

    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file not found")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(path, f"not a readable Parquet file ({exc})") from None


def load_checkpoint(path: str | os.PathLike, missing: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file is a
    :class:`~dwrec.errors.DataFormatError` (``missing`` says what its absence means)."""
    import torch

    from dwrec.errors import DataFormatError

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DataFormatError(path, missing) from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise DataFormatError(path, _checkpoint_problem(exc)) from None


def _checkpoint_problem(exc: Exception) -> str:
    """One line saying why ``torch.load`` failed (torch's own messages span many lines and
    carry terminal colour codes)."""
    import re

    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        what = f"it refers to {found.group(1)}" if found else "it holds more than tensors"
        return (
            f"refused by torch.load(weights_only=True): {what}; dwrec checkpoints hold only "
            "tensors, numbers, strings and containers, and dwrec never unpickles other objects"
        )
    if len(text) > 200:
        text = text[:200] + "..."
    return f"unreadable checkpoint ({exc.__class__.__name__}: {text}); is the file truncated?"


def git_commit() -> str | None:
    """The git commit of the dwrec source tree, when it runs from a checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance() -> dict[str, Any]:
    """The dwrec version and git commit, recorded in every result file."""
    from dwrec._version import __version__

    return {"dwrec_version": __version__, "git_commit": git_commit()}
