"""A training run's configuration: defaults, then a TOML file, then flags (later wins).

Every option has one flat name, the flag without its dashes (``--batch-size`` ->
``batch_size``), and belongs to one section: ``model`` (:class:`ModelConfig`), ``loss``
(:class:`LossConfig`), ``train`` (:class:`TrainConfig`) or the top level (``dataset``,
``model`` = the model's name, ``label``, ``out``). A TOML file may use the flat names at its
top level or inside ``[model]``, ``[loss]``, ``[train]`` tables::

    model = "sasrec"
    loss = "dynamic"
    epochs = 50
    [model]
    hidden = 128

An unknown key, or a value of the wrong type, is an error naming the key and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dwrec.data.split import SCHEMES
from dwrec.errors import DataFormatError, UsageError
from dwrec.losses.config import LossConfig
from dwrec.models.base import ModelConfig
from dwrec.rundir import TRAIN_KEYS_ADDED
from dwrec.train.batches import BATCH_ORDERS
from dwrec.train.steps import SCHEDULES


@dataclass
class TrainConfig:
    """Optimisation and run settings (``dwrec train --help`` documents each flag)."""

    epochs: int = field(default=100, metadata={"help": "Maximum epochs"})
    batch_size: int = field(default=128, metadata={"help": "Sequences per batch"})
    batch_order: str = field(
        default="random",
        metadata={
            "help": "random: a fresh random permutation each epoch; by-length: the same, "
            "then windows of similar length share a batch, in random batch order (less "
            "padding to compute; batches are less mixed)"
        },
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW weight decay on matrices", "default_text": "0"}
    )
    lr_schedule: str = field(
        default="constant",
        metadata={
            "help": "Learning rate after warm-up: constant, or linear / cosine decay to 0 "
            "at the end of --epochs (the horizon is fixed when the run starts)"
        },
    )
    warmup_steps: int = field(
        default=0,
        metadata={"help": "Optimiser steps of linear learning-rate warm-up from 0 to --lr"},
    )
    seed: int = field(default=0, metadata={"help": "Random seed"})
    patience: int = field(
        default=5,
        metadata={"help": "Stop after this many epochs without a better valid NDCG@10"},
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    compile: bool = field(
        default=False, metadata={"help": "torch.compile the model", "default_text": "no"}
    )
    amp: bool = field(
        default=True, metadata={"help": "bf16 autocast on CUDA", "default_text": "amp"}
    )
    split: str = field(default="loo", metadata={"help": "loo or ratio"})
    eval_batch_size: int = field(default=512, metadata={"help": "Validation batch size"})

    def validate(self) -> TrainConfig:
        for flag, value, low in (
            ("--epochs", self.epochs, 1),
            ("--batch-size", self.batch_size, 1),
            ("--patience", self.patience, 1),
            ("--warmup-steps", self.warmup_steps, 0),
            ("--eval-batch-size", self.eval_batch_size, 1),
        ):
            if value < low:
                raise UsageError(f"{flag} must be >= {low}, got {value}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.lr_schedule not in SCHEDULES:
            raise UsageError(
                f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if self.batch_order not in BATCH_ORDERS:
            raise UsageError(
                f"--batch-order must be one of {', '.join(BATCH_ORDERS)}, got {self.batch_order!r}"
            )
        if self.split not in SCHEMES:
            raise UsageError(f"--split must be one of {', '.join(SCHEMES)}, got {self.split!r}")
        device = self.device
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
        return self


TOP_LEVEL = ("dataset", "model", "label", "out")
SECTION_NAMES = ("model", "loss", "train")


@dataclass(frozen=True)
class OptionSpec:
    """One option: its flat name, section, type, default and help, and the config class
    that owns it (the CLI, TOML files and ``--set`` are generated from these)."""

    name: str
    section: str
    hint: Any
    default: Any
    help: str
    default_text: str | None
    owners: tuple[str, ...] = ()


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _config_classes(section: str) -> list[tuple[str, type]]:
    """``(owner name, config class)`` of every registered class of a section."""
    if section == "train":
        return [("train", TrainConfig)]
    if section == "model":
        from dwrec.models.registry import model_class, model_names

        return [(name, model_class(name).config_class) for name in model_names()]
    from dwrec.losses.config import loss_classes

    return [(cls.name, cls.config_class) for cls in loss_classes()]


def option_specs() -> dict[str, OptionSpec]:
    """Every option of every section, in declaration order (models: the common options
    first; a name several classes share is one option, listed once)."""
    specs: dict[str, OptionSpec] = {
        "loss": OptionSpec("loss", "loss", str, "ce", "Objective or domain weighting", None),
        "objective": OptionSpec(
            "objective", "loss", str, "ce", "Objective under a domain weighting", None
        ),
    }
    for section in SECTION_NAMES:
        for owner, cls in _config_classes(section):
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if f.name in specs:
                    known = specs[f.name]
                    if known.section != section:
                        raise ValueError(f"option {f.name!r} is declared in two sections")
                    if owner not in known.owners:
                        specs[f.name] = dataclasses.replace(known, owners=(*known.owners, owner))
                    continue
                specs[f.name] = OptionSpec(
                    name=f.name,
                    section=section,
                    hint=hints[f.name],
                    default=_field_default(f),
                    help=f.metadata.get("help", ""),
                    default_text=f.metadata.get("default_text"),
                    owners=(owner,),
                )
    return specs


def option_section() -> dict[str, str]:
    """``{flat option name: "model" | "loss" | "train" | "top"}``."""
    owner = {name: spec.section for name, spec in option_specs().items()}
    owner.update({key: "top" for key in TOP_LEVEL})
    return owner


@dataclass
class RunConfig:
    """Everything ``train`` needs, resolved."""

    model_name: str = "sasrec"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str | None = None
    label: str | None = None
    out: str | None = None
    plugins: list[dict] = field(default_factory=list)

    @property
    def run_label(self) -> str:
        """``--label``, default ``{model}+{loss label}`` (e.g. ``sasrec+dynamic``); a model
        without gradient training (pop) is labelled by its name (the loss plays no part)."""
        if self.label:
            return self.label
        from dwrec.models.registry import model_class

        if not model_class(self.model_name).trainable:
            return self.model_name
        return f"{self.model_name}+{self.loss.label}"


def option_names() -> list[str]:
    return sorted(option_section())


def _unknown(key: str, where: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UsageError(f"{where}: unknown option {key!r}.{hint}")


def _checked_value(key: str, value: Any, hint: Any, where: str) -> Any:
    """``value`` converted to ``hint``'s type, or a :class:`UsageError` naming ``key``."""
    if value is None:
        return None
    args = typing.get_args(hint)
    if type(None) in args:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    wrong = UsageError(f"{where}: option {key!r} needs {_type_name(hint)}, got {value!r}")
    if origin is list:
        items = [value] if isinstance(value, (str, int, float)) else value
        if not isinstance(items, (list, tuple)):
            raise wrong
        return [_checked_value(key, item, args[0], where) for item in items]
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if hint is str and not isinstance(value, str):
        raise wrong
    return value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


def flatten_file(path: Path) -> dict[str, Any]:
    """Read a TOML config file into flat ``{option: value}``; check section membership."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError(
                "--config needs Python 3.11+ (tomllib) or `pip install tomli`"
            ) from None
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--config {path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise DataFormatError(path, f"not valid TOML ({exc})") from None
    sections = option_section()
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in SECTION_NAMES and isinstance(value, dict):
            known = [name for name, section in sections.items() if section == key]
            for inner, inner_value in value.items():
                if key == "model" and inner == "name":
                    flat["model"] = inner_value
                    continue
                if inner not in known:
                    raise _unknown(inner, f"{path} [{key}]", known)
                flat[inner] = inner_value
        elif key in sections:
            flat[key] = value
        else:
            raise _unknown(key, str(path), option_names())
    return flat


def parse_set(assignments: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` (repeatable) -> flat options; each value is read as a TOML value
    (``3``, ``0.5``, ``true``, ``[0.9, 0.6]``, ``"x"``), falling back to the bare string."""
    import tomllib

    values: dict[str, Any] = {}
    sections = option_section()
    for assignment in assignments or []:
        key, sep, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--set {assignment!r}: expected KEY=VALUE")
        if key not in sections:
            raise _unknown(key, f"--set {assignment}", option_names())
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        values[key] = value
    return values


def resolve(options: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """Defaults, overridden by ``config_file`` (TOML), overridden by ``options`` (flat names;
    ``None`` values mean "not given")."""
    sections_of = option_section()
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in sections_of:
            raise _unknown(key, "train()", option_names())
    from_file = flatten_file(Path(config_file)) if config_file is not None else {}
    model_name = given.get("model", from_file.get("model", "sasrec"))
    if not isinstance(model_name, str):
        raise UsageError(f"{config_file}: option 'model' needs a model name, got {model_name!r}")
    from dwrec.models.registry import default_config, model_class, model_config

    model_fields = typing.get_type_hints(model_class(model_name).config_class)
    sections: dict[str, dict[str, Any]] = {
        "model": asdict(default_config(model_name)),
        "loss": {},
        "train": asdict(TrainConfig()),
    }
    specs = option_specs()
    top: dict[str, Any] = {}
    for source, where_from in ((from_file, str(config_file)), (given, None)):
        for key, value in source.items():  # a bad value is an error even when overridden
            section = sections_of[key]
            if section == "top":
                top[key] = value
                continue
            label = where_from or f"--{key.replace('_', '-')}"
            if section == "model" and key not in model_fields:
                owners = ", ".join(specs[key].owners)
                raise UsageError(f"{label}: {key!r} is an option of --model {owners}, "
                                 f"not of --model {model_name}")  # fmt: skip
            sections[section][key] = _checked_value(key, value, specs[key].hint, label)
    config = RunConfig(
        model_name=model_name,
        model=model_config(model_name, sections["model"]),
        loss=LossConfig.from_dict(sections["loss"]),
        train=TrainConfig(**sections["train"]).validate(),
        dataset=None if top.get("dataset") is None else str(top["dataset"]),
        label=top.get("label"),
        out=None if top.get("out") is None else str(top["out"]),
    )
    return config


def config_sections(config: RunConfig) -> dict[str, Any]:
    """The ``model``, ``loss`` and ``train`` parts of ``config.json``."""
    from dwrec.models.registry import model_config_dict

    train = asdict(config.train)
    train.pop("split")
    return {
        "model": model_config_dict(config.model_name, config.model),
        "loss": config.loss.to_dict(),
        "train": train,
    }


def from_saved(saved: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from a run's ``config.json``."""
    from dwrec.models.registry import model_config

    model = dict(saved["model"])
    name = model.pop("name")
    train = dict(saved["train"])
    train["split"] = saved["split"]["scheme"]
    for key, value in TRAIN_KEYS_ADDED.items():  # options the saved run predates
        train.setdefault(key, value)
    known_train = {f.name for f in dataclasses.fields(TrainConfig)}
    return RunConfig(
        model_name=name,
        model=model_config(name, model),
        loss=LossConfig.from_dict(saved["loss"]),
        train=TrainConfig(**{k: v for k, v in train.items() if k in known_train}).validate(),
        dataset=saved["dataset"]["path"],
        label=saved.get("label"),
        plugins=list(saved.get("plugins", [])),
    )
