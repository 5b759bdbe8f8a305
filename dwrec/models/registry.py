"""Model registry: ``--model NAME`` -> class. Each model module registers itself on import,
so adding a model touches no other model (only the module list below)."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from pathlib import Path

from dwrec.errors import DataFormatError, UsageError
from dwrec.io import load_checkpoint
from dwrec.models.base import ModelConfig, SequentialModel

_MODULES = ("sasrec", "bert4rec", "gru4rec", "pinnerformer", "pop")
_MODULES += ("calrec", "sparseennet")  # models with bind_dataset / auxiliary_loss hooks
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


def default_config(name: str) -> ModelConfig:
    """The model's own defaults (``pinnerformer`` differs from the SASRec-sized default)."""
    cls = model_class(name)
    return getattr(cls, "default_config", ModelConfig)()


def build_model(name: str, n_items: int, config: ModelConfig) -> SequentialModel:
    return model_class(name)(n_items, config)


def model_config_from_dict(values: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - known - {"name"})
    if unknown:
        raise UsageError(f"unknown model option(s): {', '.join(unknown)}")
    return ModelConfig(**{k: v for k, v in values.items() if k in known})


def load_model(
    run_dir: str | Path, config: dict, dataset_fingerprint: str, dataset=None
) -> SequentialModel:
    """Rebuild a run's model from ``config.json`` and its best state ``model.pt``.

    ``dataset`` (the run's dataset) is handed to ``model.bind_dataset`` before the state is
    loaded (models with data-dependent parameters need it). The checkpoint is loaded with
    ``weights_only=True`` and must have been trained on the dataset whose fingerprint is
    given.
    """
    run_dir = Path(run_dir)
    path = run_dir / "model.pt"
    state = load_checkpoint(path, "no model.pt: has this run finished training?")
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
    model = build_model(name, int(state["n_items"]), model_config_from_dict(model_cfg))
    if dataset is not None:
        model.bind_dataset(dataset)
    try:
        model.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        raise DataFormatError(path, f"state does not fit model {name} ({exc})") from None
    model.eval()
    return model
