"""``dynamic`` with the exact normalisation of :mod:`dwrec.losses.normalise` (issue 14).

A wiring aid for the refactored losses: it keeps :class:`DynamicWeighting`'s state ``f``
(the per-domain EMA that gives the sparsity scores ``r_d``) and its lookup. It changes the
normalisation only: ``w = clip(lambda r, w_min, w_max)`` with mean position weight 1
under ``--multi-domain`` for the EMA ``pi`` of the signature shares, which it keeps as
well (``pi`` is updated with the same batches and ``beta``). Without a domain-labelled
positive in a batch, ``pi`` and ``f`` stay as they are. State: ``f``, the update count
and ``pi``.
"""

from __future__ import annotations

import torch

from dwrec.losses.config import LossConfig
from dwrec.losses.normalise import (
    DomainSignatures,
    SignatureEMA,
    normalise_weights,
    weight_mode,
)
from dwrec.losses.weighting import DomainStatistics, DynamicWeighting


class NormalisedDynamicWeighting(DynamicWeighting):
    """:class:`DynamicWeighting` whose weights have mean 1 per training positive under the
    multi-domain rule and lie within ``[w_min, w_max]`` (``w_min = 1``: up-weight only)."""

    name = "dynamic"

    def __init__(self, statistics: DomainStatistics, config: LossConfig):
        weight_mode(config.w_min, config.w_max)  # infeasible bounds: a clear error first
        self.signatures = DomainSignatures.from_csr(
            statistics.item_domain_indptr, statistics.item_domain_indices, statistics.n_domains
        )
        self.signature_ema = SignatureEMA(self.signatures, statistics.train_items, config.ema_beta)
        self._initial_shares = self.signature_ema.shares.clone()
        self._checked = False
        super().__init__(statistics, config)

    def sparsity_scores(self, frequencies: torch.Tensor) -> torch.Tensor:
        """``[D]`` ``r_d`` from the domain shares, per ``--sparsity-signal``."""
        signal = self.config.sparsity_signal
        static = None if self.static_scale is None else self.static_scale.to(frequencies.device)
        if signal == "users":
            return self._sparsity(static)
        if signal == "entropy":
            return self._sparsity(frequencies) * static
        return self._sparsity(frequencies)

    def compute_weights(self, frequencies: torch.Tensor) -> torch.Tensor:
        scores = self.sparsity_scores(frequencies)
        ema, signatures = self.signature_ema, self.signatures
        if ema.shares.device != scores.device:  # once: the state follows the weights' device
            ema.shares = ema.shares.to(scores.device)
            signatures.membership = signatures.membership.to(scores.device)
        weights = normalise_weights(
            scores,
            ema.shares,
            signatures.membership,
            self.config.multi_domain,
            self.config.w_min,
            self.config.w_max,
            check=not self._checked,
        )
        self._checked = True
        return weights

    def update(self, positives: torch.Tensor) -> None:
        self.signature_ema.update(positives)
        super().update(positives)

    def state_dict(self) -> dict:
        return {**super().state_dict(), **self.signature_ema.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "signature_shares" in state:
            self.signature_ema.load_state_dict(state)
        else:  # a checkpoint from before: the training shares, as at the start
            self.signature_ema.shares = self._initial_shares.clone()
        super().load_state_dict(state)
