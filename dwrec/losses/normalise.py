"""Domain weights whose mean over training positives is exactly 1, within their bounds.

A training positive's weight is decided by its item's *domain set* ``S`` (its signature):
``W_S = max_{d in S} w_d`` (``max`` rule) or ``W_S = mean_{d in S} w_d`` (``mean`` rule); an
item without a domain has weight 1 and takes no part here. With ``pi_S`` the share of the
domain-labelled training positives whose item has signature ``S`` (``sum_S pi_S = 1``), the
mean position weight is ``M(w) = sum_S pi_S W_S(w)``.

Given per-domain sparsity scores ``r_d >= 0`` (larger = sparser) and bounds
``[w_min, w_max]``, :func:`normalise_weights` returns

    ``w_d = clip(lambda * r_d, w_min, w_max)`` with the ``lambda > 0`` that makes ``M(w) = 1``.

This is the fixed point of "scale so that the mean is 1, clip to the bounds, repeat": the
unclipped weights keep the ratios of their scores, every weight lies in its bounds, and the
mean position weight under the rule in use is 1. It is computed exactly, not by iterating:
both rules give ``M(lambda) = sum_d g_d clip(lambda r_d, w_min, w_max)`` with the
*effective shares* ``g`` of :func:`effective_shares` (``max``: the share of positives whose
weight domain ``d`` decides, since ``max_S clip(lambda r) = clip(lambda max_S r)``; ``mean``:
``g_d = sum_{S containing d} pi_S / |S|``), a continuous, non-decreasing, piecewise-linear
function of ``lambda`` whose kinks are ``w_min / r_d`` and ``w_max / r_d``; the solution is a
linear interpolation between two kinks (:func:`solve_scale`).

Bounds (:func:`weight_mode`):

- ``w_min < 1 <= w_max``: the mean-1 solution above (``two-sided``).
- ``w_min == 1`` (``up-weight-only``): dense domains keep weight 1 and no weight is below
  1, so the mean cannot be 1 unless every weight is 1. dwrec's choice: ``lambda`` is solved
  as above with the lower bound 0 (sparse domains get the weights they would get without a
  lower bound), then every weight is raised to at least 1:
  ``w_d = max(1, clip(lambda r_d, 0, w_max))``. The mean position weight is then above 1
  (by the raised share; :func:`mean_position_weight` gives it); use the ``normalized``
  reduction (``sum w l / sum w``) to keep the loss scale of ``generic``.
- ``w_min > 1``, ``w_max < 1`` or ``w_min > w_max``: no weights can have mean 1 within the
  bounds: :class:`~dwrec.errors.UsageError` naming ``--w-min`` / ``--w-max``.

Dynamic weighting keeps its state as an EMA of the signature shares (:class:`SignatureEMA`,
``pi <- beta pi + (1 - beta) pi_batch``), from which the per-domain shares that give the
sparsity scores follow (:meth:`DomainSignatures.domain_shares`, ``n_d / N`` as today); the
mean-1 condition is then exact for the estimated distribution ``pi``. :class:`RealisedMean`
measures the mean position weight actually applied over an epoch.

All tensors are float64 (int64 for ids); shapes are given as ``[S]`` (signatures), ``[D]``
(domains), ``[N]`` (positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dwrec.errors import UsageError

_TINY = 1e-300
TWO_SIDED = "two-sided"
UP_WEIGHT_ONLY = "up-weight-only"
RULES = ("max", "mean")


def weight_mode(w_min: float, w_max: float) -> str:
    """``two-sided`` (``w_min < 1 <= w_max``) or ``up-weight-only`` (``w_min == 1``); a
    :class:`UsageError` when no weights with mean 1 fit in the bounds."""
    if not (math.isfinite(w_min) and w_min >= 0.0):
        raise UsageError(f"--w-min must be a finite number >= 0, got {w_min}")
    if math.isnan(w_max) or w_max < w_min:
        raise UsageError(f"--w-max ({w_max}) must be >= --w-min ({w_min})")
    if w_min > 1.0:
        raise UsageError(
            f"--w-min {w_min} > 1: every weight would exceed 1, so the mean weight of a "
            "training positive cannot be 1; use --w-min <= 1 (1 = up-weight only)"
        )
    if w_max < 1.0:
        raise UsageError(
            f"--w-max {w_max} < 1: every weight would be below 1, so the mean weight of a "
            "training positive cannot be 1; use --w-max >= 1"
        )
    return UP_WEIGHT_ONLY if w_min == 1.0 else TWO_SIDED


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise UsageError(f"--multi-domain must be max or mean, got {rule!r}")


@dataclass
class DomainSignatures:
    """The distinct domain sets of the items.

    Attributes:
        membership: ``[S, D]`` float64 0/1, signature s contains domain d (each row non-empty).
        item_signature: ``[n_items]`` int64 signature of each item, -1 for an item without
            a domain.
    """

    membership: torch.Tensor
    item_signature: torch.Tensor

    @classmethod
    def from_csr(cls, indptr: np.ndarray, indices: np.ndarray, n_domains: int) -> DomainSignatures:
        """From the CSR item -> domain map (``indptr [n_items + 1]``, ``indices``)."""
        indptr = np.asarray(indptr, dtype=np.int64)
        indices = np.asarray(indices, dtype=np.int64)
        n_items = len(indptr) - 1
        rows = np.zeros((n_items, n_domains), dtype=bool)
        rows[np.repeat(np.arange(n_items), np.diff(indptr)), indices] = True
        labelled = rows.any(axis=1)
        unique, inverse = np.unique(rows[labelled], axis=0, return_inverse=True)
        item_signature = np.full(n_items, -1, dtype=np.int64)
        item_signature[labelled] = inverse.reshape(-1)
        return cls(torch.from_numpy(unique.astype(np.float64)), torch.from_numpy(item_signature))

    @property
    def n_signatures(self) -> int:
        return int(self.membership.shape[0])

    def pairs(self, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The nonzero entries of ``membership`` as ``(signature [P], domain [P])`` int64,
        by signature then domain (the sparse form :func:`effective_shares` and
        :meth:`domain_counts` use: a signature holds a few of many domains)."""
        device = self.membership.device if device is None else torch.device(device)
        cached = getattr(self, "_pairs", None)
        if cached is None or cached[0].device != device:
            rows, cols = self.membership.nonzero(as_tuple=True)
            cached = (rows.to(device), cols.to(device))
            self._pairs = cached
        return cached

    def extended_item_signature(self, device: torch.device) -> torch.Tensor:
        """``[n_items]`` int64: each item's signature, ``S`` for an item without a domain
        (the last slot of :func:`max_signature_weights`)."""
        cached = getattr(self, "_extended", None)
        if cached is None or cached.device != torch.device(device):
            signature = self.item_signature
            cached = torch.where(signature >= 0, signature, self.n_signatures).to(device)
            self._extended = cached
        return cached

    def domain_counts(self, signature_counts: torch.Tensor) -> torch.Tensor:
        """``[D]`` float64: the positives per domain from their counts per signature
        ``[S]`` (a positive counts once in each of its domains; exact for integer counts)."""
        rows, cols = self.pairs(signature_counts.device)
        counts = torch.zeros(
            self.membership.shape[1], dtype=torch.float64, device=signature_counts.device
        )
        return counts.index_add_(0, cols, signature_counts.to(torch.float64).index_select(0, rows))

    def counts(self, items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[S]`` float64 number of the positives ``items [N]`` per signature (items
        without a domain are not counted)."""
        items = torch.as_tensor(items, dtype=torch.int64)
        self.item_signature = self.item_signature.to(items.device)
        signature = self.item_signature[items]
        labelled = (signature >= 0).to(torch.float64)  # no boolean indexing: no host sync
        counts = torch.zeros(self.n_signatures, dtype=torch.float64, device=items.device)
        return counts.index_add_(0, signature.clamp_min(0), labelled)

    def shares(self, items: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``[S]`` share of the domain-labelled positives per signature (zeros if none)."""
        counts = self.counts(items)
        return counts / counts.sum().clamp_min(1.0)

    def domain_shares(self, signature_shares: torch.Tensor) -> torch.Tensor:
        """``[D]`` ``n_d / N``: a positive counts once in each of its domains (the per-domain
        frequency dynamic weighting takes its sparsity from)."""
        membership = self.membership.to(signature_shares.device)
        per_domain = signature_shares @ membership
        total = per_domain.sum()
        return per_domain / total if float(total) > 0 else per_domain


def effective_shares(
    signature_shares: torch.Tensor,
    membership: torch.Tensor,
    scores: torch.Tensor,
    rule: str,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[D]`` ``g`` with ``M(lambda) = sum_d g_d clip(lambda r_d, lo, hi)`` for every
    ``lambda > 0`` and bounds.

    ``max``: ``g_d`` = share of the signatures whose highest score is domain d's (ties: the
    smaller domain index; the clipped weights of tied domains are equal, so this does not
    change ``M``). ``mean``: ``g_d = sum_{S containing d} pi_S / |S|``. ``signature_shares
    [S]``, ``membership [S, D]``, ``scores [D]``; ``sum_d g_d = sum_S pi_S``. ``pairs``: the
    nonzero entries of ``membership`` (:meth:`DomainSignatures.pairs`), computed if not given.
    """
    _check_rule(rule)
    membership = membership.to(signature_shares.device, torch.float64)
    if rule == "mean":
        return (signature_shares / membership.sum(dim=1)) @ membership
    device = membership.device
    n_signatures, n_domains = membership.shape
    if pairs is None:
        pairs = membership.nonzero(as_tuple=True)
    rows, cols = (index.to(device) for index in pairs)
    # per signature, the highest score of its domains, then the smallest domain holding it:
    # the decider of a dense argmax over the masked [S, D] scores, on the P pairs only
    values = scores.to(device, torch.float64).index_select(0, cols)
    best = torch.full((n_signatures,), -math.inf, dtype=torch.float64, device=device)
    best = best.scatter_reduce(0, rows, values, "amax")
    holder = torch.where(values == best.index_select(0, rows), cols, n_domains)
    decider = torch.full((n_signatures,), n_domains, dtype=torch.int64, device=device)
    decider = decider.scatter_reduce(0, rows, holder, "amin")
    shares = torch.zeros(n_domains, dtype=torch.float64, device=device)
    return shares.index_add_(0, decider, signature_shares.to(torch.float64))


def _clipped_mean(scale: torch.Tensor, scores, shares, w_min: float, w_max: float):
    """``[K]`` ``sum_d g_d clip(scale_k r_d, w_min, w_max)`` for the scales ``[K]``."""
    return (shares[None, :] * (scale[:, None] * scores[None, :]).clamp(w_min, w_max)).sum(dim=1)


def solve_scale(scores: torch.Tensor, shares: torch.Tensor, w_min: float, w_max: float):
    """The smallest ``lambda >= 0`` with ``sum_d g_d clip(lambda r_d, w_min, w_max) = 1``.

    ``scores [D]`` ``r >= 0``, ``shares [D]`` ``g >= 0`` with ``sum g = 1``; needs
    ``w_min * sum g <= 1 <= w_max * sum g`` and some ``g_d r_d > 0`` (else the largest kink
    is returned; :func:`normalise_weights` checks this). Exact up to float64 rounding: the
    function is piecewise linear, so the root is interpolated between the two kinks around
    it. Returns a 0-d tensor; no host synchronisation (fixed shapes, no ``.item()``).
    """
    scores = scores.to(torch.float64)
    shares = shares.to(scores)
    reach = (shares * scores).sum()
    kinks = [torch.zeros(1, dtype=torch.float64, device=scores.device)]
    for bound in (w_min, w_max):
        if math.isfinite(bound) and bound > 0:
            kinks.append(torch.where(scores > 0, bound / scores.clamp_min(_TINY), 0.0))
    # beyond the last kink M is constant (all clipped) or linear; these close the range
    kinks.append((2.0 / reach.clamp_min(_TINY)).reshape(1))
    kinks = torch.cat(kinks)
    kinks = torch.cat([kinks, kinks.max().reshape(1) * 2.0]).sort().values
    values = _clipped_mean(kinks, scores, shares, w_min, w_max)
    one = torch.ones(1, dtype=torch.float64, device=scores.device)
    above = torch.searchsorted(values, one).clamp(1, len(kinks) - 1)
    low, high = kinks[above - 1], kinks[above]
    value_low, value_high = values[above - 1], values[above]
    rise = value_high - value_low
    fraction = torch.where(rise > 0, (1.0 - value_low) / rise.clamp_min(_TINY), 1.0)
    return (low + fraction.clamp(0.0, 1.0) * (high - low)).reshape(())


def normalise_weights(
    scores: torch.Tensor,
    signature_shares: torch.Tensor,
    membership: torch.Tensor,
    rule: str,
    w_min: float,
    w_max: float,
    check: bool = True,
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """``[D]`` float64 domain weights: ``clip(lambda r, w_min, w_max)`` with mean position
    weight exactly 1 under ``rule`` (``two-sided``), or ``max(1, clip(lambda r, 0, w_max))``
    with ``w_min == 1`` (``up-weight-only``; mean above 1). See the module docstring.

    ``scores [D]`` sparsity scores ``r >= 0``; ``signature_shares [S]`` the distribution of
    the domain-labelled training positives over the signatures ``membership [S, D]``.
    Without any domain-labelled positive (all shares 0) every weight is 1. ``check``: raise
    a :class:`ValueError` for negative or non-finite scores, or when no labelled positive
    has a positive score (this reads values back from the device; a caller that updates
    every step checks once and passes ``False``). ``pairs``: as in :func:`effective_shares`.
    """
    _check_rule(rule)
    mode = weight_mode(w_min, w_max)
    scores = scores.to(torch.float64)
    total = signature_shares.sum()
    shares = effective_shares(
        signature_shares / total.clamp_min(_TINY), membership, scores, rule, pairs
    )
    if check:
        if bool((scores < 0).any()) or not bool(torch.isfinite(scores).all()):
            raise ValueError("sparsity scores must be finite and >= 0")
        if float(total) > 0 and not float((shares * scores).sum()) > 0:
            raise ValueError("no training positive lies in a domain with a positive score")
    if mode == UP_WEIGHT_ONLY:
        scale = solve_scale(scores, shares, 0.0, w_max)
        weights = (scale * scores).clamp(0.0, w_max).clamp_min(1.0)
    else:
        scale = solve_scale(scores, shares, w_min, w_max)
        weights = (scale * scores).clamp(w_min, w_max)
    return torch.where(total > 0, weights, torch.ones_like(weights))


def signature_weights(domain_weights: torch.Tensor, membership: torch.Tensor, rule: str):
    """``[S]`` the weight of a positive of each signature: max or mean of its domains'."""
    _check_rule(rule)
    membership = membership.to(domain_weights.device, torch.float64)
    if rule == "mean":
        return (membership @ domain_weights) / membership.sum(dim=1)
    masked = torch.where(membership > 0, domain_weights[None, :], -math.inf)
    return masked.amax(dim=1)


def max_signature_weights(
    domain_weights: torch.Tensor, signatures: DomainSignatures
) -> torch.Tensor:
    """``[S + 1]``: the ``max`` rule's weight of each signature (its highest domain weight,
    from the sparse :meth:`DomainSignatures.pairs`), then 1 for an item without a domain.
    Index it with :meth:`DomainSignatures.extended_item_signature`."""
    device = domain_weights.device
    rows, cols = signatures.pairs(device)
    weights = torch.full(
        (signatures.n_signatures + 1,), -math.inf, dtype=domain_weights.dtype, device=device
    )
    weights = weights.scatter_reduce(0, rows, domain_weights.index_select(0, cols), "amax")
    weights[-1] = 1.0
    return weights


def mean_position_weight(
    domain_weights: torch.Tensor, signature_shares: torch.Tensor, membership: torch.Tensor, rule
) -> torch.Tensor:
    """0-d: the mean weight of a domain-labelled positive drawn from ``signature_shares``."""
    weights = signature_weights(domain_weights.to(torch.float64), membership, rule)
    shares = signature_shares.to(weights)
    return (shares * weights).sum() / shares.sum()


class SignatureEMA:
    """EMA of the share of training positives per signature: ``pi [S]``, initialised with
    the training shares; :meth:`update` applies ``pi <- beta pi + (1 - beta) pi_batch`` (a
    batch without a domain-labelled positive leaves ``pi`` unchanged). ``sum pi`` stays 1."""

    def __init__(self, signatures: DomainSignatures, train_items, beta: float = 0.9):
        if not 0.0 <= beta < 1.0:
            raise UsageError(f"--ema-beta must be in [0, 1), got {beta}")
        self.signatures = signatures
        self.beta = beta
        self.shares = signatures.shares(train_items)

    def update(self, positives: torch.Tensor) -> torch.Tensor:
        """Moves ``pi`` towards the batch's shares; returns the batch's counts ``[S]``."""
        counts = self.signatures.counts(positives).to(self.shares.device)
        total = counts.sum()
        moved = self.beta * self.shares + (1.0 - self.beta) * counts / total.clamp_min(1.0)
        self.shares = torch.where(total > 0, moved, self.shares)
        return counts

    def domain_shares(self) -> torch.Tensor:
        """``[D]`` the per-domain shares ``n_d / N`` implied by the current ``pi``."""
        return self.signatures.domain_shares(self.shares)

    def state_dict(self) -> dict:
        return {"signature_shares": self.shares.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        shares = torch.as_tensor(state["signature_shares"], dtype=torch.float64)
        if shares.shape != (self.signatures.n_signatures,):
            raise ValueError(
                f"the state has {shares.shape[0]} signatures, this dataset has "
                f"{self.signatures.n_signatures}"
            )
        self.shares = shares


class RealisedMean:
    """Running mean of the weights actually applied to positions (e.g. over one epoch)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, position_weights: torch.Tensor) -> None:
        """``position_weights [N]``: the weights of one batch's positions."""
        self.total += float(position_weights.detach().double().sum())
        self.count += int(position_weights.numel())

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else math.nan

    def reset(self) -> None:
        self.total, self.count = 0.0, 0
