"""``--loss adc``: GradNorm-style per-domain loss balancing (METHODS.md section 6)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dwrec.errors import UsageError
from dwrec.losses.base import Weighting, register_weighting
from dwrec.losses.domains import (
    TINY,
    DomainLookup,
    DomainStatistics,
    ReductionConfig,
    check_domain_count,
    on_device,
    reduce_weighted,
)


@dataclass
class ADCConfig(ReductionConfig):
    adc_gamma: float = field(default=1.5, metadata={"help": "Gamma of the loss-ratio target"})
    adc_lr: float = field(default=0.025, metadata={"help": "Step size of the weights"})

    def validate(self) -> None:
        super().validate()
        if self.adc_lr <= 0 or self.adc_gamma < 0:
            raise UsageError("--adc-lr must be > 0 and --adc-gamma >= 0")


@register_weighting
class ADCWeighting(Weighting):
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
    config_class = ADCConfig
    # its GradNorm step needs the gradients of the whole batch, which no rank holds
    supports_multiprocess = False
    learns_weights = True

    def __init__(
        self,
        statistics: DomainStatistics,
        gamma: float = 1.5,
        lr: float = 0.025,
        reduction: str = "normalized",
    ):
        self.domain_names = statistics.domain_names
        self.lookup = DomainLookup(statistics, "max")
        self.gamma = gamma
        self.lr = lr
        self.reduction = reduction
        self.weights = torch.ones(statistics.n_domains, dtype=torch.float64)
        self.initial_losses = torch.full((statistics.n_domains,), math.nan, dtype=torch.float64)

    @classmethod
    def from_config(cls, config: ADCConfig, statistics: DomainStatistics) -> ADCWeighting:
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
        return reduce_weighted(losses, weights, self.reduction)

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
        weights = on_device(self.weights, norms)
        initial = on_device(self.initial_losses, norms)
        initial = torch.where(present & torch.isnan(initial), domain_losses, initial)
        relative = domain_losses / initial.clamp_min(TINY)
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
        check_domain_count(weights, len(self.domain_names))
        self.weights = weights
        self.initial_losses = torch.as_tensor(state["initial_losses"], dtype=torch.float64)
