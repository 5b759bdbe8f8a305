"""Loss configuration: which objective, which domain weighting, and their options.

``--loss`` names either an objective (``ce``, ``sampled-softmax``, ``bce``, ``gbce``, ``dsl``,
``mml``: trained without domain weights) or a domain weighting (``generic``, ``fixed``,
``dynamic``, ``adc``: composed with ``--objective``, default ``ce``).

Each objective and weighting owns its options as a typed config (``config_class``, a
dataclass of :class:`~dwrec.losses.base.LossOptions`). :class:`LossConfig` is the run's
flat view of them: the two names plus every registered class's options by their flat name
(``config.ema_beta``), which is what flags, TOML files and ``config.json`` use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dwrec.errors import UsageError
from dwrec.losses.base import OBJECTIVE_CLASSES, WEIGHTING_CLASSES, LossOptions

OBJECTIVES = ("ce", "sampled-softmax", "bce", "gbce", "dsl", "mml")
"""The built-in objectives (plugins add to :data:`~dwrec.losses.base.OBJECTIVE_CLASSES`)."""
WEIGHTINGS = ("generic", "fixed", "dynamic", "adc")
"""The built-in domain weightings."""

CONFIG_V1_OPTIONS = (
    "softmax_chunk", "negatives", "gbce_t", "weight_domains", "fixed_weight", "ema_beta",
    "weight_alpha", "weight_scale", "w_min", "w_max", "sparsity_signal", "multi_domain",
    "weight_reduction", "dsl_lh", "dsl_ls", "dsl_m", "dsl_t0", "dsl_k", "dsl_tmin", "dsl_tmax",
    "mml_margins", "mml_weights", "adc_gamma", "adc_lr",
)  # fmt: skip
"""The options every ``config.json`` "loss" section holds (the layout of the first format,
kept so that runs stay comparable with older runs); a plugin class's own options are
written besides when it is selected."""


def _load_builtins() -> None:
    import dwrec.losses.registry  # noqa: F401 - registers the built-in classes


def loss_classes() -> list[type]:
    """Every registered objective and weighting class (built-ins first, then plugins)."""
    _load_builtins()
    return [*OBJECTIVE_CLASSES.values(), *WEIGHTING_CLASSES.values()]


def option_fields() -> dict[str, tuple[dataclasses.Field, type]]:
    """``{flat name: (dataclass field, owning config class)}`` over every registered class
    (a name two classes share appears once, with the first owner)."""
    fields: dict[str, tuple[dataclasses.Field, type]] = {}
    for cls in loss_classes():
        for f in dataclasses.fields(cls.config_class):
            fields.setdefault(f.name, (f, cls.config_class))
    return fields


def option_defaults() -> dict[str, Any]:
    values = {}
    for name, (f, _) in option_fields().items():
        values[name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return values


def is_weighting(name: str) -> bool:
    """Whether ``--loss name`` is a registered domain weighting (composed with an objective)."""
    _load_builtins()
    return name in WEIGHTING_CLASSES


def learns_weights(name: str) -> bool:
    """Whether ``--loss name`` is a registered domain weighting that declares the
    ``learns_weights`` capability (the report shows its final domain weights)."""
    _load_builtins()
    cls = WEIGHTING_CLASSES.get(name)
    return cls is not None and bool(cls.learns_weights)


class LossConfig:
    """``loss``, ``objective`` and every option of the registered classes (flat).

    ``LossConfig(loss="dynamic", w_max=5.0)``; options read as attributes
    (``config.w_max``); :meth:`objective_config` / :meth:`weighting_config` give the typed
    configs of the classes the run uses.

    An option not given takes the default of the selected objective's or weighting's config
    class when that class declares it (a class may give a shared option its own default:
    ``dsl`` declares ``negatives`` 1024, the other sampled objectives 256), else the default
    of the first class that declares it. ``config.json`` records the values used.
    """

    def __init__(self, loss: str = "ce", objective: str = "ce", **options: Any):
        defaults = option_defaults()
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise UsageError(f"unknown loss option(s): {', '.join(unknown)}")
        self.__dict__.update(loss=loss, objective=objective, defaults=defaults, given=options)

    @property
    def options(self) -> dict[str, Any]:
        """Every option's value: given, else the selected classes' default, else the first
        declaring class's."""
        selected: dict[str, Any] = {}
        for cls in self._selected_classes():
            for f in dataclasses.fields(cls.config_class):
                if f.default is not dataclasses.MISSING:
                    selected[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    selected[f.name] = f.default_factory()
        return {**self.__dict__["defaults"], **selected, **self.__dict__["given"]}

    def _selected_classes(self) -> list[type]:
        _load_builtins()
        weighting = WEIGHTING_CLASSES.get(self.loss)
        objective = OBJECTIVE_CLASSES.get(self.objective if weighting else self.loss)
        return [cls for cls in (objective, weighting) if cls is not None]

    def is_given(self, name: str) -> bool:
        """Whether option ``name`` was given (flag, file, ``config.json``), not defaulted."""
        return name in self.__dict__["given"]

    def __getattr__(self, name: str) -> Any:
        if "given" not in self.__dict__:
            raise AttributeError(name)
        options = self.options
        if name in options:
            return options[name]
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("loss", "objective"):
            self.__dict__[name] = value
        elif name in self.__dict__["defaults"]:
            self.__dict__["given"][name] = value
        else:
            raise AttributeError(f"unknown loss option {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LossConfig) and self.to_dict(every=True) == other.to_dict(
            every=True
        )

    def __repr__(self) -> str:
        return f"LossConfig(loss={self.loss!r}, objective={self.objective!r}, ...)"

    @property
    def objective_name(self) -> str:
        """The objective actually trained."""
        return self.objective if is_weighting(self.loss) else self.loss

    @property
    def weighting_name(self) -> str:
        """The domain weighting actually used (``generic`` = none)."""
        return self.loss if is_weighting(self.loss) else "generic"

    @property
    def label(self) -> str:
        """Short label: ``dynamic``, ``dynamic/sampled-softmax``, ``bce``..."""
        return loss_label(self.loss, self.objective)

    def objective_class(self) -> type:
        return OBJECTIVE_CLASSES[self.objective_name]

    def weighting_class(self) -> type:
        return WEIGHTING_CLASSES[self.weighting_name]

    def typed(self, config_class: type[LossOptions]) -> LossOptions:
        """The options of ``config_class``, as that dataclass."""
        names = [f.name for f in dataclasses.fields(config_class)]
        options = self.options
        return config_class(**{name: options[name] for name in names})

    def objective_config(self) -> LossOptions:
        return self.typed(self.objective_class().config_class)

    def weighting_config(self) -> LossOptions:
        return self.typed(self.weighting_class().config_class)

    def bind_dataset(self, dataset: Any) -> None:
        """Let the selected classes resolve their options against ``dataset``
        (:meth:`~dwrec.losses.base.LossOptions.bind_dataset`); the results are kept. A
        *default* number of sampled negatives is capped at the catalogue size minus 1 (a
        given one above it stays an error)."""
        options = self.options
        for typed in (self.objective_config(), self.weighting_config()):
            typed.bind_dataset(dataset)
            for f in dataclasses.fields(typed):
                if getattr(typed, f.name) != options[f.name]:
                    self.__dict__["given"][f.name] = getattr(typed, f.name)
        n_items = getattr(dataset, "n_items", None)
        if not self.is_given("negatives") and n_items and options["negatives"] >= n_items:
            self.__dict__["given"]["negatives"] = max(n_items - 1, 1)
        if self.options.get("weight_domains"):  # given, even if unused: it must name domains
            from dwrec.losses.domains import domain_names_in

            domain_names_in(list(self.options["weight_domains"]), dataset)

    def validate(self) -> LossConfig:
        """Check the names and every class's option ranges; then what the selected classes
        require (e.g. ``fixed`` needs ``--weight-domains``)."""
        _load_builtins()
        if self.loss not in OBJECTIVE_CLASSES and self.loss not in WEIGHTING_CLASSES:
            raise UsageError(
                f"--loss {self.loss!r} is not known; objectives: "
                f"{', '.join(OBJECTIVE_CLASSES)}; domain weightings: "
                f"{', '.join(WEIGHTING_CLASSES)}"
            )
        if self.objective not in OBJECTIVE_CLASSES:
            raise UsageError(f"--objective must be one of {', '.join(OBJECTIVE_CLASSES)}")
        seen: set[type] = set()
        for cls in loss_classes():
            if cls.config_class not in seen:
                seen.add(cls.config_class)
                self.typed(cls.config_class).validate()
        for typed in (self.weighting_config(), self.objective_config()):
            require = getattr(typed, "require", None)
            if require is not None:
                require()
        return self

    def to_dict(self, every: bool = False) -> dict:
        """The ``config.json`` "loss" section: the names, the options of the first format
        (:data:`CONFIG_V1_OPTIONS`) and those of the selected classes (``every``: all)."""
        keep = set(CONFIG_V1_OPTIONS)
        if every:
            keep = set(self.options)
        elif self.loss in OBJECTIVE_CLASSES or self.loss in WEIGHTING_CLASSES:
            for cls in (self.objective_class(), self.weighting_class()):
                keep.update(f.name for f in dataclasses.fields(cls.config_class))
        values = {k: v for k, v in self.options.items() if k in keep}
        return {"loss": self.loss, "objective": self.objective, **_copied(values)}

    @classmethod
    def from_dict(cls, values: dict) -> LossConfig:
        return cls(**values).validate()


def _copied(values: dict) -> dict:
    return {k: list(v) if isinstance(v, list) else v for k, v in values.items()}


def loss_label(loss: str, objective: str) -> str:
    """``dynamic``, ``dynamic/sampled-softmax`` (a weighting over another objective), ``bce``."""
    if is_weighting(loss) and objective != "ce":
        return f"{loss}/{objective}"
    return loss
