"""The FLOP floor benchmarks/eval_speed.py compares with (``ranking_flops``) against torch's
own FLOP counter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dwrec.models.base import ModelConfig
from dwrec.models.registry import build_model
from dwrec.models.sasrec import ranking_flops


@pytest.mark.parametrize(("length", "layers"), [(1, 1), (7, 2), (23, 3)])
def test_evaluation_flops_match_torch_flop_counter(length, layers):
    """One case of ``length`` items: torch counts the forward's matmuls and bmm/einsum, but
    not the CPU flash-attention kernel, whose causal part is counted here by a loop over the
    query positions (query i meets keys 0..i; QK^T and PV, 2 FLOPs per multiply-add)."""
    n_items, config = 50, ModelConfig(hidden=16, heads=2, layers=layers, max_len=30, ffn=24)
    model = build_model("sasrec", n_items, config).eval()
    tokens = torch.randint(1, n_items + 1, (1, length))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.score(model.user_state(tokens))
    counted = {str(op) for op in counter.get_flop_counts()["Global"]}
    assert not any("attention" in op for op in counted)
    head = config.hidden // config.heads
    causal = sum(config.heads * (query + 1) * head * 2 * 2 for query in range(length))
    expected = counter.get_total_flops() + (layers - 1) * causal
    floor = ranking_flops(config, np.array([length]), n_items)
    assert floor == pytest.approx(expected, rel=1e-12)


def test_evaluation_flops_truncate_histories_to_max_len():
    config = ModelConfig(hidden=8, heads=2, layers=2, max_len=5)
    assert ranking_flops(config, [40], 9) == ranking_flops(config, [5], 9)
    assert ranking_flops(config, [4], 9) < ranking_flops(config, [5], 9)
