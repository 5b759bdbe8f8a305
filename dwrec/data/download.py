"""Finding raw files: ``--source`` folders and archives, the cache, and checksummed downloads.

:func:`resolve_source` turns what the user gave (or nothing) into a folder or file that a
reader can search with :func:`dwrec.data.raw.find_raw_file`:

- ``--source FOLDER``: returned as is (an extracted archive, or files placed by hand).
- ``--source ARCHIVE`` (``.zip``, ``.tar.gz``, ``.tgz``, ``.tar``): extracted once into
  ``$DWREC_HOME/raw/NAME/extracted-<first 8 hex of its sha256>/`` and that folder returned.
  Archives are recognised by their bytes, whatever their name: one that matches a pinned
  checksum is the official archive; one with the official file name must match it; one
  that is another dataset's official archive is refused; any other archive is prepared as
  the user's own, with a note (:func:`archive_note`).
- ``--source FILE``: a single raw file, returned as is.
- no ``--source``: the cache ``$DWREC_HOME/raw/NAME/`` is searched first (the official
  archive, its extracted folder, or raw files a user placed there by hand on an offline
  machine); only what is missing is downloaded from the official URL, resumably, and checked
  against the pinned sha256 (or the publisher's md5 where no sha256 is known).

Archives are extracted safely (:mod:`dwrec.data.archives`); hashes are computed and checked
by :mod:`dwrec.data.checksums`.

Downloads are switched off by ``DWREC_OFFLINE=1`` (the test suite sets it); then, as on any
network error, the error names ``--source`` and the cache folder where files may be placed.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from dwrec.data.archives import (  # noqa: F401 - extract_archive re-exported
    ARCHIVE_SUFFIXES,
    EXTRACTED_PREFIX,
    extract_archive,
    is_archive,
)
from dwrec.data.checksums import (  # noqa: F401 - file_digests re-exported
    CHUNK_BYTES,
    check_digests,
    file_digests,
    hash_file,
    remember_digests,
)
from dwrec.data.sources import RemoteFile, SourceSpec
from dwrec.errors import ChecksumError, DwrecError, UsageError
from dwrec.paths import raw_dir

OFFLINE_ENV = "DWREC_OFFLINE"
TIMEOUT_SECONDS = 30

# Module-level so tests can substitute a local opener; never called with a user-built URL.
_urlopen = urllib.request.urlopen


class OfflineError(DwrecError):
    """A download was needed but the network is off or unreachable."""


def offline() -> bool:
    """True when ``$DWREC_OFFLINE`` forbids downloads (``1``, ``true``, ``yes``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_source(spec: SourceSpec, source: Path | None, *, progress: bool = False) -> Path:
    """A folder (or single file) holding ``spec``'s raw files, downloading if needed.

    Args:
        spec: the dataset source.
        source: the user's ``--source`` (folder, archive or file), or ``None`` for the cache.
        progress: show a progress bar while downloading.
    Raises:
        UsageError: ``source`` does not exist.
        ChecksumError: an official archive does not match its pinned checksum.
        OfflineError: files are missing and downloads are off or the network is unreachable.
        DwrecError: unsafe or unreadable archive; manual-download dataset not found.
    """
    if source is not None:
        return _from_given(spec, Path(source).expanduser())
    return _from_cache(spec, progress)


def _from_given(spec: SourceSpec, source: Path) -> Path:
    if not source.exists():
        raise UsageError(f"--source {source}: no such file or folder")
    if source.is_dir() or not is_archive(source):
        return source
    digests = file_digests(source)
    if not any(_matches(r, digests) for r in spec.remote):
        remote = next((r for r in spec.remote if r.filename == source.name), None)
        if remote is not None:
            check_digests(
                source,
                remote,
                digests,
                hint="to use a modified copy on purpose, extract it and pass the folder as --source",
            )
        other = _official_elsewhere(spec, digests)
        if other is not None:
            raise UsageError(
                f"--source {source}: this is {other[1].filename}, the official archive of "
                f"dataset {other[0]} (its sha256 matches), not of {spec.name}; run "
                f"`dwrec prepare {other[0]} --source {source}`"
            )
    return extract_archive(source, raw_dir(spec.name), sha256=digests["sha256"])


def _matches(remote: RemoteFile, digests: dict[str, str]) -> bool:
    """True when ``digests`` are those pinned for ``remote`` (sha256, else md5)."""
    if remote.sha256:
        return digests["sha256"] == remote.sha256.lower()
    return bool(remote.md5) and digests["md5"] == (remote.md5 or "").lower()


def _official_elsewhere(spec: SourceSpec, digests: dict[str, str]):
    """(dataset, remote) of another dataset whose pinned archive has these digests, or None."""
    from dwrec.data.sources import all_sources

    for other in all_sources():
        for remote in other.remote:
            if other.name != spec.name and _matches(remote, digests):
                return other.name, remote
    return None


def archive_note(spec: SourceSpec, source: Path | None) -> str | None:
    """A note for ``dataset.json`` when an archive ``--source`` is not the official archive.

    Archives are recognised by their bytes, not their name: a copy of the official archive
    under any name matches its pinned checksum and needs no note; an archive that matches
    no pin is prepared as the user's own, and the note says so.
    """
    if source is None or not spec.remote:
        return None
    source = Path(source).expanduser()
    if not (source.is_file() and is_archive(source)):
        return None
    digests = file_digests(source)
    if any(_matches(r, digests) for r in spec.remote):
        return None
    official = ", ".join(r.filename for r in spec.remote)
    return (
        f"--source {source.name} is not the official {official}: its sha256 "
        f"{digests['sha256'][:16]}... matches no pinned checksum, so it was prepared as your "
        "own archive (the sha256 of every file read is recorded under 'sources')."
    )


def _from_cache(spec: SourceSpec, progress: bool) -> Path:
    folder = raw_dir(spec.name)
    if not spec.remote:
        if _has_placed_files(folder, spec):
            return folder
        raise DwrecError(
            f"{spec.name} cannot be downloaded automatically. {spec.manual_download} "
            f"Alternatively place the files in {folder}; then no --source is needed."
        )
    missing = [r for r in spec.remote if _cached_copy(folder, r) is None]
    if missing and _has_placed_files(folder, spec):
        return folder
    if missing and offline():
        raise _offline_error(spec, missing, f"downloads are off ({OFFLINE_ENV}=1)")
    for remote in missing:
        try:
            download(remote, folder, progress=progress)
        except OfflineError as exc:
            raise _offline_error(spec, missing, str(exc)) from None
    if len(spec.remote) == 1 and is_archive(spec.remote[0].filename):
        return _cached_copy(folder, spec.remote[0])  # type: ignore[return-value]
    for remote in spec.remote:
        _cached_copy(folder, remote)
    return folder


def _cached_copy(folder: Path, remote: RemoteFile) -> Path | None:
    """The usable local copy of ``remote`` in the cache (extracted if an archive), or None."""
    local = folder / remote.filename
    if local.is_file():
        digests = file_digests(local)
        check_digests(
            local,
            remote,
            digests,
            hint=f"delete {local} to download it again, or pass the right file as --source",
        )
        if is_archive(local):
            return extract_archive(local, folder, sha256=digests["sha256"])
        return local
    if is_archive(remote.filename) and remote.sha256:
        extracted = folder / f"{EXTRACTED_PREFIX}{remote.sha256.lower()[:8]}"
        if extracted.is_dir():
            return extracted
    return None


def _has_placed_files(folder: Path, spec: SourceSpec) -> bool:
    """True when a user put raw files into the cache folder by hand."""
    if not folder.is_dir():
        return False
    official = {r.filename for r in spec.remote}
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith((".", EXTRACTED_PREFIX)) or name.endswith(".part") or name in official:
            continue
        return True
    return False


def _offline_error(spec: SourceSpec, missing: list[RemoteFile], reason: str) -> OfflineError:
    folder = raw_dir(spec.name)
    wanted = "; ".join(f"{r.filename} from {r.url}" for r in missing)
    return OfflineError(
        f"{spec.name}: raw files are not in the cache and {reason}. Either pass --source PATH "
        f"(the downloaded archive or its extracted folder), or place the files in {folder} "
        f"({wanted}) and run the command again."
    )


# --------------------------------------------------------------------------- downloads


def download(remote: RemoteFile, folder: Path, *, progress: bool = False) -> Path:
    """Download ``remote`` into ``folder``, verify it, and return its final path.

    Bytes go to ``<filename>.part`` first; an interrupted download resumes from there with an
    HTTP Range request. Only a file that matches the pinned checksum is renamed to its final
    name; a mismatching one is deleted and :class:`ChecksumError` names both hashes.
    Raises :class:`OfflineError` when downloads are off or the server cannot be reached.
    """
    if offline():
        raise OfflineError(f"downloads are off ({OFFLINE_ENV}=1)")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / remote.filename
    part = folder / (remote.filename + ".part")
    _fetch(remote, part, progress)
    digests = hash_file(part)
    try:
        check_digests(
            part,
            remote,
            digests,
            hint="the bad file was deleted; run the command again to retry",
        )
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, final)
    remember_digests(final, digests)
    return final


def _fetch(remote: RemoteFile, part: Path, progress: bool) -> None:
    """Append the missing bytes of ``remote`` to ``part`` (all of them when it is new)."""
    offset = part.stat().st_size if part.exists() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    if remote.size is not None and offset == remote.size:
        return
    from dwrec._version import __version__

    request = urllib.request.Request(remote.url, headers={"User-Agent": f"dwrec/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = _urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # the .part is already complete; the checksum decides
        raise DwrecError(
            f"{remote.url}: the server answered HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise OfflineError(f"cannot reach {remote.url} ({_reason(exc)})") from None
    with response:
        status = getattr(response, "status", None)
        if offset and status != 206:
            offset = 0  # the server ignored the Range header and sends everything
        length = response.headers.get("Content-Length") if response.headers else None
        total = offset + int(length) if length and length.isdigit() else remote.size
        written = offset
        try:
            with (
                open(part, "ab" if offset else "wb") as out,
                _progress(remote.filename, total, offset, progress) as advance,
            ):
                while block := response.read(CHUNK_BYTES):
                    out.write(block)
                    written += len(block)
                    advance(len(block))
        except OSError as exc:
            raise DwrecError(
                f"download of {remote.url} stopped after {written:,} bytes ({_reason(exc)}); "
                f"run the command again to resume from {part}"
            ) from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc)


@contextlib.contextmanager
def _progress(
    label: str, total: int | None, done: int, enabled: bool
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; draws a rich progress bar on stderr when enabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"downloading {label}", total=total, completed=done)
        yield lambda n: bar.advance(task, n)
