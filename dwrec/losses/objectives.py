"""Objectives: per-position training losses (METHODS.md sections 3-5 and 7).

Every objective maps an :class:`~dwrec.losses.base.ObjectiveInput` to an unreduced loss
``[N]``, one value per position that has a target; the domain weighting reduces it. Scores
come from the model through the :class:`~dwrec.losses.base.Scorer`, so objectives never
import a model.

Sampled objectives draw their uniform negatives with ``batch.generator`` (seeded by the
trainer). ``bce`` draws one negative per position, uniformly among the items other than the
position's positive (original SASRec). ``sampled-softmax``, ``gbce``, ``dsl`` and ``mml`` draw
``negatives`` items once per batch, uniformly with replacement, and share them across the
batch (one matrix product instead of ``[N, k, d]`` gathers); where a shared negative equals a
position's own positive it is masked out of that position's loss. Each sampled objective
also exposes ``loss_with_negatives(batch, negatives)`` (``negatives``: ``[k]`` shared or
``[N, k]`` per position), so the same negatives can be fed to two objectives.

Logits are computed in float32 when the model runs in half precision (AMP), and in the
input's dtype otherwise (float64 for gradient checks).

``ce`` over a large catalogue can run *chunked* (:func:`chunked_cross_entropy`): the
log-sum-exp over items is accumulated chunk by chunk, and the backward recomputes each
chunk's logits, so peak memory is ``O(positions x chunk)`` instead of
``O(positions x items)``; loss and gradients are the full softmax's, up to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dwrec.errors import UsageError
from dwrec.losses.base import LossOptions, Objective, ObjectiveInput, register_objective
from dwrec.losses.chunked import (  # noqa: F401 - re-exported: the chunked ce lives there
    AUTO_CHUNK_LOGITS,
    AUTO_FULL_LOGITS,
    ChunkedLinearCrossEntropy,
    chunked_cross_entropy,
    softmax_chunk_size,
)
from dwrec.losses.sampling import (  # noqa: F401 - re-exported
    negative_logits,
    positive_logits,
    uniform_items,
    uniform_items_excluding_positive,
    upcast,
)


@dataclass
class CrossEntropyConfig(LossOptions):
    softmax_chunk: int | None = field(
        default=None,
        metadata={
            "help": "Items per logits chunk, bounding memory; 0 never chunks",
            "default_text": "auto: chunk above 2^28 logits",
        },
    )

    def validate(self) -> None:
        if self.softmax_chunk is not None and self.softmax_chunk < 0:
            raise UsageError(
                f"--softmax-chunk must be >= 0 (0: never chunk), got {self.softmax_chunk}"
            )


@dataclass
class SampledConfig(LossOptions):
    """Options every objective with sampled negatives shares."""

    negatives: int = field(
        default=256,
        metadata={"help": "Sampled negatives (a default is capped below the catalogue size)"},
    )

    def validate(self) -> None:
        if self.negatives < 1:
            raise UsageError("--negatives must be >= 1")


@register_objective
class CrossEntropy(Objective):
    """Full softmax cross entropy over every item (SASRec+, Klenitskiy & Vasilev 2023):
    ``l = -log softmax(s(u, .))[p]``.

    ``softmax_chunk`` (see :func:`softmax_chunk_size`) bounds the logits held at once; the
    chunked path is :func:`chunked_cross_entropy`.
    """

    name = "ce"
    config_class = CrossEntropyConfig

    def __init__(self, n_items: int, softmax_chunk: int | None = None):
        self.n_items = n_items
        self.softmax_chunk = softmax_chunk

    @classmethod
    def from_config(cls, config: CrossEntropyConfig, n_items: int) -> CrossEntropy:
        return cls(n_items, softmax_chunk=config.softmax_chunk)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        chunk = softmax_chunk_size(self.softmax_chunk, batch.positives.shape[0], self.n_items)
        if chunk > 0:
            return chunked_cross_entropy(batch.hidden, batch.positives, batch.scorer, chunk)
        logits = upcast(batch.scorer.score_all(batch.hidden))
        return F.cross_entropy(logits, batch.positives, reduction="none")


@register_objective
class BinaryCrossEntropy(Objective):
    """Original SASRec loss with one sampled negative per position:
    ``l = -log sigmoid(s_p) - log(1 - sigmoid(s_n))``, ``n`` uniform among items != p."""

    name = "bce"
    per_position_negatives = True

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items_excluding_positive(batch, 1, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        scores, valid = negative_logits(batch, negatives)
        negative_terms = (F.softplus(scores) * valid).sum(dim=1)
        return F.softplus(-positive_logits(batch)) + negative_terms


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    """gSASRec's calibration exponent ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` with
    ``alpha = k / (|I| - 1)`` (Petrov & Macdonald, RecSys 2023)."""
    alpha = negatives / (n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


@dataclass
class GeneralisedBCEConfig(SampledConfig):
    gbce_t: float = field(default=0.75, metadata={"help": "Calibration t"})

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.gbce_t <= 1.0:
            raise UsageError(f"--gbce-t must be in [0, 1], got {self.gbce_t}")


@register_objective
class GeneralisedBCE(Objective):
    """gBCE (gSASRec): BCE with ``k`` negatives whose positive logit is replaced by
    ``log(1 / (sigmoid(s_p) ** -beta - 1))``.

    Since ``-log sigmoid(log(1 / (sigmoid(s) ** -beta - 1))) = -beta log sigmoid(s)``, the loss is
    computed as ``beta * softplus(-s_p) + sum_j softplus(s_j)`` (stable for every logit).
    """

    name = "gbce"
    config_class = GeneralisedBCEConfig

    def __init__(self, n_items: int, negatives: int = 256, t: float = 0.75):
        self.n_items = n_items
        self.negatives = negatives
        self.t = t
        self.beta = gbce_beta(negatives, n_items, t)

    @classmethod
    def from_config(cls, config: GeneralisedBCEConfig, n_items: int) -> GeneralisedBCE:
        return cls(n_items, negatives=config.negatives, t=config.gbce_t)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        scores, valid = negative_logits(batch, negatives)
        negative_terms = (F.softplus(scores) * valid).sum(dim=1)
        return self.beta * F.softplus(-positive_logits(batch)) + negative_terms


@register_objective
class SampledSoftmax(Objective):
    """PinnerFormer's sampled softmax with log-Q correction (KDD 2022).

    Candidates of row ``i``: its positive ``p_i``; the distinct positives of the batch (each
    once), except those that are positives of row ``i``'s own sequence (which includes
    ``p_i``); ``negatives`` uniform random items, except copies of ``p_i``. Every logit has
    ``log Q`` of its item subtracted: ``batch.item_log_q`` for the positive and the in-batch
    items, ``log(1 / n_items)`` for the uniform ones. Without ``item_log_q`` no correction is
    applied at all. ``l_i = -log softmax(candidates)[p_i]``.

    dwrec's choices: the model's own scores are used (no cosine / learned temperature, which
    would be a model parameter); in-batch items are deduplicated.
    """

    name = "sampled-softmax"
    config_class = SampledConfig

    def __init__(self, n_items: int, negatives: int = 256, in_batch: bool = True):
        self.n_items = n_items
        self.negatives = negatives
        self.in_batch = in_batch

    @classmethod
    def from_config(cls, config: SampledConfig, n_items: int) -> SampledSoftmax:
        return cls(n_items, negatives=config.negatives)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        log_q = batch.item_log_q
        positive = positive_logits(batch)
        uniform, valid = negative_logits(batch, negatives)
        if log_q is not None:
            positive = positive - log_q[batch.positives].to(positive.dtype)
            uniform = uniform + math.log(self.n_items)
        columns = [positive[:, None], uniform.masked_fill(~valid, -math.inf)]
        if self.in_batch:
            columns.append(self._in_batch_logits(batch))
        logits = torch.cat(columns, dim=1)
        return torch.logsumexp(logits, dim=1) - logits[:, 0]

    @staticmethod
    def _in_batch_logits(batch: ObjectiveInput) -> torch.Tensor:
        """``[N, U]`` log-Q corrected logits of the U distinct batch positives, ``-inf`` where
        the item is a positive of the row's own sequence."""
        items, item_column = torch.unique(batch.positives, return_inverse=True)
        _, sequence_row = torch.unique(batch.sequence_index, return_inverse=True)
        own = torch.zeros(
            (int(sequence_row.max()) + 1, items.shape[0]),
            dtype=torch.bool,
            device=items.device,
        )
        own[sequence_row, item_column] = True
        logits = upcast(batch.scorer.score(batch.hidden, items))
        if batch.item_log_q is not None:
            logits = logits - batch.item_log_q[items].to(logits.dtype)
        return logits.masked_fill(own[sequence_row], -math.inf)


@dataclass
class DualScaleConfig(SampledConfig):
    """DSL's options; its own default of the shared ``negatives`` is 1024 (the validation
    grid of docs/methods.md, "Related losses at fair settings")."""

    negatives: int = field(default=1024, metadata={"help": "Sampled negatives"})
    dsl_lh: float = field(default=0.5, metadata={"help": "Hardness scale lh"})
    dsl_ls: float = field(default=0.5, metadata={"help": "Similarity scale ls"})
    dsl_m: int = field(default=20, metadata={"help": "Slate size m"})
    dsl_t0: float = field(default=1.0, metadata={"help": "Base temperature t0"})
    dsl_k: float = field(default=0.0, metadata={"help": "Temperature slope k"})
    dsl_tmin: float = field(default=0.05, metadata={"help": "Lowest temperature"})
    dsl_tmax: float = field(default=5.0, metadata={"help": "Highest temperature"})

    def validate(self) -> None:
        super().validate()
        if self.dsl_m < 1:
            raise UsageError(f"--dsl-m must be >= 1, got {self.dsl_m}")
        if not 0.0 < self.dsl_tmin <= self.dsl_t0 <= self.dsl_tmax:
            raise UsageError(
                "DSL temperatures need 0 < --dsl-tmin <= --dsl-t0 <= --dsl-tmax, got "
                f"{self.dsl_tmin}, {self.dsl_t0}, {self.dsl_tmax}"
            )


@register_objective
class DualScaleSoftmax(Objective):
    """DSL, dual-scale softmax loss (after arXiv 2602.07206); the formula is dwrec's
    definition (METHODS.md section 4), not the paper's exact one:

    ``l = log(exp(s_p / t_u) + sum_j a_j exp(s_j / t_u)) - s_p / t_u``,
    ``a_j = |N| softmax_j(lh s_j + ls cos(e_p, e_j))`` (weights average 1, not detached),
    ``c_u = logsumexp_{j in top-m}(s_j - s_p) - log m``,
    ``t_u = clip(t0 exp(-k c_u), tmin, tmax)`` detached, then rescaled to batch mean ``t0``.
    ``N``: ``negatives`` uniform items shared by the batch (copies of ``p`` masked).
    Defaults (from the validation grid of docs/methods.md): 1024 negatives, ``lh = ls = 0.5``,
    ``k = 0`` (a constant temperature ``t0``).
    """

    name = "dsl"
    config_class = DualScaleConfig

    def __init__(
        self,
        n_items: int,
        negatives: int = 1024,
        lh: float = 0.5,
        ls: float = 0.5,
        m: int = 20,
        t0: float = 1.0,
        k: float = 0.0,
        tmin: float = 0.05,
        tmax: float = 5.0,
    ):
        self.n_items = n_items
        self.negatives = negatives
        self.lh, self.ls, self.m = lh, ls, m
        self.t0, self.k, self.tmin, self.tmax = t0, k, tmin, tmax

    @classmethod
    def from_config(cls, config: DualScaleConfig, n_items: int) -> DualScaleSoftmax:
        return cls(
            n_items,
            negatives=config.negatives,
            lh=config.dsl_lh,
            ls=config.dsl_ls,
            m=config.dsl_m,
            t0=config.dsl_t0,
            k=config.dsl_k,
            tmin=config.dsl_tmin,
            tmax=config.dsl_tmax,
        )

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        positive = positive_logits(batch)
        negative, valid = negative_logits(batch, negatives)
        temperature = self.temperature(positive, negative, valid)
        log_weights = self.log_negative_weights(batch, negatives, negative, valid)
        scaled_positive = positive / temperature
        logits = torch.cat(
            [scaled_positive[:, None], negative / temperature[:, None] + log_weights], dim=1
        )
        return torch.logsumexp(logits, dim=1) - scaled_positive

    def log_negative_weights(
        self,
        batch: ObjectiveInput,
        negatives: torch.Tensor,
        negative_logits: torch.Tensor,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """``[N, k]`` ``log a_j``: hardness and item-item similarity branch (``-inf`` where masked)."""
        preference = self.lh * negative_logits
        if self.ls != 0.0:
            positive_embedding = F.normalize(upcast(batch.scorer.embed(batch.positives)), dim=-1)
            negative_embedding = F.normalize(upcast(batch.scorer.embed(negatives)), dim=-1)
            if negatives.dim() == 1:
                similarity = positive_embedding @ negative_embedding.T
            else:
                similarity = torch.einsum("nd,nkd->nk", positive_embedding, negative_embedding)
            preference = preference + self.ls * similarity
        preference = preference.masked_fill(~valid, -math.inf)
        valid_count = valid.sum(dim=1, keepdim=True).clamp_min(1).to(preference.dtype)
        return torch.log(valid_count) + torch.log_softmax(preference, dim=1)

    @torch.no_grad()
    def temperature(
        self, positive: torch.Tensor, negative: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        """``[N]`` detached per-position temperature from the competition of the top-m negatives."""
        m = min(self.m, negative.shape[1])
        strongest = negative.masked_fill(~valid, -math.inf).topk(m, dim=1).values
        competition = torch.logsumexp(strongest - positive[:, None], dim=1) - math.log(m)
        temperature = (self.t0 * torch.exp(-self.k * competition)).clamp(self.tmin, self.tmax)
        return temperature * (self.t0 / temperature.mean())


@dataclass
class MultiMarginConfig(SampledConfig):
    mml_margins: list[float] = field(
        default_factory=lambda: [0.9, 0.6, 0.3],
        metadata={"help": "Margins", "default_text": "0.9,0.6,0.3"},
    )
    mml_weights: list[float] = field(
        default_factory=lambda: [16.0, 8.0, 4.0],
        metadata={"help": "Weights of the margins", "default_text": "16,8,4"},
    )

    def validate(self) -> None:
        super().validate()
        if len(self.mml_margins) != len(self.mml_weights):
            raise UsageError("--mml-margins and --mml-weights need the same length")


@register_objective
class MultiMarginCosine(Objective):
    """MML, multi-margin cosine loss (2024; extends SimpleX's cosine contrastive loss):

    ``l = relu(1 - cos(u, p)) + sum_k (w_k / |N|) sum_j relu(cos(u, n_j) - m_k)``

    on cosine similarities of the user state and the output item embeddings. Margins and
    weights are dwrec's defaults (0.9, 0.6, 0.3) and (16, 8, 4) (the weights from the
    validation grid of docs/methods.md; (1, 0.5, 0.25) collapsed).
    """

    name = "mml"
    config_class = MultiMarginConfig

    def __init__(
        self,
        n_items: int,
        negatives: int = 256,
        margins: tuple[float, ...] = (0.9, 0.6, 0.3),
        weights: tuple[float, ...] = (16.0, 8.0, 4.0),
    ):
        if len(margins) != len(weights):
            raise ValueError("margins and weights need the same length")
        self.n_items = n_items
        self.negatives = negatives
        self.margins = tuple(margins)
        self.weights = tuple(weights)

    @classmethod
    def from_config(cls, config: MultiMarginConfig, n_items: int) -> MultiMarginCosine:
        return cls(
            n_items,
            negatives=config.negatives,
            margins=tuple(config.mml_margins),
            weights=tuple(config.mml_weights),
        )

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        state = F.normalize(upcast(batch.hidden), dim=-1)
        positive = F.normalize(upcast(batch.scorer.embed(batch.positives)), dim=-1)
        negative = F.normalize(upcast(batch.scorer.embed(negatives)), dim=-1)
        if negatives.dim() == 1:
            negative_cosine = state @ negative.T
        else:
            negative_cosine = torch.einsum("nd,nkd->nk", state, negative)
        valid = (negatives != batch.positives[:, None]).expand_as(negative_cosine)
        valid_count = valid.sum(dim=1).clamp_min(1).to(negative_cosine.dtype)
        loss = F.relu(1.0 - (state * positive).sum(dim=-1))
        for margin, weight in zip(self.margins, self.weights, strict=True):
            hinge = (F.relu(negative_cosine - margin) * valid).sum(dim=1)
            loss = loss + weight * hinge / valid_count
        return loss
