"""Domain-homogeneous training batches, for a model's second training stage (``calrec``'s
per-domain fine-tuning, :meth:`dwrec.models.base.SequentialModel.second_stage_batches`).

An item's *group* is one of its domains: the rarest (fewest items in the catalogue), ties
to the lowest domain index; an item without a domain gets the group ``n_domains`` of its
own. A training window's group is its last target's (its last token's) group, so every
window of a batch ends on an item of one domain.
"""

from __future__ import annotations

import numpy as np
import torch

from dwrec.models.layers import PAD


def rarest_domains(indptr: np.ndarray, indices: np.ndarray, n_domains: int) -> torch.Tensor:
    """``[n_items]`` int64 group of each item of the CSR map item -> domain indices
    (``indptr [n_items + 1]``, ``indices``): its domain with the fewest items, ties to the
    lowest index; ``n_domains`` for an item with no domain."""
    indptr, indices = np.asarray(indptr, dtype=np.int64), np.asarray(indices, dtype=np.int64)
    n_items = len(indptr) - 1
    sizes = np.bincount(indices, minlength=n_domains)
    rows = np.repeat(np.arange(n_items), np.diff(indptr))
    # sort each item's domains by (size, index): the first one per item is its group
    order = np.lexsort((indices, sizes[indices], rows))
    groups = np.full(n_items, n_domains, dtype=np.int64)
    starts = indptr[:-1][np.diff(indptr) > 0]
    groups[rows[order][starts]] = indices[order][starts]
    return torch.from_numpy(groups)


def window_groups(tokens: torch.Tensor, item_groups: torch.Tensor) -> torch.Tensor:
    """``[U]`` group of each left-padded window ``tokens [U, L + 1]``: its last token's."""
    last = tokens[:, -1]
    if bool((last == PAD).any()):
        raise ValueError("a training window ends in padding (windows are left-padded)")
    return item_groups[last - 1]


def grouped_batches(
    groups: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of window indices cut into batches of one group each: the windows in a
    random order, grouped (stable, so each group keeps that random order), each group cut
    into ``batch_size`` slices (its last one may be shorter), the slices in a random order.
    Draws exactly two permutations from ``generator``."""
    order = torch.randperm(len(groups), generator=generator)
    order = order[torch.argsort(groups[order], stable=True)]
    sizes = torch.bincount(groups[order]).tolist()
    batches = [
        piece for group in order.split([n for n in sizes if n]) for piece in group.split(batch_size)
    ]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]
