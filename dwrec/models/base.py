"""The one small interface every model implements (DESIGN.md "Abstractions").

Inside a model, item ``i`` of the dataset is token ``i + 1``; token 0 is padding (and
models that need one use ``n_items + 1`` as a mask token). Everything that crosses the
interface (targets, candidate items, scores' columns) uses dataset ids, 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


@dataclass
class ModelConfig:
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    ffn: int | None = None  # default 4 * hidden
    dropout: float = 0.2
    max_len: int = 200
    mask_prob: float = 0.2  # bert4rec cloze masking


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
    # False for models whose auxiliary loss is not reduced across processes (--nproc 1 only)
    supports_multiprocess: ClassVar[bool] = True

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__()
        self.n_items = n_items
        self.config = config

    def bind_dataset(self, dataset) -> None:
        """Create data-dependent parameters and buffers (e.g. item text tokens),
        deterministically from ``dataset``. Called by the trainer right after building the
        model and by ``registry.load_model`` before the state is loaded. Default: nothing."""

    def auxiliary_loss(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        hidden: torch.Tensor,
        generator: torch.Generator,
    ) -> torch.Tensor | None:
        """An extra scalar loss added to the training loss of a step (``inputs``/``targets``
        from ``training_batch``, ``hidden = forward(inputs)``, ``generator`` the trainer's data
        generator), or ``None``. The default draws no random numbers."""
        return None

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
