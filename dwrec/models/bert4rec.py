"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional transformer trained as a cloze task.

Architecture: token + learned position embeddings -> LayerNorm -> dropout -> PostNorm
transformer blocks without a causal mask (padding keys masked) -> output head
``LayerNorm(GELU(W h + b))`` -> scores ``head . e_i + b_i`` against the shared input item
embeddings plus a per-item output bias (the paper's output layer).

Tokens: item ``i`` is token ``i + 1``, 0 is padding, ``n_items + 1`` is the mask token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import (
    PAD,
    TransformerEncoder,
    gather_items,
    init_small_normal,
    new_item_embedding,
    score_items,
    zero_padding,
)
from dwrec.models.registry import register


@dataclass
class Bert4RecConfig(ModelConfig):
    mask_prob: float = field(default=0.2, metadata={"help": "Masking probability"})

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.mask_prob < 1.0:
            raise UsageError(f"--mask-prob {self.mask_prob} must lie in (0, 1)")


@register
class BERT4Rec(SequentialModel):
    """Bidirectional cloze model; ``user_state`` reads the hidden state of a mask token
    appended after the history."""

    name = "bert4rec"
    # Share of training windows whose only masked item is the last one, so that training
    # also sees the test-time situation (a mask at the end). The paper does this; the rate
    # is dwrec's choice (an instance attribute, so tests and experiments can change it).
    last_item_prob: float = 0.1

    config_class = Bert4RecConfig

    def __init__(self, n_items: int, config: Bert4RecConfig):
        super().__init__(n_items, config)
        config.validate()
        self.mask_token = n_items + 1
        self.item_embedding = new_item_embedding(n_items, config.hidden, extra_tokens=1)
        self.encoder = TransformerEncoder(config, causal=False, norm_first=False)
        self.head_projection = nn.Linear(config.hidden, config.hidden)
        self.head_norm = nn.LayerNorm(config.hidden)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.apply(init_small_normal)  # BERT's initialisation, as BERT4Rec's released code

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` tokens (``L <= max_len``) -> ``[B, L, d]``; zero at padding."""
        hidden = self.encoder(self.item_embedding(tokens), tokens)
        return zero_padding(self.head_norm(F.gelu(self.head_projection(hidden))), tokens)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Cloze inputs from ``windows [B, L + 1]``: the last ``L`` tokens, each real item
        replaced by the mask token with probability ``mask_prob``; with probability
        ``last_item_prob`` a row instead masks only its last item. A non-empty row with no
        masked item gets its last item masked. Padding is never masked. Targets: the
        original item id at masked positions, ``-1`` elsewhere."""
        inputs = windows[:, 1:]
        batch, length = inputs.shape
        draws = torch.rand(batch, length + 1, generator=generator, device=generator.device).to(
            inputs.device
        )
        real = inputs != PAD
        is_last = torch.zeros(length, dtype=torch.bool, device=inputs.device)
        is_last[-1] = True
        masked = draws[:, :length] < self.config.mask_prob
        last_only = draws[:, length] < self.last_item_prob
        masked = torch.where(last_only[:, None], is_last, masked) & real
        masked = (masked | (is_last & ~masked.any(dim=1, keepdim=True))) & real
        targets = torch.where(masked, inputs.long() - 1, -1)
        return TrainingBatch(inputs.masked_fill(masked, self.mask_token), targets)

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded history -> ``[B, d]``: the state at a mask token appended
        after the history (the oldest token is dropped when that would exceed ``max_len``)."""
        keep = self.config.max_len - 1
        if history.shape[1] > keep:
            history = history[:, -keep:]
        mask_column = torch.full_like(history[:, :1], self.mask_token)
        tokens = torch.cat([history, mask_column], dim=1)
        # as forward, at the mask token only (never padding, so nothing to zero)
        hidden = self.encoder.last_state(self.item_embedding(tokens), tokens)
        return self.head_norm(F.gelu(self.head_projection(hidden)))

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``hidden [N, d]`` -> ``[N, n_items]`` (or ``[N, C]`` for candidates ``items``):
        dot product with the item embeddings plus the item's output bias."""
        item_vectors = self.item_embedding.weight[1 : self.n_items + 1]
        return score_items(hidden, item_vectors, items) + gather_items(self.output_bias, items)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(items + 1)

    def linear_factors(self, hidden: torch.Tensor):
        return hidden, self.item_embedding.weight[1 : self.n_items + 1], self.output_bias

    def output_layer(self) -> torch.Tensor:
        """The output head's projection weight ``[d, d]``."""
        return self.head_projection.weight
