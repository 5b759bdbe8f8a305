"""bert4rec, gru4rec and pinnerformer: the SequentialModel contract, causality, padding,
training targets, pinnerformer's cosine/temperature scores, and that each model learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from aux_model_runs import random_tokens

from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig
from dwrec.models.bert4rec import Bert4RecConfig
from dwrec.models.layers import attention_mask, positions_from_start
from dwrec.models.registry import build_model, default_config

ZOO = ("bert4rec", "gru4rec", "pinnerformer")
CAUSAL = ("gru4rec", "pinnerformer")
N_ITEMS = 30
MAX_LEN = 12


def small_config(**changes) -> ModelConfig:
    values = dict(hidden=16, heads=2, layers=2, ffn=32, dropout=0.1, max_len=MAX_LEN)
    values.update(changes)
    if "mask_prob" in changes:  # BERT4Rec's own option lives in its config class
        return Bert4RecConfig(**values)
    return ModelConfig(**values)


def small_model(name: str, **changes):
    torch.manual_seed(0)
    return build_model(name, N_ITEMS, small_config(**changes))


def left_pad(rows: list[list[int]], length: int) -> torch.Tensor:
    """Token rows -> ``[B, length]`` left-padded with 0."""
    return torch.tensor([[0] * (length - len(row)) + row for row in rows])


# --- shapes and interface ---------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_output_shapes(name):
    model = small_model(name).eval()
    tokens = random_tokens(N_ITEMS, 5, 9)
    hidden = model(tokens)
    state = model.user_state(tokens)
    assert hidden.shape == (5, 9, 16)
    assert state.shape == (5, 16)
    assert model.score(state).shape == (5, N_ITEMS)
    assert model.score(state, torch.tensor([3, 0, 29])).shape == (5, 3)
    assert model.score(state, torch.randint(0, N_ITEMS, (5, 4))).shape == (5, 4)
    assert model.embed_items(torch.tensor([[0, 1], [2, 29]])).shape == (2, 2, 16)


@pytest.mark.parametrize("name", ZOO)
def test_candidate_scores_are_the_full_scores_columns(name):
    model = small_model(name).eval()
    state = model.user_state(random_tokens(N_ITEMS, 4, 7))
    full = model.score(state)
    shared = torch.tensor([5, 0, 29, 5])
    per_row = torch.randint(0, N_ITEMS, (4, 6), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.score(state, shared), full[:, shared])
    torch.testing.assert_close(model.score(state, per_row), full.gather(1, per_row))


@pytest.mark.parametrize("name", ZOO)
def test_output_layer_is_a_shared_parameter_that_gets_gradient(name):
    model = small_model(name)
    weight = model.output_layer()
    assert any(weight is parameter for parameter in model.parameters())
    model.score(model.user_state(random_tokens(N_ITEMS, 4, 6))).logsumexp(dim=1).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ZOO)
def test_scores_cover_only_real_items_even_for_bert4rec_mask_token(name):
    model = small_model(name).eval()
    assert model.score(model.user_state(random_tokens(N_ITEMS, 2, 5))).shape[1] == N_ITEMS


def test_pinnerformer_defaults_come_from_the_registry():
    config = default_config("pinnerformer")
    assert (config.hidden, config.heads, config.layers, config.ffn) == (256, 8, 4, 1024)
    assert (config.dropout, config.max_len) == (0.1, 100)


@pytest.mark.parametrize("name", ("bert4rec", "pinnerformer"))
def test_hidden_not_divisible_by_heads_is_a_usage_error(name):
    with pytest.raises(UsageError, match="--heads"):
        build_model(name, N_ITEMS, small_config(hidden=10, heads=3))


def test_bert4rec_rejects_mask_prob_outside_unit_interval():
    with pytest.raises(UsageError, match="--mask-prob"):
        build_model("bert4rec", N_ITEMS, small_config(mask_prob=1.0))


# --- attention mask building blocks -----------------------------------------------------


def test_attention_mask_brute_force():
    tokens = torch.tensor([[0, 0, 4, 5], [0, 0, 0, 0], [1, 2, 3, 4]])
    for causal in (False, True):
        mask = attention_mask(tokens, causal)
        for b in range(3):
            for q in range(4):
                for k in range(4):
                    expected = q == k or (tokens[b, k] != 0 and (not causal or k <= q))
                    assert bool(mask[b, 0, q, k]) == expected


def test_positions_count_from_first_real_token():
    tokens = torch.tensor([[0, 0, 7, 3, 9], [2, 2, 2, 2, 2]])
    assert positions_from_start(tokens)[0, 2:].tolist() == [0, 1, 2]
    assert positions_from_start(tokens)[1].tolist() == [0, 1, 2, 3, 4]


# --- causality --------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_model_earlier_states_ignore_later_items(name):
    model = small_model(name).eval()
    tokens = random_tokens(N_ITEMS, 4, 10)
    tokens[:, 4:] = tokens[:, 4:].clamp_min(1)  # real items from column 4 on
    changed = tokens.clone()
    changed[:, 7] = changed[:, 7] % N_ITEMS + 1
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert (after[:, 7:] - before[:, 7:]).abs().amax(dim=-1).min() > 1e-4


def test_bert4rec_earlier_states_see_later_items():
    model = small_model("bert4rec").eval()
    tokens = random_tokens(N_ITEMS, 4, 10)
    tokens[:, 4:] = tokens[:, 4:].clamp_min(1)
    changed = tokens.clone()
    changed[:, 7] = changed[:, 7] % N_ITEMS + 1
    difference = (model(changed)[:, 4:7] - model(tokens)[:, 4:7]).abs().amax(dim=-1)
    assert difference.min() > 1e-4


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_state_at_position_equals_user_state_of_prefix(name):
    model = small_model(name).eval()
    rows = [[3, 8, 1, 30, 7, 7, 2], [12, 5, 19]]
    hidden = model(left_pad(rows, 9))
    for b, row in enumerate(rows):
        offset = 9 - len(row)
        for t in range(1, len(row) + 1):
            prefix_state = model.user_state(torch.tensor([row[:t]]))
            torch.testing.assert_close(
                hidden[b, offset + t - 1], prefix_state[0], atol=1e-5, rtol=0
            )


# --- padding ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO)
def test_left_padding_does_not_change_user_state(name):
    model = small_model(name).eval()
    unpadded = torch.randint(1, N_ITEMS + 1, (3, 5), generator=torch.Generator().manual_seed(4))
    padded = torch.cat([torch.zeros(3, 6, dtype=torch.long), unpadded], dim=1)
    torch.testing.assert_close(
        model.user_state(padded), model.user_state(unpadded), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", ZOO)
def test_rows_of_different_lengths_match_their_unpadded_selves(name):
    model = small_model(name).eval()
    rows = [[4], [9, 2, 2, 17], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    batch_states = model.user_state(left_pad(rows, MAX_LEN - 1))
    for b, row in enumerate(rows):
        alone = model.user_state(torch.tensor([row]))[0]
        torch.testing.assert_close(batch_states[b], alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ZOO)
def test_fully_padded_rows_give_finite_states_scores_and_gradients(name):
    model = small_model(name).train()
    tokens = random_tokens(N_ITEMS, 4, 8)
    tokens[1] = 0
    tokens[3] = 0
    hidden = model(tokens)
    state = model.user_state(tokens)
    assert torch.isfinite(hidden).all() and torch.isfinite(state).all()
    scores = model.score(state)
    assert torch.isfinite(scores).all()
    F.cross_entropy(scores, torch.arange(4)).backward()
    for parameter in model.parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all()


@pytest.mark.parametrize("name", ZOO)
def test_history_longer_than_max_len_uses_its_last_items(name):
    model = small_model(name).eval()
    long_history = random_tokens(N_ITEMS, 3, MAX_LEN + 5).clamp_min(1)
    keep = MAX_LEN - 1 if name == "bert4rec" else MAX_LEN  # bert4rec appends a mask token
    torch.testing.assert_close(
        model.user_state(long_history), model.user_state(long_history[:, -keep:])
    )


@pytest.mark.parametrize("name", ZOO)
def test_bf16_autocast_gives_finite_scores(name):
    model = small_model(name).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score(model.user_state(random_tokens(N_ITEMS, 3, 8)))
    assert scores.shape == (3, N_ITEMS) and torch.isfinite(scores.float()).all()


# --- training targets -------------------------------------------------------------------


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_training_batch_shifts_by_one(name):
    model = small_model(name)
    windows = left_pad([[5, 6, 7, 8, 9], [3], [11, 12], [1, 2, 3, 4, 5, 6]], 6)
    batch = model.training_batch(windows, torch.Generator().manual_seed(0))
    assert torch.equal(batch.inputs, windows[:, :-1])
    expected = torch.full((4, 5), -1)
    for b in range(4):
        for t in range(5):
            if windows[b, t] != 0 and windows[b, t + 1] != 0:
                expected[b, t] = windows[b, t + 1] - 1
    assert torch.equal(batch.targets, expected)
    assert batch.targets[3].tolist() == [1, 2, 3, 4, 5]  # item ids are tokens - 1


def cloze_batch(last_item_prob: float, mask_prob: float = 0.2, seed: int = 0):
    model = small_model("bert4rec", mask_prob=mask_prob, max_len=50)
    model.last_item_prob = last_item_prob
    windows = random_tokens(N_ITEMS, 4000, 51, seed=seed)
    return windows, model.training_batch(windows, torch.Generator().manual_seed(seed))


def test_cloze_masks_real_items_at_mask_prob_and_never_padding():
    windows, batch = cloze_batch(last_item_prob=0.0, mask_prob=0.2)
    original = windows[:, 1:]
    masked = batch.inputs == N_ITEMS + 1
    real = original != 0
    assert not (masked & ~real).any()
    rate = masked.sum().item() / real.sum().item()
    # rows whose draw masked nothing get their last item masked: a small excess
    assert 0.2 - 0.01 < rate < 0.2 + 0.02
    assert torch.equal(batch.inputs[~masked], original[~masked])


def test_cloze_targets_are_original_items_at_masked_positions_only():
    windows, batch = cloze_batch(last_item_prob=0.1)
    original = windows[:, 1:]
    masked = batch.inputs == N_ITEMS + 1
    assert torch.equal(batch.targets[masked], original[masked] - 1)
    assert (batch.targets[~masked] == -1).all()


def test_cloze_every_nonempty_row_has_a_target():
    windows, batch = cloze_batch(last_item_prob=0.1, mask_prob=0.05)
    nonempty = (windows[:, 1:] != 0).any(dim=1)
    assert torch.equal((batch.targets >= 0).any(dim=1), nonempty)


def test_cloze_last_item_only_rows_mask_just_the_last_item():
    windows, batch = cloze_batch(last_item_prob=1.0)
    masked = batch.inputs == N_ITEMS + 1
    assert masked[:, -1].all() and not masked[:, :-1].any()


def test_cloze_last_item_only_share_is_last_item_prob():
    _, batch = cloze_batch(last_item_prob=0.3, mask_prob=0.5)
    masked = batch.inputs == N_ITEMS + 1
    only_last = masked[:, -1] & ~masked[:, :-1].any(dim=1)
    # a cloze row with >= 10 items masks only its last one with probability < 0.002
    long_rows = batch.inputs[:, -10] != 0
    share = only_last[long_rows].float().mean().item()
    assert 0.3 - 0.03 < share < 0.3 + 0.03


def test_cloze_is_reproducible_from_the_generator():
    first = cloze_batch(last_item_prob=0.1, seed=5)[1]
    second = cloze_batch(last_item_prob=0.1, seed=5)[1]
    assert torch.equal(first.inputs, second.inputs)


# --- pinnerformer scoring ---------------------------------------------------------------


def test_pinnerformer_scores_are_cosine_over_temperature():
    model = small_model("pinnerformer").eval()
    with torch.no_grad():
        model.log_tau.fill_(math.log(0.2))
    hidden = torch.randn(6, 16, generator=torch.Generator().manual_seed(2)) * 3
    table = model.item_embedding.weight.detach().double()[1:]
    h = hidden.double()
    expected = torch.empty(6, N_ITEMS, dtype=torch.float64)
    for n in range(6):
        for i in range(N_ITEMS):
            expected[n, i] = (h[n] @ table[i]) / (h[n].norm() * table[i].norm()) / 0.2
    torch.testing.assert_close(model.score(hidden).double(), expected, atol=1e-5, rtol=1e-5)


def test_pinnerformer_user_and_item_embeddings_are_unit_vectors():
    model = small_model("pinnerformer").eval()
    state = model.user_state(random_tokens(N_ITEMS, 5, 8))
    items = model.embed_items(torch.arange(N_ITEMS))
    torch.testing.assert_close(state.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(items.norm(dim=-1), torch.ones(N_ITEMS))


def test_pinnerformer_temperature_never_below_001():
    model = small_model("pinnerformer").eval()
    with torch.no_grad():
        model.log_tau.fill_(-20.0)
    assert model.temperature().item() == pytest.approx(0.01)
    scores = model.score(model.user_state(random_tokens(N_ITEMS, 4, 8)))
    assert scores.abs().max() <= 100.0 + 1e-4


def test_pinnerformer_temperature_is_learned():
    model = small_model("pinnerformer")
    scores = model.score(model.user_state(random_tokens(N_ITEMS, 4, 8)))
    F.cross_entropy(scores, torch.tensor([0, 1, 2, 3])).backward()
    assert model.log_tau.grad is not None and model.log_tau.grad.abs() > 0


# --- learning ---------------------------------------------------------------------------


def successor_windows(count: int, length: int, seed: int) -> torch.Tensor:
    """Left-padded windows where each item is the previous one + 1 (mod N_ITEMS)."""
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, N_ITEMS, (count, 1), generator=generator)
    items = (starts + torch.arange(length)) % N_ITEMS
    lengths = torch.randint(2, length + 1, (count,), generator=generator)
    return (items + 1).masked_fill(torch.arange(length) < (length - lengths)[:, None], 0)


def next_item_loss(model, windows: torch.Tensor) -> float:
    """Full-softmax CE of the item after each window, ranked from ``user_state``."""
    model.eval()
    with torch.no_grad():
        scores = model.score(model.user_state(windows))
    model.train()
    return F.cross_entropy(scores, (windows[:, -1] % N_ITEMS)).item()


@pytest.mark.parametrize("name", ZOO)
def test_model_learns_successor_pattern(name):
    length = 6
    model = small_model(name, hidden=32, ffn=64, dropout=0.0, max_len=length)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    held_out = successor_windows(200, length, seed=999)
    before = next_item_loss(model, held_out)
    # bert4rec's cloze task needs more steps and sequences; the causal models converge fast
    steps, batch_size = (200, 128) if name == "bert4rec" else (100, 64)
    for step in range(steps):
        windows = successor_windows(batch_size, length + 1, seed=step)
        batch = model.training_batch(windows, generator)
        has_target = batch.targets >= 0
        hidden = model(batch.inputs)[has_target]
        loss = F.cross_entropy(model.score(hidden), batch.targets[has_target])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = next_item_loss(model, held_out)
    assert before > 0.9 * math.log(N_ITEMS)
    assert after < 0.2 * before, (before, after)
