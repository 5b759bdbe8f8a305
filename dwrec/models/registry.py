"""Model registry: ``--model NAME`` -> class. Each model module registers itself on import,
so adding a model touches no other model (only the module list below)."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from pathlib import Path
from typing import Any

from dwrec.errors import DataFormatError, UsageError
from dwrec.io import load_checkpoint
from dwrec.models.base import ModelConfig, SequentialModel
from dwrec.rundir import BEST_CHECKPOINT

_MODULES = (
    "sasrec",
    "bert4rec",
    "gru4rec",
    "pinnerformer",
    "pop",
    "sigma",
    "calrec",
    "sparseennet",
)
_REGISTRY: dict[str, type[SequentialModel]] = {}


def register(cls: type[SequentialModel]) -> type[SequentialModel]:
    """Class decorator: make ``cls`` available as ``--model cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import every module of the registry (each registers itself; imports are cached)."""
    for module in _MODULES:
        importlib.import_module(f"dwrec.models.{module}")


def model_names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[SequentialModel]:
    _load_all()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.4)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UsageError(f"--model {name!r} is not known.{hint} Models: {', '.join(model_names())}")
    return _REGISTRY[name]


CONFIG_V1_OPTIONS = {"mask_prob": 0.2}
"""Options the first ``config.json`` format wrote for every model (then one flat config):
still written (with that default) for a model that does not own them, so that runs stay
comparable with older runs, and dropped again when read."""


def default_config(name: str) -> ModelConfig:
    """The model's own defaults (``pinnerformer`` differs from the SASRec-sized default)."""
    return model_class(name).config_class()


def model_config(name: str, values: dict | ModelConfig | None = None) -> ModelConfig:
    """``values`` (flat options, or a config of another class) as ``name``'s config class;
    an unknown option is a :class:`UsageError`; the ranges are checked."""
    cls = model_class(name).config_class
    if isinstance(values, ModelConfig):
        if type(values) is cls:
            return values
        values = dataclasses.asdict(values)
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known - {"name"} - set(CONFIG_V1_OPTIONS))
    if unknown:
        raise UsageError(f"unknown option(s) for --model {name}: {', '.join(unknown)}")
    config = cls(**{k: v for k, v in values.items() if k in known})
    config.validate()
    return config


def model_config_dict(name: str, config: ModelConfig) -> dict:
    """The ``config.json`` "model" section: the name, the model's options and the first
    format's options (:data:`CONFIG_V1_OPTIONS`)."""
    return {"name": name, **CONFIG_V1_OPTIONS, **dataclasses.asdict(config)}


def build_model(name: str, n_items: int, config: ModelConfig | None = None) -> SequentialModel:
    """``name``'s model for ``n_items`` items; ``config`` may be the base
    :class:`ModelConfig` (the model's own options then keep their defaults)."""
    cls = model_class(name)
    if not isinstance(config, cls.config_class):
        config = model_config(name, config)
    return cls(n_items, config)


def model_config_from_dict(values: dict, name: str = "sasrec") -> ModelConfig:
    """Compatibility alias of :func:`model_config` (``values`` may hold ``"name"``)."""
    return model_config(values.get("name", name), values)


def load_model(run_dir: str | Path, config: dict, dataset: Any) -> SequentialModel:
    """Rebuild a run's model from ``config.json`` and its best state ``model.pt``.

    ``dataset``: the :class:`~dwrec.data.dataset.Dataset` evaluated on (the model's
    :meth:`~SequentialModel.bind_dataset` sees it before the state is loaded), or just its
    fingerprint. The checkpoint is loaded with ``weights_only=True`` and must have been
    trained on that dataset.
    """
    dataset_fingerprint = dataset if isinstance(dataset, str) else dataset.fingerprint
    run_dir = Path(run_dir)
    path = run_dir / BEST_CHECKPOINT
    state = load_checkpoint(path, f"no {BEST_CHECKPOINT}: has this run finished training?")
    if not isinstance(state, dict) or "model_state" not in state:
        raise DataFormatError(path, "not a dwrec checkpoint (no model_state)")
    if state.get("dataset_fingerprint") != dataset_fingerprint:
        raise DataFormatError(
            path,
            f"trained on dataset {state.get('dataset_fingerprint')}, "
            f"but the dataset given has fingerprint {dataset_fingerprint}",
        )
    model_cfg = dict(config["model"])
    name = model_cfg.pop("name")
    model = build_model(name, int(state["n_items"]), model_config(name, model_cfg))
    if not isinstance(dataset, str):
        model.bind_dataset(dataset)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        raise DataFormatError(path, f"state does not fit model {name} ({exc})") from None
    model.eval()
    return model
