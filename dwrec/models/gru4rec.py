"""GRU4Rec (Hidasi et al., ICLR 2016) in its modern full-sequence form: every position of
a sequence predicts the next item with a softmax over all items.

Architecture: item embedding -> dropout -> GRU (``layers`` layers of width ``hidden``,
dropout between layers) -> linear projection to the embedding size (``hidden``) -> dot
product with the shared item embeddings.
"""

from __future__ import annotations

import torch
from torch import nn

from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import (
    PAD,
    Dropout,
    ItemTableScores,
    last_tokens,
    new_item_embedding,
    next_item_batch,
    zero_padding,
)
from dwrec.models.registry import register


def _rotations(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column indices that turn left padding into right padding and back: row ``b`` is
    rotated by its padding count."""
    length = tokens.shape[1]
    padding = (tokens == PAD).sum(dim=1, keepdim=True)
    columns = torch.arange(length, device=tokens.device)
    to_right = (columns + padding) % length
    to_left = (columns - padding) % length
    return to_right, to_left


@register
class GRU4Rec(ItemTableScores, SequentialModel):
    """Recurrent next-item model; causal by construction."""

    name = "gru4rec"

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__(n_items, config)
        if config.hidden <= 0 or config.layers <= 0:
            raise UsageError(
                f"--hidden {config.hidden} and --layers {config.layers} must be positive"
            )
        if not 0.0 <= config.dropout < 1.0:
            raise UsageError(f"--dropout {config.dropout} must lie in [0, 1)")
        # N(0, 1), PyTorch's default for embeddings: the GRU's gates need inputs of order
        # one. With BERT's N(0, 0.02^2) GRU4Rec learns many times more slowly, and N(0, 1/d)
        # about twice as slowly (measured on the synthetic dataset; see docs/models.md).
        self.item_embedding = new_item_embedding(n_items, config.hidden, std=1.0)
        self.input_dropout = Dropout(config.dropout)
        self.gru = nn.GRU(
            config.hidden,
            config.hidden,
            num_layers=config.layers,
            batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.projection = nn.Linear(config.hidden, config.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded tokens -> ``[B, L, d]`` (zero at padding).

        The GRU runs on each row rotated to right padding, so it starts from its zero
        initial state at the row's first real item; padding steps come after the real ones
        and cannot affect them. No packing (and no host sync for lengths) is needed.
        """
        to_right, to_left = _rotations(tokens)
        right_padded = tokens.gather(1, to_right)
        states, _ = self.gru(self.input_dropout(self.item_embedding(right_padded)))
        index = to_left.unsqueeze(-1).expand(-1, -1, states.shape[-1])
        return zero_padding(self.projection(states.gather(1, index)), tokens)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Next-item pairs: ``inputs = windows[:, :-1]``, targets the following item's id
        (``-1`` where the input or the target is padding). ``generator`` is unused."""
        return TrainingBatch(*next_item_batch(windows))

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded history (last ``max_len`` tokens used) -> ``[B, d]``."""
        return self.forward(last_tokens(history, self.config.max_len))[:, -1]

    def output_layer(self) -> torch.Tensor:
        """The projection weight ``[d, d]`` after the GRU."""
        return self.projection.weight
