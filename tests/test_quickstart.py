"""Pieces of `dwrec quickstart` (the whole command is CI's first step)."""

from __future__ import annotations

from dwrec.quickstart import sparsest_domains


def test_sparsest_domains_sorts_by_share_then_name():
    meta = {
        "domains": {
            "Dense": {"share": 0.6},
            "Niche-b": {"share": 0.01},
            "Niche-a": {"share": 0.01},
            "Middle": {"share": 0.2},
        }
    }
    assert sparsest_domains(meta, 2) == ["Niche-a", "Niche-b"]
    assert sparsest_domains(meta, 10)[-1] == "Dense"
