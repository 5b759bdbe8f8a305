"""Sequence augmentations, in-batch contrastive losses, gradient reversal and per-model
configs, shared by the models with auxiliary losses (``sparseennet``, ``calrec``).

Sequences are left-padded token rows (0 = padding, item ``i`` = token ``i + 1``); every
augmentation keeps that layout: a row's ``n`` real tokens stay at the right end, padding
stays 0, and a row without real tokens stays all padding. Each function draws the same
amount of random numbers from ``generator`` whatever the data, so a training run's random
streams do not depend on which augmentation a row got.
"""

from __future__ import annotations

from dataclasses import fields

import torch
import torch.nn.functional as F

from dwrec.models.base import ModelConfig
from dwrec.models.layers import PAD

AUGMENTATIONS = ("crop", "mask", "reorder", "replace")
"""The augmentation types, in the order of their class index (0..3)."""


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def real_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """``[B]`` number of non-padding tokens per row."""
    return (tokens != PAD).sum(dim=1)


def crop(tokens: torch.Tensor, keep: float, generator: torch.Generator) -> torch.Tensor:
    """Keep a random contiguous run of ``max(1, floor(keep * n))`` of a row's ``n`` items
    (CL4SRec's item crop), moved to the right end; the rest is padding."""
    batch, length = tokens.shape
    n = real_lengths(tokens)
    k = torch.clamp((keep * n.double()).floor().long(), min=1).minimum(n)
    start = (_uniform((batch,), generator, tokens.device) * (n - k + 1)).long().minimum(n - k)
    column = torch.arange(length, device=tokens.device)
    inside = column[None, :] >= (length - k)[:, None]
    # output column c (inside) holds real item number start + c - (length - k), which sits at
    # input column length - n + that number
    source = (length - n + start)[:, None] + column[None, :] - (length - k)[:, None]
    picked = tokens.gather(1, source.clamp(0, length - 1))
    return torch.where(inside, picked, torch.zeros_like(tokens))


def mask(
    tokens: torch.Tensor, prob: float, mask_token: int, generator: torch.Generator
) -> torch.Tensor:
    """Replace each real item by ``mask_token`` with probability ``prob`` (CL4SRec's mask)."""
    draws = _uniform(tuple(tokens.shape), generator, tokens.device)
    return tokens.masked_fill((draws < prob) & (tokens != PAD), mask_token)


def reorder(tokens: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """Shuffle a random contiguous run of ``max(1, floor(share * n))`` real items (CL4SRec's
    reorder); every other position keeps its item."""
    batch, length = tokens.shape
    n = real_lengths(tokens)
    k = torch.clamp((share * n.double()).floor().long(), min=1).minimum(n)
    start = (_uniform((batch,), generator, tokens.device) * (n - k + 1)).long().minimum(n - k)
    draws = _uniform((batch, length), generator, tokens.device).double()
    column = torch.arange(length, device=tokens.device)[None, :].double()
    first = (length - n + start)[:, None].double()  # the run's first column
    inside = (column >= first) & (column < first + k[:, None])
    # sort keys: the column itself outside the run, a random point of [first, first + k)
    # inside it, so the sort permutes the run and nothing else
    keys = torch.where(inside, first + draws * k[:, None].double(), column)
    order = keys.argsort(dim=1, stable=True)
    return tokens.gather(1, order)


def replace(
    tokens: torch.Tensor, prob: float, n_items: int, generator: torch.Generator
) -> torch.Tensor:
    """Replace each real item by a uniformly random item (token ``1..n_items``) with
    probability ``prob``."""
    draws = _uniform(tuple(tokens.shape), generator, tokens.device)
    picks = _uniform(tuple(tokens.shape), generator, tokens.device)
    random_items = (picks * n_items).long().clamp_max(n_items - 1) + 1
    return torch.where((draws < prob) & (tokens != PAD), random_items, tokens)


def augment(
    tokens: torch.Tensor,
    kinds: torch.Tensor,
    *,
    crop_keep: float,
    mask_prob: float,
    reorder_share: float,
    replace_prob: float,
    mask_token: int,
    n_items: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Row ``b`` augmented by ``AUGMENTATIONS[kinds[b]]``. All four are drawn for every row
    (a fixed amount of random numbers) and the row's own is kept."""
    views = torch.stack(
        [
            crop(tokens, crop_keep, generator),
            mask(tokens, mask_prob, mask_token, generator),
            reorder(tokens, reorder_share, generator),
            replace(tokens, replace_prob, n_items, generator),
        ]
    )  # [4, B, L]
    index = kinds.to(tokens.device)[None, :, None].expand(1, *tokens.shape)
    return views.gather(0, index)[0]


def in_batch_info_nce(
    left: torch.Tensor,
    right: torch.Tensor,
    temperature: float,
    labels: torch.Tensor | None = None,
    cosine: bool = True,
) -> torch.Tensor:
    """Symmetric in-batch InfoNCE between paired rows of ``left [N, d]`` and ``right [N, d]``:
    the mean of ``CE(sim(left_i, right_.) / t, i)`` and ``CE(sim(right_i, left_.) / t, i)``.

    ``sim`` is the cosine (``cosine=True``) or the dot product. ``labels [N]`` (e.g. the item
    of each row): other rows with the same label as row ``i`` are not negatives of ``i``
    (their logits are dropped), so a repeated item is never pushed away from itself.
    """
    if cosine:
        left, right = F.normalize(left, dim=-1), F.normalize(right, dim=-1)
    logits = (left @ right.T) / temperature
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(left.shape[0], device=left.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def nt_xent(
    first: torch.Tensor, second: torch.Tensor, temperature: float, cosine: bool = False
) -> torch.Tensor:
    """CL4SRec's contrastive loss: for ``2N`` views ``z = [first; second]``, row ``i``'s
    positive is its pair and its negatives are the other ``2N - 2`` views;
    ``mean_i CE(sim(z_i, z_j) / t over j != i, pair(i))``, ``sim`` the dot product (as
    CL4SRec's code) or, with ``cosine``, the cosine (SimCLR's NT-Xent)."""
    count = first.shape[0]
    views = torch.cat([first, second], dim=0)
    if cosine:
        views = F.normalize(views, dim=-1)
    logits = (views @ views.T) / temperature
    eye = torch.eye(2 * count, dtype=torch.bool, device=views.device)
    logits = logits.masked_fill(eye, float("-inf"))
    pair = torch.arange(2 * count, device=views.device)
    pair = torch.where(pair < count, pair + count, pair - count)
    return F.cross_entropy(logits, pair)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by ``-scale`` on the way back (Ganin &
    Lempitsky 2015): what follows learns to minimise a loss that what precedes maximises."""
    return _ReverseGradient.apply(x, scale)


def model_config(config: ModelConfig, config_class: type[ModelConfig]) -> ModelConfig:
    """``config`` as ``config_class``: itself when it is one, else the common fields of a flat
    :class:`ModelConfig` with ``config_class``'s defaults for the rest."""
    if isinstance(config, config_class):
        return config
    return config_class(**{f.name: getattr(config, f.name) for f in fields(ModelConfig)})
