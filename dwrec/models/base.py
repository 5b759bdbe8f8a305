"""The one small interface every model implements (DESIGN.md "Abstractions").

Inside a model, item ``i`` of the dataset is token ``i + 1``; token 0 is padding (and
models that need one use ``n_items + 1`` as a mask token). Everything that crosses the
interface (targets, candidate items, scores' columns) uses dataset ids, 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class ModelConfig:
    """The options every model shares. A model with options of its own declares a dataclass
    subclass as its ``config_class``, each field ``field(default=..., metadata={"help":
    ...})``; the field name is the flat option name (``--mask-prob`` -> ``mask_prob``)."""

    hidden: int = field(default=64, metadata={"help": "Embedding size"})
    layers: int = field(default=2, metadata={"help": "Blocks"})
    heads: int = field(default=2, metadata={"help": "Attention heads"})
    ffn: int | None = field(
        default=None, metadata={"help": "Feed-forward width", "default_text": "4 x hidden"}
    )
    dropout: float = field(default=0.2, metadata={"help": "Dropout"})
    max_len: int = field(default=200, metadata={"help": "Sequence length"})

    def validate(self) -> None:
        """Raise :class:`~dwrec.errors.UsageError` for a value out of range (called before
        any run dir is written), naming only the offending setting."""
        from dwrec.errors import UsageError

        for name in ("hidden", "layers", "heads", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if self.ffn is not None and self.ffn < 1:
            raise UsageError(f"--ffn must be >= 1 (leave it out for 4 x hidden), got {self.ffn}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"--dropout must lie in [0, 1), got {self.dropout}")


@dataclass
class TrainingBatch:
    """What a model's ``training_batch`` returns.

    Attributes:
        inputs: ``[B, L]`` tokens fed to ``forward``.
        targets: ``[B, L]`` dataset item id to predict at each position, ``-1`` where none.
    """

    inputs: torch.Tensor
    targets: torch.Tensor


class SequentialModel(nn.Module):
    """A sequential recommender.

    ``forward(tokens [B, L]) -> hidden [B, L, d]``; ``score(hidden [N, d], items)`` gives
    logits against every item (``items=None``: ``[N, n_items]``) or a candidate set
    (``items [C]`` or ``[N, C]``: ``[N, C]``).
    """

    name: ClassVar[str] = ""
    trainable: ClassVar[bool] = True
    config_class: ClassVar[type[ModelConfig]] = ModelConfig
    supports_multiprocess: ClassVar[bool] = True
    """``False`` for a model whose :meth:`auxiliary_loss` needs the whole batch: the trainer
    then refuses ``--nproc > 1``."""
    deviation: ClassVar[str] = ""
    """How dwrec's version departs from the published model, in one sentence (empty: none
    known); ``dwrec report`` prints it under every table that shows the model."""

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__()
        self.n_items = n_items
        self.config = config

    def bind_dataset(self, dataset: Any) -> None:
        """Called once with the :class:`~dwrec.data.dataset.Dataset` right after the model is
        built (before the optimiser exists) and before a saved state is loaded; a model may
        create parameters or buffers from the dataset's items here. Default: nothing."""

    def auxiliary_loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        hidden: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor | None:
        """An extra scalar added to the batch's loss (``inputs``/``targets``: the training
        batch, ``hidden``: ``forward(inputs)``), or ``None``. The default draws no random
        numbers. A model with an auxiliary loss sets ``supports_multiprocess = False``."""
        return None

    def second_stage_epochs(self) -> int:
        """Epochs of a second training stage (``0``, the default: none). When the first stage
        ends (``--epochs`` reached or early stopping), the trainer reloads the best weights
        (``model.pt``), starts a fresh optimiser and patience count, and trains up to this
        many more epochs on :meth:`second_stage_batches`; validation NDCG@10 keeps choosing
        ``model.pt`` over both stages (:mod:`dwrec.train.stages`)."""
        return 0

    def second_stage_batches(
        self, windows: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """One second-stage epoch: the training windows ``[U, L + 1]`` (every one, left-padded)
        -> batches of window indices (each window once), drawn from ``generator`` only."""
        raise NotImplementedError(f"{self.name} has no second training stage")

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Turn padded windows of tokens ``[B, L + 1]`` (left-padded with 0) into inputs and
        targets. Causal models shift by one; cloze models mask."""
        raise NotImplementedError

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded history tokens -> ``[B, d]`` state that ranks the next item."""
        return self.forward(history)[:, -1, :]

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """Output-side embeddings ``[..., d]`` of dataset item ids."""
        raise NotImplementedError

    def linear_factors(
        self, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """``(query [N, d], item_vectors [n_items, d], bias [n_items] | None)`` with
        ``score(hidden) == query @ item_vectors.T + bias``, or ``None`` when the scores are
        not of that form. Lets the chunked full softmax use its hand-written backward
        instead of recomputing ``score`` per chunk (``dwrec.losses.objectives``)."""
        return None

    def output_layer(self) -> torch.Tensor | None:
        """The last shared layer's weight (ADC balances gradient norms on it)."""
        return None


def trim_leading_padding(tokens: torch.Tensor, keep: int = 2) -> torch.Tensor:
    """Drop the columns that are padding in every row of a left-padded batch.

    Models count positions from each row's first real token, so the result is the same
    computation on fewer columns (at least ``keep``).
    """
    real = (tokens != 0).any(dim=0)
    if not bool(real.any()):
        return tokens[:, -keep:]
    first = int(real.nonzero()[0, 0])
    return tokens[:, min(first, tokens.shape[1] - keep) :]
