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

import hashlib
import json
import math
import os
import statistics
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
EVALUATION_SPLITS = ("test", "valid")
TRAIN_KEYS_ADDED = {"lr_schedule": "constant", "warmup_steps": 0, "batch_order": "random"}
"""``config.json`` "train" options added after runs were written, with the value a run
written before them trained with: :meth:`RunDir.read_config` fills them in, so such a run
resumes as it trained and matches a new run of the same settings in ``dwrec report``."""
MODEL_KEYS_ADDED: dict[str, dict[str, Any]] = {"calrec": {"stage2_epochs": 0}}
"""The same for the "model" section, by model name: options a model gained after runs of it
were written, with the value those runs trained with."""
_DIGESTS: dict[tuple[str, int, int], str] = {}  # sha256 of model.pt by (path, size, mtime)


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

    # -- which checkpoint an evaluation evaluated (stale evaluations)

    def checkpoint_digest(self) -> str | None:
        """sha256 of ``model.pt`` (``None`` when there is none)."""
        path = self.best_checkpoint
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in _DIGESTS:  # a report reads each run's model.pt once
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            _DIGESTS[key] = digest.hexdigest()
        return _DIGESTS[key]

    def checkpoint_record(self) -> dict[str, Any]:
        """What an evaluation records about the state it evaluated (metrics.json
        ``"checkpoint"``): model.pt's sha256, the best epoch and epochs run so far, and
        whether training had finished."""
        record: dict[str, Any] = {"sha256": self.checkpoint_digest()}
        done = self._read_done()
        if done is not None:
            record["best_epoch"] = done.get("best_epoch")
            record["epochs_run"] = done.get("epochs_run")
        else:
            log = self._last_log_record()
            record["epochs_run"] = None if log is None else log.get("epoch")
        record["finished"] = self.is_finished()
        return record

    def stale_reason(self, metrics: dict, metrics_path: Path | None = None) -> str | None:
        """Why the evaluation ``metrics`` (read from ``metrics_path``) no longer describes
        this run's ``model.pt``, or ``None`` when it does. An evaluation records model.pt's
        sha256; one written before that was recorded is stale when model.pt is newer than
        its metrics file."""
        digest_now = self.checkpoint_digest()
        if digest_now is None:
            return None  # nothing to compare with (a folder of evaluation outputs only)
        recorded = metrics.get("checkpoint") if isinstance(metrics, dict) else None
        if isinstance(recorded, dict) and recorded.get("sha256"):
            if recorded["sha256"] == digest_now:
                return None
            epoch = recorded.get("best_epoch")
            at = f" (best epoch {epoch})" if epoch is not None else ""
            return f"it evaluated an earlier {BEST_CHECKPOINT}{at}; the run was trained since"
        if metrics_path is not None and metrics_path.exists():
            if self.best_checkpoint.stat().st_mtime_ns > metrics_path.stat().st_mtime_ns:
                return f"{BEST_CHECKPOINT} is newer than {metrics_path.name}"
        return None

    def evaluation_state(self, split: str = "test") -> str:
        """``"missing"``, ``"stale"`` (:meth:`stale_reason`) or ``"current"`` for the
        evaluation on ``split`` in this run dir."""
        metrics_path = self.outputs(split)[1]
        if not metrics_path.exists():  # written last: no metrics, no evaluation
            return "missing"
        try:
            metrics = read_json(metrics_path)
        except DwrecError:
            return "stale"
        return "stale" if self.stale_reason(metrics, metrics_path) else "current"

    def invalidate_evaluations(self) -> list[Path]:
        """Remove this run dir's evaluation outputs (called when ``model.pt`` is replaced):
        each metrics file before its per-case table, so that a kill in between leaves a
        table alone, which counts as not evaluated."""
        removed = []
        for split in EVALUATION_SPLITS:
            table, metrics = self.outputs(split)
            for path in (metrics, table):
                if path.exists():
                    path.unlink(missing_ok=True)
                    removed.append(path)
        return removed

    def _read_done(self) -> dict | None:
        if not self.done_path.exists():
            return None
        try:
            done = read_json(self.done_path)
        except DwrecError:
            return None
        return done if isinstance(done, dict) else None

    def final_domain_weights(self) -> dict[str, float] | None:
        """The domain weights the run ended with: ``train_done.json``'s, else those of the last
        ``log.jsonl`` line (an unfinished run); ``None`` when none were recorded."""
        done = self._read_done()
        weights = done.get("domain_weights") if done else None
        if not weights:
            records = self.read_log()  # a bad line is an error naming it
            last = records[-1] if records else None
            weights = last.get("domain_weights") if isinstance(last, dict) else None
        return {str(name): float(value) for name, value in weights.items()} if weights else None

    def _last_log_record(self) -> dict | None:
        try:
            records = self.read_log()
        except DwrecError:
            return None
        return records[-1] if records else None

    # -- config

    def read_config(self, with_plugins: bool = False) -> dict:
        """``config.json`` (options it predates filled in: ``TRAIN_KEYS_ADDED``,
        ``MODEL_KEYS_ADDED``);
        ``with_plugins``: also import the plugins the run recorded (checked against their
        SHA-256), so that its classes are known."""
        config = read_json(self.config_path)
        if isinstance(config, dict) and isinstance(config.get("train"), dict):
            train = config["train"]
            train.update({k: v for k, v in TRAIN_KEYS_ADDED.items() if k not in train})
        if isinstance(config, dict) and isinstance(config.get("model"), dict):
            model = config["model"]
            added = MODEL_KEYS_ADDED.get(model.get("name"), {})
            model.update({k: v for k, v in added.items() if k not in model})
        if with_plugins and isinstance(config, dict) and config.get("plugins"):
            from dwrec.plugins import load_recorded

            load_recorded(config["plugins"], self.config_path)
        return config

    def write_config(
        self, document: dict, environment: dict | None = None, resumed: bool = False
    ) -> None:
        """Write ``config.json`` and ``environment.json``. ``resumed``: the environments of
        the earlier invocations that trained this run are kept in the new one's ``earlier``
        list, oldest first, each with ``until_epoch`` (the epochs logged when it ended), so a
        run that spans commits, machines or versions records all of them."""
        write_json(self.config_path, document)
        if environment is not None:
            earlier = self.environment_history() if resumed else []
            write_json(
                self.environment_path, {**environment, **({"earlier": earlier} if earlier else {})}
            )

    def environment_history(self) -> list[dict]:
        """The invocations recorded so far (``environment.json`` and its ``earlier`` list),
        oldest first; the latest gets ``until_epoch``. Empty when there is no readable file."""
        if not self.environment_path.exists():
            return []
        try:
            latest = read_json(self.environment_path)
        except DataFormatError:
            return []  # a damaged record is not worth refusing a resume over
        if not isinstance(latest, dict):
            return []
        earlier = latest.pop("earlier", [])
        latest["until_epoch"] = len(self.read_log())
        return [*(earlier if isinstance(earlier, list) else []), latest]

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

    def step_seconds(self) -> float:
        """:func:`step_seconds` of this run's log."""
        return step_seconds(self.read_log())

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

    def load_data(
        self,
        config: dict | None = None,
        *,
        resuming: bool = False,
        dataset: str | os.PathLike | None = None,
    ) -> tuple[Any, Any]:
        """The run's dataset and split, each checked against the fingerprint the run
        recorded (the one check, shared by ``train --resume`` and ``evaluate``).

        The dataset is found by :meth:`locate_dataset` (``dataset``: ``--dataset DIR_OR_NAME``
        given by the user, still checked by fingerprint)."""
        from dwrec.data.dataset import load_dataset
        from dwrec.data.split import make_split

        config = self.read_config() if config is None else config
        _, scheme, _, split_fingerprint = self.recorded_data(config)
        dataset_obj = load_dataset(self.locate_dataset(config, resuming=resuming, given=dataset))
        split = make_split(dataset_obj, scheme)
        if split.fingerprint != split_fingerprint:
            raise DwrecError(
                f"{self.config_path}: split {scheme!r} of the dataset now has fingerprint "
                f"{split.fingerprint}, the run used {split_fingerprint}; was the split code "
                "or the dataset changed?"
            )
        return dataset_obj, split

    def locate_dataset(
        self,
        config: dict | None = None,
        *,
        resuming: bool = False,
        given: str | os.PathLike | None = None,
    ) -> Path:
        """The folder of the run's dataset: ``given`` (``--dataset``) when passed, else the
        recorded path, else a prepared dataset (``$DWREC_HOME/datasets``) with the recorded
        name, else any prepared dataset with the recorded fingerprint. Every candidate must
        have the recorded fingerprint. A missing dataset is an error that gives the
        ``dwrec prepare`` command re-creating it (docs/evaluate.md "A moved or shared run")."""
        config = self.read_config() if config is None else config
        data_path, _, fingerprint, _ = self.recorded_data(config)
        record = config["dataset"]
        name = record.get("name")
        when = "the run started" if resuming else "training"
        if given is not None:
            from dwrec.paths import resolve_dataset

            folder = resolve_dataset(given)
            found = _fingerprint_at(folder)
            if found != fingerprint:
                raise DwrecError(
                    f"--dataset {given}: {folder} holds dataset fingerprint {found}, but "
                    f"{self.path} was trained on {fingerprint} ({self.config_path}); pass "
                    f"the dataset the run was trained on ({self.recreate_hint(config)})"
                )
            return folder
        recorded = _fingerprint_at(data_path)
        if recorded == fingerprint:
            return data_path
        match = _prepared_with(name, fingerprint)
        if match is not None:
            return match
        if recorded is not None:
            raise DwrecError(
                f"{self.config_path}: the dataset at {data_path} has changed since {when} "
                f"(fingerprint {recorded}, the run was trained on {fingerprint}); use the "
                f"original data: {self.recreate_hint(config)}, or pass --dataset DIR_OR_NAME"
            )
        raise DwrecError(
            f"{self.config_path}: dataset {name!r} (fingerprint {fingerprint}) is missing: "
            f"not at {data_path} nor among the prepared datasets; "
            f"{self.recreate_hint(config)}, or pass --dataset DIR_OR_NAME"
        )

    def recreate_hint(self, config: dict | None = None) -> str:
        """``re-create it with `dwrec prepare ...``` from the request the run recorded."""
        config = self.read_config() if config is None else config
        record = config.get("dataset", {})
        request = record.get("request")
        name = record.get("name") or "NAME"
        if not isinstance(request, dict):
            return (
                f"re-create it with `dwrec prepare` and the options it was prepared with, "
                f"with --name {name}"
            )
        return f"re-create it with `{prepare_command(request, name)}`"

    def require(self, flag: str = "RUN") -> RunDir:
        """This run dir, or a :class:`UsageError` when it is not one (no config.json)."""
        if not self.path.is_dir():
            raise UsageError(f"{flag} {self.path}: no such run directory")
        if not self.has_config():
            raise UsageError(f"{flag} {self.path}: not a run dir (no {CONFIG})")
        return self


SYNTHETIC_FLAGS = ("users", "items", "domains", "mean_length", "seed")
"""Options of the synthetic source that ``dwrec prepare`` takes as flags (others:
``--option KEY=VALUE``)."""


def step_seconds(records: list[dict]) -> float:
    """Training seconds per optimiser step from a run's log records: the median over the
    logged epochs of each epoch's ``seconds`` over the steps they cover (validation
    excluded; ``nan`` with no epoch).

    The median, not the total over all steps: an epoch during which the process was
    suspended, or shared its cores with another job for a while, would otherwise stand for
    the whole run. An epoch resumed part way times only its resumed steps, ``steps_timed``
    of them; logs from before that field scale its steps by its timed sequences over the
    most any epoch of the same training stage timed."""
    epochs = [r for r in records if r.get("epoch", 0) > 0]
    timed = [(r.get("sequences_per_s") or 0) * r["seconds"] for r in epochs]
    whole, per_step, previous = {}, [], 0  # whole: per stage, the most sequences timed
    for record, sequences in zip(epochs, timed, strict=True):
        whole[record.get("stage")] = max(whole.get(record.get("stage"), 0), sequences)
    for record, sequences in zip(epochs, timed, strict=True):
        steps, previous = record.get("step", 0) - previous, record.get("step", 0)
        if "steps_timed" in record:
            steps = record["steps_timed"]
        elif sequences < 0.99 * whole[record.get("stage")]:
            steps = steps * sequences / whole[record.get("stage")]
        if steps > 0:
            per_step.append(record["seconds"] / steps)
    return statistics.median(per_step) if per_step else math.nan


def prepare_command(request: dict, name: str | None = None) -> str:
    """The ``dwrec prepare`` command line that re-creates a dataset from the ``request`` its
    dataset.json recorded (source name, filters, reader options), named ``name``."""
    source = str(request.get("name", "NAME"))
    parts = ["dwrec", "prepare", source]
    filters = request.get("filters") or {}
    for key in ("min_rating", "min_user_interactions", "min_item_interactions"):
        value = filters.get(key)
        if value is not None:
            parts += [f"--{key.replace('_', '-')}", f"{value:g}" if isinstance(value, float)
                      else str(value)]  # fmt: skip
    if filters.get("dedupe"):
        parts.append("--dedupe")
    for key, value in sorted((request.get("options") or {}).items()):
        if source == "synthetic" and key in SYNTHETIC_FLAGS:
            parts += [f"--{key.replace('_', '-')}", str(value)]
        else:
            parts += ["--option", f"{key}={value}"]
    if name and name != source:
        parts += ["--name", name]
    return " ".join(parts)


def _fingerprint_at(folder: Path) -> str | None:
    """The fingerprint in ``folder/dataset.json`` (``None``: no readable dataset there)."""
    try:
        meta = read_json(Path(folder) / DATASET_META)
    except (DwrecError, OSError):
        return None
    return meta.get("fingerprint") if isinstance(meta, dict) else None


def _prepared_with(name: str | None, fingerprint: str | None) -> Path | None:
    """A prepared dataset (``$DWREC_HOME/datasets``) with this fingerprint: the one named
    ``name`` first, then any other."""
    from dwrec.paths import datasets_dir

    root = datasets_dir()
    if fingerprint is None or not root.is_dir():
        return None
    if name and _fingerprint_at(root / name) == fingerprint:
        return root / name
    for folder in sorted(root.iterdir()):
        if not folder.name.startswith(".") and _fingerprint_at(folder) == fingerprint:
            return folder
    return None
