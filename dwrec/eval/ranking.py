"""Full-ranking kernels: every item of the catalogue is ranked for every case (torch only;
the orchestration over a run is :mod:`dwrec.eval.evaluator`).

Ranking rule (identical everywhere, documented in docs/evaluate.md):

- items in the case's history (``item_ids[user_indptr[user]:history_end]``) are excluded,
  except the target itself (``keep_history=True`` excludes nothing);
- ``rank = 1 + #(unmasked items scoring strictly higher than the target)
  + #(unmasked items with an equal score and a smaller item id)``;
- the top-K list orders items by score, descending, then by item id, ascending.

Both come from one int64 sort key per (case, item): the score's order-preserving integer
image in the high 32 bits and ``2**32 - 1 - item_id`` in the low ones, so keys are unique,
a larger key means "ranked earlier", ``torch.topk`` on keys is the tie-broken top-K, and the
rank is ``1 + #(keys > the target's key)``. Masked items get the smallest int64.

Per batch: one model forward, one score matmul, one mask, one comparison and one
``topk``. Catalogues whose score block would exceed ``max_score_elements`` are scored in
item chunks: a first pass finds each target's score and merges the per-chunk top-K, a second
counts the items above the target per chunk, so memory stays bounded for any catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from dwrec.data.dataset import Dataset
from dwrec.errors import DwrecError

DEFAULT_BATCH_SIZE = 256
MAX_SCORE_ELEMENTS = 1 << 24
"""Largest ``[batch, items]`` score block held at once (64 MiB of float32 scores)."""
MASKED_KEY = torch.iinfo(torch.int64).min
_LOW_MASK = (1 << 32) - 1

ScoreChunk = Callable[[int, int], torch.Tensor]
"""``score_chunk(start, end) -> [B, end - start]`` scores of items ``start..end-1``."""


@dataclass
class Ranking:
    """Ranking of every case.

    Attributes:
        ranks: ``[N]`` int64, 1-based rank of each target (see the module docstring).
        top_items: ``[N, K]`` int64 item ids in ranked order; ``-1`` marks an empty slot
            (fewer than K rankable items).
        top_scores: ``[N, K]`` float32 scores of ``top_items`` (NaN for empty slots).
    """

    ranks: np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray


# ---------------------------------------------------------------- ranking kernels (torch)


def sort_keys(scores: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor | None) -> torch.Tensor:
    """Unique int64 keys ordering items by (score descending, id ascending).

    Args:
        scores: ``[B, C]`` float scores (cast to float32; must not be NaN).
        ids: item ids of the columns, ``[C]`` or ``[B, C]``, in ``[0, 2**32)``.
        masked: bool ``[B, C]`` (True = excluded) or None.
    """
    # add(0.0) folds -0.0 into +0.0 (equal as floats) and gives a tensor we may overwrite.
    bits = scores.float().add(0.0).view(torch.int32)
    # Flip the magnitude bits of negative floats: then integer order == float order.
    flip = bits >> 31
    flip &= 0x7FFFFFFF
    bits ^= flip
    keys = bits.to(torch.int64)
    keys <<= 32
    keys |= _LOW_MASK - ids.to(torch.int64)
    if masked is not None:
        keys.masked_fill_(masked, MASKED_KEY)
    return keys


def _check_finite(scores: torch.Tensor) -> None:
    if torch.isnan(scores).any():
        raise DwrecError("the model produced NaN scores; the checkpoint is unusable for ranking")


def _chunk_mask(
    batch: int, start: int, end: int, rows: torch.Tensor, cols: torch.Tensor, whole: bool
) -> torch.Tensor | None:
    """Bool ``[batch, end - start]``: history pairs ``(rows, cols)`` falling in the chunk."""
    if rows.numel() == 0:
        return None
    mask = torch.zeros(batch, end - start, dtype=torch.bool, device=rows.device)
    if whole:
        mask[rows, cols] = True
    else:
        inside = (cols >= start) & (cols < end)
        mask[rows[inside], cols[inside] - start] = True
    return mask


def _merge_top(
    keys: torch.Tensor, items: torch.Tensor, new_keys: torch.Tensor, new_items: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.cat([keys, new_keys], dim=1)
    items = torch.cat([items, new_items], dim=1)
    best = torch.topk(keys, min(k, keys.shape[1]), dim=1).indices
    return keys.gather(1, best), items.gather(1, best)


def rank_batch(
    score_chunk: ScoreChunk,
    targets: torch.Tensor,
    mask_rows: torch.Tensor,
    mask_cols: torch.Tensor,
    n_items: int,
    top_k: int = 0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank every item for a batch of cases; memory ``O(B * chunk_size)``.

    Args:
        score_chunk: scores of an item range (must return identical values when called twice).
        targets: ``[B]`` int64 target item ids.
        mask_rows, mask_cols: history pairs (case row in the batch, item id) to exclude;
            pairs naming the case's own target are ignored.
        n_items: catalogue size.
        top_k: length of the top lists (0: ranks only).
        chunk_size: items scored at once (default: all).

    Returns:
        ``ranks [B]`` int64, ``top_items [B, top_k]`` int64 (-1 = empty slot), and
        ``top_keys [B, top_k]`` (:func:`sort_keys` values, ``MASKED_KEY`` = empty).
    """
    batch, device = targets.shape[0], targets.device
    chunk_size = n_items if chunk_size is None else max(1, min(chunk_size, n_items))
    bounds = [(s, min(s + chunk_size, n_items)) for s in range(0, n_items, chunk_size)]
    target_keys = torch.empty(batch, dtype=torch.int64, device=device)
    top_keys = torch.empty(batch, 0, dtype=torch.int64, device=device)
    top_items = torch.empty(batch, 0, dtype=torch.int64, device=device)
    counts = torch.zeros(batch, dtype=torch.int64, device=device)
    single = len(bounds) == 1
    for start, end in bounds:  # pass 1: target keys, top-K (and counts when unchunked)
        keys = _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items)
        local = targets - start
        here = (local >= 0) & (local < end - start)
        picked = keys.gather(1, local.clamp(0, end - start - 1)[:, None])[:, 0]
        target_keys = torch.where(here, picked, target_keys)
        if single:
            counts = _count_above(keys, target_keys)
        if top_k:
            k = min(top_k, end - start)
            chunk_best = torch.topk(keys, k, dim=1)
            new_items = chunk_best.indices + start
            top_keys, top_items = _merge_top(
                top_keys, top_items, chunk_best.values, new_items, top_k
            )
    if not single:  # pass 2: items above the target, chunk by chunk
        for start, end in bounds:
            keys = _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items)
            counts += _count_above(keys, target_keys)
    top_items = torch.where(top_keys == MASKED_KEY, -1, top_items)
    return counts + 1, top_items, top_keys


def _count_above(keys: torch.Tensor, target_keys: torch.Tensor) -> torch.Tensor:
    """``[B]`` int64: per row, the keys above the target's (summed as int32: a chunk has fewer
    than 2**31 columns, and an int32 sum avoids an int64 copy of the whole comparison)."""
    return (keys > target_keys[:, None]).sum(dim=1, dtype=torch.int32).long()


def _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items) -> torch.Tensor:
    """Sort keys of items ``start..end-1`` for the batch; the target is never masked."""
    batch, width = targets.shape[0], end - start
    scores = score_chunk(start, end)
    if scores.shape != (batch, width):
        raise DwrecError(
            f"model.score returned shape {tuple(scores.shape)}, expected {(batch, width)}"
        )
    _check_finite(scores)
    masked = _chunk_mask(batch, start, end, mask_rows, mask_cols, start == 0 and end == n_items)
    if masked is not None:
        local = targets - start
        here = ((local >= 0) & (local < width))[:, None]
        column = local.clamp(0, width - 1)[:, None]
        masked.scatter_(1, column, masked.gather(1, column) & ~here)
    ids = torch.arange(start, end, device=targets.device)
    return sort_keys(scores, ids, masked)


def keys_to_scores(keys: torch.Tensor) -> torch.Tensor:
    """Invert :func:`sort_keys` for the score part (float32; NaN where masked)."""
    monotone = (keys >> 32).to(torch.int32)
    bits = monotone ^ ((monotone >> 31) & 0x7FFFFFFF)
    scores = bits.view(torch.float32).clone()
    return scores.masked_fill(keys == MASKED_KEY, float("nan"))


def rank_sampled(
    scores: torch.Tensor, candidates: torch.Tensor, top_k: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank a target among sampled candidates (column 0 = the target).

    Same tie rule as :func:`rank_batch`, with ids taken from ``candidates [B, C]``.
    Returns ranks ``[B]``, top items ``[B, min(top_k, C)]`` and their keys.
    """
    _check_finite(scores)
    keys = sort_keys(scores, candidates, None)
    ranks = (keys > keys[:, :1]).sum(dim=1) + 1
    k = min(top_k, keys.shape[1])
    best = torch.topk(keys, k, dim=1)
    return ranks, candidates.gather(1, best.indices), best.values


# ---------------------------------------------------------------- cases -> model inputs


def ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``range(starts[i], ends[i])``: (row i of each element, the element)."""
    lengths = ends - starts
    rows = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, np.repeat(starts, lengths) + offsets


def history_tokens(
    dataset: Dataset, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """``[B, max_len]`` int64: the last ``max_len`` history items as ``item_id + 1``,
    left-padded with 0 (the model input contract)."""
    clipped = np.maximum(starts, ends - max_len)
    rows, source = ranges(clipped, ends)
    lengths = ends - clipped
    within = source - clipped[rows]
    tokens = np.zeros((len(starts), max_len), dtype=np.int64)
    tokens[rows, max_len - lengths[rows] + within] = dataset.item_ids[source] + 1
    return tokens
