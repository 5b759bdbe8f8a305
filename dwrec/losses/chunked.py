"""The full softmax over a large catalogue, in chunks of items (``ce --softmax-chunk``).

The log-sum-exp over items is accumulated chunk by chunk and the backward recomputes each
chunk's logits, so peak memory is ``O(positions x chunk)`` instead of
``O(positions x items)``; loss and gradients are the full softmax's, up to float rounding.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from dwrec.losses.base import Scorer
from dwrec.losses.sampling import upcast

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
        return torch.logsumexp(upcast(scorer.score(states, items)), dim=1)

    parts = [
        checkpoint(chunk_logsumexp, hidden, start, use_reentrant=False)
        for start in range(0, n_items, chunk)
    ]
    log_normaliser = torch.logsumexp(torch.stack(parts, dim=1), dim=1)
    positive = upcast(scorer.score(hidden, positives[:, None]))[:, 0]
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
