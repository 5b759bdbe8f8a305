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

    A name may be a common short name (``ml-1m`` for ``movielens-1m``).

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
    from dwrec.data.sources import canonical_name

    alias = default_dataset_dir(canonical_name(str(name_or_path)))
    if not path.exists() and (alias / "dataset.json").exists():
        return alias  # --dataset ml-1m: the prepared movielens-1m
    raise UsageError(_not_a_dataset(str(name_or_path), path))


def prepared_names() -> list[str]:
    """Names of the prepared datasets under :func:`datasets_dir`."""
    root = datasets_dir()
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and (p / "dataset.json").exists()
    )


def _not_a_dataset(given: str, path: Path) -> str:
    """Why ``--dataset given`` names no dataset, and what to pass or run instead."""
    prepared = prepared_names()
    listing = f" Prepared: {', '.join(prepared)}." if prepared else ""
    if path.is_dir():
        return (
            f"--dataset {given}: the folder {path} has no dataset.json, so it is not a "
            "prepared dataset; pass the folder that `dwrec prepare` wrote (--out) or the name "
            f"of a prepared dataset in {datasets_dir()} (raw files: `dwrec prepare NAME "
            f"--source {path}` turns them into one).{listing}"
        )
    from dwrec.data.sources import all_sources, canonical_name, suggest

    known = [spec.name for spec in all_sources()]
    canonical = canonical_name(given)
    if canonical in known:
        hint = f"run `dwrec prepare {canonical}` first" + (
            f" (dwrec's name for {given})" if canonical != given else ""
        )
    else:
        close = suggest(given, prepared + known)
        hint = (
            f"did you mean {' or '.join(close)}? `dwrec datasets` lists the known datasets"
            if close
            else "`dwrec datasets` lists the datasets dwrec can prepare"
        )
    return (
        f"--dataset {given}: neither a dataset folder nor the name of a prepared dataset in "
        f"{datasets_dir()}; {hint}.{listing}"
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
