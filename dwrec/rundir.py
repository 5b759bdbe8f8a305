"""The run-dir contract, in one place (docs/train.md, docs/evaluate.md).

A run dir holds what ``dwrec train`` wrote (``config.json``, ``environment.json``,
``model.pt``, ``last.pt``, ``log.jsonl``, ``train_done.json``) and what ``dwrec evaluate``
wrote (``per_user.parquet`` + ``metrics.json``, or ``per_user.valid.parquet`` +
``metrics.valid.json``). :class:`RunDir` names those files, reads and writes the config,
checks a run's dataset and split against the fingerprints it recorded, and says whether the
run finished training and was evaluated. No other module spells a run-dir file name.

This module is a leaf: it imports no torch and nothing above :mod:`dwrec.io`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dwrec.errors import DataFormatError, DwrecError, UsageError
from dwrec.io import atomic_path, read_json, write_json

CONFIG = "config.json"
ENVIRONMENT = "environment.json"
BEST_CHECKPOINT = "model.pt"
LAST_CHECKPOINT = "last.pt"
LOG = "log.jsonl"
TRAIN_DONE = "train_done.json"
PER_USER = "per_user.parquet"
METRICS = "metrics.json"
DATASET_META = "dataset.json"  # inside a dataset dir: tells a dataset dir


def output_names(split: str) -> tuple[str, str]:
    """File names of the per-case table and the metrics of an evaluation on ``split``."""
    if split == "test":
        return PER_USER, METRICS
    return f"per_user.{split}.parquet", f"metrics.{split}.json"


def run_label(config: dict) -> str:
    """A run's label: config.json's ``"label"``, else ``{model}+{loss label}`` as ``dwrec
    train`` names runs (``sasrec+dynamic``, ``sasrec+dynamic/bce``)."""
    if config.get("label"):
        return str(config["label"])
    from dwrec.losses.config import loss_label

    model = config.get("model", {}).get("name", "model")
    loss = config.get("loss", {})
    return f"{model}+{loss_label(loss.get('loss', 'ce'), loss.get('objective', 'ce'))}"


class RunDir:
    """One run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # -- files

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def environment_path(self) -> Path:
        return self.path / ENVIRONMENT

    @property
    def best_checkpoint(self) -> Path:
        return self.path / BEST_CHECKPOINT

    @property
    def last_checkpoint(self) -> Path:
        return self.path / LAST_CHECKPOINT

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    @property
    def done_path(self) -> Path:
        return self.path / TRAIN_DONE

    def outputs(self, split: str = "test", out: str | Path | None = None) -> tuple[Path, Path]:
        """``(per-case table, metrics)`` paths of an evaluation on ``split`` written to
        ``out`` (default: this run dir)."""
        folder = Path(out) if out is not None else self.path
        table, metrics = output_names(split)
        return folder / table, folder / metrics

    # -- state

    def has_config(self) -> bool:
        return self.config_path.exists()

    def is_finished(self) -> bool:
        """True when ``dwrec train`` marked the run complete (``train_done.json``)."""
        return self.done_path.exists()

    def is_evaluated(self, split: str = "test") -> bool:
        table, metrics = self.outputs(split)
        return table.exists() and metrics.exists()

    # -- config

    def read_config(self, with_plugins: bool = False) -> dict:
        """``config.json``; ``with_plugins``: also import the plugins the run recorded
        (checked against their SHA-256), so that its classes are known."""
        config = read_json(self.config_path)
        if with_plugins and isinstance(config, dict) and config.get("plugins"):
            from dwrec.plugins import load_recorded

            load_recorded(config["plugins"], self.config_path)
        return config

    def write_config(self, document: dict, environment: dict | None = None) -> None:
        write_json(self.config_path, document)
        if environment is not None:
            write_json(self.environment_path, environment)

    def label(self) -> str:
        return run_label(self.read_config())

    def write_done(self, summary: dict) -> None:
        write_json(self.done_path, summary)

    def clear_done(self) -> None:
        self.done_path.unlink(missing_ok=True)

    # -- the epoch log

    def read_log(self) -> list[dict]:
        """The records of ``log.jsonl`` (empty when there is none); a bad line is a
        :class:`DataFormatError` naming it."""
        if not self.log_path.exists():
            return []
        records = []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataFormatError(self.log_path, f"not valid JSON ({exc})", number) from None
        return records

    def write_log(self, records: list[dict]) -> None:
        text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
        with atomic_path(self.log_path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    # -- dataset and split, checked against the fingerprints the run recorded

    def recorded_data(self, config: dict | None = None) -> tuple[Path, str, str | None, str]:
        """``(dataset path, split scheme, dataset fingerprint, split fingerprint)`` from the
        config; a :class:`DataFormatError` naming config.json when a field is missing."""
        config = self.read_config() if config is None else config
        try:
            data, split = config["dataset"], config["split"]
            return Path(data["path"]), split["scheme"], data["fingerprint"], split["fingerprint"]
        except (KeyError, TypeError) as exc:
            raise DataFormatError(
                self.config_path, f"missing or invalid field {exc} (run-dir contract)"
            ) from None

    def load_data(self, config: dict | None = None, *, resuming: bool = False) -> tuple[Any, Any]:
        """The run's dataset and split, each checked against the fingerprint the run
        recorded (the one check, shared by ``train --resume`` and ``evaluate``)."""
        from dwrec.data.dataset import load_dataset
        from dwrec.data.split import make_split

        config = self.read_config() if config is None else config
        data_path, scheme, data_fingerprint, split_fingerprint = self.recorded_data(config)
        name = config["dataset"].get("name")
        if not (data_path / DATASET_META).exists():
            raise DwrecError(
                f"{self.config_path}: dataset {name!r} is missing at {data_path}; prepare it "
                f"again there (`dwrec prepare {name} --out {data_path}`)"
            )
        dataset = load_dataset(data_path)
        if dataset.fingerprint != data_fingerprint:
            when = "the run started" if resuming else "training"
            raise DwrecError(
                f"{self.config_path}: the dataset at {data_path} has changed since {when} "
                f"(fingerprint {dataset.fingerprint}, the run was trained on "
                f"{data_fingerprint}); use the original data"
            )
        split = make_split(dataset, scheme)
        if split.fingerprint != split_fingerprint:
            raise DwrecError(
                f"{self.config_path}: split {scheme!r} of the dataset now has fingerprint "
                f"{split.fingerprint}, the run used {split_fingerprint}; was the split code "
                "or the dataset changed?"
            )
        return dataset, split

    def require(self, flag: str = "RUN") -> RunDir:
        """This run dir, or a :class:`UsageError` when it is not one (no config.json)."""
        if not self.path.is_dir():
            raise UsageError(f"{flag} {self.path}: no such run directory")
        if not self.has_config():
            raise UsageError(f"{flag} {self.path}: not a run dir (no {CONFIG})")
        return self
