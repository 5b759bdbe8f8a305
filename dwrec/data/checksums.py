"""File checksums: sha256 and md5 of raw files, remembered across runs, checked against pins.

Hashing a large archive takes a while, so :func:`file_digests` remembers its results in
``$DWREC_HOME/raw/.checksums.json`` (keyed by path, size and modification time).
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from dwrec.data.sources import RemoteFile
from dwrec.errors import ChecksumError, DwrecError
from dwrec.io import read_json, write_json
from dwrec.paths import dwrec_home

CHUNK_BYTES = 1 << 20


def _checksum_cache_path() -> Path:
    return dwrec_home() / "raw" / ".checksums.json"


def _load_checksum_cache() -> dict:
    path = _checksum_cache_path()
    if not path.exists():
        return {}
    try:
        cache = read_json(path)
    except DwrecError:
        return {}
    return cache if isinstance(cache, dict) else {}


def file_digests(path: Path) -> dict[str, str]:
    """``{"sha256": ..., "md5": ...}`` of a file's bytes (hex, lower case).

    Hashing a 250 MB archive takes about a second, so results are remembered in
    ``$DWREC_HOME/raw/.checksums.json`` keyed by the file's absolute path, size and
    modification time; a changed file is hashed again.
    """
    path = Path(path)
    info = path.stat()
    key = str(path.resolve())
    cache = _load_checksum_cache()
    entry = cache.get(key)
    if (
        isinstance(entry, dict)
        and entry.get("size") == info.st_size
        and entry.get("mtime_ns") == info.st_mtime_ns
    ):
        return {"sha256": entry["sha256"], "md5": entry["md5"]}
    digests = hash_file(path)
    remember_digests(path, digests, cache)
    return digests


def remember_digests(path: Path, digests: dict[str, str], cache: dict | None = None) -> None:
    info = path.stat()
    cache = _load_checksum_cache() if cache is None else cache
    cache[str(path.resolve())] = {"size": info.st_size, "mtime_ns": info.st_mtime_ns, **digests}
    # The cache only saves time; a read-only home must not stop a prepare.
    with contextlib.suppress(OSError):
        write_json(_checksum_cache_path(), cache)


def hash_file(path: Path) -> dict[str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            sha256.update(block)
            md5.update(block)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


def check_digests(path: Path, remote: RemoteFile, digests: dict[str, str], hint: str = "") -> None:
    """Raise :class:`ChecksumError` naming both hashes when ``path`` is not ``remote``'s file.

    The pinned sha256 is checked when there is one, and the publisher's md5 when given.
    """
    expected = [("sha256", remote.sha256), ("md5", remote.md5)]
    for algorithm, pinned in expected:
        if pinned and digests[algorithm] != pinned.lower():
            raise ChecksumError(
                f"{path}: {algorithm} is {digests[algorithm]} but the pinned {algorithm} of "
                f"{remote.url} is {pinned.lower()}" + (f"; {hint}" if hint else "")
            )
