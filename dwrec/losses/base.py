"""The two small interfaces the trainer joins: objectives and domain weightings.

Models and losses never import each other; the trainer passes a :class:`Scorer` built
from the model to the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class Scorer(Protocol):
    """Scores user states against items. Item ids are dataset ids (0-based, no padding)."""

    n_items: int

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[N, d] -> [N, n_items]`` logits against every item."""

    def score(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits of given items: ``items [C]`` -> ``[N, C]``; ``items [N, C]`` -> ``[N, C]``."""

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        """Output-side item embeddings ``[..., d]`` of ``items`` (for item-item similarity)."""


@dataclass
class ObjectiveInput:
    """Everything an objective may use, at the positions that have a target.

    Attributes:
        hidden: ``[N, d]`` user states.
        positives: ``[N]`` target item ids.
        scorer: scores states against items.
        sequence_index: ``[N]`` which sequence of the batch each position belongs to (in-batch
            negatives that are a sequence's own positives get masked).
        item_log_q: ``[n_items]`` log of each item's sampling probability under the training
            distribution (log-Q correction), or ``None``.
        generator: RNG for negative sampling (seeded by the trainer).
    """

    hidden: torch.Tensor
    positives: torch.Tensor
    scorer: Scorer
    sequence_index: torch.Tensor
    item_log_q: torch.Tensor | None = None
    generator: torch.Generator | None = None


class Objective(Protocol):
    """Maps an :class:`ObjectiveInput` to an unreduced loss per position ``[N]``."""

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor: ...


class Weighting(Protocol):
    """Turns per-position losses into the scalar the trainer back-propagates.

    ``reduce`` weights each position's loss by its target's domain weight; ``update`` moves
    the weighting's own state (e.g. the EMA domain frequencies) with the batch just seen.
    State is checkpointed through ``state_dict``/``load_state_dict``.
    """

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor: ...

    def update(self, positives: torch.Tensor) -> None: ...

    def domain_weights(self) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...
