"""SIGMA: Selective Gated Mamba for sequential recommendation (Liu et al., arXiv 2408.11451).

Architecture (the paper and its official RecBole code, ``model/gated_mamba.py``): item
embedding -> dropout -> LayerNorm, then per layer a G-Mamba block:

- a **partially flipped bidirectional Mamba**: one shared Mamba block runs on the sequence
  and on a copy whose older items are reversed (the newest ``max_len - flip_len`` stay in
  order); each output is gated by a dense selective gate ``h = x + Dense(x)``,
  ``gate = Dropout(Lin(SiLU(h)) + Lin(Sigmoid(h)))`` and multiplied by ``1 + gate``;
- a **feature-extract GRU**: a width-3 convolution then a bias-free GRU;
- the three outputs mixed by learnable weights (initialised 0.8 / 0.1 / 0.1), a Linear,
  ``LayerNorm(Dropout(.))`` (plus the input when layers are stacked), and a position-wise
  feed-forward block (4x, GELU, residual LayerNorm).

The user state is the last position's output; the score of item ``i`` is its dot product
with the (shared) item embedding.

Causality (dwrec's choice, see docs/models.md): every position ``t`` is computed exactly as
the last position of the prefix ending at ``t`` would be, so one pass over a window trains
every position like RecBole's one-sample-per-prefix setup, without look-ahead:

- the flip branch's output at ``t`` is the flipped Mamba run over the prefix ending at ``t``,
  read at its end. By linearity of the scan it is the forward run's state plus a correction
  (``SigmaMamba.forward``), so all positions cost a few tensor operations, not ``L`` runs;
- the GRU's convolution uses the taps of the current and previous items only: at a
  sequence's last position the official same-padded kernel's third tap sees padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch
from dwrec.models.layers import (
    PAD,
    Dropout,
    ItemTableScores,
    ffn_size,
    init_small_normal,
    last_tokens,
    next_item_batch,
)
from dwrec.models.registry import register
from dwrec.models.selective_scan import selective_scan, selective_scan_ref


@dataclass
class SigmaConfig(ModelConfig):
    """SIGMA's options: the shared sizes (defaults from the official ``config.yaml``) and its own."""

    hidden: int = field(default=64, metadata={"help": "embedding and hidden size"})
    layers: int = field(default=1, metadata={"help": "number of G-Mamba layers"})
    dropout: float = field(default=0.2, metadata={"help": "dropout of embeddings and layers"})
    max_len: int = field(default=50, metadata={"help": "window length (official: 50)"})
    d_state: int = field(default=32, metadata={"help": "Mamba state size N per channel"})
    d_conv: int = field(default=4, metadata={"help": "Mamba's causal convolution width"})
    expand: int = field(default=2, metadata={"help": "Mamba's inner width / hidden"})
    flip_len: int | None = field(
        default=None,
        metadata={
            "help": "items reversed in the flipped copy of a full window (the oldest); the "
            "newest max_len - flip_len stay in order. Default max_len - 5 (official: 45 of 50)"
        },
    )
    gate_dropout: float = field(default=0.2, metadata={"help": "dropout of the selective gates"})
    official_second_gate: bool = field(
        default=False,
        metadata={
            "help": "reproduce the official code's flip gate Lin(SiLU(h2)) + Lin(Sigmoid(g1)) "
            "(g1 the forward gate) instead of the paper's Lin(SiLU(h2)) + Lin(Sigmoid(h2))"
        },
    )
    scan_block: int = field(default=8, metadata={"help": "time steps per block of the scan"})
    reference_scan: bool = field(
        default=False, metadata={"help": "use the sequential reference scan (tests, timing)"}
    )

    @property
    def keep(self) -> int:
        """How many of the newest items the flipped copy keeps in order."""
        return self.max_len - (self.max_len - 5 if self.flip_len is None else self.flip_len)


def sigma_config(config: ModelConfig) -> SigmaConfig:
    """``config`` itself when it is a :class:`SigmaConfig`; else a SigmaConfig with its
    common fields and SIGMA's defaults for the rest."""
    if isinstance(config, SigmaConfig):
        return config
    common = {f.name: getattr(config, f.name) for f in fields(ModelConfig)}
    return SigmaConfig(**common)


def check_sigma_config(config: SigmaConfig) -> None:
    for flag, value in (
        ("--hidden", config.hidden),
        ("--layers", config.layers),
        ("--max-len", config.max_len),
        ("d_state", config.d_state),
        ("d_conv", config.d_conv),
        ("expand", config.expand),
        ("scan_block", config.scan_block),
    ):
        if value <= 0:
            raise UsageError(f"{flag} {value} must be positive")
    for flag, value in (("--dropout", config.dropout), ("gate_dropout", config.gate_dropout)):
        if not 0.0 <= value < 1.0:
            raise UsageError(f"{flag} {value} must lie in [0, 1)")
    if config.flip_len is not None and config.flip_len < 0:
        raise UsageError(f"flip_len {config.flip_len} must not be negative")
    if config.keep < max(1, config.d_conv - 1):
        raise UsageError(
            f"flip_len {config.max_len - config.keep} leaves {config.keep} item(s) of a "
            f"{config.max_len}-item window in order; SIGMA needs at least "
            f"max(1, d_conv - 1) = {max(1, config.d_conv - 1)} (a reversed item's "
            "convolution reads that many later items)"
        )


class SigmaMamba(nn.Module):
    """Mamba (Gu & Dao 2023, the ``Mamba`` block of mamba-ssm v1) returning, for every
    position ``t``, the forward run's output and the partially flipped run's output, the
    latter for the prefix ending at ``t``.

    ``x -> in_proj -> (x, z)``; ``u = SiLU(causal depthwise conv(x))``;
    ``(dt, B, C) = x_proj(u)``, ``delta = softplus(dt_proj(dt))``; ``y = scan(u, delta, A, B,
    C) + D u``; output ``out_proj(y * SiLU(z))``. ``A = -exp(A_log)``, S4D-real
    initialisation ``A_log[d, n] = log(n + 1)``; ``D`` starts at 1.
    """

    def __init__(self, config: SigmaConfig):
        super().__init__()
        hidden, n_state = config.hidden, config.d_state
        inner = config.expand * hidden
        self.dt_rank = math.ceil(hidden / 16)
        self.n_state = n_state
        self.keep = config.keep
        self.block = config.scan_block
        self.reference = config.reference_scan
        self.in_proj = nn.Linear(hidden, 2 * inner, bias=False)
        self.conv = nn.Conv1d(inner, inner, config.d_conv, groups=inner, padding=0)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * n_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        a_log = torch.log(torch.arange(1, n_state + 1, dtype=torch.float32)).repeat(inner, 1)
        self.A_log = nn.Parameter(a_log)
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, hidden, bias=False)

    def _conv(self, x: torch.Tensor, reverse: bool) -> torch.Tensor:
        """Depthwise convolution over time, ``[B, L, Dn]``: causal (the item and the ones
        before it), or with ``reverse`` anti-causal (the item and the ones after it)."""
        width = self.conv.kernel_size[0]
        x = x.transpose(1, 2)
        if reverse:  # tap width-1-j on item i+j: the causal kernel read backwards
            padded, weight = F.pad(x, (0, width - 1)), self.conv.weight.flip(-1)
        else:  # tap width-1-j on item i-j
            padded, weight = F.pad(x, (width - 1, 0)), self.conv.weight
        return F.conv1d(padded, weight, self.conv.bias, groups=x.shape[1]).transpose(1, 2)

    def _selection(self, u: torch.Tensor, real: torch.Tensor):
        """``delta`` (zero at padding: padding steps neither decay nor add), ``B``, ``C``."""
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.n_state, self.n_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt)) * real
        return delta, B, C

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, L, d]`` (zero at padding), ``real [B, L, 1]`` -> (forward, flipped) ``[B, L, d]``.

        Flipped output at ``t`` (``m = t - keep``): the state after the scan over items
        ``m, m-1, ..., 1`` then ``m+1, ..., t`` is, by linearity,
        ``G_t = h_t + Q_t (S_m - h_m)`` with ``h`` the forward states,
        ``Q_t = exp(A sum_{m < j <= t} delta_j)`` the forward decay over the kept items, and
        ``S_m = sum_{i <= m} exp(A sum_{j < i} rdelta_j) rb_i`` the state of the reversed run
        (``rdelta, rb`` from the reversed items' features). ``y_t = C_t . G_t + D u_t``.
        """
        dtype = torch.promote_types(x.dtype, torch.float32)  # bf16 -> float32, float64 stays
        with torch.autocast(x.device.type, enabled=False):
            forward_out, flip_out = self._branches(x.to(dtype), real.to(dtype))
        return forward_out.to(x.dtype), flip_out.to(x.dtype)

    def _branches(self, x: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inner_x, z = self.in_proj(x).chunk(2, dim=-1)
        A = -torch.exp(self.A_log)
        u = F.silu(self._conv(inner_x, reverse=False))
        delta, B, C = self._selection(u, real)
        scan = selective_scan_ref if self.reference else selective_scan
        kwargs = {} if self.reference else {"block": self.block}
        y, states = scan(u, delta, A, B, C, self.D, return_states=True, **kwargs)
        batch, length, inner = u.shape
        y_flip = y
        if length > self.keep:  # positions t >= keep have a reversed part (m = t - keep >= 0)
            used = length - self.keep  # items that are ever reversed: m < used
            # the reversed run: a reversed item's convolution reads the item and the next ones
            u_rev = F.silu(self._conv(inner_x, reverse=True))[:, :used]
            delta_rev, B_rev, _ = self._selection(u_rev, real[:, :used])
            before = torch.cumsum(delta_rev, dim=1) - delta_rev  # sum_{j < i} rdelta_j
            reversed_terms = torch.exp(before.unsqueeze(-1) * A) * (
                (delta_rev * u_rev).unsqueeze(-1) * B_rev.unsqueeze(2)
            )
            # S_m: a lower-triangular matrix product is a cumulative sum that runs as one
            # BLAS call (torch.cumsum over dim 1 of this tensor is several times slower)
            lower = torch.ones(used, used, dtype=u.dtype, device=u.device).tril()
            reversed_state = torch.matmul(lower, reversed_terms.flatten(2))
            reversed_state = reversed_state.view(batch, used, inner, self.n_state)
            window = delta[:, self.keep :]  # sum of delta over the kept items m+1..t
            for steps in range(1, self.keep):
                window = window + delta[:, self.keep - steps : length - steps]
            decay = torch.exp(window.unsqueeze(-1) * A)  # Q_t
            correction = decay * (reversed_state - states[:, :used])
            correction = torch.einsum("bldn,bln->bld", correction, C[:, self.keep :])
            y_flip = y + F.pad(correction, (0, 0, self.keep, 0))
        gate = F.silu(z)
        return self.out_proj(y * gate), self.out_proj(y_flip * gate)


class SelectiveGate(nn.Module):
    """``Dropout(Lin_si(SiLU(h)) + Lin_sig(Sigmoid(s)))`` with ``s = h`` unless given."""

    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.silu_linear = nn.Linear(hidden, hidden)
        self.sigmoid_linear = nn.Linear(hidden, hidden)
        self.dropout = Dropout(dropout)

    def forward(self, h: torch.Tensor, sigmoid_of: torch.Tensor | None = None) -> torch.Tensor:
        s = h if sigmoid_of is None else sigmoid_of
        return self.dropout(self.silu_linear(F.silu(h)) + self.sigmoid_linear(torch.sigmoid(s)))


class GMambaLayer(nn.Module):
    """One SIGMA layer: G-Mamba block, Linear, LayerNorm, feed-forward."""

    def __init__(self, config: SigmaConfig):
        super().__init__()
        hidden = config.hidden
        self.stacked = config.layers > 1
        self.official_second_gate = config.official_second_gate
        self.mamba = SigmaMamba(config)
        self.dense_forward = nn.Linear(hidden, hidden)
        self.dense_flip = nn.Linear(hidden, hidden)
        self.gate = SelectiveGate(hidden, config.gate_dropout)  # shared by both branches
        self.gru_conv = nn.Conv1d(hidden, hidden, kernel_size=3)
        self.gru = nn.GRU(hidden, hidden, num_layers=1, bias=False, batch_first=True)
        # [forward, flip, GRU]; used as they are (the official code's softmax is unused)
        self.mix = nn.Parameter(torch.tensor([0.8, 0.1, 0.1]))
        self.projection = nn.Linear(hidden, hidden)
        self.dropout = Dropout(config.dropout)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn_in = nn.Linear(hidden, ffn_size(config))
        self.ffn_out = nn.Linear(ffn_size(config), hidden)
        self.ffn_dropout = Dropout(config.dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        forward_out, flip_out = self.mamba(x, real)
        gate_forward = self.gate(x + self.dense_forward(x))
        # at its read position the flipped copy holds the current item (it is kept in order)
        h_flip = x + self.dense_flip(x)
        gate_flip = self.gate(h_flip, gate_forward if self.official_second_gate else None)
        forward_out = forward_out * (1 + gate_forward)
        flip_out = flip_out * (1 + gate_flip)
        # the width-3 convolution's taps on the previous and current item (see module doc)
        conv = F.conv1d(
            F.pad(x.transpose(1, 2), (1, 0)), self.gru_conv.weight[:, :, :2], self.gru_conv.bias
        ).transpose(1, 2)
        gru_out, _ = self.gru(conv * real)  # zero inputs keep the bias-free GRU at zero
        mixed = self.mix[0] * forward_out + self.mix[1] * flip_out + self.mix[2] * gru_out
        out = self.dropout(self.projection(mixed))
        out = self.norm(out + x if self.stacked else out)
        inner = self.ffn_dropout(self.ffn_out(self.ffn_dropout(F.gelu(self.ffn_in(out)))))
        return self.ffn_norm(inner + out) * real


@register
class SIGMA(ItemTableScores, SequentialModel):
    """SIGMA over left-padded token sequences (token = item id + 1, 0 = pad)."""

    name = "sigma"
    config_class: ClassVar[type] = SigmaConfig
    supports_multiprocess: ClassVar[bool] = True
    deviation: ClassVar[str] = (
        "selective scan in PyTorch (no fused mamba-ssm kernel); every position trained as its "
        "own prefix's last position in one pass; the paper's second gate, not the official "
        "code's; padding never flipped (docs/models.md)"
    )

    @staticmethod
    def default_config() -> ModelConfig:
        """The official sizes: hidden 64, 1 layer, dropout 0.2, window 50 (``config.yaml``)."""
        return ModelConfig(hidden=64, layers=1, heads=1, ffn=256, dropout=0.2, max_len=50)

    def __init__(self, n_items: int, config: ModelConfig):
        config = sigma_config(config)
        check_sigma_config(config)
        super().__init__(n_items, config)
        self.item_embedding = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.input_dropout = Dropout(config.dropout)
        self.input_norm = nn.LayerNorm(config.hidden, eps=1e-12)
        self.layers = nn.ModuleList(GMambaLayer(config) for _ in range(config.layers))
        # the official initialisation: every Linear and Embedding weight N(0, 0.02^2) (Mamba's
        # own projections included, as ``SIGMA._init_weights`` overrides them), zero Linear
        # biases, LayerNorm (1, 0); convolutions, the GRU, ``A_log`` and ``D`` keep their own
        self.apply(init_small_normal)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [B, L]`` (``L <= max_len``) -> ``[B, L, d]``, zero at padding. Position
        ``t`` depends on tokens ``<= t`` only and equals ``user_state`` of that prefix."""
        if tokens.shape[1] > self.config.max_len:
            raise ValueError(
                f"sequence length {tokens.shape[1]} exceeds max_len {self.config.max_len}"
            )
        real = (tokens != PAD).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        x = self.input_norm(self.input_dropout(self.item_embedding(tokens))) * real
        for layer in self.layers:
            x = layer(x, real)
        return x

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        """Next-item targets at every position (each position is its own prefix's state)."""
        return TrainingBatch(*next_item_batch(windows))

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        """The last position's state (last ``max_len`` tokens), in row chunks that bound the
        ``[rows, L, expand * d, d_state]`` scan tensors to about 2^24 numbers."""
        tokens = last_tokens(history, self.config.max_len)
        per_row = tokens.shape[1] * self.config.expand * self.config.hidden * self.config.d_state
        rows = max(1, (1 << 24) // per_row)
        return torch.cat([self.forward(part)[:, -1] for part in tokens.split(rows)], dim=0)

    def output_layer(self) -> torch.Tensor:
        return self.item_embedding.weight
