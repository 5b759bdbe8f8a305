"""Domain weightings: turn per-position losses into the scalar the trainer back-propagates.

``generic``: plain mean (the unweighted baseline). ``fixed``: PinnerFormerLite's constant
weight for chosen target domains. ``dynamic``: dwrec's definition of the Dynamic Weighted
Loss (METHODS.md section 1). ``adc``: GradNorm-style per-domain loss balancing (section 6).

A position's domains are the domains of its target item (CSR ``item_domain_indptr`` /
``item_domain_indices``). A position whose item has no domain gets weight 1 in every
weighting, and takes no part in domain frequencies. All weighting state is kept in float64;
weights are applied detached (they are constants for the model's gradient).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dwrec.errors import DwrecError, UsageError
from dwrec.losses.config import LossConfig

_TINY = 1e-12


@dataclass
class DomainStatistics:
    """Item -> domain map and the training counts the weightings start from.

    Attributes:
        domain_names: ``D`` names; a domain's index is its position.
        item_domain_indptr, item_domain_indices: CSR map item -> domain indices.
        train_items, train_users: item and user id of every training positive (same length).
        n_items: size of the item id space.
    """

    domain_names: list[str]
    item_domain_indptr: np.ndarray
    item_domain_indices: np.ndarray
    train_items: np.ndarray
    train_users: np.ndarray
    n_items: int
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.item_domain_indptr = np.asarray(self.item_domain_indptr, dtype=np.int64)
        self.item_domain_indices = np.asarray(self.item_domain_indices, dtype=np.int64)
        self.train_items = np.asarray(self.train_items, dtype=np.int64)
        self.train_users = np.asarray(self.train_users, dtype=np.int64)
        if self.item_domain_indptr.shape != (self.n_items + 1,):
            raise ValueError(
                f"item_domain_indptr has {self.item_domain_indptr.shape[0]} entries, "
                f"expected n_items + 1 = {self.n_items + 1}"
            )
        if self.train_items.shape != self.train_users.shape:
            raise ValueError("train_items and train_users need the same length")

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)

    def padded_item_domains(self) -> torch.Tensor:
        """``[n_items, max_domains]`` int64 domain indices per item, padded with ``D``."""
        degree = np.diff(self.item_domain_indptr)
        width = max(int(degree.max(initial=0)), 1)
        table = np.full((self.n_items, width), self.n_domains, dtype=np.int64)
        rows = np.repeat(np.arange(self.n_items), degree)
        columns = np.arange(len(self.item_domain_indices)) - np.repeat(
            self.item_domain_indptr[:-1], degree
        )
        table[rows, columns] = self.item_domain_indices
        return torch.from_numpy(table)

    def interaction_counts(self) -> np.ndarray:
        """``[D]`` float64 ``n_d``: training positives whose item lies in domain d."""
        per_item = np.bincount(self.train_items, minlength=self.n_items).astype(np.float64)
        item_of_entry = np.repeat(np.arange(self.n_items), np.diff(self.item_domain_indptr))
        return np.bincount(
            self.item_domain_indices, weights=per_item[item_of_entry], minlength=self.n_domains
        )

    def interaction_shares(self) -> np.ndarray:
        """``[D]`` ``n_d / N`` with ``N = sum_d n_d`` (zeros when no positive has a domain)."""
        counts = self.interaction_counts()
        total = counts.sum()
        return counts / total if total > 0 else counts

    def _user_domain_counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(domain, user, count) of every (domain, user) pair with count >= 1."""
        if "pairs" not in self._cache:
            degree = np.diff(self.item_domain_indptr)[self.train_items]
            starts = self.item_domain_indptr[self.train_items]
            entry = np.repeat(starts - np.cumsum(degree) + degree, degree) + np.arange(degree.sum())
            domains = self.item_domain_indices[entry]
            users = np.repeat(self.train_users, degree)
            n_users = int(self.train_users.max(initial=-1)) + 1
            keys, counts = np.unique(domains * n_users + users, return_counts=True)
            self._cache["pairs"] = (keys // max(n_users, 1), keys % max(n_users, 1), counts)
        return self._cache["pairs"]

    def user_shares(self) -> np.ndarray:
        """``[D]`` share of training users with at least one positive in the domain."""
        domains, _, _ = self._user_domain_counts()
        n_users = len(np.unique(self.train_users))
        users_per_domain = np.bincount(domains, minlength=self.n_domains).astype(np.float64)
        return users_per_domain / max(n_users, 1)

    def concentration(self) -> np.ndarray:
        """``[D]`` ``1 - H_d / log |users_d|`` in [0, 1]: 0 when a domain's interactions are
        spread evenly over its users, 1 when a few users carry them. ``H_d`` is the entropy of
        the domain's interactions over users. A domain with fewer than two users counts as
        fully concentrated (1)."""
        domains, _, counts = self._user_domain_counts()
        totals = np.bincount(domains, weights=counts, minlength=self.n_domains)
        shares = counts / totals[domains]
        entropy = np.bincount(domains, weights=-shares * np.log(shares), minlength=self.n_domains)
        users = np.bincount(domains, minlength=self.n_domains)
        result = np.ones(self.n_domains)
        spread = users >= 2
        result[spread] = 1.0 - entropy[spread] / np.log(users[spread])
        return np.clip(result, 0.0, 1.0)


def _on(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device == like.device else tensor.to(like.device)


class _DomainLookup:
    """Per-position domain weights from per-domain weights (vectorised, no host sync).

    The item table holds domain indices padded with ``D``; an item without any domain holds
    ``D + 1`` in its first slot. An *extended* weight vector ``[D + 2]`` appends the padding
    value (``-inf`` for max, 0 for mean) and the weight 1 of domainless items, so a
    position's weight is one gather and one max (or sum).
    """

    def __init__(self, statistics: DomainStatistics, multi_domain: str = "max"):
        self.n_domains = statistics.n_domains
        table = statistics.padded_item_domains()
        table[(table == self.n_domains).all(dim=1), 0] = self.n_domains + 1
        # [max_domains, n_items]: gathers give [max_domains, N], reduced over the outer dim
        self.item_domains = table.T.contiguous()
        degree = np.maximum(np.diff(statistics.item_domain_indptr), 1)
        self.item_degree = torch.from_numpy(degree).double()
        self.multi_domain = multi_domain
        self._last: tuple[torch.Tensor, int, torch.Tensor] | None = None

    def domains_of(self, positives: torch.Tensor) -> torch.Tensor:
        """``[max_domains, N]`` domain indices of each positive (``>= D`` where none)."""
        # the trainer passes the same tensor to reduce and update: gather once (an in-place
        # change of the tensor bumps its version and invalidates the cache)
        last = self._last
        if last is not None and last[0] is positives and last[1] == positives._version:
            return last[2]
        self.item_domains = _on(self.item_domains, positives)
        domains = self.item_domains.index_select(1, positives)
        self._last = (positives, positives._version, domains)
        return domains

    def extended(self, domain_weights: torch.Tensor) -> torch.Tensor:
        """``[D + 2]``: the domain weights, the padding value, then 1 (no domain)."""
        padding = -math.inf if self.multi_domain == "max" else 0.0
        tail = torch.tensor([padding, 1.0], dtype=domain_weights.dtype)
        return torch.cat([domain_weights, tail.to(domain_weights.device)])

    def position_weights(
        self, domain_weights: torch.Tensor, positives: torch.Tensor, extended: bool = False
    ) -> torch.Tensor:
        """``[N]`` weight of each position: max (or mean) of its item's domain weights, 1
        for an item with no domain. ``extended``: ``domain_weights`` is already
        :meth:`extended`."""
        values = domain_weights if extended else self.extended(domain_weights)
        domains = self.domains_of(positives)
        gathered = _on(values, positives).index_select(0, domains.flatten()).view(domains.shape)
        if self.multi_domain == "max":
            return gathered.amax(dim=0)
        self.item_degree = _on(self.item_degree, positives)
        return gathered.sum(dim=0) / self.item_degree.index_select(0, positives)

    def one_hot(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` float64 0/1: position i's item lies in domain d."""
        onehot = torch.zeros(
            (positives.shape[0], self.n_domains + 2), dtype=torch.float64, device=positives.device
        )
        onehot.scatter_(1, self.domains_of(positives).T, 1.0)
        return onehot[:, : self.n_domains]

    def batch_counts(self, positives: torch.Tensor) -> torch.Tensor:
        """``[D]`` float64 count of batch positives per domain (multi-domain items in each)."""
        domains = self.domains_of(positives).flatten()
        if domains.device.type == "cpu":  # bincount is faster there; on CUDA it would sync
            return torch.bincount(domains, minlength=self.n_domains + 2)[: self.n_domains].double()
        counts = torch.zeros(self.n_domains + 2, dtype=torch.float64, device=positives.device)
        counts.scatter_add_(0, domains, torch.ones_like(domains, dtype=torch.float64))
        return counts[: self.n_domains]


def _reduce(losses: torch.Tensor, weights: torch.Tensor, reduction: str) -> torch.Tensor:
    """``normalized``: ``sum w l / sum w``; ``mean``: ``sum w l / N``."""
    weights = weights.detach().to(losses.dtype)
    weighted = (weights * losses).sum()
    if reduction == "normalized":
        return weighted / weights.sum()
    return weighted / losses.shape[0]


class GenericWeighting:
    """No domain weights: ``L = mean_i l_i``."""

    name = "generic"

    @classmethod
    def from_config(cls, config: LossConfig, statistics: DomainStatistics) -> GenericWeighting:
        return cls()

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return losses.mean()

    def update(self, positives: torch.Tensor) -> None:
        pass

    def domain_weights(self) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class FixedWeighting:
    """PinnerFormerLite: ``w = c`` for a positive whose item lies in any target domain, 1
    otherwise; reduced with ``weight_reduction``."""

    name = "fixed"

    def __init__(
        self,
        statistics: DomainStatistics,
        target_domains: list[str],
        weight: float = 2.0,
        reduction: str = "normalized",
    ):
        indices = [_domain_index(name, statistics.domain_names) for name in target_domains]
        self.domain_names = statistics.domain_names
        self.target = torch.zeros(statistics.n_domains, dtype=torch.bool)
        self.target[indices] = True
        self.weight = weight
        self.reduction = reduction
        self.lookup = _DomainLookup(statistics, "max")
        # 1 for target domains, -inf padding, 0 for items without a domain: max > 0.5 = hit
        self.target_indicator = torch.cat(
            [self.target.double(), torch.tensor([-math.inf, 0.0], dtype=torch.float64)]
        )

    @classmethod
    def from_config(cls, config: LossConfig, statistics: DomainStatistics) -> FixedWeighting:
        return cls(statistics, config.weight_domains, config.fixed_weight, config.weight_reduction)

    def position_weights(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 weights."""
        hit = self.lookup.position_weights(self.target_indicator, positives, extended=True)
        ones = torch.ones(hit.shape, dtype=torch.float64, device=hit.device)
        return ones.masked_fill(hit > 0.5, self.weight)

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _reduce(losses, self.position_weights(positives), self.reduction)

    def update(self, positives: torch.Tensor) -> None:
        pass

    def domain_weights(self) -> dict[str, float]:
        return {
            name: (self.weight if hit else 1.0)
            for name, hit in zip(self.domain_names, self.target.tolist(), strict=True)
        }

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _domain_index(name: str, domain_names: list[str]) -> int:
    if name in domain_names:
        return domain_names.index(name)
    close = difflib.get_close_matches(name, domain_names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UsageError(
        f"--weight-domains: domain {name!r} is not in the dataset.{hint} "
        f"Domains: {', '.join(domain_names)}"
    )


class DynamicWeighting:
    """Dynamic domain weights (dwrec's definition of arXiv 2510.04375, METHODS.md section 1).

    State: ``f [D]``, the EMA of the batches' domain shares, initialised with the training
    shares ``n_d / N``; ``update`` applies ``f <- beta f + (1 - beta) share_batch`` (a batch
    without any domain-labelled positive leaves ``f`` unchanged).

    Weights: ``r_d = (1 / s_d) ** alpha`` (``weight_scale=log``: ``log(1 / s_d)``) with ``s = f``
    (``interactions``), the static user shares (``users``), or ``s = f`` times
    ``1 + concentration_d`` (``entropy``; see :meth:`DomainStatistics.concentration`); then
    ``w_d = r_d / sum_e f_e r_e``, clipped to ``[w_min, w_max]``, then divided once by
    ``sum_e f_e w_e`` so that ``sum_d f_d w_d = 1``: a training positive drawn from the
    domain shares ``f`` has expected weight 1. After that division a weight can leave the
    clip bounds by the factor ``1 / sum_e f_e clip(w)_e`` (METHODS.md renormalises once).
    """

    name = "dynamic"

    def __init__(self, statistics: DomainStatistics, config: LossConfig):
        self.domain_names = statistics.domain_names
        self.config = config
        self.lookup = _DomainLookup(statistics, config.multi_domain)
        self.frequencies = torch.from_numpy(statistics.interaction_shares()).double()
        self.static_scale = self._static_scale(statistics, config.sparsity_signal)
        self.updates = 0
        self.set_weights(self.compute_weights(self.frequencies))

    @classmethod
    def from_config(cls, config: LossConfig, statistics: DomainStatistics) -> DynamicWeighting:
        if config.weight_alpha <= 0:
            raise UsageError(f"--weight-alpha must be > 0, got {config.weight_alpha}")
        return cls(statistics, config)

    @staticmethod
    def _static_scale(statistics: DomainStatistics, signal: str) -> torch.Tensor | None:
        if signal == "users":
            return torch.from_numpy(statistics.user_shares()).double()
        if signal == "entropy":
            return torch.from_numpy(1.0 + statistics.concentration()).double()
        return None

    def _sparsity(self, shares: torch.Tensor) -> torch.Tensor:
        shares = shares.clamp_min(_TINY)
        if self.config.weight_scale == "log":
            return torch.log(1.0 / shares)
        return shares.pow(-self.config.weight_alpha)

    def compute_weights(self, frequencies: torch.Tensor) -> torch.Tensor:
        """``[D]`` float64 domain weights for the domain shares ``frequencies`` (sum 1)."""
        signal = self.config.sparsity_signal
        static = None if self.static_scale is None else _on(self.static_scale, frequencies)
        if signal == "users":
            sparsity = self._sparsity(static)
        elif signal == "entropy":
            sparsity = self._sparsity(frequencies) * static
        else:
            sparsity = self._sparsity(frequencies)
        weights = sparsity / (frequencies * sparsity).sum().clamp_min(_TINY)
        weights = weights.clamp(self.config.w_min, self.config.w_max)
        return weights / (frequencies * weights).sum().clamp_min(_TINY)

    def set_weights(self, weights: torch.Tensor) -> None:
        self.weights = weights
        self.extended_weights = self.lookup.extended(weights)

    def position_weights(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 weight of each position's target (current state)."""
        return self.lookup.position_weights(self.extended_weights, positives, extended=True)

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _reduce(losses, self.position_weights(positives), self.config.weight_reduction)

    def update(self, positives: torch.Tensor) -> None:
        counts = self.lookup.batch_counts(positives)
        total = counts.sum()
        frequencies = _on(self.frequencies, counts)
        beta = self.config.ema_beta
        moved = beta * frequencies + (1.0 - beta) * counts / total.clamp_min(1.0)
        self.frequencies = torch.where(total > 0, moved, frequencies)
        self.set_weights(self.compute_weights(self.frequencies))
        self.updates += 1

    def domain_weights(self) -> dict[str, float]:
        return dict(zip(self.domain_names, self.weights.tolist(), strict=True))

    def state_dict(self) -> dict:
        return {"frequencies": self.frequencies.detach().cpu().clone(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        frequencies = torch.as_tensor(state["frequencies"], dtype=torch.float64)
        _check_domain_count(frequencies, len(self.domain_names))
        self.frequencies = frequencies.to(self.frequencies.device)
        self.updates = int(state["updates"])
        self.set_weights(self.compute_weights(self.frequencies))


def _check_domain_count(values: torch.Tensor, n_domains: int) -> None:
    if values.shape != (n_domains,):
        raise DwrecError(
            f"the weighting state has {values.shape[0]} domains, this dataset has {n_domains}: "
            "resume with the dataset the run was trained on"
        )


class ADCWeighting:
    """GradNorm-style per-domain loss balancing (after arXiv 1907.01645, METHODS.md section 6).

    ``L_d`` is the mean loss of the batch positions whose item lies in domain d; the
    weights ``w`` are balanced so that the gradient norms ``G_d = w_d ||grad_W L_d||`` on the
    shared tensor ``W`` follow ``mean(G) * r_d ** gamma``, ``r_d = (L_d / L_d(0)) /
    mean_e(L_e / L_e(0))`` over the domains in the batch (``L_d(0)``: the first batch loss of
    d). One SGD step of ``adc_lr`` on ``sum_d |G_d - target_d|`` (w only) is taken inside
    every ``reduce`` with gradients enabled, because it needs the losses' graph; then ``w`` is
    renormalised to ``sum_d w_d = D``. ``update`` does nothing.

    ``reduce`` returns the weighted reduction of the positions, each weighted with the max of
    its domains' ``w`` (1 for an item without domain).

    ``shared_parameter``: a weight (one ``autograd.grad`` per domain in the batch), or a
    non-leaf ``[N, d]`` tensor whose row i only influences ``losses[i]``, such as the user
    states: then the norms are taken for a shift shared by every row (the bias of the last
    shared layer), all from one ``autograd.grad`` (see :meth:`gradient_norms`).
    """

    name = "adc"

    def __init__(
        self,
        statistics: DomainStatistics,
        gamma: float = 1.5,
        lr: float = 0.025,
        reduction: str = "normalized",
    ):
        self.domain_names = statistics.domain_names
        self.lookup = _DomainLookup(statistics, "max")
        self.gamma = gamma
        self.lr = lr
        self.reduction = reduction
        self.weights = torch.ones(statistics.n_domains, dtype=torch.float64)
        self.initial_losses = torch.full((statistics.n_domains,), math.nan, dtype=torch.float64)

    @classmethod
    def from_config(cls, config: LossConfig, statistics: DomainStatistics) -> ADCWeighting:
        if config.adc_lr <= 0 or config.adc_gamma < 0:
            raise UsageError("--adc-lr must be > 0 and --adc-gamma >= 0")
        return cls(statistics, config.adc_gamma, config.adc_lr, config.weight_reduction)

    def membership(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N, D]`` 0/1 float64: position i's item lies in domain d."""
        return self.lookup.one_hot(positives)

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if torch.is_grad_enabled() and losses.requires_grad:
            if shared_parameter is None:
                raise ValueError("the adc weighting needs shared_parameter (the last shared layer)")
            self.balance(losses, positives, shared_parameter)
        weights = self.lookup.position_weights(self.weights, positives)
        return _reduce(losses, weights, self.reduction)

    def domain_losses(self, losses: torch.Tensor, membership: torch.Tensor) -> torch.Tensor:
        """``[D]`` mean loss per domain (0 for domains absent from the batch); keeps the graph."""
        counts = membership.sum(dim=0).clamp_min(1.0).to(losses.dtype)
        return (membership.to(losses.dtype) * losses[:, None]).sum(dim=0) / counts

    def gradient_norms(
        self, losses: torch.Tensor, membership: torch.Tensor, shared: torch.Tensor
    ) -> torch.Tensor:
        """``[D]`` float64 gradient norm of each ``L_d`` (0 for absent domains).

        ``shared`` a weight: ``||grad_shared L_d||``. ``shared`` non-leaf ``[N, ...]`` (the
        positions' user states): the gradient with respect to a shift added to every row, a
        parameter all positions share, ``||mean_{i in d} dl_i / dh_i||``.
        """
        per_row = not shared.is_leaf and shared.dim() >= 1 and shared.shape[0] == losses.shape[0]
        if per_row:
            (row_grads,) = torch.autograd.grad(losses.sum(), shared, retain_graph=True)
            counts = membership.sum(dim=0).clamp_min(1.0)
            domain_grads = membership.T @ row_grads.double().flatten(1) / counts[:, None]
            return domain_grads.norm(dim=1)
        present = membership.sum(dim=0) > 0
        domain_losses = self.domain_losses(losses, membership)
        norms = torch.zeros(len(self.domain_names), dtype=torch.float64, device=losses.device)
        for domain in present.nonzero().flatten().tolist():
            (grad,) = torch.autograd.grad(domain_losses[domain], shared, retain_graph=True)
            norms[domain] = grad.double().norm()
        return norms

    @torch.no_grad()
    def _step(self, domain_losses: torch.Tensor, norms: torch.Tensor, present: torch.Tensor):
        weights = _on(self.weights, norms)
        initial = _on(self.initial_losses, norms)
        initial = torch.where(present & torch.isnan(initial), domain_losses, initial)
        relative = domain_losses / initial.clamp_min(_TINY)
        ratio = relative / relative[present].mean()
        scaled = weights * norms
        target = scaled[present].mean() * ratio.clamp_min(0.0).pow(self.gamma)
        # absent domains have no loss ratio (nan before their first batch): they do not move
        step = torch.where(present, torch.sign(scaled - target) * norms, 0.0)
        weights = (weights - self.lr * step).clamp_min(1e-3)
        self.weights = weights * (len(self.domain_names) / weights.sum())
        self.initial_losses = initial

    def balance(
        self, losses: torch.Tensor, positives: torch.Tensor, shared_parameter: torch.Tensor
    ) -> None:
        """One GradNorm step on the weights from this batch."""
        membership = self.membership(positives)
        present = membership.sum(dim=0) > 0
        if not bool(present.any()):
            return
        norms = self.gradient_norms(losses, membership, shared_parameter)
        domain_losses = self.domain_losses(losses.detach().double(), membership)
        self._step(domain_losses, norms, present)

    def update(self, positives: torch.Tensor) -> None:
        pass

    def domain_weights(self) -> dict[str, float]:
        return dict(zip(self.domain_names, self.weights.tolist(), strict=True))

    def state_dict(self) -> dict:
        return {
            "weights": self.weights.detach().cpu().clone(),
            "initial_losses": self.initial_losses.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        weights = torch.as_tensor(state["weights"], dtype=torch.float64)
        _check_domain_count(weights, len(self.domain_names))
        self.weights = weights
        self.initial_losses = torch.as_tensor(state["initial_losses"], dtype=torch.float64)
