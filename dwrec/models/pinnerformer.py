"""PinnerFormer (Pancha et al., KDD 2022), as used by PinnerFormerLite and the Dynamic
Weighted Loss paper: a causal PreNorm transformer user encoder whose output passes an MLP
and is L2-normalised; items are L2-normalised embeddings; a score is the cosine similarity
divided by a learned temperature.

Architecture: token + learned position embeddings -> dropout -> PreNorm transformer
blocks with a causal mask (padding keys masked) -> final LayerNorm -> MLP
(Linear, GELU, Linear) -> L2 normalisation. ``score(u, i) = cos(u, e_i) / tau`` with
``tau = max(exp(log_tau), 0.01)``. The item table is shared by input and output (the paper
builds both from PinSage features; dwrec has only ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import (
    TransformerEncoder,
    init_small_normal,
    last_tokens,
    new_item_embedding,
    next_item_batch,
    score_items,
    zero_padding,
)
from dwrec.models.registry import register

MIN_TEMPERATURE = 0.01
INITIAL_TEMPERATURE = 0.07  # dwrec's choice (the CLIP initialisation)


@dataclass
class PinnerFormerConfig(ModelConfig):
    """PinnerFormerLite's published setup: d=256, 8 heads, 4 layers, FFN 1024, dropout 0.1,
    sequences of at most 100 items (the common options with other defaults)."""

    hidden: int = field(default=256, metadata={"help": "Embedding size"})
    layers: int = field(default=4, metadata={"help": "Blocks"})
    heads: int = field(default=8, metadata={"help": "Attention heads"})
    ffn: int | None = field(default=1024, metadata={"help": "Feed-forward width"})
    dropout: float = field(default=0.1, metadata={"help": "Dropout"})
    max_len: int = field(default=100, metadata={"help": "Sequence length"})


@register
class PinnerFormer(SequentialModel):
    """Causal transformer with cosine / learned-temperature scoring."""

    name = "pinnerformer"

    config_class = PinnerFormerConfig

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__(n_items, config)
        self.item_embedding = new_item_embedding(n_items, config.hidden)
        self.encoder = TransformerEncoder(config, causal=True, norm_first=True)
        self.head = nn.Sequential(
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.hidden),
        )
        self.apply(init_small_normal)
        self.log_tau = nn.Parameter(torch.tensor(math.log(INITIAL_TEMPERATURE)))

    def temperature(self) -> torch.Tensor:
        """The softmax temperature ``tau >= 0.01`` (a 0-d tensor)."""
        return self.log_tau.exp().clamp_min(MIN_TEMPERATURE)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` tokens (``L <= max_len``) -> ``[B, L, d]`` unit-norm user embeddings
        (zero at padding). Position ``t`` sees only tokens ``<= t``."""
        # sqrt(d) scaling (as in the original Transformer and SASRec) lets item identity,
        # not the position embedding or the blocks' first updates, dominate the residual
        # stream at initialisation; training is much faster with it.
        embedded = self.item_embedding(tokens) * math.sqrt(self.config.hidden)
        hidden = self.encoder(embedded, tokens)
        return zero_padding(F.normalize(self.head(hidden), dim=-1), tokens)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Next-item pairs: ``inputs = windows[:, :-1]``, targets the following item's id
        (``-1`` where the input or the target is padding). ``generator`` is unused."""
        return TrainingBatch(*next_item_batch(windows))

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` left-padded history (last ``max_len`` tokens used) -> ``[B, d]`` unit
        vectors (zero for an empty history)."""
        tokens = last_tokens(history, self.config.max_len)
        embedded = self.item_embedding(tokens) * math.sqrt(self.config.hidden)
        hidden = self.encoder.last_state(embedded, tokens)  # as forward, last position only
        return zero_padding(F.normalize(self.head(hidden), dim=-1), tokens[:, -1])

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """``cos(hidden, e_i) / tau``: ``[N, d]`` -> ``[N, n_items]`` (or ``[N, C]``).
        ``hidden`` is re-normalised, so any non-zero state gives a cosine."""
        item_vectors = F.normalize(self.item_embedding.weight[1 : self.n_items + 1], dim=-1)
        cosine = score_items(F.normalize(hidden, dim=-1), item_vectors, items)
        return cosine / self.temperature()

    def linear_factors(self, hidden: torch.Tensor):
        """``cos(h, e) / tau = (h / |h| / tau) . (e / |e|)``."""
        item_vectors = F.normalize(self.item_embedding.weight[1 : self.n_items + 1], dim=-1)
        return F.normalize(hidden, dim=-1) / self.temperature(), item_vectors, None

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """Unit-norm item embeddings ``[..., d]``."""
        return F.normalize(self.item_embedding(items + 1), dim=-1)

    def output_layer(self) -> torch.Tensor:
        """The output MLP's last weight ``[d, d]``."""
        return self.head[-1].weight
