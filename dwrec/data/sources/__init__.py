"""Registry of dataset sources: one module per public dataset family, plus ``synthetic``.

A source module calls :func:`register` at import time with a :class:`SourceSpec`.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dwrec.data.raw import RawData
from dwrec.errors import UsageError


@dataclass(frozen=True)
class RemoteFile:
    """One official download: its URL, pinned sha256 and size in bytes (if known).

    ``md5`` is the publisher's own checksum where one is published; it is verified too
    when given, and alone when ``sha256`` is empty (no sha256 found in any public source).
    """

    url: str
    sha256: str
    filename: str
    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class SourceSpec:
    """A dataset that ``dwrec prepare NAME`` knows.

    Attributes:
        name: the CLI name (``movielens-1m``).
        family: ``movielens``, ``lastfm``, ``amazon``, ``yelp``, ``s3rec`` or ``synthetic``.
        description: one line for ``dwrec datasets``.
        domains: what a domain is for this dataset (one line).
        licence: the terms in brief, with where to read them.
        size: the published size in brief (``1,000,209 ratings, 6,040 users, 3,706 movies``).
        remote: official downloads; empty where the publisher requires a manual download.
        reader: ``reader(folder, options) -> RawData``; ``folder`` is the extracted
            archive or the user's ``--source`` folder (or a single file's path).
        default_min_user: default ``--min-user-interactions`` (k-core) for this dataset.
        default_min_item: default ``--min-item-interactions``.
        manual_download: what to tell a user when ``remote`` is empty.
        extra: ``options`` (the reader's option defaults); ``name_for(folder, options)``,
            where the prepared dataset's default name depends on the files (an Amazon
            category, an S3-Rec set); ``specific_sets``: ``name_for`` returns the name of a
            registered dataset that reads the same files, and ``prepare`` becomes that one.
    """

    name: str
    family: str
    description: str
    domains: str
    licence: str
    size: str
    reader: Callable[[Path, dict[str, Any]], RawData]
    remote: tuple[RemoteFile, ...] = ()
    default_min_user: int = 0
    default_min_item: int = 0
    manual_download: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, SourceSpec] = {}
_MODULES = ("synthetic", "movielens", "lastfm", "amazon", "yelp", "s3rec")


def register(spec: SourceSpec) -> SourceSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset source {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    """Import every module of the registry (each registers itself; imports are cached)."""
    for module in _MODULES:
        importlib.import_module(f"dwrec.data.sources.{module}")


def all_sources() -> list[SourceSpec]:
    _load_all()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


ALIASES = {
    "ml-100k": "movielens-100k",
    "ml-1m": "movielens-1m",
    "ml-10m": "movielens-10m",
    "ml-20m": "movielens-20m",
    "ml-25m": "movielens-25m",
    "ml-latest-small": "movielens-latest-small",
    "lastfm-2k": "lastfm",
    "hetrec-lastfm": "lastfm",
}
"""Common short names (the archives' own names) -> dwrec's dataset names."""


def canonical_name(name: str) -> str:
    """``name`` with a common short name replaced by dwrec's (``ml-1m`` -> ``movielens-1m``)."""
    return ALIASES.get(name.lower(), name)


def suggest(name: str, candidates: list[str]) -> list[str]:
    """The known names closest to ``name`` (an alias first)."""
    alias = ALIASES.get(name.lower())
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.4)
    return ([alias] if alias else []) + [c for c in close if c != alias]


def get_source(name: str) -> SourceSpec:
    """The spec of dataset ``name`` (or an alias such as ``ml-1m``); an unknown name suggests
    the closest known ones."""
    _load_all()
    name = canonical_name(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = suggest(name, list(_REGISTRY))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UsageError(
        f"unknown dataset {name!r}.{hint} Known datasets: {', '.join(sorted(_REGISTRY))} "
        "(`dwrec datasets` lists them)."
    )
