"""SASRec: causal self-attention over the item sequence (Kang & McAuley, ICDM 2018).

Architecture, as in the paper: item embeddings (scaled by ``sqrt(d)``) plus learned
position embeddings, dropout, then ``layers`` blocks of ``x + Dropout(g(LayerNorm(x)))``
for ``g`` = causal multi-head self-attention and ``g`` = point-wise feed-forward (ReLU,
width ``ffn``, default ``4 * hidden``), and a final LayerNorm. Padded positions are zeroed
after every block. The item embedding table is shared between input and output: the score
of item ``i`` is ``h . E[i + 1]``.

Positions count from each sequence's first real token (the paper counts from the left edge
of a fixed-length window): outputs then do not depend on how much padding precedes a
sequence, and the state at training position ``t`` equals the state of the prefix ending
at ``t`` at inference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import (
    Dropout,
    ItemTableScores,
    Mask,
    MultiHeadSelfAttention,
    attention_mask,
    check_transformer_config,
    ffn_size,
    init_small_normal,
    next_item_batch,
    positions_from_start,
    zero_padding,
)
from dwrec.models.registry import register


class SASRecBlock(nn.Module):
    """``x + Dropout(SA(LN(x)))`` then ``x + Dropout(FFN(LN(x)))``, padding rows re-zeroed."""

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden)
        self.attention = MultiHeadSelfAttention(hidden, heads, dropout)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, ffn),
            nn.ReLU(inplace=True),
            Dropout(dropout),
            nn.Linear(ffn, hidden),
        )
        self.dropout = Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: Mask, tokens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Padding rows are re-zeroed when ``tokens`` is given (ranking, which reads only the
        last real position, skips that: a real query never attends to a padding key)."""
        x = x + self.dropout(self.attention(self.attention_norm(x), mask))
        x = x + self.dropout(self.ffn(self.ffn_norm(x)))
        return x if tokens is None else zero_padding(x, tokens)

    def last_position(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``forward(...)[:, -1:]`` computed for the last position only (``[B, 1, d]``)."""
        last = x[:, -1:] + self.dropout(self.attention.last_query(self.attention_norm(x), mask))
        return last + self.dropout(self.ffn(self.ffn_norm(last)))


@register
class SASRec(ItemTableScores, SequentialModel):
    """Causal transformer over left-padded token sequences (token = item id + 1, 0 = pad)."""

    name = "sasrec"

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__(n_items, config)
        check_transformer_config(config)
        hidden = config.hidden
        self.item_embedding = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_len, hidden)
        self.input_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            SASRecBlock(hidden, config.heads, ffn_size(config), config.dropout)
            for _ in range(config.layers)
        )
        self.final_norm = nn.LayerNorm(hidden)
        # N(0, 0.02) weights, zero biases, zero padding row (the BERT/RecBole convention): it
        # keeps the initial logits of the shared input/output embedding small
        self.apply(init_small_normal)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` (``L <= max_len``, left-padded with 0) -> hidden ``[B, L, d]``;
        zero at padded positions. Position ``t`` sees only tokens ``<= t``."""
        x, mask = self._embed(tokens)
        for block in self.blocks:
            x = block(x, mask, tokens)
        return zero_padding(self.final_norm(x), tokens)

    def _embed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Mask]:
        if tokens.shape[1] > self.config.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_len {self.config.max_len}"
            )
        x = self.item_embedding(tokens) * math.sqrt(self.config.hidden)
        x = x + self.position_embedding(positions_from_start(tokens))
        return zero_padding(self.input_dropout(x), tokens), attention_mask(tokens, causal=True)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Next-item targets: inputs ``windows[:, :-1]``, targets ``windows[:, 1:] - 1``,
        ``-1`` where the input is padding (so also where the target is)."""
        return TrainingBatch(*next_item_batch(windows))

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """The last position's state; the final block computes that position only, and padding
        rows are not re-zeroed between blocks (they cannot reach a real position)."""
        tokens = history[:, -self.config.max_len :]
        x, mask = self._embed(tokens)
        for block in self.blocks[:-1]:
            x = block(x, mask)
        last = self.blocks[-1].last_position(x, mask)[:, 0]
        return zero_padding(self.final_norm(last), tokens[:, -1:].squeeze(1))

    def output_layer(self) -> torch.Tensor:
        return self.item_embedding.weight


def ranking_flops(config: ModelConfig, history_lengths, n_items: int) -> float:
    """Multiply-add FLOPs (x2) that ranking cases with histories of ``history_lengths`` items
    needs with SASRec (each truncated to ``max_len``): the blocks before the last over every
    position (projections, causal attention pairs, feed-forward), the last block at the last
    position (its keys and values folded into the query, see
    ``MultiHeadSelfAttention.last_query``), and the scores of every item. Layer norms, masks
    and the ranking itself are not counted: a floor, not a model of the time
    (benchmarks/eval_speed.py compares its timings with it)."""
    import numpy as np

    d, ffn, layers = config.hidden, config.ffn or 4 * config.hidden, config.layers
    n = np.minimum(np.asarray(history_lengths), config.max_len).astype(np.float64)
    full_block = 2 * n * (4 * d * d + 2 * d * ffn) + 4 * d * n * (n + 1) / 2
    last_block = 8 * d * d + 4 * config.heads * d * n + 4 * d * ffn
    return float(((layers - 1) * full_block + last_block + 2 * d * n_items).sum())
