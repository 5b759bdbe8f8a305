"""Loss registry: ``--loss`` / ``--objective`` names -> classes; the trainer builds through here.

Each class has ``name`` and ``from_config``; adding a loss means adding its class to one of
the tuples below, never a branch on its name.
"""

from __future__ import annotations

import numpy as np
import torch

from dwrec.losses.base import Objective, Weighting
from dwrec.losses.config import LossConfig
from dwrec.losses.objectives import (
    BinaryCrossEntropy,
    CrossEntropy,
    DualScaleSoftmax,
    GeneralisedBCE,
    MultiMarginCosine,
    SampledSoftmax,
)
from dwrec.losses.weighting import (
    ADCWeighting,
    DomainStatistics,
    DynamicWeighting,
    FixedWeighting,
    GenericWeighting,
)

OBJECTIVE_CLASSES = {
    cls.name: cls
    for cls in (
        CrossEntropy,
        SampledSoftmax,
        BinaryCrossEntropy,
        GeneralisedBCE,
        DualScaleSoftmax,
        MultiMarginCosine,
    )
}
WEIGHTING_CLASSES = {
    cls.name: cls for cls in (GenericWeighting, FixedWeighting, DynamicWeighting, ADCWeighting)
}


def build_objective(config: LossConfig, n_items: int) -> Objective:
    """The objective ``config`` trains (``config.objective_name``) for ``n_items`` items."""
    config.validate()
    return OBJECTIVE_CLASSES[config.objective_name].from_config(config, n_items)


def build_weighting(
    config: LossConfig,
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
    return WEIGHTING_CLASSES[config.weighting_name].from_config(config, statistics)


def item_log_frequencies(train_items: np.ndarray, n_items: int) -> torch.Tensor:
    """``[n_items]`` float32 ``log Q(i)``: log of item i's share of the training positives
    (for ``ObjectiveInput.item_log_q``). Items never seen count as seen once, so every
    value is finite."""
    counts = np.bincount(np.asarray(train_items, dtype=np.int64), minlength=n_items)
    counts = np.maximum(counts, 1).astype(np.float64)
    return torch.from_numpy(np.log(counts / counts.sum())).float()
