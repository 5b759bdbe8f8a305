"""Trimming all-padding columns changes no model output (positions count from the first token)."""

from __future__ import annotations

import pytest
import torch

from dwrec.models.base import ModelConfig, trim_leading_padding
from dwrec.models.registry import build_model


def test_trim_drops_only_columns_that_are_padding_in_every_row():
    tokens = torch.tensor([[0, 0, 0, 4, 5], [0, 0, 2, 3, 1]])
    assert trim_leading_padding(tokens).tolist() == [[0, 4, 5], [2, 3, 1]]
    assert trim_leading_padding(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 2)
    assert trim_leading_padding(torch.tensor([[0, 0, 0, 0, 7]])).shape == (1, 2)


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "pinnerformer", "bert4rec"])
def test_trimmed_batch_gives_the_same_user_states(name):
    torch.manual_seed(0)
    model = build_model(name, 30, ModelConfig(hidden=16, heads=2, layers=1, max_len=12)).eval()
    tokens = torch.zeros(3, 12, dtype=torch.long)
    tokens[0, -4:] = torch.tensor([1, 2, 3, 4])
    tokens[1, -6:] = torch.tensor([5, 6, 7, 8, 9, 10])
    tokens[2, -2:] = torch.tensor([11, 12])
    with torch.no_grad():
        full = model.user_state(tokens)
        trimmed = model.user_state(trim_leading_padding(tokens))
    torch.testing.assert_close(full, trimmed, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padded", [True, False])
def test_sasrec_user_state_computes_only_the_last_position_but_equals_the_full_forward(padded):
    torch.manual_seed(1)
    model = build_model("sasrec", 40, ModelConfig(hidden=16, heads=2, layers=3, max_len=10)).eval()
    tokens = torch.randint(1, 41, (4, 10))
    if padded:
        tokens[0, :6] = 0
        tokens[2, :9] = 0
    with torch.no_grad():
        full = model(tokens)[:, -1, :]
        last_only = model.user_state(tokens)
    torch.testing.assert_close(last_only, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padded", [True, False])
def test_last_query_shortcut_equals_projected_keys_and_values_in_float64(padded):
    """``last_query`` never projects keys/values; check it against plain attention over the
    projected keys and values, in float64, with non-zero biases (the init zeroes them)."""
    from dwrec.models.layers import MultiHeadSelfAttention, attention_mask

    torch.manual_seed(2)
    attention = MultiHeadSelfAttention(12, 2, dropout=0.0).double()
    with torch.no_grad():
        for parameter in attention.parameters():
            parameter.normal_()
    tokens = torch.randint(1, 9, (5, 7))
    if padded:
        tokens[1, :4] = 0
        tokens[3, :6] = 0
    x = torch.randn(5, 7, 12, dtype=torch.float64)
    mask = attention_mask(tokens, causal=True)
    with torch.no_grad():
        got = attention.last_query(x, mask)[:, 0]
        q, k, v = attention.qkv(x).split(12, dim=-1)
        expected = []
        for row in range(5):
            allowed = tokens[row] != 0
            allowed[-1] = True
            heads = []
            for h in range(2):
                cols = slice(6 * h, 6 * h + 6)
                logits = k[row, allowed, cols] @ q[row, -1, cols] / 6**0.5
                heads.append(torch.softmax(logits, dim=0) @ v[row, allowed, cols])
            expected.append(attention.out(torch.cat(heads)))
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["sasrec", "pinnerformer", "bert4rec"])
@pytest.mark.parametrize("layers", [1, 3])
def test_last_position_user_state_equals_the_full_forward_in_float64(name, layers):
    """Every parameter random (LayerNorm and biases included, which the initialisation
    zeroes), float64, padded rows: ``user_state`` (last block at the last position only)
    equals the last position of ``forward`` over the same input."""
    torch.manual_seed(7)
    config = ModelConfig(hidden=12, heads=2, layers=layers, max_len=9, ffn=20)
    model = build_model(name, 30, config).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.5)
    history = torch.randint(1, 31, (4, 8))
    history[1, :5] = 0
    history[3, :7] = 0
    with torch.no_grad():
        state = model.user_state(history)
        if name == "bert4rec":  # its state is read at a mask token appended to the history
            tokens = torch.cat([history, torch.full((4, 1), model.mask_token)], dim=1)
        else:
            tokens = history
        full = model(tokens)[:, -1]
    torch.testing.assert_close(state, full, rtol=1e-10, atol=1e-10)
