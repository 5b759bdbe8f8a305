"""The embedded synthetic dataset carries the structure it promises."""

from __future__ import annotations

import numpy as np
import pytest

from dwrec.data.sources.synthetic import generate
from dwrec.errors import UsageError


@pytest.fixture(scope="module")
def default_data():
    interactions, items = generate({})
    return interactions, items


def test_default_size_and_seeded_reproducibility(default_data):
    interactions, _ = default_data
    again, _ = generate({})
    assert interactions.equals(again)
    other, _ = generate({"seed": 1})
    assert not interactions.equals(other)
    assert 20_000 < interactions.num_rows < 40_000


def test_domain_sizes_follow_a_power_law_with_domains_under_one_percent(default_data):
    interactions, items = default_data
    domains = dict(
        zip(items.column("raw_id").to_pylist(), items.column("domains").to_pylist(), strict=True)
    )
    counts: dict[str, int] = {}
    for item in interactions.column("item").to_pylist():
        for d in domains[item]:
            counts[d] = counts.get(d, 0) + 1
    shares = {d: c / interactions.num_rows for d, c in counts.items()}
    assert min(shares.values()) < 0.01
    assert max(shares.values()) > 0.3
    assert shares["D01"] > shares["D02"] > shares["D04"]


def test_next_item_depends_on_the_current_item(default_data):
    interactions, _ = default_data
    users = np.array([int(u[1:]) for u in interactions.column("user").to_pylist()])
    items = np.array([int(i[1:]) for i in interactions.column("item").to_pylist()])
    same_user = users[1:] == users[:-1]
    prev, nxt = items[:-1][same_user], items[1:][same_user]
    # The most frequent successor of an item explains far more transitions than chance.
    pairs = prev * 10_000 + nxt
    values, counts = np.unique(pairs, return_counts=True)
    best = {}
    for value, count in zip(values, counts, strict=True):
        best[value // 10_000] = max(best.get(value // 10_000, 0), count)
    explained = sum(best.values()) / len(pairs)
    assert explained > 0.3


def test_power_users_concentrate_on_one_niche_domain(default_data):
    interactions, items = default_data
    primary = {
        rid: doms[0]
        for rid, doms in zip(
            items.column("raw_id").to_pylist(), items.column("domains").to_pylist(), strict=True
        )
    }
    per_user: dict[str, dict[str, int]] = {}
    for user, item in zip(
        interactions.column("user").to_pylist(),
        interactions.column("item").to_pylist(),
        strict=True,
    ):
        bucket = per_user.setdefault(user, {})
        bucket[primary[item]] = bucket.get(primary[item], 0) + 1
    niche_focused = sum(
        1
        for bucket in per_user.values()
        if max((c for d, c in bucket.items() if d not in ("D01", "D02")), default=0)
        >= 0.5 * sum(bucket.values())
    )
    assert niche_focused >= 0.02 * len(per_user)


def test_bad_options_name_the_option():
    with pytest.raises(UsageError, match="--users"):
        generate({"users": 1})
    with pytest.raises(UsageError, match="unknown synthetic option"):
        generate({"userz": 100})
