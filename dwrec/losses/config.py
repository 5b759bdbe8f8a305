"""Loss configuration: which objective, which domain weighting, and every constant as a field.

``--loss`` names either an objective (``ce``, ``sampled-softmax``, ``bce``, ``gbce``, ``dsl``,
``mml``: trained without domain weights) or a domain weighting (``generic``, ``fixed``,
``dynamic``, ``adc``: composed with ``--objective``, default ``ce``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from dwrec.errors import UsageError

OBJECTIVES = ("ce", "sampled-softmax", "bce", "gbce", "dsl", "mml")
WEIGHTINGS = ("generic", "fixed", "dynamic", "adc")


@dataclass
class LossConfig:
    loss: str = "ce"
    objective: str = "ce"
    # full softmax (ce): items per logits chunk; None = automatic (chunk only when the
    # [positions x items] logits would pass 2**28 elements), 0 = never chunk
    softmax_chunk: int | None = None
    # sampled objectives
    negatives: int = 256
    gbce_t: float = 0.75
    # fixed weights (PinnerFormerLite)
    weight_domains: list[str] = field(default_factory=list)
    fixed_weight: float = 2.0
    # dynamic weights (METHODS.md section 1; dwrec's defaults)
    ema_beta: float = 0.9
    weight_alpha: float = 1.0
    weight_scale: str = "power"  # power | log
    w_min: float = 0.25
    w_max: float = 10.0
    sparsity_signal: str = "interactions"  # interactions | users | entropy
    multi_domain: str = "max"  # max | mean
    weight_reduction: str = "normalized"  # normalized | mean
    # DSL (METHODS.md section 4)
    dsl_lh: float = 1.0
    dsl_ls: float = 1.0
    dsl_m: int = 20
    dsl_t0: float = 1.0
    dsl_k: float = 0.5
    dsl_tmin: float = 0.05
    dsl_tmax: float = 5.0
    # MML (METHODS.md section 5)
    mml_margins: list[float] = field(default_factory=lambda: [0.9, 0.6, 0.3])
    mml_weights: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])
    # ADC (METHODS.md section 6)
    adc_gamma: float = 1.5
    adc_lr: float = 0.025

    @property
    def objective_name(self) -> str:
        """The objective actually trained."""
        return self.loss if self.loss in OBJECTIVES else self.objective

    @property
    def weighting_name(self) -> str:
        """The domain weighting actually used (``generic`` = none)."""
        return self.loss if self.loss in WEIGHTINGS else "generic"

    @property
    def label(self) -> str:
        """Short label: ``dynamic``, ``dynamic/sampled-softmax``, ``bce``..."""
        if self.loss in WEIGHTINGS and self.objective != "ce":
            return f"{self.loss}/{self.objective}"
        return self.loss

    def validate(self) -> LossConfig:
        if self.loss not in OBJECTIVES + WEIGHTINGS:
            raise UsageError(
                f"--loss {self.loss!r} is not known; objectives: {', '.join(OBJECTIVES)}; "
                f"domain weightings: {', '.join(WEIGHTINGS)}"
            )
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective must be one of {', '.join(OBJECTIVES)}")
        if self.loss == "fixed" and not self.weight_domains:
            raise UsageError(
                "--loss fixed needs --weight-domains (e.g. --weight-domains Film-Noir)"
            )
        if not 0.0 <= self.ema_beta < 1.0:
            raise UsageError(f"--ema-beta must be in [0, 1), got {self.ema_beta}")
        if not 0 < self.w_min <= 1.0 <= self.w_max:
            raise UsageError("weight bounds need 0 < --w-min <= 1 <= --w-max")
        for name, value, choices in (
            ("--weight-scale", self.weight_scale, ("power", "log")),
            ("--sparsity-signal", self.sparsity_signal, ("interactions", "users", "entropy")),
            ("--multi-domain", self.multi_domain, ("max", "mean")),
            ("--weight-reduction", self.weight_reduction, ("normalized", "mean")),
        ):
            if value not in choices:
                raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        if self.negatives < 1:
            raise UsageError("--negatives must be >= 1")
        if self.softmax_chunk is not None and self.softmax_chunk < 0:
            raise UsageError(
                f"--softmax-chunk must be >= 0 (0: never chunk), got {self.softmax_chunk}"
            )
        if len(self.mml_margins) != len(self.mml_weights):
            raise UsageError("--mml-margins and --mml-weights need the same length")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> LossConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown loss option(s): {', '.join(unknown)}")
        return cls(**values).validate()
