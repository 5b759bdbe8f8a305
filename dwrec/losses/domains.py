"""What the domain weightings know about the data: the item -> domain map and the training
counts (:class:`DomainStatistics`), and the vectorised per-position lookup of domain weights.

A position's domains are the domains of its target item (CSR ``item_domain_indptr`` /
``item_domain_indices``). A position whose item has no domain gets weight 1 in every
weighting, and takes no part in domain frequencies. All weighting state is kept in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from dwrec.errors import DwrecError, UsageError
from dwrec.losses.base import LossOptions

TINY = 1e-12


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


def on_device(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.device == like.device else tensor.to(like.device)


class DomainLookup:
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
        self.item_domains = on_device(self.item_domains, positives)
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
        gathered = (
            on_device(values, positives).index_select(0, domains.flatten()).view(domains.shape)
        )
        if self.multi_domain == "max":
            return gathered.amax(dim=0)
        self.item_degree = on_device(self.item_degree, positives)
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


def reduce_weighted(losses: torch.Tensor, weights: torch.Tensor, reduction: str) -> torch.Tensor:
    """``normalized``: ``sum w l / sum w``; ``mean``: ``sum w l / N``."""
    weights = weights.detach().to(losses.dtype)
    weighted = (weights * losses).sum()
    if reduction == "normalized":
        return weighted / weights.sum()
    return weighted / losses.shape[0]


def check_domain_count(values: torch.Tensor, n_domains: int) -> None:
    if values.shape != (n_domains,):
        raise DwrecError(
            f"the weighting state has {values.shape[0]} domains, this dataset has {n_domains}: "
            "resume with the dataset the run was trained on"
        )


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class ReductionConfig(LossOptions):
    """The option every weighting with per-position weights shares."""

    weight_reduction: str = field(default="normalized", metadata={"help": "normalized or mean"})

    def validate(self) -> None:
        check_choice("--weight-reduction", self.weight_reduction, ("normalized", "mean"))


def position_count(positives: torch.Tensor) -> torch.Tensor:
    """The denominator of a plain mean: the number of positions (float64 scalar)."""
    return torch.tensor(float(positives.shape[0]), dtype=torch.float64, device=positives.device)


def weighted_denominator(weighting, positives: torch.Tensor, reduction: str) -> torch.Tensor:
    """``sum_i w_i`` (``normalized``) or the number of positions (``mean``)."""
    if reduction == "normalized":
        return weighting.position_weights(positives).double().sum()
    return position_count(positives)


def tensor_of(values: np.ndarray) -> torch.Tensor:
    """A float64 tensor of ``values`` (weightings keep their state in float64)."""
    return torch.from_numpy(np.asarray(values, dtype=np.float64))


def domain_names_in(values: list[str], dataset) -> list[str]:
    """``--weight-domains`` values -> the dataset's domain names. A value that names a domain
    is kept whole (names may contain spaces); otherwise it is split on commas, then on
    whitespace. An unknown name is a usage error listing close matches."""
    known = set(dataset.domain_names)
    names: list[str] = []
    for value in values:
        if value in known:
            names.append(value)
            continue
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            pieces = [part] if part in known else part.split()
            for piece in pieces:
                dataset.domain_index(piece)  # raises with "did you mean"
                names.append(piece)
    if values and not names:
        from dwrec.errors import UsageError

        raise UsageError(
            f"--weight-domains {' '.join(repr(v) for v in values)} names no domain; "
            f"domains of {dataset.name}: {', '.join(dataset.domain_names[:10])}"
            + (" ..." if len(dataset.domain_names) > 10 else "")
        )
    return list(dict.fromkeys(names))
