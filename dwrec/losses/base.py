"""The two small interfaces the trainer joins: objectives and domain weightings.

Models and losses never import each other; the trainer passes a :class:`Scorer` built
from the model to the objective.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

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


# ---------------------------------------------------------------- classes, configs, registry


@dataclass
class LossOptions:
    """Base of every objective's and weighting's typed config.

    A subclass is a dataclass whose fields are the class's own constants, each declared as
    ``field(default=..., metadata={"help": "..."})``: the field name is the option's flat
    name (``--dsl-m`` -> ``dsl_m``), shared by the CLI, TOML files and ``config.json``. Two
    classes may declare the same name (``negatives``, ``weight_reduction``) when they mean
    the same option; a class may give it its own default (``dsl``: ``negatives`` 1024, the
    other sampled objectives 256), which applies when that class is selected and the option
    is not given (:class:`~dwrec.losses.config.LossConfig`; ``--help`` lists it). :meth:`validate` checks ranges (a
    :class:`~dwrec.errors.UsageError` naming the flag).
    """

    def validate(self) -> None:
        """Raise :class:`~dwrec.errors.UsageError` for a value out of range."""

    def bind_dataset(self, dataset: Any) -> None:
        """Resolve options against the dataset of a new run, in place, before anything is
        written (e.g. ``fixed``: ``--weight-domains`` values -> domain names). Default:
        nothing."""


class Objective:
    """Maps an :class:`ObjectiveInput` to an unreduced loss per position ``[N]``.

    Capabilities (class attributes the trainer and the launcher read; nothing outside the
    objective's module branches on its name):

    * ``per_position_negatives``: draws its negatives per position (``[N, k]``) rather than
      ``k`` shared by the batch; with several processes each rank then gets its own stream.
    * ``supports_multiprocess``: may train with ``--nproc > 1``.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[LossOptions]] = LossOptions
    per_position_negatives: ClassVar[bool] = False
    supports_multiprocess: ClassVar[bool] = True

    def __init__(self, n_items: int):
        self.n_items = n_items

    @classmethod
    def from_config(cls, config: Any, n_items: int) -> Objective:
        """Build from the typed config (``config_class``) for ``n_items`` items."""
        return cls(n_items)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        raise NotImplementedError


class Weighting:
    """Turns per-position losses into the scalar the trainer back-propagates.

    ``reduce`` weights each position's loss by its target's domain weight; ``update`` moves
    the weighting's own state (e.g. the EMA domain frequencies) with the batch just seen.
    State is checkpointed through ``state_dict``/``load_state_dict``.

    Capabilities:

    * ``supports_multiprocess``: may train with ``--nproc > 1``; it then implements
      :meth:`loss_denominator` (the exact DDP loss scaling needs it).
    * ``learns_weights``: its domain weights change during training (the report shows the
      final ones, from ``log.jsonl``).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[LossOptions]] = LossOptions
    supports_multiprocess: ClassVar[bool] = True
    learns_weights: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Any, statistics: Any) -> Weighting:
        """Build from the typed config (``config_class``) and the training statistics
        (:class:`dwrec.losses.domains.DomainStatistics`)."""
        return cls()

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def loss_denominator(self, positives: torch.Tensor) -> torch.Tensor:
        """The ``D`` of ``reduce(losses) = sum_i w_i l_i / D`` for these positives (float64
        scalar; the current, detached weights). Needed by multi-process training only."""
        raise NotImplementedError(f"{type(self).__name__} does not support several processes")

    def update(self, positives: torch.Tensor) -> None:
        """Move the state with the batch's positives (default: no state)."""

    def domain_weights(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


OBJECTIVE_CLASSES: dict[str, type[Objective]] = {}
"""``--loss`` / ``--objective`` name -> objective class (filled by :func:`register_objective`)."""
WEIGHTING_CLASSES: dict[str, type[Weighting]] = {}
"""``--loss`` name -> domain weighting class (filled by :func:`register_weighting`)."""

C = TypeVar("C", bound=type)


def _register(registry: dict[str, type], cls: C, kind: str) -> C:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    other = OBJECTIVE_CLASSES.get(cls.name) or WEIGHTING_CLASSES.get(cls.name)
    if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
        raise ValueError(f"loss name {cls.name!r} is taken by {other.__qualname__}")
    if not dataclasses.is_dataclass(cls.config_class):
        raise ValueError(f"{cls.__name__}.config_class must be a dataclass")
    registry[cls.name] = cls
    return cls


def register_objective(cls: C) -> C:
    """Class decorator: make an :class:`Objective` subclass available as ``--loss NAME``
    and ``--objective NAME`` (``NAME = cls.name``)."""
    return _register(OBJECTIVE_CLASSES, cls, "objective")


def register_weighting(cls: C) -> C:
    """Class decorator: make a :class:`Weighting` subclass available as ``--loss NAME``
    (composed with ``--objective``)."""
    return _register(WEIGHTING_CLASSES, cls, "weighting")
