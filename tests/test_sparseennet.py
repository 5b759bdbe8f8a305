"""sparseennet: the four augmentations (semantics, padding, shapes), NT-Xent against a
float64 loop, gradient reversal, causality, and end-to-end training (learns, determinism,
exact resume, evaluation)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from aux_model_runs import (
    TINY,
    check_evaluate_cli,
    check_learns_and_beats_pop,
    check_resume_equals_uninterrupted,
    check_same_seed_same_run,
    log_records,
)

import dwrec
from dwrec.errors import UsageError
from dwrec.models import augment
from dwrec.models.base import ModelConfig
from dwrec.models.registry import build_model
from dwrec.models.sparseennet import SparseEnNet, SparseEnNetConfig

N_ITEMS = 40


def left_padded(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random item tokens, row lengths 0..length (row 0 full, row 1 empty), left-padded."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, N_ITEMS + 1, (batch, length), generator=generator)
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    lengths[0], lengths[1] = length, 0
    return tokens.masked_fill(torch.arange(length) < (length - lengths)[:, None], 0)


def real(row: torch.Tensor) -> list[int]:
    return [int(t) for t in row if t != 0]


def is_left_padded(tokens: torch.Tensor) -> bool:
    """Real tokens form a suffix of every row."""
    is_real = (tokens != 0).long()
    return bool((is_real[:, 1:] >= is_real[:, :-1]).all())


# --- augmentations ----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.2, 0.6, 1.0])
def test_crop_keeps_a_contiguous_run_of_floor_keep_n_items(keep):
    tokens = left_padded(300, 12)
    cropped = augment.crop(tokens, keep, torch.Generator().manual_seed(1))
    assert cropped.shape == tokens.shape and is_left_padded(cropped)
    starts = set()
    for before, after in zip(tokens, cropped, strict=True):
        items, kept = real(before), real(after)
        if not items:
            assert not kept
            continue
        assert len(kept) == max(1, math.floor(keep * len(items)))
        found = [s for s in range(len(items)) if items[s : s + len(kept)] == kept]
        assert found, (items, kept)
        if len(items) == 12:
            starts.add(found[0])
    if keep < 1.0:
        assert len(starts) > 1  # the start is random


def test_mask_replaces_real_items_only_at_the_rate():
    tokens = left_padded(400, 20)
    masked = augment.mask(tokens, 0.3, N_ITEMS + 1, torch.Generator().manual_seed(2))
    changed = masked != tokens
    assert (masked[changed] == N_ITEMS + 1).all()
    assert not changed[tokens == 0].any()
    rate = changed.sum().item() / (tokens != 0).sum().item()
    assert 0.27 < rate < 0.33


@pytest.mark.parametrize("share", [0.3, 0.6, 1.0])
def test_reorder_permutes_one_contiguous_run_of_floor_share_n_items(share):
    tokens = torch.arange(1, 13).repeat(200, 1)  # distinct items, so positions are traceable
    tokens[100:, :5] = 0  # half the rows have 7 items
    shuffled = augment.reorder(tokens, share, torch.Generator().manual_seed(3))
    assert torch.equal(shuffled == 0, tokens == 0)
    moved_any = False
    for before, after in zip(tokens, shuffled, strict=True):
        items, out = real(before), real(after)
        assert sorted(out) == sorted(items)
        k = max(1, math.floor(share * len(items)))
        differ = [i for i in range(len(items)) if items[i] != out[i]]
        if differ:
            moved_any = True
            assert differ[-1] - differ[0] + 1 <= k  # inside one run of k positions
    assert moved_any


def test_replace_draws_random_items_at_the_rate():
    tokens = left_padded(400, 20)
    replaced = augment.replace(tokens, 0.3, N_ITEMS, torch.Generator().manual_seed(4))
    assert not (replaced[tokens == 0] != 0).any()
    assert ((replaced[tokens != 0] >= 1) & (replaced[tokens != 0] <= N_ITEMS)).all()
    # a replacement hits the same item with probability 1 / N_ITEMS
    rate = (replaced != tokens).sum().item() / (tokens != 0).sum().item()
    expected = 0.3 * (1 - 1 / N_ITEMS)
    assert expected - 0.03 < rate < expected + 0.03


def test_augment_gives_each_row_its_own_kind_and_draws_a_fixed_amount():
    tokens = left_padded(64, 10)
    options = dict(
        crop_keep=0.5, mask_prob=0.5, reorder_share=0.5, replace_prob=0.5,
        mask_token=N_ITEMS + 1, n_items=N_ITEMS,
    )  # fmt: skip
    kinds = torch.arange(64) % 4
    generator = torch.Generator().manual_seed(5)
    mixed = augment.augment(tokens, kinds, generator=generator, **options)
    after_mixed = generator.get_state()
    generator = torch.Generator().manual_seed(5)
    views = [
        augment.crop(tokens, 0.5, generator),
        augment.mask(tokens, 0.5, N_ITEMS + 1, generator),
        augment.reorder(tokens, 0.5, generator),
        augment.replace(tokens, 0.5, N_ITEMS, generator),
    ]
    for kind in range(4):
        assert torch.equal(mixed[kinds == kind], views[kind][kinds == kind])
    assert torch.equal(after_mixed, generator.get_state())


# --- losses -----------------------------------------------------------------------------


@pytest.mark.parametrize("cosine", [False, True])
def test_nt_xent_matches_a_float64_loop(cosine):
    generator = torch.Generator().manual_seed(6)
    first, second = torch.randn(5, 7, generator=generator), torch.randn(5, 7, generator=generator)
    temperature = 0.7
    views = torch.cat([first, second]).double()

    def sim(a, b):
        return float(a @ b / (a.norm() * b.norm())) if cosine else float(a @ b)

    expected = 0.0
    for i in range(10):
        pair = (i + 5) % 10
        logits = [sim(views[i], views[j]) / temperature for j in range(10) if j != i]
        positive = sim(views[i], views[pair]) / temperature
        expected += -(positive - math.log(sum(math.exp(v) for v in logits)))
    expected /= 10
    got = augment.nt_xent(first, second, temperature, cosine)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_reverse_gradient_flips_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(4, 3)
    (augment.reverse_gradient(x, 0.5) * weight).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * weight)


# --- the model --------------------------------------------------------------------------


def small(**changes) -> SparseEnNet:
    torch.manual_seed(0)
    values = dict(hidden=16, heads=2, layers=2, ffn=32, dropout=0.1, max_len=12)
    values.update(changes)
    return build_model("sparseennet", N_ITEMS, ModelConfig(**values))


def test_flat_config_becomes_the_model_config_with_its_defaults():
    model = small()
    assert isinstance(model.config, SparseEnNetConfig)
    assert model.config.hidden == 16 and model.config.crop_keep == SparseEnNetConfig.crop_keep
    assert model.score(torch.zeros(2, 16)).shape == (2, N_ITEMS)  # the mask token is no item
    with pytest.raises(UsageError, match="crop_keep"):
        SparseEnNet(N_ITEMS, SparseEnNetConfig(hidden=16, heads=2, crop_keep=0.0))


def test_earlier_states_ignore_later_items():
    model = small().eval()
    tokens = left_padded(4, 10).clamp_min(1)
    changed = tokens.clone()
    changed[:, 7] = changed[:, 7] % N_ITEMS + 1
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert (after[:, 7:] - before[:, 7:]).abs().amax(dim=-1).min() > 1e-4


def _adversarial_gradients() -> tuple[torch.Tensor, torch.Tensor]:
    model = small(dropout=0.0)
    model.config.cl_weight = 0.0
    inputs = left_padded(8, 10).clamp_min(1)
    hidden = model(inputs)
    loss = model.auxiliary_loss(inputs, inputs - 1, hidden, torch.Generator().manual_seed(9))
    loss.backward()
    return model.item_embedding.weight.grad.clone(), model.discriminator[0].weight.grad.clone()


def test_encoder_gets_the_reversed_discriminator_gradient(monkeypatch):
    encoder_reversed, discriminator_reversed = _adversarial_gradients()
    monkeypatch.setattr(augment, "reverse_gradient", lambda x, scale: x)  # no reversal
    encoder_plain, discriminator_plain = _adversarial_gradients()
    torch.testing.assert_close(discriminator_reversed, discriminator_plain)
    torch.testing.assert_close(encoder_reversed, -encoder_plain)
    assert encoder_plain.abs().sum() > 0


def test_auxiliary_loss_is_cl_plus_discriminator_terms():
    model = small(dropout=0.0).eval()
    inputs = left_padded(6, 10).clamp_min(1)
    hidden = model(inputs)
    loss = model.auxiliary_loss(inputs, inputs - 1, hidden, torch.Generator().manual_seed(3))
    first, second, kind_1, kind_2 = model.views(inputs, torch.Generator().manual_seed(3))
    z_1, z_2 = model(first)[:, -1], model(second)[:, -1]
    states = torch.cat([hidden[:, -1], z_1, z_2])
    labels = torch.cat([torch.zeros(6, dtype=torch.long), kind_1 + 1, kind_2 + 1])
    expected = 0.02 * augment.nt_xent(z_1, z_2, 1.0) + 0.1 * F.cross_entropy(
        model.discriminator(states), labels
    )
    torch.testing.assert_close(loss, expected)


# --- training end to end ----------------------------------------------------------------


def test_learns_beats_pop_and_evaluates(data_dir, tmp_path):
    result = check_learns_and_beats_pop("sparseennet", data_dir, tmp_path)
    check_evaluate_cli(result.run_dir, result.best_valid)


def test_same_seed_same_run(data_dir, tmp_path):
    check_same_seed_same_run("sparseennet", data_dir, tmp_path)


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    check_resume_equals_uninterrupted("sparseennet", data_dir, tmp_path, stop_at_step=7)


def test_more_than_one_process_is_refused(data_dir, tmp_path):
    with pytest.raises(UsageError, match="cannot train with several processes"):
        dwrec.train(data_dir, model="sparseennet", out=tmp_path / "r", nproc=2, quiet=True)


def test_trainer_adds_the_auxiliary_loss_to_the_step_loss(data_dir, tmp_path, monkeypatch):
    """A constant auxiliary loss (no gradient, no random draws) shifts every logged training
    loss by exactly that constant and changes nothing else."""
    options = dict(TINY, model="sparseennet", epochs=2, quiet=True)
    monkeypatch.setattr(SparseEnNet, "auxiliary_loss", lambda *args: None)
    dwrec.train(data_dir, out=tmp_path / "none", **options)
    monkeypatch.setattr(SparseEnNet, "auxiliary_loss", lambda *args: torch.tensor(100.0))
    dwrec.train(data_dir, out=tmp_path / "constant", **options)
    plain, shifted = log_records(tmp_path / "none"), log_records(tmp_path / "constant")
    for a, b in zip(plain, shifted, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"] + 100.0, abs=1e-4)
        assert a["valid"] == b["valid"]
