"""``--batch-order by-length``: every window once per epoch, windows of similar length in one
batch (checked against a brute-force count of the padding a batch carries), the batches in a
random order, the same epoch for the same generator state, exact resume, and the option's
checks and default for runs written before it existed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aux_model_runs import (
    TINY,
    check_resume_equals_uninterrupted,
    log_records,
    stable,
)

import dwrec
from dwrec.errors import UsageError
from dwrec.train.batches import (
    POOL_BATCHES,
    batch_slices,
    length_grouped_slices,
    window_lengths,
)
from dwrec.train.config import TrainConfig, from_saved


def skewed_lengths(n: int, seed: int = 0) -> torch.Tensor:
    """Window lengths like a rating log's: many short users, a few capped at 201."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.minimum(rng.geometric(1 / 60, n) + 1, 201))


def padded_slots(lengths: torch.Tensor, batches: list[torch.Tensor]) -> int:
    """Brute force: the slots a batch trimmed to its longest window computes, less the real
    tokens, summed over batches."""
    total = 0
    for batch in batches:
        longest = max(int(lengths[i]) for i in batch.tolist())
        total += sum(longest - int(lengths[i]) for i in batch.tolist())
    return total


@pytest.mark.parametrize("n", [1, 31, 2999, 128 * POOL_BATCHES + 77])
def test_every_window_once_in_full_batches(n):
    lengths = skewed_lengths(n)
    batches = length_grouped_slices(lengths, 128, torch.Generator().manual_seed(1))
    assert sorted(torch.cat(batches).tolist()) == list(range(n))
    assert len(batches) == -(-n // 128), "as many batches as a random order (one schedule)"
    assert sum(len(b) < 128 for b in batches) == (n % 128 != 0)


def test_one_pool_is_cut_into_batches_of_neighbouring_lengths():
    lengths = skewed_lengths(2999)  # 24 batches: one pool holds them all
    batches = length_grouped_slices(lengths, 128, torch.Generator().manual_seed(2))
    spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    for (_, high), (low, _) in zip(spans, spans[1:], strict=False):
        assert high <= low, "batches' length ranges do not overlap"
    firsts = [int(lengths[b].min()) for b in batches]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True), "shuffled"


def test_far_less_padding_than_a_random_order():
    lengths = skewed_lengths(2999)
    random_order = list(batch_slices(len(lengths), 128, torch.Generator().manual_seed(3)))
    by_length = length_grouped_slices(lengths, 128, torch.Generator().manual_seed(3))
    assert padded_slots(lengths, by_length) < 0.05 * padded_slots(lengths, random_order)


def test_the_same_generator_state_gives_the_same_epoch():
    lengths = skewed_lengths(500)
    a = length_grouped_slices(lengths, 64, torch.Generator().manual_seed(4))
    b = length_grouped_slices(lengths, 64, torch.Generator().manual_seed(4))
    c = length_grouped_slices(lengths, 64, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_window_lengths_count_real_tokens():
    tokens = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 9]])
    assert window_lengths(tokens).tolist() == [2, 4, 1]


def test_a_run_trains_by_length_and_records_it(data_dir, tmp_path):
    options = dict(TINY, epochs=2, patience=5, quiet=True, max_len=40)
    dwrec.train(data_dir, out=tmp_path / "grouped", batch_order="by-length", **options)
    dwrec.train(data_dir, out=tmp_path / "random", **options)
    config = json.loads((tmp_path / "grouped" / "config.json").read_text())
    assert config["train"]["batch_order"] == "by-length"
    grouped, mixed = log_records(tmp_path / "grouped"), log_records(tmp_path / "random")
    assert [r["step"] for r in grouped] == [r["step"] for r in mixed], "same steps per epoch"
    assert stable(grouped) != stable(mixed)


@pytest.mark.parametrize("stop_at_step", [7, 10])  # mid-epoch 2; the end of epoch 2
def test_interrupt_then_resume_draws_the_same_batches(data_dir, tmp_path, stop_at_step):
    check_resume_equals_uninterrupted(
        "sasrec", data_dir, tmp_path, stop_at_step, loss="ce", batch_order="by-length"
    )


def test_bad_value_and_runs_written_before_the_option(data_dir, tmp_path):
    with pytest.raises(UsageError, match="--batch-order must be one of random, by-length"):
        TrainConfig(batch_order="sorted").validate()
    dwrec.train(data_dir, out=tmp_path / "run", epochs=1, quiet=True, **TINY)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["train"]["batch_order"]
    assert from_saved(saved).train.batch_order == "random"
