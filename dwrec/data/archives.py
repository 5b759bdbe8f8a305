"""Archives: recognising them by name and extracting them once, safely.

An archive (``.zip``, ``.tar.gz``, ``.tgz``, ``.tar``) is extracted into
``extracted-<first 8 hex of its sha256>/`` beside it. A member whose path would land outside
the target folder (absolute path, ``..``, a link pointing out, a device file) stops the
extraction with a :class:`~dwrec.errors.DwrecError`, and nothing is left under the final
folder name.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from dwrec.data.checksums import file_digests
from dwrec.errors import DwrecError
from dwrec.io import apply_umask

ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
EXTRACTED_PREFIX = "extracted-"


def is_archive(path: str | os.PathLike) -> bool:
    """True when ``path``'s name ends in a supported archive suffix."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(archive: Path, dest_root: Path, *, sha256: str | None = None) -> Path:
    """Extract ``archive`` into ``dest_root/extracted-<sha8>/`` once, safely; return that folder.

    The content goes to a temporary folder first and is renamed into place only when complete,
    so an interrupted extraction leaves nothing under the final name. A folder that already
    exists for the same archive bytes is reused.
    """
    archive = Path(archive)
    sha256 = sha256 or file_digests(archive)["sha256"]
    target = Path(dest_root) / f"{EXTRACTED_PREFIX}{sha256[:8]}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=target.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, tmp)
        else:
            _extract_tar(archive, tmp)
        apply_umask(tmp, directory=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():  # another process finished the same extraction first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_DRIVE = re.compile(r"^[A-Za-z]:")


def _escape_error(archive: Path, member: str, why: str) -> DwrecError:
    return DwrecError(
        f"{archive}: refusing to extract member {member!r}: {why}; the archive is not a "
        "plain dataset archive (re-download it from the official URL)"
    )


def _member_parts(archive: Path, name: str) -> tuple[str, ...]:
    """The path components of a member, refusing any that would leave the target folder."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        raise _escape_error(archive, name, "absolute path")
    parts = PurePosixPath(normal).parts
    if ".." in parts:
        raise _escape_error(archive, name, "its path contains '..' and would escape the folder")
    return parts


def _link_stays_inside(link_dir: str, link_target: str) -> bool:
    target = link_target.replace("\\", "/")
    if target.startswith("/") or _DRIVE.match(target):
        return False
    resolved = posixpath.normpath(posixpath.join(link_dir, target))
    return resolved != ".." and not resolved.startswith("../")


def _extract_zip(archive: Path, folder: Path) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                parts = _member_parts(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    target = zf.read(info).decode("utf-8", "replace")
                    if not _link_stays_inside(posixpath.dirname("/".join(parts)), target):
                        raise _escape_error(
                            archive, info.filename, f"link to {target!r} points out"
                        )
            zf.extractall(folder)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise DwrecError(
            f"{archive}: not a readable zip archive ({exc}); is it truncated?"
        ) from None


def _extract_tar(archive: Path, folder: Path) -> None:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                parts = _member_parts(archive, member.name)
                if member.issym():
                    link_dir = posixpath.dirname("/".join(parts))
                    if not _link_stays_inside(link_dir, member.linkname):
                        raise _escape_error(
                            archive, member.name, f"link to {member.linkname!r} points out"
                        )
                elif member.islnk():
                    if not _link_stays_inside("", member.linkname):
                        raise _escape_error(
                            archive, member.name, f"hard link to {member.linkname!r} points out"
                        )
                elif not (member.isfile() or member.isdir()):
                    raise _escape_error(archive, member.name, "device or special file")
            if hasattr(tarfile, "data_filter"):
                tf.extractall(folder, members=members, filter="data")
            else:  # pragma: no cover - Python without PEP 706; members were checked above
                tf.extractall(folder, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise DwrecError(
            f"{archive}: not a readable tar archive ({exc}); is it truncated?"
        ) from None
