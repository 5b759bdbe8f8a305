"""CPU dropout masks from 16-bit lanes of 64-bit draws (dwrec.models.layers.keep_mask),
against binomial statistics, autograd, and float64 attention with the same mask."""

from __future__ import annotations

import math

import pytest
import torch

from dwrec.models.layers import (
    CAUSAL,
    DROP_LEVELS,
    MultiHeadSelfAttention,
    attention_mask,
    dropout,
    keep_mask,
)

N = 1 << 20


def rounded(p: float) -> float:
    return round(p * DROP_LEVELS) / DROP_LEVELS


def within(observed: float, expected: float, count: int, sigmas: float = 5.0) -> bool:
    """|observed - expected| within ``sigmas`` binomial standard deviations."""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / count)


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
def test_drop_rate_is_p_rounded_overall_and_in_every_lane(p):
    torch.manual_seed(0)
    keep, scale = keep_mask((N,), p)
    dropped = (~keep).double()
    assert within(dropped.mean().item(), rounded(p), N)
    for lane in range(4):  # each 16-bit lane of the 64-bit draws, the sign lane included
        assert within(dropped[lane::4].mean().item(), rounded(p), N // 4)
    assert scale == pytest.approx(1 / (1 - rounded(p)), rel=1e-15)


def test_neighbouring_elements_are_uncorrelated():
    torch.manual_seed(1)
    keep, _ = keep_mask((N,), 0.5)
    both = (keep[:-1] & keep[1:]).double().mean().item()
    assert within(both, rounded(0.5) ** 2, N - 1)


def test_dropout_keeps_the_expectation():
    torch.manual_seed(2)
    out = dropout(torch.ones(N, dtype=torch.float64), 0.3, training=True)
    keep = 1 - rounded(0.3)
    sd = math.sqrt((1 - keep) / keep / N)  # std of the mean of scale * Bernoulli(keep)
    assert abs(out.mean().item() - 1.0) <= 5 * sd
    values = out.unique().tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / keep)


def test_masks_follow_torch_manual_seed():
    torch.manual_seed(3)
    a, _ = keep_mask((7, 9, 5), 0.2)
    torch.manual_seed(3)
    b, _ = keep_mask((7, 9, 5), 0.2)
    c, _ = keep_mask((7, 9, 5), 0.2)
    assert a.shape == (7, 9, 5)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_is_the_scaled_mask():
    torch.manual_seed(4)
    x = torch.randn(33, 17, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    out.sum().backward()
    kept = out.detach() != 0
    assert torch.equal(x.grad, kept.float() / (1 - rounded(0.25)))
    torch.testing.assert_close(out.detach()[kept], x.detach()[kept] / (1 - rounded(0.25)))


def test_eval_mode_and_zero_p_are_the_identity():
    x = torch.randn(4, 4)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("padded", [False, True])
def test_training_attention_equals_float64_reference_with_the_same_mask(padded):
    """The CPU training path (masking, softmax, dropout, scaling) against a float64
    recomputation that draws the identical mask from the same seed."""
    torch.manual_seed(5)
    batch, length, hidden, heads, p = 3, 6, 8, 2, 0.4
    attention = MultiHeadSelfAttention(hidden, heads, dropout=p)
    tokens = torch.randint(1, 9, (batch, length))
    if padded:
        tokens[0, :2] = 0
    mask = attention_mask(tokens, causal=True)
    assert isinstance(mask, str) != padded
    x = torch.randn(batch, length, hidden)
    attention.train()
    torch.manual_seed(6)
    got = attention(x, mask)

    torch.manual_seed(6)
    keep, scale = keep_mask((batch, heads, length, length), p)
    model = attention.double()
    q, k, v = model.qkv(x.double()).view(batch, length, 3, heads, 4).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / 2.0
    allowed = torch.ones(length, length, dtype=torch.bool).tril() if mask == CAUSAL else mask
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1) * keep.double() * scale
    expected = model.out((probs @ v).transpose(1, 2).reshape(batch, length, hidden))
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
