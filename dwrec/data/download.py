"""Finding raw files: ``--source`` folders and archives, the cache, and checksummed downloads.

(Placeholder: the foundation work extends this with archives and downloads.)
"""

from __future__ import annotations

from pathlib import Path

from dwrec.data.sources import SourceSpec
from dwrec.errors import DwrecError


def resolve_source(spec: SourceSpec, source: Path | None, *, progress: bool = False) -> Path:
    if source is None:
        raise DwrecError(f"{spec.name}: pass --source PATH (downloads are not implemented yet)")
    if not source.exists():
        raise DwrecError(f"--source {source}: no such file or folder")
    return source
