"""Most-popular baseline: every user gets the same ranking, by training interaction count.

Not trained by gradient (``trainable = False``): the trainer calls :meth:`Pop.fit` with the
training interaction counts. The score of item ``i`` is ``log(1 + count_i)``; ties are left
to the evaluator's rule (smaller item id first).
"""

from __future__ import annotations

import numpy as np
import torch

from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import next_item_batch
from dwrec.models.registry import register


@register
class Pop(SequentialModel):
    name = "pop"
    trainable = False

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__(n_items, config)
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.float32))

    def fit(self, train_item_counts: np.ndarray | torch.Tensor) -> Pop:
        """Set the counts: ``train_item_counts [n_items]``, interactions per item in training."""
        counts = torch.as_tensor(np.asarray(train_item_counts), dtype=torch.float32)
        if counts.shape != (self.n_items,):
            raise ValueError(f"expected {self.n_items} counts, got shape {tuple(counts.shape)}")
        if (counts < 0).any():
            raise ValueError("interaction counts must be >= 0")
        self.counts.copy_(counts)
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """A constant, empty user state: ``[B, L, 1]`` zeros (the ranking ignores the user)."""
        return torch.zeros(*tokens.shape, 1, device=self.counts.device)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        return TrainingBatch(*next_item_batch(windows))

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``log(1 + count)`` of every item ``[N, n_items]`` or of candidates ``[N, C]``."""
        popularity = torch.log1p(self.counts).to(hidden.dtype)
        rows = hidden.shape[0]
        if items is None:
            return popularity.expand(rows, -1)
        if items.dim() == 1:
            return popularity[items].expand(rows, -1)
        return popularity[items]

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.counts)[items].unsqueeze(-1)
