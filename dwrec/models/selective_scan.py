"""Mamba's selective scan in pure PyTorch (no CUDA kernel): a sequential reference and a
blocked scan with a hand-written backward, equal in exact arithmetic (tested in float64,
gradients included).

The scan (Gu & Dao 2023, "Mamba", Algorithm 2; ``selective_scan_ref`` in mamba-ssm) maps an
input ``u [Bt, L, Dn]`` with per-step ``delta [Bt, L, Dn]`` (already positive), a diagonal
state matrix ``A [Dn, N]`` (negative entries) and per-step ``B, C [Bt, L, N]`` to

    h_t = exp(delta_t * A) * h_{t-1} + (delta_t * u_t) B_t      (h_0 = 0, h_t [Bt, Dn, N])
    y_t = C_t . h_t + D * u_t                                    (y_t [Bt, Dn])

(the zero-order-hold discretisation of ``A``, the simplified Euler one of ``B``, as Mamba).

:func:`selective_scan_ref` runs the recurrence one step at a time with autograd (the test
reference). :func:`selective_scan` computes the same in time blocks with a hand-written
backward pass (details in its docstring): on a CPU a parallel (doubling) scan does
``log2(L)`` times the work of the recurrence and measured 5-15x slower than the reference
here, so the fast path keeps the recurrence sequential and removes the rest of the cost
(autograd's per-step graph, per-step small operations, the memory traffic of unblocked
``[Bt, L, Dn, N]`` tensors). No fused CUDA kernel is used: SIGMA's flip branch needs every
state ``h_t``, which mamba-ssm's kernel does not return.
"""

from __future__ import annotations

import torch


def _inputs(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discretised ``a = exp(delta A)`` and ``b = (delta u) B``, both ``[Bt, L, Dn, N]``."""
    a = torch.exp(delta.unsqueeze(-1) * A)
    b = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    return a, b


def _readout(
    states: torch.Tensor, u: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None
) -> torch.Tensor:
    y = torch.einsum("bldn,bln->bld", states, C)
    return y if D is None else y + u * D


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    return_states: bool = False,
):
    """The scan one step at a time (the test reference). Returns ``y [Bt, L, Dn]``, and the
    states ``h [Bt, L, Dn, N]`` too when ``return_states``."""
    batch, length, inner = u.shape
    h = u.new_zeros(batch, inner, A.shape[1])
    ys, states = [], []
    for t in range(length):
        a_t = torch.exp(delta[:, t, :, None] * A)
        b_t = (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        h = a_t * h + b_t
        ys.append((h * C[:, t, None, :]).sum(-1))
        states.append(h)
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + u * D
    return (y, torch.stack(states, dim=1)) if return_states else y


class _SelectiveScan(torch.autograd.Function):
    """The scan in time blocks with a hand-written backward (see :func:`selective_scan`).

    States are kept batch-major ``[Bt, L, Dn, N]`` (what the caller reads); one step of one
    row is a contiguous ``[Dn, N]`` slab, and the read-outs are batched matrix products over
    ``Bt * L`` rows without copies."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, block):
        batch, length, inner = u.shape
        n_state = A.shape[1]
        states = u.new_empty(batch, length, inner, n_state)
        h = None
        for start in range(0, length, block):
            end = min(start + block, length)
            a, b = _inputs(u[:, start:end], delta[:, start:end], A, B[:, start:end])
            for i in range(end - start):
                if h is None:
                    h = states[:, start + i].copy_(b[:, i])
                else:
                    h = torch.addcmul(b[:, i], a[:, i], h, out=states[:, start + i])
        rows = batch * length
        y = torch.bmm(states.view(rows, inner, n_state), C.reshape(rows, n_state, 1))
        y = y.view(batch, length, inner)
        if D is not None:
            y = y + u * D
        ctx.save_for_backward(u, delta, A, B, C, D, states)
        ctx.block = block
        return y, states

    @staticmethod
    def backward(ctx, grad_y, grad_states):
        u, delta, A, B, C, D, states = ctx.saved_tensors
        block = ctx.block
        batch, length, inner = u.shape
        n_state = A.shape[1]
        if grad_y is None:
            grad_y = torch.zeros_like(u)
        grad_y = grad_y.contiguous()
        rows = batch * length
        grad_C = torch.bmm(grad_y.view(rows, 1, inner), states.view(rows, inner, n_state))
        grad_C = grad_C.view(batch, length, n_state)
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_B = torch.empty_like(B)
        grad_A = torch.zeros_like(A)
        g_next, a_next = None, None
        for start in reversed(range(0, length, block)):
            end = min(start + block, length)
            steps, count = slice(start, end), end - start
            a = torch.exp(delta[:, steps, :, None] * A)
            # dL/dh_t from y_t (and from the returned states), before the recurrence
            g = grad_y[:, steps, :, None] * C[:, steps, None, :]
            if grad_states is not None:
                g += grad_states[:, steps]
            for i in reversed(range(count)):
                if g_next is not None:  # g_t = direct_t + a_{t+1} g_{t+1}
                    g[:, i].addcmul_(a_next, g_next)
                g_next, a_next = g[:, i], a[:, i]
            if start > 0:
                previous = states[:, start - 1 : end - 1]
            else:  # h_0 = 0
                previous = torch.cat([torch.zeros_like(states[:, :1]), states[:, : end - 1]], 1)
            # h_t = a_t h_{t-1} + b_t, a_t = exp(delta_t A), b_t = (delta_t u_t) B_t
            through_a = g * a
            through_a *= previous  # dL/d(delta_t A), [Bt, T, Dn, N]
            block_rows = batch * count
            g_rows = g.view(block_rows, inner, n_state)
            grad_du = torch.bmm(g_rows, B[:, steps].reshape(block_rows, n_state, 1))
            grad_du = grad_du.view(batch, count, inner)
            du = delta[:, steps] * u[:, steps]
            grad_B[:, steps] = torch.bmm(du.reshape(block_rows, 1, inner), g_rows).view(
                batch, count, n_state
            )
            grad_A += (through_a * delta[:, steps, :, None]).sum(dim=(0, 1))
            grad_delta[:, steps] = (through_a * A).sum(-1) + grad_du * u[:, steps]
            grad_u[:, steps] = grad_du * delta[:, steps]
        grad_D = None
        if D is not None:
            grad_u += grad_y * D
            grad_D = (grad_y * u).sum(dim=(0, 1))
        return grad_u, grad_delta, grad_A, grad_B, grad_C, grad_D, None


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    return_states: bool = False,
    block: int = 16,
):
    """:func:`selective_scan_ref` (same arguments and results), fast on CPU.

    The discretised ``a_t = exp(delta_t A)`` and ``b_t = (delta_t u_t) B_t`` are computed for
    ``block`` steps at a time (one vectorised operation each, the block's ``[Bt, block, Dn,
    N]`` tensors stay in cache), the recurrence is one fused multiply-add per step, and the
    read-out ``C . h`` one batched product over all steps. The backward pass is written by
    hand: the adjoint recurrence ``g_t = C_t gy_t + a_{t+1} g_{t+1}`` runs backwards the
    same way, and every parameter gradient is a batched reduction of ``g`` per block.
    Nothing but the states ``[Bt, L, Dn, N]`` (and the inputs) is kept for the backward.
    """
    if block < 1:
        raise ValueError(f"block must be positive, got {block}")
    y, states = _SelectiveScan.apply(u, delta, A, B, C, D, block)
    return (y, states) if return_states else y
