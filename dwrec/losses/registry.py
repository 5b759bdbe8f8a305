"""Loss registry: ``--loss`` / ``--objective`` names -> classes; the trainer builds through here.

Each class declares ``name``, ``config_class`` and its capabilities, and registers itself
with :func:`~dwrec.losses.base.register_objective` or
:func:`~dwrec.losses.base.register_weighting`; importing the modules below registers the
built-in ones (plugins register from their own files, :mod:`dwrec.plugins`).
"""

from __future__ import annotations

import numpy as np
import torch

import dwrec.losses.objectives  # noqa: F401 - registers the built-in objectives
from dwrec.losses.base import OBJECTIVE_CLASSES, WEIGHTING_CLASSES, Objective, Weighting
from dwrec.losses.domains import DomainStatistics
from dwrec.losses.weighting import (  # noqa: F401 - registers generic, fixed, dynamic
    GenericWeighting,
)

__all__ = ["OBJECTIVE_CLASSES", "WEIGHTING_CLASSES", "build_objective", "build_weighting"]


def build_objective(config, n_items: int) -> Objective:
    """The objective ``config`` trains (``config.objective_name``) for ``n_items`` items."""
    config.validate()
    return config.objective_class().from_config(config.objective_config(), n_items)


def build_weighting(
    config,
    *,
    domain_names: list[str],
    item_domain_indptr: np.ndarray,
    item_domain_indices: np.ndarray,
    train_items: np.ndarray,
    train_users: np.ndarray,
    n_items: int,
) -> Weighting:
    """The domain weighting ``config`` uses (``config.weighting_name``).

    ``train_items`` / ``train_users``: item and user id of every training positive; they give
    the initial domain shares ``n_d / N``, the user shares and the entropies.
    """
    config.validate()
    statistics = DomainStatistics(
        domain_names=list(domain_names),
        item_domain_indptr=item_domain_indptr,
        item_domain_indices=item_domain_indices,
        train_items=train_items,
        train_users=train_users,
        n_items=n_items,
    )
    return config.weighting_class().from_config(config.weighting_config(), statistics)


def item_log_frequencies(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """``[n_items]`` float32 ``log Q(i)``: log of item i's share of the training positives
    (for ``ObjectiveInput.item_log_q``). Items never seen count as seen once, so every
    value is finite."""
    counts = np.bincount(np.asarray(train_items, dtype=np.int64), minlength=n_items)
    counts = np.maximum(counts, 1).astype(np.float64)
    return torch.from_numpy(np.log(counts / counts.sum())).float()
