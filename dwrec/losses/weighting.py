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

import torch

from dwrec.errors import DwrecError, UsageError
from dwrec.losses.base import Weighting, register_weighting
from dwrec.losses.domains import (  # noqa: F401 - DomainStatistics re-exported
    TINY,
    DomainLookup,
    DomainStatistics,
    ReductionConfig,
    check_choice,
    check_domain_count,
    domain_names_in,
    on_device,
    position_count,
    reduce_weighted,
    weighted_denominator,
)
from dwrec.losses.normalise import (
    DomainSignatures,
    SignatureEMA,
    max_signature_weights,
    mean_position_weight,
    normalise_weights,
    weight_mode,
)


@register_weighting
class GenericWeighting(Weighting):
    """No domain weights: ``L = mean_i l_i``."""

    name = "generic"

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return losses.mean()

    def loss_denominator(self, positives: torch.Tensor) -> torch.Tensor:
        return position_count(positives)


@dataclass
class FixedConfig(ReductionConfig):
    weight_domains: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Target domains; repeat the flag or separate with commas/spaces.",
            "default_text": "",
        },
    )
    fixed_weight: float = field(default=2.0, metadata={"help": "Weight of the target domains"})

    def bind_dataset(self, dataset) -> None:
        self.weight_domains = domain_names_in(self.weight_domains, dataset)

    def validate(self) -> None:
        super().validate()
        if not self.fixed_weight > 0:
            raise UsageError(f"--fixed-weight must be > 0, got {self.fixed_weight}")

    def require(self) -> None:
        if not self.weight_domains:
            raise UsageError(
                "--loss fixed needs --weight-domains (e.g. --weight-domains Film-Noir)"
            )


@register_weighting
class FixedWeighting(Weighting):
    """PinnerFormerLite: ``w = c`` for a positive whose item lies in any target domain, 1
    otherwise; reduced with ``weight_reduction``."""

    name = "fixed"
    config_class = FixedConfig

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
        self.lookup = DomainLookup(statistics, "max")
        # 1 for target domains, -inf padding, 0 for items without a domain: max > 0.5 = hit
        self.target_indicator = torch.cat(
            [self.target.double(), torch.tensor([-math.inf, 0.0], dtype=torch.float64)]
        )

    @classmethod
    def from_config(cls, config: FixedConfig, statistics: DomainStatistics) -> FixedWeighting:
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
        return reduce_weighted(losses, self.position_weights(positives), self.reduction)

    def loss_denominator(self, positives: torch.Tensor) -> torch.Tensor:
        return weighted_denominator(self, positives, self.reduction)

    def domain_weights(self) -> dict[str, float]:
        return {
            name: (self.weight if hit else 1.0)
            for name, hit in zip(self.domain_names, self.target.tolist(), strict=True)
        }


def _domain_index(name: str, domain_names: list[str]) -> int:
    if name in domain_names:
        return domain_names.index(name)
    close = difflib.get_close_matches(name, domain_names, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UsageError(
        f"--weight-domains: domain {name!r} is not in the dataset.{hint} "
        f"Domains: {', '.join(domain_names)}"
    )


@dataclass
class DynamicConfig(ReductionConfig):
    ema_beta: float = field(default=0.9, metadata={"help": "EMA of domain shares"})
    weight_alpha: float = field(default=1.0, metadata={"help": "(1/f)^alpha"})
    weight_scale: str = field(default="power", metadata={"help": "power or log"})
    w_min: float = field(
        default=0.25,
        metadata={
            "help": "Lower weight bound, <= 1; 1 = up-weight only: dense domains keep "
            "weight 1 and the mean weight of a training positive is then above 1"
        },
    )
    w_max: float = field(default=10.0, metadata={"help": "Upper weight bound, >= 1"})
    sparsity_signal: str = field(
        default="interactions", metadata={"help": "interactions, users or entropy"}
    )
    multi_domain: str = field(default="max", metadata={"help": "max or mean"})

    def validate(self) -> None:
        if not 0.0 <= self.ema_beta < 1.0:
            raise UsageError(f"--ema-beta must be in [0, 1), got {self.ema_beta}")
        if not 0 < self.w_min <= 1.0 <= self.w_max:
            raise UsageError(
                "weight bounds need 0 < --w-min <= 1 <= --w-max (the mean weight of a "
                f"training positive is 1; --w-min 1: up-weight only), got --w-min "
                f"{self.w_min:g}, --w-max {self.w_max:g}"
            )
        check_choice("--weight-scale", self.weight_scale, ("power", "log"))
        check_choice(
            "--sparsity-signal", self.sparsity_signal, ("interactions", "users", "entropy")
        )
        check_choice("--multi-domain", self.multi_domain, ("max", "mean"))
        super().validate()
        if self.weight_alpha <= 0:
            raise UsageError(f"--weight-alpha must be > 0, got {self.weight_alpha}")


@register_weighting
class DynamicWeighting(Weighting):
    """Dynamic domain weights (dwrec's definition of arXiv 2510.04375, METHODS.md section 1;
    docs/methods.md gives every step).

    State: ``f [D]``, the EMA of the batches' domain shares, initialised with the training
    shares ``n_d / N``; ``update`` applies ``f <- beta f + (1 - beta) share_batch``. Beside it
    ``pi [S]``, the EMA (same ``beta``, same batches) of the share of the domain-labelled
    positives per item *signature* (distinct domain set; :class:`SignatureEMA`). A batch
    without any domain-labelled positive leaves both unchanged.

    Weights: sparsity scores ``r_d = (1 / s_d) ** alpha`` (``weight_scale=log``:
    ``log(1 / s_d)``) with ``s = f`` (``interactions``), the static user shares (``users``),
    or ``s = f`` times ``1 + concentration_d`` (``entropy``; see
    :meth:`DomainStatistics.concentration`); then ``w_d = clip(lambda r_d, w_min, w_max)``
    with the ``lambda`` for which the mean weight of a training positive drawn from ``pi`` is
    exactly 1 under ``multi_domain`` (a position weighs the max or mean of its item's domain
    weights): the fixed point of clip-and-renormalise, solved exactly
    (:func:`~dwrec.losses.normalise.normalise_weights`). ``w_min = 1`` (up-weight only):
    ``max(1, clip(lambda r_d, 0, w_max))``, mean above 1.
    """

    name = "dynamic"
    config_class = DynamicConfig
    learns_weights = True

    def __init__(self, statistics: DomainStatistics, config: DynamicConfig):
        weight_mode(config.w_min, config.w_max)  # bounds without a mean-1 solution: a clear error
        self.domain_names = statistics.domain_names
        self.config = config
        self.lookup = DomainLookup(statistics, config.multi_domain)
        self.frequencies = torch.from_numpy(statistics.interaction_shares()).double()
        self.static_scale = self._static_scale(statistics, config.sparsity_signal)
        self.signatures = DomainSignatures.from_csr(
            statistics.item_domain_indptr, statistics.item_domain_indices, statistics.n_domains
        )
        self.signature_ema = SignatureEMA(self.signatures, statistics.train_items, config.ema_beta)
        self._initial_shares = self.signature_ema.shares.clone()
        self._checked = False
        self._uniform = False
        self.updates = 0
        self.set_weights(self.compute_weights(self.frequencies))

    @classmethod
    def from_config(cls, config: DynamicConfig, statistics: DomainStatistics) -> DynamicWeighting:
        return cls(statistics, config)

    @staticmethod
    def _static_scale(statistics: DomainStatistics, signal: str) -> torch.Tensor | None:
        if signal == "users":
            return torch.from_numpy(statistics.user_shares()).double()
        if signal == "entropy":
            return torch.from_numpy(1.0 + statistics.concentration()).double()
        return None

    def _sparsity(self, shares: torch.Tensor) -> torch.Tensor:
        shares = shares.clamp_min(TINY)
        if self.config.weight_scale == "log":
            return torch.log(1.0 / shares)
        return shares.pow(-self.config.weight_alpha)

    def sparsity_scores(self, frequencies: torch.Tensor) -> torch.Tensor:
        """``[D]`` float64 ``r_d`` for the domain shares ``frequencies``, per
        ``sparsity_signal``."""
        signal = self.config.sparsity_signal
        static = None if self.static_scale is None else on_device(self.static_scale, frequencies)
        if signal == "users":
            return self._sparsity(static)
        if signal == "entropy":
            return self._sparsity(frequencies) * static
        return self._sparsity(frequencies)

    def compute_weights(self, frequencies: torch.Tensor) -> torch.Tensor:
        """``[D]`` float64 domain weights for the domain shares ``frequencies`` (sum 1) and
        the current signature shares ``pi``: mean position weight 1, within the bounds."""
        scores = self.sparsity_scores(frequencies)
        if self._uniform:
            return torch.ones_like(scores)
        ema, signatures = self.signature_ema, self.signatures
        ema.shares = on_device(ema.shares, scores)
        signatures.membership = on_device(signatures.membership, scores)
        arguments = (scores, ema.shares, signatures.membership, self.config.multi_domain)
        bounds = (self.config.w_min, self.config.w_max)
        pairs = signatures.pairs(scores.device)
        if not self._checked:  # the checks read values back: once, not every step
            self._checked = True
            try:
                return normalise_weights(*arguments, *bounds, check=True, pairs=pairs)
            except ValueError:
                # every labelled positive lies in domains of score 0 (e.g. --weight-scale log
                # with one domain holding them all): no domain is sparser, weight 1 (generic)
                self._uniform = True
                return torch.ones_like(scores)
        return normalise_weights(*arguments, *bounds, check=False, pairs=pairs)

    def set_weights(self, weights: torch.Tensor) -> None:
        self.weights = weights
        if self.config.multi_domain == "max":  # a weight per signature: one gather a step
            self.signature_weights = max_signature_weights(weights, self.signatures)
        else:
            self.extended_weights = self.lookup.extended(weights)

    def position_weights(self, positives: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 weight of each position's target (current state)."""
        if self.config.multi_domain == "max":
            weights = on_device(self.signature_weights, positives)
            items = self.signatures.extended_item_signature(positives.device)
            return weights.index_select(0, items.index_select(0, positives))
        return self.lookup.position_weights(self.extended_weights, positives, extended=True)

    def reduce(
        self,
        losses: torch.Tensor,
        positives: torch.Tensor,
        shared_parameter: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return reduce_weighted(
            losses, self.position_weights(positives), self.config.weight_reduction
        )

    def loss_denominator(self, positives: torch.Tensor) -> torch.Tensor:
        return weighted_denominator(self, positives, self.config.weight_reduction)

    def update(self, positives: torch.Tensor) -> None:
        # per-domain counts from the per-signature ones (integers: the same values as
        # counting each position's domains, at a fraction of the cost with many domains)
        counts = self.signatures.domain_counts(self.signature_ema.update(positives))
        total = counts.sum()
        frequencies = on_device(self.frequencies, counts)
        beta = self.config.ema_beta
        moved = beta * frequencies + (1.0 - beta) * counts / total.clamp_min(1.0)
        self.frequencies = torch.where(total > 0, moved, frequencies)
        self.set_weights(self.compute_weights(self.frequencies))
        self.updates += 1

    def domain_weights(self) -> dict[str, float]:
        return dict(zip(self.domain_names, self.weights.tolist(), strict=True))

    def mean_weight(self) -> float:
        """The mean weight of a domain-labelled training positive drawn from ``pi`` (1, or
        above 1 with ``w_min = 1``)."""
        return float(
            mean_position_weight(
                self.weights,
                self.signature_ema.shares,
                self.signatures.membership,
                self.config.multi_domain,
            )
        )

    def state_dict(self) -> dict:
        return {
            "frequencies": self.frequencies.detach().cpu().clone(),
            "updates": self.updates,
            **self.signature_ema.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        frequencies = torch.as_tensor(state["frequencies"], dtype=torch.float64)
        check_domain_count(frequencies, len(self.domain_names))
        device = self.frequencies.device
        if "signature_shares" in state:
            shares = torch.as_tensor(state["signature_shares"], dtype=torch.float64)
            if shares.shape != (self.signatures.n_signatures,):
                raise DwrecError(
                    f"the weighting state has {shares.shape[0]} domain sets, this dataset has "
                    f"{self.signatures.n_signatures}: resume with the dataset the run was "
                    "trained on"
                )
            self.signature_ema.load_state_dict(state)
        else:  # a checkpoint from before the exact normalisation: the training shares
            self.signature_ema.shares = self._initial_shares.clone()
        self.signature_ema.shares = self.signature_ema.shares.to(device)
        self.frequencies = frequencies.to(device)
        self.updates = int(state["updates"])
        self.set_weights(self.compute_weights(self.frequencies))


from dwrec.losses.adc import ADCConfig, ADCWeighting  # noqa: E402,F401 - re-exported
