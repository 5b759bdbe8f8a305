"""``synthetic``: the embedded default dataset, generated (seeded) with planted structure.

Nothing is downloaded. The generator plants what a domain-weighting study needs:

* **Power-law domain sizes.** Domain ``d`` (``D01`` densest ... ``Dnn`` sparsest) has a
  global popularity proportional to ``(d + 1) ** -domain_exponent`` and a number of items
  proportional to ``(d + 1) ** -1`` (at least 4). The sparsest domains get well under 1%
  of interactions. A share ``second_domain_prob`` (5%) of items also carries a random second
  domain.
* **Niche "power" users.** A share ``power_share`` of users puts ``power_focus`` of its
  attention on one domain drawn from all but the two densest; the rest follow the global
  popularity with per-user noise.
* **Sequential dependence.** Within a domain, items form a ring; with probability
  ``follow_prob`` a user's next item is the successor of the current one (1 step ahead
  with probability 0.8, 2 steps with 0.2), otherwise the user jumps to a domain drawn from
  their preference and an item drawn by Zipf popularity inside it. A sequential model can
  learn the rings; a popularity model cannot.

Sequence lengths are log-normal around ``mean_length`` (at least 5). Timestamps are one
hour apart per user. The same options and seed give the same dataset, byte for byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dwrec.data.raw import RawData
from dwrec.data.sources import SourceSpec, register
from dwrec.errors import UsageError

DEFAULTS: dict[str, Any] = {
    "users": 1200,
    "items": 500,
    "domains": 12,
    "mean_length": 20,
    "seed": 0,
    "domain_exponent": 2.4,
    "power_share": 0.06,
    "power_focus": 0.7,
    "follow_prob": 0.6,
    "second_domain_prob": 0.05,
}

_LIMITS = {
    "users": (10, 10_000_000),
    "items": (20, 50_000_000),
    "domains": (2, 1000),
    "mean_length": (5, 10_000),
}


def synthetic_options(options: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults and check ranges; unknown keys are an error naming the key."""
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise UsageError(f"unknown synthetic option(s): {', '.join(unknown)}")
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for key, (low, high) in _LIMITS.items():
        if not low <= int(merged[key]) <= high:
            raise UsageError(
                f"--{key.replace('_', '-')} must be in [{low}, {high}], got {merged[key]}"
            )
    if merged["items"] < 4 * merged["domains"]:
        raise UsageError("--items must be at least 4 x --domains (every domain needs 4 items)")
    for key in ("power_share", "power_focus", "follow_prob", "second_domain_prob"):
        if not 0.0 <= float(merged[key]) <= 1.0:
            raise UsageError(f"{key} must be in [0, 1], got {merged[key]}")
    return merged


def domain_names(n_domains: int) -> list[str]:
    width = max(2, len(str(n_domains)))
    return [f"D{d + 1:0{width}d}" for d in range(n_domains)]


def _domain_sizes(n_items: int, n_domains: int) -> np.ndarray:
    raw = (np.arange(n_domains) + 1.0) ** -1.0
    sizes = np.maximum(4, np.floor(raw / raw.sum() * n_items)).astype(np.int64)
    # Hand the rounding remainder to the largest domain so sizes sum to n_items.
    sizes[0] += n_items - sizes.sum()
    if sizes[0] < 4:
        raise UsageError("--items too small for the number of domains")
    return sizes


def generate(options: dict[str, Any]) -> tuple[pa.Table, pa.Table]:
    """Generate (interactions, items) tables in the raw schema of :mod:`dwrec.data.raw`."""
    opts = synthetic_options(options)
    rng = np.random.default_rng(int(opts["seed"]))
    n_users, n_items, n_domains = int(opts["users"]), int(opts["items"]), int(opts["domains"])

    sizes = _domain_sizes(n_items, n_domains)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    item_domain = np.repeat(np.arange(n_domains), sizes)
    local_rank = np.arange(n_items) - starts[item_domain]
    zipf = (local_rank + 1.0) ** -0.8
    zipf_sums = np.bincount(item_domain, weights=zipf)
    # Flattened inverse CDF: item i occupies (d + cdf_before, d + cdf_after] for its domain d.
    local_cdf = np.empty(n_items)
    for d in range(n_domains):
        block = slice(starts[d], starts[d] + sizes[d])
        local_cdf[block] = np.cumsum(zipf[block]) / zipf_sums[d]
    local_cdf[starts + sizes - 1] = 1.0
    flat_cdf = item_domain + local_cdf

    popularity = (np.arange(n_domains) + 1.0) ** -float(opts["domain_exponent"])
    popularity /= popularity.sum()
    preference = popularity[None, :] * rng.gamma(4.0, 0.25, size=(n_users, n_domains))
    preference /= preference.sum(axis=1, keepdims=True)
    is_power = rng.random(n_users) < float(opts["power_share"])
    niche_pool = np.arange(min(2, n_domains - 1), n_domains)
    niche = rng.choice(niche_pool, size=n_users)
    focus = float(opts["power_focus"])
    preference[is_power] *= 1.0 - focus
    preference[np.flatnonzero(is_power), niche[is_power]] += focus
    preference_cdf = np.cumsum(preference, axis=1)
    preference_cdf[:, -1] = 1.0

    lengths = np.rint(rng.lognormal(np.log(float(opts["mean_length"])), 0.6, n_users))
    lengths = np.clip(lengths, 5, 8 * int(opts["mean_length"])).astype(np.int64)
    max_len = int(lengths.max())

    def jump(rows: np.ndarray) -> np.ndarray:
        domains = (rng.random(len(rows))[:, None] > preference_cdf[rows]).sum(axis=1)
        domains = np.minimum(domains, n_domains - 1)
        position = domains + rng.random(len(rows)) * (1 - 1e-12) + 1e-12
        return np.minimum(np.searchsorted(flat_cdf, position), n_items - 1)

    sequence = np.full((n_users, max_len), -1, dtype=np.int64)
    current = jump(np.arange(n_users))
    sequence[:, 0] = current
    follow_prob = float(opts["follow_prob"])
    for step in range(1, max_len):
        active = np.flatnonzero(lengths > step)
        if len(active) == 0:
            break
        prev = sequence[active, step - 1]
        follows = rng.random(len(active)) < follow_prob
        hop = np.where(rng.random(len(active)) < 0.8, 1, 2)
        d = item_domain[prev]
        successor = starts[d] + (prev - starts[d] + hop) % sizes[d]
        nxt = np.where(follows, successor, 0)
        jumpers = np.flatnonzero(~follows)
        nxt[jumpers] = jump(active[jumpers])
        sequence[active, step] = nxt

    users = np.repeat(np.arange(n_users), lengths)
    items = sequence[sequence >= 0]
    steps = np.arange(len(users)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    timestamps = 1_600_000_000 + users * 7 + steps * 3600

    names = domain_names(n_domains)
    second_prob = float(opts["second_domain_prob"])
    second = np.where(rng.random(n_items) < second_prob, rng.integers(0, n_domains, n_items), -1)
    item_domains = [
        sorted(
            {names[item_domain[i]], names[second[i]]} if second[i] >= 0 else {names[item_domain[i]]}
        )
        for i in range(n_items)
    ]
    interactions = pa.table(
        {
            "user": pa.array([f"u{u}" for u in range(n_users)]).take(pa.array(users)),
            "item": pa.array([f"i{i}" for i in range(n_items)]).take(pa.array(items)),
            "timestamp": pa.array(timestamps.astype(np.int64)),
            "rating": pa.nulls(len(users), pa.float32()),
        }
    )
    items_table = pa.table(
        {
            "raw_id": [f"i{i}" for i in range(n_items)],
            "title": [f"synthetic item {i}" for i in range(n_items)],
            "domains": pa.array(item_domains, type=pa.list_(pa.string())),
        }
    )
    return interactions, items_table


def read(folder: Path, options: dict[str, Any]) -> RawData:
    opts = synthetic_options(options)
    interactions, items = generate(opts)
    return RawData(
        interactions=interactions,
        items=items,
        source_files=[],
        domain_rule=(
            "planted domains D01 (densest) ... Dnn (sparsest): power-law popularity, "
            f"{opts['second_domain_prob']:.0%} of items in a second domain"
        ),
        notes=[f"generated by dwrec's synthetic source with options {opts}"],
    )


register(
    SourceSpec(
        name="synthetic",
        family="synthetic",
        description="Generated dataset with planted sparse/dense domains, niche power users "
        "and sequential patterns (the embedded default; no download)",
        domains="planted: D01 (densest) to Dnn (sparsest), power-law sizes",
        licence="generated by dwrec (public domain)",
        size="default 1,200 users, 500 items, 27,519 interactions, 12 domains",
        reader=read,
    )
)
