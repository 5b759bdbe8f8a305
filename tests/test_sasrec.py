"""SASRec and the popularity baseline: the model contract, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dwrec.models.base import ModelConfig
from dwrec.models.registry import build_model

N_ITEMS = 30


@pytest.fixture()
def sasrec():
    torch.manual_seed(0)
    config = ModelConfig(hidden=16, layers=2, heads=2, dropout=0.3, max_len=12)
    return build_model("sasrec", N_ITEMS, config).eval()


def _tokens(rows: list[list[int]], length: int) -> torch.Tensor:
    """Left-pad lists of item ids (dataset ids) into tokens ``[B, length]``."""
    out = torch.zeros(len(rows), length, dtype=torch.long)
    for r, items in enumerate(rows):
        if items:
            out[r, length - len(items) :] = torch.tensor(items) + 1
    return out


def test_changing_a_later_item_leaves_earlier_states_unchanged(sasrec):
    tokens = _tokens([[3, 7, 1, 9, 4, 2]], 12)
    changed = tokens.clone()
    changed[0, 9] = 20  # position 9 of 12 = the 4th real item
    with torch.no_grad():
        before, after = sasrec(tokens), sasrec(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=0)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_more_left_padding_does_not_change_real_positions(sasrec):
    items = [5, 6, 7, 8]
    with torch.no_grad():
        short = sasrec(_tokens([items], 5))
        long = sasrec(_tokens([items], 12))
    torch.testing.assert_close(short[:, -4:], long[:, -4:], rtol=1e-5, atol=1e-6)


def test_padding_rows_are_zero_and_never_nan(sasrec):
    tokens = _tokens([[1], [], [2, 3, 4]], 12)
    with torch.no_grad():
        hidden = sasrec(tokens)
    assert torch.isfinite(hidden).all()
    assert (hidden[tokens == 0] == 0).all()
    assert (hidden[0, -1] != 0).any()


def test_padding_is_ignored_in_training_mode_too(sasrec):
    sasrec.train()
    tokens = _tokens([[1], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]], 12)
    hidden = sasrec(tokens)
    hidden.sum().backward()
    assert torch.isfinite(hidden).all()
    assert sasrec.item_embedding.weight.grad[0].abs().sum() == 0  # the padding row


def test_a_batch_row_does_not_depend_on_the_other_rows(sasrec):
    alone = _tokens([[2, 4, 6]], 12)
    batch = _tokens([[2, 4, 6], [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]], 12)
    with torch.no_grad():
        torch.testing.assert_close(sasrec(alone)[0], sasrec(batch)[0], rtol=1e-5, atol=1e-6)


def test_score_shapes_and_values_match_explicit_dot_products(sasrec):
    hidden = torch.randn(4, 16, dtype=torch.float64)
    sasrec = sasrec.double()
    table = sasrec.item_embedding.weight.detach()
    full = sasrec.score(hidden)
    assert full.shape == (4, N_ITEMS)
    expected = torch.stack(
        [torch.stack([hidden[n] @ table[i + 1] for i in range(N_ITEMS)]) for n in range(4)]
    )
    torch.testing.assert_close(full, expected)
    candidates = torch.tensor([0, 29, 5])
    assert sasrec.score(hidden, candidates).shape == (4, 3)
    torch.testing.assert_close(sasrec.score(hidden, candidates), expected[:, candidates])
    per_row = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    torch.testing.assert_close(sasrec.score(hidden, per_row), expected.gather(1, per_row))
    torch.testing.assert_close(sasrec.embed_items(torch.tensor([0])), table[1:2])


def test_user_state_is_the_last_position_and_truncates_to_max_len(sasrec):
    history = _tokens([list(range(20))], 20)
    with torch.no_grad():
        state = sasrec.user_state(history)
        direct = sasrec(history[:, -12:])[:, -1]
    assert state.shape == (1, 16)
    torch.testing.assert_close(state, direct)


def test_training_batch_shifts_by_one_with_minus_one_at_padding(sasrec):
    windows = _tokens([[4, 5, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]], 13)
    batch = sasrec.training_batch(windows, torch.Generator())
    assert batch.inputs.shape == batch.targets.shape == (2, 12)
    assert batch.targets[0].tolist() == [-1] * 10 + [5, 6]
    assert batch.targets[1].tolist() == list(range(2, 14))
    assert batch.inputs[0, -2:].tolist() == [5, 6]  # tokens = ids + 1


def test_pop_scores_log_counts_for_every_user():
    pop = build_model("pop", 5, ModelConfig())
    counts = np.array([3, 0, 10, 1, 3])
    pop.fit(counts)
    assert not pop.trainable
    history = _tokens([[1, 2], [4]], 6)
    scores = pop.score(pop.user_state(history))
    expected = torch.tensor([np.log(1 + c) for c in counts], dtype=torch.float32)
    assert scores.shape == (2, 5)
    torch.testing.assert_close(scores[0], expected)
    torch.testing.assert_close(scores[1], expected)
    torch.testing.assert_close(
        pop.score(scores[:, :1], torch.tensor([2, 0])), expected[[2, 0]].expand(2, 2)
    )


def test_pop_counts_live_in_the_state_dict():
    pop = build_model("pop", 4, ModelConfig()).fit(np.array([1, 2, 3, 4]))
    again = build_model("pop", 4, ModelConfig())
    again.load_state_dict(pop.state_dict())
    torch.testing.assert_close(again.counts, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with pytest.raises(ValueError):
        again.fit(np.array([1, 2]))
