"""Where dwrec keeps its cache, raw downloads and prepared datasets."""

from __future__ import annotations

import os
from pathlib import Path

from dwrec.errors import UsageError


def dwrec_home() -> Path:
    """``$DWREC_HOME``, default ``~/.cache/dwrec``."""
    env = os.environ.get("DWREC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dwrec"


def raw_dir(name: str) -> Path:
    """Where raw files of dataset ``name`` are downloaded to (or placed by hand)."""
    return dwrec_home() / "raw" / name


def datasets_dir() -> Path:
    return dwrec_home() / "datasets"


def default_dataset_dir(name: str) -> Path:
    return datasets_dir() / name


def resolve_dataset(name_or_path: str | os.PathLike | None) -> Path:
    """Turn a prepared dataset's name or path into its directory.

    ``None`` means the dataset prepared most recently (by ``dataset.json`` modification time).
    """
    if name_or_path is None:
        latest = most_recent_dataset()
        if latest is None:
            raise UsageError(
                "no prepared dataset found under "
                f"{datasets_dir()}; run `dwrec prepare synthetic` (or another dataset) first, "
                "or pass --dataset DIR"
            )
        return latest
    path = Path(name_or_path).expanduser()
    if (path / "dataset.json").exists():
        return path
    named = default_dataset_dir(str(name_or_path))
    if (named / "dataset.json").exists():
        return named
    raise UsageError(
        f"--dataset {name_or_path}: neither a dataset directory (no dataset.json in {path}) "
        f"nor the name of a prepared dataset in {datasets_dir()}; "
        f"run `dwrec prepare {name_or_path}` first"
    )


def most_recent_dataset() -> Path | None:
    root = datasets_dir()
    if not root.is_dir():
        return None
    # Names starting with "." are temporary folders of a prepare that was killed mid-write.
    candidates = [
        p for p in root.iterdir() if not p.name.startswith(".") and (p / "dataset.json").exists()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p / "dataset.json").stat().st_mtime)
