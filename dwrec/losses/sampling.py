"""Shared pieces of the objectives: negative sampling, positive/negative logits.

Sampled objectives draw their uniform negatives with ``batch.generator`` (seeded by the
trainer). Logits are computed in float32 when the model runs in half precision (AMP), and in
the input's dtype otherwise (float64 for gradient checks).
"""

from __future__ import annotations

import torch

from dwrec.losses.base import ObjectiveInput


def upcast(values: torch.Tensor) -> torch.Tensor:
    """Half-precision logits -> float32 (log-sum-exp in bf16 loses the small terms)."""
    if values.dtype in (torch.float16, torch.bfloat16):
        return values.float()
    return values


def sampling_device(batch: ObjectiveInput) -> torch.device:
    return batch.generator.device if batch.generator is not None else batch.positives.device


def uniform_items(batch: ObjectiveInput, count: int, n_items: int) -> torch.Tensor:
    """``[count]`` item ids drawn uniformly with replacement from ``[0, n_items)``."""
    items = torch.randint(
        0, n_items, (count,), generator=batch.generator, device=sampling_device(batch)
    )
    return items.to(batch.positives.device, non_blocking=True)


def uniform_items_excluding_positive(
    batch: ObjectiveInput, per_position: int, n_items: int
) -> torch.Tensor:
    """``[N, per_position]`` items drawn uniformly among the items other than each row's
    positive: draw from ``n_items - 1`` ids and shift those at or above the positive by one."""
    if n_items < 2:
        raise ValueError("negative sampling needs at least 2 items")
    shape = (batch.positives.shape[0], per_position)
    draws = torch.randint(
        0, n_items - 1, shape, generator=batch.generator, device=sampling_device(batch)
    ).to(batch.positives.device, non_blocking=True)
    return draws + (draws >= batch.positives[:, None]).long()


def positive_logits(batch: ObjectiveInput) -> torch.Tensor:
    """``[N]`` score of each position's own positive."""
    return upcast(batch.scorer.score(batch.hidden, batch.positives[:, None]))[:, 0]


def negative_logits(
    batch: ObjectiveInput, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[N, k]`` of ``negatives`` (``[k]`` or ``[N, k]``) and the ``[N, k]`` mask of
    the entries that are valid negatives (not the row's own positive)."""
    logits = upcast(batch.scorer.score(batch.hidden, negatives))
    valid = negatives != batch.positives[:, None]
    return logits, valid.expand_as(logits)
