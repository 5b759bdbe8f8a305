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


@dataclass
class TrainConfig:
    """Optimisation and run settings (``dwrec train --help`` documents each flag)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    patience: int = 5
    device: str = "auto"
    compile: bool = False
    amp: bool = True
    split: str = "loo"
    eval_batch_size: int = 512

    def validate(self) -> TrainConfig:
        for flag, value, low in (
            ("--epochs", self.epochs, 1),
            ("--batch-size", self.batch_size, 1),
            ("--patience", self.patience, 1),
            ("--eval-batch-size", self.eval_batch_size, 1),
        ):
            if value < low:
                raise UsageError(f"{flag} must be >= {low}, got {value}")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UsageError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.split not in SCHEMES:
            raise UsageError(f"--split must be one of {', '.join(SCHEMES)}, got {self.split!r}")
        device = self.device
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
        return self


TOP_LEVEL = ("dataset", "model", "label", "out")
SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig}


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

    @property
    def run_label(self) -> str:
        """``--label``, default ``{model}+{loss label}`` (e.g. ``sasrec+dynamic``)."""
        return self.label or f"{self.model_name}+{self.loss.label}"


def _section_of() -> dict[str, str]:
    owner: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            owner[f.name] = section
    for key in TOP_LEVEL:
        owner[key] = "top"
    return owner


OPTION_SECTION = _section_of()
_HINTS = {section: typing.get_type_hints(cls) for section, cls in SECTIONS.items()}


def option_names() -> list[str]:
    return sorted(OPTION_SECTION)


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
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if key in SECTIONS and isinstance(value, dict):
            known = [f.name for f in dataclasses.fields(SECTIONS[key])]
            for inner, inner_value in value.items():
                if key == "model" and inner == "name":
                    flat["model"] = inner_value
                    continue
                if inner not in known:
                    raise _unknown(inner, f"{path} [{key}]", known)
                flat[inner] = inner_value
        elif key in OPTION_SECTION:
            flat[key] = value
        else:
            raise _unknown(key, str(path), option_names())
    return flat


def resolve(options: dict[str, Any], config_file: str | Path | None = None) -> RunConfig:
    """Defaults, overridden by ``config_file`` (TOML), overridden by ``options`` (flat names;
    ``None`` values mean "not given")."""
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in OPTION_SECTION:
            raise _unknown(key, "train()", option_names())
    from_file = flatten_file(Path(config_file)) if config_file is not None else {}
    model_name = given.get("model", from_file.get("model", "sasrec"))
    if not isinstance(model_name, str):
        raise UsageError(f"{config_file}: option 'model' needs a model name, got {model_name!r}")
    from dwrec.models.registry import default_config

    sections: dict[str, dict[str, Any]] = {
        "model": asdict(default_config(model_name)),
        "loss": LossConfig().to_dict(),
        "train": asdict(TrainConfig()),
    }
    top: dict[str, Any] = {}
    for source, where_from in ((from_file, str(config_file)), (given, None)):
        for key, value in source.items():  # a bad value is an error even when overridden
            section = OPTION_SECTION[key]
            if section == "top":
                top[key] = value
                continue
            label = where_from or f"--{key.replace('_', '-')}"
            hint = _HINTS[section][key]
            sections[section][key] = _checked_value(key, value, hint, label)
    config = RunConfig(
        model_name=model_name,
        model=ModelConfig(**sections["model"]),
        loss=LossConfig.from_dict(sections["loss"]),
        train=TrainConfig(**sections["train"]).validate(),
        dataset=None if top.get("dataset") is None else str(top["dataset"]),
        label=top.get("label"),
        out=None if top.get("out") is None else str(top["out"]),
    )
    return config


def config_sections(config: RunConfig) -> dict[str, Any]:
    """The ``model``, ``loss`` and ``train`` parts of ``config.json``."""
    train = asdict(config.train)
    train.pop("split")
    return {
        "model": {"name": config.model_name, **asdict(config.model)},
        "loss": config.loss.to_dict(),
        "train": train,
    }


def from_saved(saved: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig` from a run's ``config.json``."""
    model = dict(saved["model"])
    name = model.pop("name")
    train = dict(saved["train"])
    train["split"] = saved["split"]["scheme"]
    known_train = {f.name for f in dataclasses.fields(TrainConfig)}
    return RunConfig(
        model_name=name,
        model=ModelConfig(**model),
        loss=LossConfig.from_dict(saved["loss"]),
        train=TrainConfig(**{k: v for k, v in train.items() if k in known_train}).validate(),
        dataset=saved["dataset"]["path"],
        label=saved.get("label"),
    )
