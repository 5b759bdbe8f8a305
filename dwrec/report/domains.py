"""Domain names and memberships: ``--domains``/``--family`` parsing and checks, the default
domains to show, and each domain's mask of test cases."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dwrec.errors import UsageError


@dataclass
class DomainInfo:
    """Per-domain statistics for the report: items, training share and where they came from."""

    items: dict[str, int]
    share: dict[str, float]
    source: str


def split_names(values: Iterable[str] | None) -> list[str]:
    """``["Film-Noir,Horror", "Drama"]`` -> ``["Film-Noir", "Horror", "Drama"]`` (as train's
    ``--weight-domains`` accepts commas); empty pieces are dropped; order kept, no repeats."""
    names: list[str] = []
    for value in values or []:
        names += [part.strip() for part in str(value).split(",") if part.strip()]
    return list(dict.fromkeys(names))


def check_domain_names(flag: str, names: Sequence[str], known: Iterable[str]) -> None:
    """Refuse every unknown name at once, listing the valid names, close matches first."""
    valid = sorted(set(known))
    unknown = [name for name in names if name not in valid]
    if not unknown:
        return
    close: list[str] = []
    hints = []
    for name in unknown:
        matches = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
        if not matches:  # case-insensitive prefix/substring: "rock" -> "Rock", "Hard Rock"
            matches = [v for v in valid if name.lower() in v.lower()][:3]
        if matches:
            hints.append(f"{name!r}: did you mean {', '.join(matches)}?")
        close += matches
    ordered = list(dict.fromkeys(close + valid))
    listed = ", ".join(ordered[:40]) + (f", ... ({len(ordered) - 40} more)" if len(ordered) > 40
                                         else "")  # fmt: skip
    what = "unknown domain" + ("s " if len(unknown) > 1 else " ")
    raise UsageError(
        f"{flag}: {what}{', '.join(repr(n) for n in unknown)}"
        + (f" ({'; '.join(hints)})" if hints else "")
        + f"; valid names: {listed}"
    )


def memberships(lists: pa.ChunkedArray) -> dict[str, np.ndarray]:
    """domain -> bool mask over rows, from a ``list<string>`` column (vectorised)."""
    lists = lists.combine_chunks()
    n = len(lists)
    flat = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    if len(flat) == 0:
        return {}
    encoded = (
        pc.dictionary_encode(flat).combine_chunks()
        if isinstance(flat, pa.ChunkedArray)
        else pc.dictionary_encode(flat)
    )
    codes = encoded.indices.to_numpy()
    names = encoded.dictionary.to_pylist()
    masks = np.zeros((len(names), n), dtype=bool)
    masks[codes, parents] = True
    return {name: masks[index] for index, name in enumerate(names)}


def select_domains(
    requested: Sequence[str] | None, info: DomainInfo, known: Iterable[str], count: int = 3
) -> list[str]:
    """The domains to report, sparsest first.

    ``requested`` names are checked (unknown ones get difflib suggestions); by default the
    ``count`` sparsest and ``count`` densest domains by training share.
    """
    known_domains = sorted(set(known) | set(info.share))
    if requested:
        for name in requested:
            if name not in known_domains:
                close = difflib.get_close_matches(name, known_domains, n=3, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UsageError(f"--domains: unknown domain {name!r}{hint}")
        chosen = list(dict.fromkeys(requested))
    else:
        ranked = sorted(
            (d for d in known_domains if math.isfinite(info.share.get(d, math.nan))),
            key=lambda d: (info.share[d], d),
        )
        chosen = ranked if len(ranked) <= 2 * count else ranked[:count] + ranked[-count:]
    return sorted(chosen, key=lambda d: (info.share.get(d, math.inf), d))
