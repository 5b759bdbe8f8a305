"""CALRec without a pretrained LLM: a small two-tower text model after Li et al. (RecSys
2024, arXiv 2405.02429, "CALRec: Contrastive Alignment of Generative LLMs for Sequential
Recommendation"). The original fine-tunes PaLM-2 on item text; none can be fetched here,
so this is the closest small version (deviations in docs/models.md).

- Item tower: the item's text tokens (:mod:`dwrec.models.text`, a vocabulary built from the
  catalogue's own titles and domains) -> token embeddings -> a small bidirectional
  transformer -> mean over tokens -> linear, plus (option ``id_embedding``) a learned
  per-item vector. Every item's vector is computed from its text, so the whole catalogue
  is encoded once per training step (and once per set of weights when ranking).
- User tower: a causal transformer (PreNorm, as dwrec's other transformers) over the
  history's item vectors (scaled by ``sqrt(d)``, as SASRec). Scores: dot products of the
  user state with every item vector (instead of BM25 over generated text).
- Losses: next-item cross-entropy over the full catalogue through dwrec's loss path (so the
  domain weighting applies), plus the auxiliary loss, per sequence at its last target:
  ``user_item_weight * InfoNCE(user state, target item vector)``
  ``+ item_item_weight * InfoNCE(two dropout views of the target's text vector)``
  ``+ generation_weight * CE(decoder's first gen_len tokens of the target's text)``,
  both InfoNCE in batch, symmetric, cosine over ``temperature``, repeated items excluded
  from each other's negatives. The decoder is one causal transformer block that starts
  from the user state and predicts the target's text tokens one by one (teacher forcing),
  its output tied to the token embeddings.
- Optional second stage (``stage2_epochs``, the paper's per-category fine-tuning after
  training on all categories): after the normal run, more epochs from the best weights on
  batches whose windows all end on items of one domain (:mod:`dwrec.models.stages`,
  :mod:`dwrec.train.stages`); one model for every domain, not one per category.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from dwrec.errors import UsageError
from dwrec.models import augment, stages, text
from dwrec.models.base import ModelConfig, SequentialModel, TrainingBatch, trim_leading_padding
from dwrec.models.layers import (
    CAUSAL,
    PAD,
    TransformerBlock,
    TransformerEncoder,
    ffn_size,
    init_small_normal,
    last_tokens,
    new_item_embedding,
    next_item_batch,
    score_items,
)
from dwrec.models.registry import register


@dataclass
class CALRecConfig(ModelConfig):
    text_len: int = field(default=32, metadata={"help": "text tokens kept per item"})
    vocab_size: int = field(default=8192, metadata={"help": "largest tokenizer vocabulary"})
    ngram: int = field(default=3, metadata={"help": "character n-gram size (0: words only)"})
    text_layers: int = field(default=1, metadata={"help": "transformer layers of the item tower"})
    id_embedding: bool = field(
        default=True, metadata={"help": "add a learned per-item vector to the text vector"}
    )
    gen_len: int = field(default=8, metadata={"help": "target text tokens the decoder predicts"})
    temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature (cosine)"})
    user_item_weight: float = field(
        default=0.1, metadata={"help": "weight of InfoNCE user state <-> target item"}
    )
    item_item_weight: float = field(
        default=0.1, metadata={"help": "weight of InfoNCE between two dropout views of an item"}
    )
    generation_weight: float = field(
        default=0.1, metadata={"help": "weight of the decoder's target-text generation loss"}
    )
    stage2_epochs: int = field(
        default=0,
        metadata={
            "help": "epochs of a second stage after the first ends: from the best weights, "
            "batches of one domain each (0: off)"
        },
    )

    def validate(self) -> None:
        super().validate()
        value = self.stage2_epochs
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UsageError(f"--stage2-epochs must be an integer >= 0 (0: off), got {value}")


@register
class CALRec(SequentialModel):
    """Two-tower text model; needs :meth:`bind_dataset` (the item texts) before use."""

    name = "calrec"
    config_class: ClassVar = CALRecConfig
    supports_multiprocess: ClassVar[bool] = False
    deviation: ClassVar[str] = (
        "no pretrained LLM: a small text transformer trained from scratch on the dataset's own "
        "item text; ranking by dot product over the catalogue instead of BM25 over generated "
        "text; the per-category stage (--stage2-epochs, off by default) fine-tunes one model "
        "on single-domain batches, not one copy per category (docs/models.md)"
    )

    def __init__(self, n_items: int, config: ModelConfig):
        config = augment.model_config(config, CALRecConfig)
        config.validate()
        super().__init__(n_items, config)
        for name in ("text_len", "vocab_size", "text_layers", "gen_len"):
            if getattr(config, name) <= 0:
                raise UsageError(f"calrec {name} {getattr(config, name)} must be positive")
        if config.vocab_size < 3 or config.ngram < 0 or config.temperature <= 0.0:
            raise UsageError(
                f"calrec vocab_size {config.vocab_size} must be >= 3, ngram {config.ngram} >= 0 "
                f"and temperature {config.temperature} > 0"
            )
        hidden = config.hidden
        text_config = dataclasses.replace(
            config, layers=config.text_layers, max_len=config.text_len
        )
        self.text_encoder = TransformerEncoder(text_config, causal=False, norm_first=True)
        self.text_projection = nn.Linear(hidden, hidden)
        self.item_id_embedding = (
            new_item_embedding(n_items, hidden) if config.id_embedding else None
        )
        self.user_encoder = TransformerEncoder(config, causal=True, norm_first=True)
        self.decoder_start = nn.Linear(hidden, hidden)
        self.decoder_position = nn.Embedding(config.gen_len, hidden)
        self.decoder = TransformerBlock(
            hidden, config.heads, ffn_size(config), config.dropout, norm_first=True
        )
        self.decoder_norm = nn.LayerNorm(hidden)
        self.apply(init_small_normal)
        self.token_embedding: nn.Embedding | None = None  # vocabulary-sized: bind_dataset
        self._table: torch.Tensor | None = None
        self._table_key: tuple | None = None
        self._train_forwards = 0
        self._groups: tuple[list[torch.Tensor], torch.Tensor] | None = None
        self._item_domains: torch.Tensor | None = None  # bind_dataset: each item's group

    # -- data-dependent parts

    def bind_dataset(self, dataset) -> None:
        """Tokenise the dataset's item texts (deterministic) and create the token table."""
        if dataset.n_items != self.n_items:
            raise UsageError(
                f"calrec built for {self.n_items} items, dataset has {dataset.n_items}"
            )
        self.bind_texts(text.item_texts(dataset))
        self._item_domains = stages.rarest_domains(
            dataset.item_domain_indptr, dataset.item_domain_indices, len(dataset.domain_names)
        )

    def bind_texts(self, texts: list[tuple[str, list[str]]]) -> None:
        """``(title, domains)`` per item -> buffers ``item_tokens [n_items, text_len]``
        (left-padded), ``item_prefix [n_items, gen_len]`` (the first ``gen_len`` tokens,
        right-padded: the decoder's targets) and the token embedding table."""
        config = self.config
        if len(texts) != self.n_items:
            raise UsageError(f"calrec needs {self.n_items} item texts, got {len(texts)}")
        tokens, vocabulary = text.tokenize_catalogue(
            texts, config.vocab_size, config.text_len, config.ngram
        )
        real = tokens != PAD
        order = (~real).long().argsort(dim=1, stable=True)  # real tokens first, in order
        prefix = tokens.gather(1, order)[:, : config.gen_len]
        if prefix.shape[1] < config.gen_len:
            prefix = F.pad(prefix, (0, config.gen_len - prefix.shape[1]))
        device = self.text_projection.weight.device
        self.register_buffer("item_tokens", tokens.to(device))
        self.register_buffer("item_prefix", prefix.to(device))
        self.token_embedding = new_item_embedding(len(vocabulary) + 1, config.hidden).to(device)
        self._table, self._table_key, self._groups = None, None, None

    def _check_bound(self) -> None:
        if self.token_embedding is None:
            raise RuntimeError("calrec has no item texts: call bind_dataset(dataset) first")

    # -- item tower

    def encode_text(self, items: torch.Tensor) -> torch.Tensor:
        """Text vectors ``[N, d]`` of dataset item ids ``[N]`` (dropout in training mode)."""
        self._check_bound()
        tokens = trim_leading_padding(self.item_tokens[items], keep=1)
        encoded = self.text_encoder(self.token_embedding(tokens), tokens)  # zero at padding
        count = (tokens != PAD).sum(dim=1, keepdim=True).clamp_min(1)
        return self.text_projection(encoded.sum(dim=1) / count.to(encoded.dtype))

    def _encode_items(self) -> torch.Tensor:
        """Every item's vector; items are encoded in groups of equal token count, so no
        padding is computed (the same result as one padded batch: positions count from the
        first real token)."""
        groups, inverse = self._length_groups()
        vectors = torch.cat([self.encode_text(group) for group in groups])[inverse]
        if self.item_id_embedding is not None:
            vectors = vectors + self.item_id_embedding.weight[1:]
        return vectors

    def _length_groups(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Item ids grouped by token count, and the permutation back to item order."""
        device = self.item_tokens.device
        if self._groups is None or self._groups[1].device != device:
            counts = (self.item_tokens != PAD).sum(dim=1).cpu()
            order = counts.argsort(stable=True)
            sizes = torch.bincount(counts[order]).tolist()
            groups = [g.to(device) for g in order.split([n for n in sizes if n])]
            self._groups = (groups, order.argsort().to(device))
        return self._groups

    def item_table(self) -> torch.Tensor:
        """``[n_items, d]`` vectors of every item. Reused while nothing changed: the weights
        (their storage and in-place versions), the mode, grad mode and training forwards;
        so a training step encodes the catalogue once (in ``forward``) and ranking once per
        set of weights."""
        self._check_bound()
        key = (
            self.training,
            torch.is_grad_enabled(),
            self._train_forwards,
            tuple((p.data_ptr(), p._version) for p in self.parameters()),
        )
        if self._table is None or key != self._table_key:
            self._table, self._table_key = self._encode_items(), key
        return self._table

    # -- user tower

    def _history(self, tokens: torch.Tensor) -> torch.Tensor:
        table = self.item_table()
        padded = torch.cat([table.new_zeros(1, table.shape[1]), table], dim=0)
        return padded[tokens] * math.sqrt(self.config.hidden)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` tokens -> ``[B, L, d]`` (zero at padding); in training mode the item
        table is encoded afresh (new dropout) and then reused by ``score`` and the
        auxiliary loss of the same step."""
        self._check_bound()
        if self.training:
            self._train_forwards += 1
        return self.user_encoder(self._history(tokens), tokens)

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        tokens = last_tokens(history, self.config.max_len)
        return self.user_encoder.last_state(self._history(tokens), tokens)

    def training_batch(self, windows: torch.Tensor, generator: torch.Generator) -> TrainingBatch:
        return TrainingBatch(*next_item_batch(windows))

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        return score_items(hidden, self.item_table().to(hidden.dtype), items)

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_table()[items]

    def linear_factors(self, hidden: torch.Tensor):
        return hidden, self.item_table(), None

    def output_layer(self) -> torch.Tensor:
        """The item tower's last layer (shared by every item vector)."""
        return self.text_projection.weight

    # -- the second stage (the paper's per-category fine-tuning; docs/models.md)

    def second_stage_epochs(self) -> int:
        return self.config.stage2_epochs

    def second_stage_batches(
        self, windows: torch.Tensor, batch_size: int, generator: torch.Generator
    ) -> list[torch.Tensor]:
        """Batches whose windows all end on items of one domain (the item's rarest,
        :mod:`dwrec.models.stages`), so the in-batch InfoNCE negatives are same-domain."""
        if self._item_domains is None:
            raise RuntimeError("calrec's second stage needs bind_dataset(dataset) first")
        groups = stages.window_groups(windows, self._item_domains)
        return stages.grouped_batches(groups, batch_size, generator)

    # -- auxiliary losses

    def generation_logits(self, states: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
        """Decoder logits ``[N, G, V - 1]`` over tokens ``1..V-1`` for each step of the gold
        token rows ``gold [N, G]`` (teacher forcing): step ``t`` sees the user state and
        ``gold[:, :t]`` only."""
        start = self.decoder_start(states)[:, None]
        steps = torch.cat([start, self.token_embedding(gold[:, :-1])], dim=1)
        positions = torch.arange(gold.shape[1], device=gold.device)
        decoded = self.decoder_norm(self.decoder(steps + self.decoder_position(positions), CAUSAL))
        return decoded @ self.token_embedding.weight[1:].T.to(decoded.dtype)

    def generation_loss(self, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Mean CE of the decoder's prediction of each item's first ``gen_len`` text tokens
        from the user state ``states [N, d]`` (padding is not predicted)."""
        gold = self.item_prefix[items]  # [N, G], right-padded
        logits = self.generation_logits(states, gold)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), gold.reshape(-1) - 1, ignore_index=-1
        )

    def auxiliary_loss(self, inputs, targets, hidden, generator):
        config = self.config
        targets = targets.to(hidden.device)
        rows, last = last_targets(targets)
        if rows.numel() == 0:
            return None
        states, items = hidden[rows, last], targets[rows, last]
        loss = hidden.new_zeros((), dtype=torch.float32)
        if config.user_item_weight:
            vectors = self.item_table()[items]
            nce = augment.in_batch_info_nce(states, vectors, config.temperature, items)
            loss = loss + config.user_item_weight * nce.float()
        if config.item_item_weight:
            views = self.encode_text(torch.cat([items, items]))  # two dropout views
            first, second = views.chunk(2, dim=0)
            nce = augment.in_batch_info_nce(first, second, config.temperature, items)
            loss = loss + config.item_item_weight * nce.float()
        if config.generation_weight:
            loss = loss + config.generation_weight * self.generation_loss(states, items)
        return loss


def last_targets(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)``: each row of ``targets [B, L]`` that has a target (``>= 0``) and
    the column of its last one."""
    has_target = targets >= 0
    rows = has_target.any(dim=1).nonzero()[:, 0]
    columns = torch.arange(1, targets.shape[1] + 1, device=targets.device)
    return rows, (has_target.long() * columns).argmax(dim=1)[rows]
