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

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dwrec.errors import UsageError
from dwrec.losses.base import ObjectiveInput, Scorer
from dwrec.losses.config import LossConfig


def _upcast(values: torch.Tensor) -> torch.Tensor:
    """Half-precision logits -> float32 (log-sum-exp in bf16 loses the small terms)."""
    if values.dtype in (torch.float16, torch.bfloat16):
        return values.float()
    return values


def _sampling_device(batch: ObjectiveInput) -> torch.device:
    return batch.generator.device if batch.generator is not None else batch.positives.device


def uniform_items(batch: ObjectiveInput, count: int, n_items: int) -> torch.Tensor:
    """``[count]`` item ids drawn uniformly with replacement from ``[0, n_items)``."""
    items = torch.randint(
        0, n_items, (count,), generator=batch.generator, device=_sampling_device(batch)
    )
    return items.to(batch.positives.device, non_blocking=True)


def uniform_items_excluding_positive(
    batch: ObjectiveInput, per_position: int, n_items: int
) -> torch.Tensor:
    """``[N, per_position]`` items drawn uniformly among the items other than each row's
    positive: draw from ``n_items - 1`` ids and shift those at or above the positive by one."""
    if n_items < 2:
        raise ValueError("negative sampling needs at least 2 items")
    shape = (batch.positives.shape[0], per_position)
    draws = torch.randint(
        0, n_items - 1, shape, generator=batch.generator, device=_sampling_device(batch)
    ).to(batch.positives.device, non_blocking=True)
    return draws + (draws >= batch.positives[:, None]).long()


def _positive_logits(batch: ObjectiveInput) -> torch.Tensor:
    """``[N]`` score of each position's own positive."""
    return _upcast(batch.scorer.score(batch.hidden, batch.positives[:, None]))[:, 0]


def _negative_logits(
    batch: ObjectiveInput, negatives: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[N, k]`` of ``negatives`` (``[k]`` or ``[N, k]``) and the ``[N, k]`` mask of
    the entries that are valid negatives (not the row's own positive)."""
    logits = _upcast(batch.scorer.score(batch.hidden, negatives))
    valid = negatives != batch.positives[:, None]
    return logits, valid.expand_as(logits)


# Automatic chunking (``softmax_chunk=None``): the full ``[N, n_items]`` logits are kept while
# they hold at most this many elements (1 GiB in float32; the full path holds about three
# such buffers: logits, log-softmax and its gradient) ...
AUTO_FULL_LOGITS = 2**28
# ... and above it the chunk holds about this many logits (256 MiB in float32).
AUTO_CHUNK_LOGITS = 2**26


def softmax_chunk_size(setting: int | None, n_positions: int, n_items: int) -> int:
    """Items per chunk for ``n_positions`` rows (``0``: no chunking, full logits).

    ``setting``: ``None`` automatic (chunk only when the full logits would exceed
    :data:`AUTO_FULL_LOGITS` elements), ``0`` never chunk, ``k > 0`` chunks of ``k`` items.
    """
    if setting is not None:
        return setting
    if n_positions * n_items <= AUTO_FULL_LOGITS:
        return 0
    return max(1, min(n_items, AUTO_CHUNK_LOGITS // max(n_positions, 1)))


class CrossEntropy:
    """Full softmax cross entropy over every item (SASRec+, Klenitskiy & Vasilev 2023):
    ``l = -log softmax(s(u, .))[p]``.

    ``softmax_chunk`` (see :func:`softmax_chunk_size`) bounds the logits held at once; the
    chunked path is :func:`chunked_cross_entropy`.
    """

    name = "ce"

    def __init__(self, n_items: int, softmax_chunk: int | None = None):
        self.n_items = n_items
        self.softmax_chunk = softmax_chunk

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> CrossEntropy:
        return cls(n_items, softmax_chunk=config.softmax_chunk)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        chunk = softmax_chunk_size(self.softmax_chunk, batch.positives.shape[0], self.n_items)
        if chunk > 0:
            return chunked_cross_entropy(batch.hidden, batch.positives, batch.scorer, chunk)
        logits = _upcast(batch.scorer.score_all(batch.hidden))
        return F.cross_entropy(logits, batch.positives, reduction="none")


def chunked_cross_entropy(
    hidden: torch.Tensor, positives: torch.Tensor, scorer: Scorer, chunk: int
) -> torch.Tensor:
    """``[N]`` full-softmax cross entropy with at most ``[N, chunk]`` logits alive at once.

    Two exact paths, chosen by what the scorer offers:

    * the scorer has ``linear_factors(hidden)`` returning ``(query [N, d], vectors
      [n_items, d], bias [n_items] | None)`` with ``score_all(hidden) = query @ vectors.T +
      bias`` (any per-row or per-item transform, e.g. normalisation or a temperature, is
      applied by the model before): :class:`ChunkedLinearCrossEntropy`, whose backward
      computes the gradients chunk by chunk by hand;
    * otherwise each chunk's log-sum-exp is computed from ``scorer.score(hidden, ids)`` on
      the chunk's item ids under activation checkpointing (the chunk's logits are not kept;
      the backward recomputes them), so any model's scoring works.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    factors = getattr(scorer, "linear_factors", None)
    linear = factors(hidden) if callable(factors) else None
    if linear is not None:
        query, vectors, bias = linear
        return ChunkedLinearCrossEntropy.apply(query, vectors, bias, positives, chunk)
    n_items = scorer.n_items

    def chunk_logsumexp(states: torch.Tensor, start: int) -> torch.Tensor:
        items = torch.arange(start, min(start + chunk, n_items), device=states.device)
        return torch.logsumexp(_upcast(scorer.score(states, items)), dim=1)

    parts = [
        checkpoint(chunk_logsumexp, hidden, start, use_reentrant=False)
        for start in range(0, n_items, chunk)
    ]
    log_normaliser = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
    positive = _upcast(scorer.score(hidden, positives[:, None]))[:, 0]
    return log_normaliser - positive


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    return torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """``l_n = logsumexp_i(q_n . v_i + b_i) - (q_n . v_p + b_p)`` over item chunks.

    Forward: per chunk ``[N, C]`` logits -> their log-sum-exp ``[N]``; the chunks' values
    are combined at the end. Saved: the inputs and the ``[N]`` log-normaliser, never the
    logits. Backward, per chunk: ``G = g (softmax - onehot)`` restricted to the chunk,
    ``dq += G @ V_c``, ``dV_c = G.T @ q``, ``db_c = G.sum(0)``; the one-hot (positive)
    part is applied once with ``index_add_``. Half-precision inputs are computed in float32
    (as the full path upcasts its logits) and the gradients cast back.
    """

    @staticmethod
    def forward(ctx, query, vectors, bias, positives, chunk):  # noqa: D102
        dtype = _compute_dtype(query)
        with torch.autocast(query.device.type, enabled=False):
            q, v = query.to(dtype), vectors.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            parts = []
            for start in range(0, v.shape[0], chunk):
                logits = q @ v[start : start + chunk].T
                if b is not None:
                    logits = logits + b[start : start + chunk]
                parts.append(torch.logsumexp(logits, dim=1))
                del logits
            log_normaliser = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
            positive = (q * v[positives]).sum(dim=1)
            if b is not None:
                positive = positive + b[positives]
        ctx.save_for_backward(query, vectors, bias, positives, log_normaliser)
        ctx.chunk = chunk
        return log_normaliser - positive

    @staticmethod
    def backward(ctx, grad_loss):  # noqa: D102
        query, vectors, bias, positives, log_normaliser = ctx.saved_tensors
        need_q, need_v, need_b = ctx.needs_input_grad[:3]
        chunk = ctx.chunk
        dtype = log_normaliser.dtype
        with torch.autocast(query.device.type, enabled=False):
            q, v = query.to(dtype), vectors.to(dtype)
            b = bias.to(dtype) if bias is not None else None
            g = grad_loss.to(dtype)
            grad_q = torch.zeros_like(q) if need_q else None
            grad_v = torch.empty_like(v) if need_v else None
            grad_b = torch.empty_like(b) if need_b and b is not None else None
            for start in range(0, v.shape[0], chunk):
                block = v[start : start + chunk]
                logits = q @ block.T
                if b is not None:
                    logits = logits + b[start : start + chunk]
                # softmax * g, in place on the chunk's logits buffer
                weights = logits.sub_(log_normaliser[:, None]).exp_().mul_(g[:, None])
                if grad_q is not None:
                    grad_q.addmm_(weights, block)
                if grad_v is not None:
                    torch.mm(weights.T, q, out=grad_v[start : start + chunk])
                if grad_b is not None:
                    torch.sum(weights, dim=0, out=grad_b[start : start + chunk])
                del logits, weights
            if grad_q is not None:
                grad_q.sub_(g[:, None] * v[positives])
            if grad_v is not None:
                grad_v.index_add_(0, positives, -g[:, None] * q)
            if grad_b is not None:
                grad_b.index_add_(0, positives, -g)
        return (
            grad_q.to(query.dtype) if grad_q is not None else None,
            grad_v.to(vectors.dtype) if grad_v is not None else None,
            grad_b.to(bias.dtype) if grad_b is not None else None,
            None,
            None,
        )


class BinaryCrossEntropy:
    """Original SASRec loss with one sampled negative per position:
    ``l = -log sigmoid(s_p) - log(1 - sigmoid(s_n))``, ``n`` uniform among items != p."""

    name = "bce"

    def __init__(self, n_items: int):
        self.n_items = n_items

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> BinaryCrossEntropy:
        return cls(n_items)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items_excluding_positive(batch, 1, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        negative_logits, valid = _negative_logits(batch, negatives)
        negative_terms = (F.softplus(negative_logits) * valid).sum(dim=1)
        return F.softplus(-_positive_logits(batch)) + negative_terms


def gbce_beta(negatives: int, n_items: int, t: float) -> float:
    """gSASRec's calibration exponent ``beta = alpha (t (1 - 1/alpha) + 1/alpha)`` with
    ``alpha = k / (|I| - 1)`` (Petrov & Macdonald, RecSys 2023)."""
    alpha = negatives / (n_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


class GeneralisedBCE:
    """gBCE (gSASRec): BCE with ``k`` negatives whose positive logit is replaced by
    ``log(1 / (sigmoid(s_p) ** -beta - 1))``.

    Since ``-log sigmoid(log(1 / (sigmoid(s) ** -beta - 1))) = -beta log sigmoid(s)``, the loss is
    computed as ``beta * softplus(-s_p) + sum_j softplus(s_j)`` (stable for every logit).
    """

    name = "gbce"

    def __init__(self, n_items: int, negatives: int = 256, t: float = 0.75):
        self.n_items = n_items
        self.negatives = negatives
        self.t = t
        self.beta = gbce_beta(negatives, n_items, t)

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> GeneralisedBCE:
        if not 0.0 <= config.gbce_t <= 1.0:
            raise UsageError(f"--gbce-t must be in [0, 1], got {config.gbce_t}")
        return cls(n_items, negatives=config.negatives, t=config.gbce_t)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        negative_logits, valid = _negative_logits(batch, negatives)
        negative_terms = (F.softplus(negative_logits) * valid).sum(dim=1)
        return self.beta * F.softplus(-_positive_logits(batch)) + negative_terms


class SampledSoftmax:
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

    def __init__(self, n_items: int, negatives: int = 256, in_batch: bool = True):
        self.n_items = n_items
        self.negatives = negatives
        self.in_batch = in_batch

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> SampledSoftmax:
        return cls(n_items, negatives=config.negatives)

    def __call__(self, batch: ObjectiveInput) -> torch.Tensor:
        negatives = uniform_items(batch, self.negatives, self.n_items)
        return self.loss_with_negatives(batch, negatives)

    def loss_with_negatives(self, batch: ObjectiveInput, negatives: torch.Tensor) -> torch.Tensor:
        log_q = batch.item_log_q
        positive = _positive_logits(batch)
        uniform, valid = _negative_logits(batch, negatives)
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
        logits = _upcast(batch.scorer.score(batch.hidden, items))
        if batch.item_log_q is not None:
            logits = logits - batch.item_log_q[items].to(logits.dtype)
        return logits.masked_fill(own[sequence_row], -math.inf)


class DualScaleSoftmax:
    """DSL, dual-scale softmax loss (after arXiv 2602.07206); the formula is dwrec's
    definition (METHODS.md section 4), not the paper's exact one:

    ``l = log(exp(s_p / t_u) + sum_j a_j exp(s_j / t_u)) - s_p / t_u``,
    ``a_j = |N| softmax_j(lh s_j + ls cos(e_p, e_j))`` (weights average 1, not detached),
    ``c_u = logsumexp_{j in top-m}(s_j - s_p) - log m``,
    ``t_u = clip(t0 exp(-k c_u), tmin, tmax)`` detached, then rescaled to batch mean ``t0``.
    ``N``: ``negatives`` uniform items shared by the batch (copies of ``p`` masked).
    """

    name = "dsl"

    def __init__(
        self,
        n_items: int,
        negatives: int = 256,
        lh: float = 1.0,
        ls: float = 1.0,
        m: int = 20,
        t0: float = 1.0,
        k: float = 0.5,
        tmin: float = 0.05,
        tmax: float = 5.0,
    ):
        self.n_items = n_items
        self.negatives = negatives
        self.lh, self.ls, self.m = lh, ls, m
        self.t0, self.k, self.tmin, self.tmax = t0, k, tmin, tmax

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> DualScaleSoftmax:
        if config.dsl_m < 1:
            raise UsageError(f"--dsl-m must be >= 1, got {config.dsl_m}")
        if not 0.0 < config.dsl_tmin <= config.dsl_t0 <= config.dsl_tmax:
            raise UsageError(
                "DSL temperatures need 0 < --dsl-tmin <= --dsl-t0 <= --dsl-tmax, got "
                f"{config.dsl_tmin}, {config.dsl_t0}, {config.dsl_tmax}"
            )
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
        positive = _positive_logits(batch)
        negative, valid = _negative_logits(batch, negatives)
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
            positive_embedding = F.normalize(_upcast(batch.scorer.embed(batch.positives)), dim=-1)
            negative_embedding = F.normalize(_upcast(batch.scorer.embed(negatives)), dim=-1)
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


class MultiMarginCosine:
    """MML, multi-margin cosine loss (2024; extends SimpleX's cosine contrastive loss):

    ``l = relu(1 - cos(u, p)) + sum_k (w_k / |N|) sum_j relu(cos(u, n_j) - m_k)``

    on cosine similarities of the user state and the output item embeddings. Margins and
    weights are dwrec's defaults (0.9, 0.6, 0.3) and (1.0, 0.5, 0.25).
    """

    name = "mml"

    def __init__(
        self,
        n_items: int,
        negatives: int = 256,
        margins: tuple[float, ...] = (0.9, 0.6, 0.3),
        weights: tuple[float, ...] = (1.0, 0.5, 0.25),
    ):
        if len(margins) != len(weights):
            raise ValueError("margins and weights need the same length")
        self.n_items = n_items
        self.negatives = negatives
        self.margins = tuple(margins)
        self.weights = tuple(weights)

    @classmethod
    def from_config(cls, config: LossConfig, n_items: int) -> MultiMarginCosine:
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
        state = F.normalize(_upcast(batch.hidden), dim=-1)
        positive = F.normalize(_upcast(batch.scorer.embed(batch.positives)), dim=-1)
        negative = F.normalize(_upcast(batch.scorer.embed(negatives)), dim=-1)
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
