"""``--loss inverse-sqrt``: static domain weights proportional to f^-1/2 (a dwrec plugin).

    dwrec train --plugin docs/examples/inverse_sqrt_weighting.py --loss inverse-sqrt

f: each domain's share of the training positives. Normalised like ``dynamic``: w = r / sum(f r),
capped at --isqrt-max, divided by sum(f w), so a positive drawn from f has expected weight 1.
"""

from dataclasses import dataclass, field

from dwrec.errors import UsageError
from dwrec.losses.base import LossOptions, Weighting, register_weighting
from dwrec.losses.domains import DomainLookup, reduce_weighted, tensor_of


@dataclass
class InverseSqrtConfig(LossOptions):
    isqrt_max: float = field(default=10.0, metadata={"help": "Upper weight bound"})

    def validate(self) -> None:
        if self.isqrt_max < 1:
            raise UsageError(f"--isqrt-max must be >= 1, got {self.isqrt_max}")


@register_weighting
class InverseSqrtWeighting(Weighting):
    name = "inverse-sqrt"
    config_class = InverseSqrtConfig

    def __init__(self, statistics, config: InverseSqrtConfig):
        shares = tensor_of(statistics.interaction_shares())
        raw = shares.clamp_min(1e-12).pow(-0.5)
        weights = (raw / (shares * raw).sum()).clamp(max=config.isqrt_max)
        self.weights = weights / (shares * weights).sum()
        self.domain_names = statistics.domain_names
        self.lookup = DomainLookup(statistics)

    @classmethod
    def from_config(cls, config, statistics):
        return cls(statistics, config)

    def position_weights(self, positives):
        return self.lookup.position_weights(self.weights, positives)

    def reduce(self, losses, positives, shared_parameter=None):
        return reduce_weighted(losses, self.position_weights(positives), "normalized")

    def loss_denominator(self, positives):  # lets it train with --nproc N too
        return self.position_weights(positives).double().sum()

    def domain_weights(self):
        return dict(zip(self.domain_names, self.weights.tolist(), strict=True))
