"""Building blocks shared by the models: attention masks for left-padded sequences,
positions, a transformer block on ``scaled_dot_product_attention``, and item scoring.

Conventions (see :mod:`dwrec.models.base`): token 0 is padding, sequences are left-padded,
item ``i`` is token ``i + 1``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig

PAD = 0


def check_transformer_config(config: ModelConfig) -> None:
    """Reject sizes a transformer cannot use, naming only the offending flags."""
    config.validate()
    if config.hidden % config.heads:
        raise UsageError(f"--hidden {config.hidden} is not divisible by --heads {config.heads}")


def ffn_size(config: ModelConfig) -> int:
    """The feed-forward width: ``config.ffn``, or ``4 * hidden`` when unset."""
    return config.ffn if config.ffn else 4 * config.hidden


def positions_from_start(tokens: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` left-padded tokens -> ``[B, L]`` 0-based index of each token among the
    row's non-padding tokens (padding gets 0).

    Counting from the first real token (not from the left edge of the padded array) makes
    a model's output independent of how much padding precedes the sequence, and makes a
    causal model's state at position ``t`` equal to its state for the prefix ending at ``t``.
    """
    return ((tokens != PAD).long().cumsum(dim=1) - 1).clamp_min(0)


CAUSAL = "causal"
FULL = "full"
Mask = torch.Tensor | str
"""A boolean ``[B, 1, L, L]`` mask, or :data:`CAUSAL` / :data:`FULL` when no token is padding."""


DROP_LEVELS = 1 << 16
"""On CPU, dropout probabilities are rounded to a multiple of ``1 / DROP_LEVELS``."""


def keep_mask(
    shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, float]:
    """A CPU dropout mask: bool ``shape`` (True = keep) and the scale ``1 / P(keep)``.

    torch's CPU ``bernoulli_`` draws one Mersenne-Twister number per element (about 8 ns
    each here, a quarter of a SASRec training step). This draws 64 uniform bits per 4
    elements from the same generator (``random_`` over the full int64 range) and reads them
    as 16-bit lanes: an element is dropped when its lane falls in the lowest
    ``round(p * DROP_LEVELS)`` of the ``DROP_LEVELS`` values, so ``P(drop)`` is ``p`` rounded
    to a multiple of ``1 / 65,536`` (0.2 becomes 0.199997), and the scale uses that rounded
    value, so ``E[dropout(x)] = x`` exactly. Seeded by ``torch.manual_seed`` like any CPU draw.
    """
    count = math.prod(int(size) for size in shape)
    drop = min(DROP_LEVELS - 1, max(0, round(p * DROP_LEVELS)))
    words = torch.empty((count + 3) // 4, dtype=torch.int64)
    words.random_(-(2**63), None, generator=generator)  # the full 64-bit range
    lanes = words.view(torch.int16)[:count]
    keep = lanes >= drop - DROP_LEVELS // 2  # lanes are uniform over [-32768, 32767]
    return keep.view(tuple(shape)), DROP_LEVELS / (DROP_LEVELS - drop)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with :func:`keep_mask` on CPU (elsewhere torch's own)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or not x.dtype.is_floating_point:
        return F.dropout(x, p, training)
    keep, scale = keep_mask(x.shape, p)
    factor = torch.where(keep, torch.tensor(scale, dtype=x.dtype), torch.tensor(0, dtype=x.dtype))
    return x * factor


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same state, same ``p``) computed by :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention_mask(tokens: torch.Tensor, causal: bool) -> Mask:
    """``[B, L]`` tokens -> boolean mask ``[B, 1, L, L]`` for ``scaled_dot_product_attention``
    (``True`` = the query may attend to the key).

    Padding keys are masked (and, if ``causal``, later keys). Every query may attend to
    itself: a padding query then has one allowed key instead of none, so its softmax is
    defined (no NaN), and real queries are unaffected because a real token never sees a
    padding key.
    """
    length = tokens.shape[1]
    if bool((tokens != PAD).all()):
        # No padding: let the attention kernel build the mask itself (its fused CPU/GPU
        # kernels only run without an explicit mask).
        return CAUSAL if causal else FULL
    allowed = (tokens != PAD)[:, None, None, :]
    if causal:
        allowed = (
            allowed & torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        )
    return allowed | torch.eye(length, dtype=torch.bool, device=tokens.device)


class MultiHeadSelfAttention(nn.Module):
    """Self-attention through ``F.scaled_dot_product_attention`` (fused kernels on GPU)."""

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def last_query(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """Attention output of the last position only: ``x [B, L, d]`` -> ``[B, 1, d]``.

        Equals ``forward(x, mask)[:, -1:]`` (no attention dropout) without projecting any key
        or value. With ``q`` the last query of a head and ``W_k, b_k, W_v, b_v`` its slices:

        - ``q . (W_k x_j + b_k) = (W_k^T q) . x_j + q . b_k``, and the last term is the same for
          every key ``j``, so the softmax weights ``p_j`` come from ``(W_k^T q) . x_j``;
        - ``sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v``, because ``sum_j p_j = 1``.

        That replaces the ``[L, d] x [d, 2d]`` key/value projection by two ``L x d`` products
        per head (ranking needs only the last state, so this is most of the last block's cost).
        """
        batch, length, hidden = x.shape
        head = hidden // self.heads
        weight, bias = self.qkv.weight, self.qkv.bias
        query = F.linear(x[:, -1], weight[:hidden], bias[:hidden]).view(batch, self.heads, head)
        key_weight = weight[hidden : 2 * hidden].view(self.heads, head, hidden)
        value_weight = weight[2 * hidden :].view(self.heads, head, hidden)
        probe = torch.einsum("bhe,hed->bhd", query, key_weight) * head**-0.5  # [B, heads, d]
        logits = torch.bmm(probe, x.transpose(1, 2))  # [B, heads, L]
        if not isinstance(mask, str):
            # The last query may see every real key (causal or not): its row of the mask.
            logits = logits.masked_fill(~mask[:, 0, -1:, :], float("-inf"))
        mixed = torch.bmm(torch.softmax(logits, dim=-1), x)  # [B, heads, d]: sum_j p_j x_j
        values = torch.einsum("bhd,hed->bhe", mixed, value_weight) + bias[2 * hidden :].view(
            self.heads, head
        )
        return self.out(values.reshape(batch, 1, hidden))

    def forward(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``x [B, L, d]``, ``mask [B, 1, L, L]`` bool -> ``[B, L, d]``."""
        batch, length, hidden = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, hidden // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, L, d_head]
        dropout_p = self.dropout if self.training else 0.0
        if dropout_p > 0.0 and x.device.type == "cpu":
            # SDPA with dropout runs its unfused math path on CPU anyway; this is the same
            # computation with the faster dropout mask.
            attended = _attention_with_dropout(query, key, value, mask, dropout_p)
        elif isinstance(mask, str):
            attended = F.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout_p, is_causal=mask == CAUSAL
            )
        else:
            attended = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, dropout_p=dropout_p
            )
        return self.out(attended.transpose(1, 2).reshape(batch, length, hidden))


def _attention_with_dropout(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: Mask, p: float
) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) -> dropout(p) -> @ v``, as SDPA's math path."""
    scores = torch.matmul(query * query.shape[-1] ** -0.5, key.transpose(-2, -1))
    if not isinstance(mask, str):
        scores.masked_fill_(~mask, float("-inf"))
    elif mask == CAUSAL:
        length = scores.shape[-1]
        future = torch.ones(length, length, dtype=torch.bool, device=scores.device).triu_(1)
        scores.masked_fill_(future, float("-inf"))
    return torch.matmul(dropout(torch.softmax(scores, dim=-1), p, True), value)


class TransformerBlock(nn.Module):
    """Self-attention + GELU feed-forward, each with a residual connection and LayerNorm.

    ``norm_first=True`` is the PreNorm block (``x + f(LN(x))``; the stack needs a final
    LayerNorm), ``False`` the original PostNorm block (``LN(x + f(x))``, as in BERT).
    """

    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.attention = MultiHeadSelfAttention(hidden, heads, dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(hidden, ffn), nn.GELU(), Dropout(dropout), nn.Linear(ffn, hidden)
        )
        self.attention_norm = nn.LayerNorm(hidden)
        self.feed_forward_norm = nn.LayerNorm(hidden)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``x [B, L, d]``, ``mask [B, 1, L, L]`` -> ``[B, L, d]``."""
        if self.norm_first:
            x = x + self.dropout(self.attention(self.attention_norm(x), mask))
            return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))

    def last_position(self, x: torch.Tensor, mask: Mask) -> torch.Tensor:
        """``forward(x, mask)[:, -1]`` computed for the last position only (``[B, d]``):
        keys and values still come from every position (``MultiHeadSelfAttention.last_query``),
        the rest of the block is per position."""
        last = x[:, -1:]
        if self.norm_first:
            last = last + self.dropout(self.attention.last_query(self.attention_norm(x), mask))
            last = last + self.dropout(self.feed_forward(self.feed_forward_norm(last)))
            return last[:, 0]
        last = self.attention_norm(last + self.dropout(self.attention.last_query(x, mask)))
        return self.feed_forward_norm(last + self.dropout(self.feed_forward(last)))[:, 0]


class TransformerEncoder(nn.Module):
    """Learned positions + a stack of :class:`TransformerBlock` over embedded tokens.

    ``forward(embedded [B, L, d], tokens [B, L]) -> [B, L, d]``; outputs at padding
    positions are zero. Positions count from each row's first real token
    (:func:`positions_from_start`).
    """

    def __init__(self, config: ModelConfig, causal: bool, norm_first: bool):
        super().__init__()
        check_transformer_config(config)
        self.causal = causal
        self.max_len = config.max_len
        self.position_embedding = nn.Embedding(config.max_len, config.hidden)
        self.input_dropout = Dropout(config.dropout)
        # PostNorm normalises the input sum (as BERT does); PreNorm normalises the output.
        self.input_norm = nn.Identity() if norm_first else nn.LayerNorm(config.hidden)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                config.hidden, config.heads, ffn_size(config), config.dropout, norm_first
            )
            for _ in range(config.layers)
        )
        self.output_norm = nn.LayerNorm(config.hidden) if norm_first else nn.Identity()
        nn.init.normal_(self.position_embedding.weight, std=0.02)

    def forward(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x, mask = self._inputs(embedded, tokens)
        for block in self.blocks:
            x = block(x, mask)
        return zero_padding(self.output_norm(x), tokens)

    def last_state(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``forward(embedded, tokens)[:, -1]`` (``[B, d]``) with the last block computed at
        the last position only, which is all ranking reads."""
        x, mask = self._inputs(embedded, tokens)
        for block in self.blocks[:-1]:
            x = block(x, mask)
        last = self.output_norm(self.blocks[-1].last_position(x, mask))
        return zero_padding(last, tokens[:, -1])

    def _inputs(self, embedded: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, Mask]:
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds max_len {self.max_len}")
        x = embedded + self.position_embedding(positions_from_start(tokens))
        return self.input_dropout(self.input_norm(x)), attention_mask(tokens, self.causal)


def zero_padding(hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``hidden [B, L, d]`` with the rows at padding tokens set to zero."""
    return hidden * (tokens != PAD).unsqueeze(-1).to(hidden.dtype)


def new_item_embedding(
    n_items: int, hidden: int, extra_tokens: int = 0, std: float = 0.02
) -> nn.Embedding:
    """Token embedding table: padding row 0 (kept at zero), ``n_items`` item rows, then
    ``extra_tokens`` special rows (e.g. a mask token); ``N(0, std^2)`` initialisation."""
    table = nn.Embedding(n_items + 1 + extra_tokens, hidden, padding_idx=PAD)
    nn.init.normal_(table.weight, std=std)
    with torch.no_grad():
        table.weight[PAD].zero_()
    return table


def init_small_normal(module: nn.Module, std: float = 0.02) -> None:
    """BERT/GPT initialisation for ``module.apply``: ``N(0, std^2)`` weights for linear and
    embedding layers, zero linear biases, padding rows kept at zero (LayerNorm untouched)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


def score_items(
    hidden: torch.Tensor, item_vectors: torch.Tensor, items: torch.Tensor | None
) -> torch.Tensor:
    """Dot-product scores of states against item vectors.

    Args:
        hidden: ``[N, d]`` states.
        item_vectors: ``[n_items, d]`` output vectors of every item (row = dataset id).
        items: ``None`` (every item), ``[C]`` (the same candidates for every state) or
            ``[N, C]`` (candidates per state), dataset ids.

    Returns:
        ``[N, n_items]`` or ``[N, C]`` scores.
    """
    if items is None:
        return hidden @ item_vectors.T
    if items.dim() == 1:
        return hidden @ item_vectors[items].T
    if items.dim() == 2 and items.shape[0] == hidden.shape[0]:
        return torch.einsum("nd,ncd->nc", hidden, item_vectors[items])
    raise ValueError(
        f"items must be None, [C] or [N={hidden.shape[0]}, C]; got shape {tuple(items.shape)}"
    )


def gather_items(vectors: torch.Tensor, items: torch.Tensor | None) -> torch.Tensor:
    """Per-item values (e.g. an output bias ``[n_items]``) laid out like :func:`score_items`'s
    result: ``[n_items]``, ``[C]`` or ``[N, C]`` (broadcasts against it)."""
    return vectors if items is None else vectors[items]


class ItemTableScores:
    """``score``, ``embed_items`` and ``linear_factors`` for a model whose ``item_embedding``
    table is both its input and output item layer: padding at row 0, dataset item ``i`` at row
    ``i + 1`` (rows past ``n_items``, e.g. a mask token, are never scored). Put it before
    :class:`~dwrec.models.base.SequentialModel` among the bases."""

    item_embedding: nn.Embedding
    n_items: int

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Dot products with the item rows: ``[N, n_items]``, or ``[N, C]`` for candidates
        ``items [C]`` / ``[N, C]`` (dataset ids)."""
        return score_items(hidden, self.item_embedding.weight[1 : self.n_items + 1], items)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_embedding(items + 1)

    def linear_factors(self, hidden: torch.Tensor):
        return hidden, self.item_embedding.weight[1 : self.n_items + 1], None


def next_item_batch(windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal next-item training pairs from left-padded windows ``[B, L + 1]``.

    Returns ``inputs = windows[:, :-1]`` and ``targets [B, L]``: the dataset id of the next
    item, or ``-1`` where the next token is padding or the input itself is padding (a state
    computed from no item at all is not a user state).
    """
    inputs = windows[:, :-1]
    targets = windows[:, 1:].long() - 1  # padding (token 0) becomes -1
    targets = targets.masked_fill(inputs == PAD, -1)
    return inputs, targets


def last_tokens(history: torch.Tensor, max_len: int) -> torch.Tensor:
    """The last ``max_len`` columns of a left-padded ``[B, L]`` history."""
    return history[:, -max_len:] if history.shape[1] > max_len else history
