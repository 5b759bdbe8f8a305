"""``dwrec.train``: dataset dir -> run dir (the run-dir contract is in docs/train.md).

One code path for CPU and CUDA: bf16 autocast and fused AdamW on CUDA, optional
``torch.compile``; the training windows stay on the host, each batch is an index slice whose
inputs, target coordinates and positives are copied to the device without blocking. The
model, the objective and the domain weighting meet only here: per batch, hidden states are
gathered at the positions that have a target, the objective gives a loss per position, and
the weighting reduces them (then updates its state).

Stopping: early stopping on validation NDCG@10 (``patience`` epochs without improvement);
Ctrl-C finishes the current step, writes ``last.pt`` and stops (``--resume RUN`` continues
exactly); a non-finite loss stops with the step, batch and domain weights in the message,
leaving the last good checkpoints untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dwrec.data.dataset import Dataset, load_dataset
from dwrec.data.split import Split, make_split
from dwrec.errors import DataFormatError, DwrecError, UsageError
from dwrec.io import provenance, read_json, write_json
from dwrec.losses.base import ObjectiveInput
from dwrec.models.base import SequentialModel, trim_leading_padding
from dwrec.train import checkpoint, distributed
from dwrec.train.batches import (
    TrainingWindows,
    batch_slices,
    training_item_counts,
    training_windows,
)
from dwrec.train.config import RunConfig, config_sections, from_saved, resolve
from dwrec.train.progress import TrainingDisplay

Callback = Callable[[str, dict[str, Any]], None]
"""``callback(event, info)``: ``("step", {epoch, step_in_epoch, global_step})`` after every
optimiser step, ``("epoch", log_record)`` after every epoch."""

RESUME_OVERRIDES = ("epochs", "patience", "device", "compile", "amp", "eval_batch_size")


class TrainingDiverged(DwrecError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C: ``last.pt`` was written; ``run_dir`` can be resumed."""

    def __init__(self, run_dir: Path, epoch: int, step: int):
        super().__init__(
            f"interrupted in epoch {epoch} after step {step}; last.pt saved; continue with "
            f"`dwrec train --resume {run_dir}`"
        )
        self.run_dir, self.epoch, self.step = run_dir, epoch, step


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    stopped_early: bool
    config: dict = field(repr=False, default_factory=dict)


def train(
    dataset: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    loss: str | None = None,
    out: str | os.PathLike | None = None,
    config_file: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    console=None,
    callback: Callback | None = None,
    nproc: int | None = None,
    **options: Any,
) -> TrainResult:
    """Train ``model`` with ``loss`` on a prepared dataset and write a run dir.

    Args:
        dataset: a dataset dir or the name of a prepared dataset; ``None``: the one prepared
            most recently.
        out: the run dir; default ``runs/<dataset>-<model>-<loss>-s<seed>`` (``-2``, ``-3``...
            when taken). An explicit ``out`` that already holds files is an error.
        config_file: a TOML file of options (flags override it).
        resume: a run dir to continue from its ``last.pt`` (only ``epochs``, ``patience``,
            ``device``, ``compile``, ``amp`` and ``eval_batch_size`` may change).
        nproc: train with this many local processes (DistributedDataParallel; see
            :mod:`dwrec.train.distributed`). Under torchrun (``RANK``/``WORLD_SIZE`` set) every
            process calls ``train`` itself and ``nproc`` stays ``None``.
        options: any other option by its flat name (``epochs=3``, ``hidden=32``,
            ``negatives=128``...; see :mod:`dwrec.train.config`).
    """
    if nproc is not None and nproc != 1:
        return _spawn(
            nproc,
            dict(
                dataset=dataset, model=model, loss=loss, out=out, config_file=config_file,
                resume=resume, quiet=quiet, **options,
            ),
            callback,
        )  # fmt: skip
    world = distributed.world_from_environment()
    display = TrainingDisplay(console, quiet or (world is not None and not world.is_main))
    if resume is not None:
        run = _open_resumed(Path(resume), options, display, world)
    else:
        given = dict(options, dataset=dataset, model=model, loss=loss, out=out)
        run = _open_new(resolve(given, config_file), display, world)
    try:
        trainer = Trainer(run, display, callback)
        return trainer.run()
    finally:
        distributed.stop(run.world)


def _spawn(nproc: int, arguments: dict[str, Any], callback: Callback | None) -> TrainResult:
    """``train(nproc=N)``: check what can be checked here (flags, devices), then run the N
    ranks as worker processes (:func:`dwrec.train.distributed.spawn`)."""
    if callback is not None:
        raise UsageError("train(callback=...) cannot be combined with nproc > 1 (it would run "
                         "in the worker processes)")  # fmt: skip
    launch = ("dataset", "model", "loss", "out", "config_file", "resume", "quiet")
    options = {k: v for k, v in arguments.items() if k not in launch}
    if arguments["resume"] is not None:
        run_dir = Path(arguments["resume"])
        _check_resume_options(run_dir, options)
        config = from_saved(read_json(run_dir / "config.json"))
        device = options.get("device") or config.train.device
    else:
        given = dict(options, dataset=arguments["dataset"], model=arguments["model"])
        given.update(loss=arguments["loss"], out=arguments["out"])
        config = resolve(given, arguments["config_file"])
        if config.out is not None:
            _check_out_is_free(Path(config.out))
        device = config.train.device
    from dwrec.models.registry import model_class

    if nproc > 1 and not model_class(config.model_name).supports_multiprocess:
        raise UsageError(_single_process_message(config.model_name))
    distributed.check_nproc(nproc, device, config.loss.weighting_name)
    return distributed.spawn(nproc, arguments)


def _single_process_message(model_name: str) -> str:
    return (
        f"--model {model_name} has an auxiliary loss that is not reduced across processes; "
        "train it with --nproc 1"
    )


# ---------------------------------------------------------------- run set-up


@dataclass
class OpenRun:
    config: RunConfig
    run_dir: Path
    dataset: Dataset
    split: Split
    device: torch.device
    resume_state: dict | None = None
    world: distributed.World = distributed.SINGLE


def _open_new(
    config: RunConfig, display: TrainingDisplay, world: distributed.World | None = None
) -> OpenRun:
    from dwrec.paths import resolve_dataset

    dataset_dir = resolve_dataset(config.dataset).resolve()
    display.line(f"dataset: {dataset_dir.name} ({dataset_dir})")
    dataset = load_dataset(dataset_dir)
    config.loss.weight_domains = domain_names_in(config.loss.weight_domains, dataset)
    split = make_split(dataset, config.train.split)
    world, device = _start_world(world, config)
    # only rank 0 claims and writes; the others learn the run dir (or rank 0's error) from it
    run_dir = distributed.on_main(world, lambda: claim_run_dir(config, dataset.name))
    run = OpenRun(config, run_dir, dataset, split, device, world=world)
    if world.is_main:
        _write_config(run)
    return run


def _start_world(
    world: distributed.World | None, config: RunConfig
) -> tuple[distributed.World, torch.device]:
    if world is not None and config.loss.weighting_name == "adc":
        raise UsageError(distributed.unsupported_weighting_message("adc"))
    return distributed.start(world, config.train.device)


def _open_resumed(
    run_dir: Path,
    options: dict,
    display: TrainingDisplay,
    world: distributed.World | None = None,
) -> OpenRun:
    given = _check_resume_options(run_dir, options)
    saved = read_json(run_dir / "config.json")
    try:  # a hand-edited or damaged config.json: one line naming it, not a KeyError
        config = from_saved(saved)
        dataset_dir = Path(saved["dataset"]["path"])
        saved["dataset"]["fingerprint"], saved["split"]["fingerprint"]  # noqa: B018
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(
            run_dir / "config.json", f"missing or invalid field {exc} (run-dir contract)"
        ) from None
    for key, value in given.items():
        setattr(config.train, key, value)
    config.train.validate()
    display.line(f"dataset: {dataset_dir.name} ({dataset_dir}); resuming {run_dir}")
    dataset = load_dataset(dataset_dir)
    if dataset.fingerprint != saved["dataset"]["fingerprint"]:
        raise DwrecError(
            f"{run_dir / 'config.json'}: the dataset at {dataset_dir} has changed since the run "
            f"started (fingerprint {dataset.fingerprint}, run: {saved['dataset']['fingerprint']})"
        )
    split = make_split(dataset, config.train.split)
    if split.fingerprint != saved["split"]["fingerprint"]:
        raise DwrecError(f"{run_dir / 'config.json'}: the split no longer matches the run's")
    state = _resume_state(run_dir, dataset.fingerprint, display)
    world, device = _start_world(world, config)
    run = OpenRun(config, run_dir, dataset, split, device, state, world)
    if world.is_main:
        _write_config(run)
    return run


def _resume_state(run_dir: Path, fingerprint: str, display: TrainingDisplay) -> dict | None:
    """``last.pt``, checked against the run's dataset; None (start again from epoch 1) when the
    run was killed before its first checkpoint: training is deterministic, so that ends exactly
    where an uninterrupted run ends."""
    path = run_dir / checkpoint.LAST
    if not path.exists():
        display.line(f"{path} not found (stopped before its first checkpoint): starting at epoch 1")
        return None
    state = checkpoint.load(path)
    needed = ("model_state", "optimizer_state", "rng", "epoch")
    if not isinstance(state, dict) or any(key not in state for key in needed):
        raise DataFormatError(path, f"not a dwrec resume checkpoint (needs {', '.join(needed)})")
    if state.get("dataset_fingerprint") != fingerprint:
        raise DataFormatError(
            path,
            f"saved by a run on dataset {state.get('dataset_fingerprint')}, but this run's "
            f"dataset has fingerprint {fingerprint}; it belongs to another run",
        )
    return state


def _check_resume_options(run_dir: Path, options: dict) -> dict:
    """The given (non-``None``) options of a resume; a usage error for any that may not
    change, or when ``run_dir`` is not a run dir."""
    if not (run_dir / "config.json").exists():
        raise UsageError(f"--resume {run_dir}: not a run dir (no config.json)")
    given = {k: v for k, v in options.items() if v is not None}
    fixed = sorted(set(given) - set(RESUME_OVERRIDES))
    if fixed:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in fixed)
        raise UsageError(
            f"--resume {run_dir}: {names} cannot change when resuming (only "
            f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)}); "
            "start a new run instead"
        )
    return given


def domain_names_in(values: list[str], dataset: Dataset) -> list[str]:
    """``--weight-domains`` values -> the dataset's domain names. A value that names a domain
    is kept whole (names may contain spaces); otherwise it is split on commas, then on
    whitespace. An unknown name is a usage error listing close matches."""
    known = set(dataset.domain_names)
    names: list[str] = []
    for value in values:
        if value in known:
            names.append(value)
            continue
        for part in (p.strip() for p in value.split(",")):
            if not part:
                continue
            pieces = [part] if part in known else part.split()
            for piece in pieces:
                dataset.domain_index(piece)  # raises with "did you mean"
                names.append(piece)
    return list(dict.fromkeys(names))


def claim_run_dir(config: RunConfig, dataset_name: str) -> Path:
    """Create the run dir. The default name gets ``-2``, ``-3``... when taken; an explicit
    ``out`` must be new or empty (a run is never overwritten)."""
    if config.out is not None:
        run_dir = Path(config.out)
        _check_out_is_free(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    from dwrec.models.registry import model_class

    label = config.loss.label.replace("/", "_")
    if not model_class(config.model_name).trainable:
        label = "fit"  # the loss plays no part
    base = Path("runs") / f"{dataset_name}-{config.model_name}-{label}-s{config.train.seed}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for suffix in range(1, 10_000):
        candidate = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise UsageError(f"too many runs named {base}-N; pass --out")


def _check_out_is_free(run_dir: Path) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(
            f"--out {run_dir}: already exists and is not empty; choose another --out, "
            f"or continue it with --resume {run_dir}"
        )


def _write_config(run: OpenRun) -> None:
    from dwrec.models.registry import model_class

    config = run.config
    label = config.run_label
    if config.label is None and not model_class(config.model_name).trainable:
        label = config.model_name
    document = {
        "dataset": {
            "path": str(Path(run.dataset.path).resolve()),
            "name": run.dataset.name,
            "fingerprint": run.dataset.fingerprint,
        },
        "split": {"scheme": run.split.scheme, "fingerprint": run.split.fingerprint},
        **config_sections(config),
        "label": label,
        **provenance(),
    }
    write_json(run.run_dir / "config.json", document)
    write_json(run.run_dir / "environment.json", environment(run.device, run.world))


def environment(device: torch.device, world: distributed.World | None = None) -> dict[str, Any]:
    """Versions and hardware of this process (``environment.json``)."""
    import platform

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **provenance(),
    }
    if world is not None and world.enabled:  # the run's other ranks share rank 0's setup
        info["world_size"], info["backend"] = world.world_size, world.backend
    return info


# ---------------------------------------------------------------- the training loop


class Trainer:
    """Holds one run's state; :meth:`run` trains until done, stopped early or interrupted."""

    def __init__(self, run: OpenRun, display: TrainingDisplay, callback: Callback | None):
        from dwrec.losses.registry import build_objective, build_weighting, item_log_frequencies
        from dwrec.models.registry import build_model

        self.run_info, self.display, self.callback = run, display, callback
        self.config, self.device, self.world = run.config, run.device, run.world
        settings = self.config.train
        _seed_everything(settings.seed)
        dataset = run.dataset
        self.model: SequentialModel = build_model(
            self.config.model_name, dataset.n_items, self.config.model
        )
        self.model.bind_dataset(dataset)  # data-dependent parameters, before the optimiser
        self.model.to(self.device)
        if self.world.enabled and not self.model.supports_multiprocess:
            raise UsageError(_single_process_message(self.config.model_name))
        self.windows: TrainingWindows = training_windows(
            dataset, run.split, self.config.model.max_len
        )
        target_items = self.windows.target_items()
        self.domain_shares = _domain_shares(dataset, target_items)
        self.objective = build_objective(self.config.loss, dataset.n_items)
        self.weighting = build_weighting(
            self.config.loss,
            domain_names=dataset.domain_names,
            item_domain_indptr=dataset.item_domain_indptr,
            item_domain_indices=dataset.item_domain_indices,
            train_items=target_items,
            train_users=self.windows.target_users(),
            n_items=dataset.n_items,
        )
        self.item_log_q = item_log_frequencies(target_items, dataset.n_items).to(self.device)
        self.amp = settings.amp and self.device.type == "cuda"
        self.forward = torch.compile(self.model) if settings.compile else self.model
        self.data_generator = torch.Generator().manual_seed(settings.seed)
        self.sampling_generator = torch.Generator(self.device).manual_seed(settings.seed + 1)
        self.optimizer = (
            _optimizer(self.model, settings.lr, settings.weight_decay, self.device)
            if self.model.trainable
            else None
        )
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_start_state = self.data_generator.get_state()
        self.epoch_loss_sum = 0.0
        self.epoch_positions = 0
        self.epoch_sequences = 0
        self.best_metric = -math.inf
        self.best_epoch = 0
        self.best_valid: dict[str, float] = {}
        self.patience_counter = 0
        self.log: list[dict] = []
        self.stop_requested = False
        self.stop_vote = False  # several processes: Ctrl-C seen here, not yet agreed on
        if self.world.enabled:
            self._own_random_streams()
        if run.resume_state is not None:
            self._restore(run.resume_state)
        if self.world.enabled and self.model.trainable:
            from torch.nn.parallel import DistributedDataParallel

            # wrapped after the restore: DDP's start-up broadcast of rank 0's parameters
            # then hands every rank the resumed weights (they are equal anyway)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            replicated = DistributedDataParallel(self.model, device_ids=device_ids)
            self.forward = torch.compile(replicated) if settings.compile else replicated

    def _own_random_streams(self) -> None:
        """Give ranks > 0 their own dropout stream (the torch global generators) and, for
        objectives that draw negatives per position, their own sampling stream. The
        shuffling/masking generator and the shared-negatives stream stay identical on every
        rank: each rank must build the same global batch and draw the same negatives."""
        seed, rank = self.config.train.seed, self.world.rank
        if rank == 0:  # rank 0 draws exactly what one process draws
            return
        torch.manual_seed(distributed.rank_seed(seed, rank))
        if getattr(self.objective, "name", None) in distributed.PER_POSITION_SAMPLING:
            self.sampling_generator.manual_seed(distributed.rank_seed(seed + 1, rank))

    def request_stop(self) -> None:
        """Ctrl-C. One process stops after the current step; with several, every rank must
        stop after the same step, so the request is a vote summed with the step's loss."""
        if self.world.enabled:
            self.stop_vote = True
        else:
            self.stop_requested = True

    # -- public

    def run(self) -> TrainResult:
        run_dir = self.run_info.run_dir
        if self.world.is_main:
            (run_dir / "train_done.json").unlink(missing_ok=True)
        started = time.perf_counter()
        if not self.model.trainable:
            self._fit_untrainable()
        else:
            with _graceful_interrupt(self):
                while not self._done():
                    self._train_epoch()
                    self._end_epoch()
                    if self.stop_requested and not self._done():
                        raise TrainingInterrupted(run_dir, self.epoch, self.global_step)
        result = self._finish(time.perf_counter() - started)
        return result

    # -- steps and epochs

    def _done(self) -> bool:
        settings = self.config.train
        return self.epoch >= settings.epochs or self.patience_counter >= settings.patience

    def _train_epoch(self) -> None:
        settings = self.config.train
        if self.step_in_epoch == 0:
            self.epoch_start_state = self.data_generator.get_state()
        resumed_state = self.data_generator.get_state()
        self.data_generator.set_state(self.epoch_start_state)
        slices = list(batch_slices(len(self.windows), settings.batch_size, self.data_generator))
        if self.step_in_epoch > 0:  # mid-epoch resume: same permutation, then the saved state
            self.data_generator.set_state(resumed_state)
        self.model.train()
        self.display.start_epoch(self.epoch + 1, settings.epochs, len(slices), self.step_in_epoch)
        self.epoch_clock = time.perf_counter()
        sequences_this_session = 0
        pending = None
        for window_index in slices[self.step_in_epoch :]:
            loss, n_positions = self._step(window_index)
            if pending is not None:  # checked one step late so the device runs ahead
                self._account(*pending)
            pending = (loss, n_positions, window_index, self.global_step)
            self.step_in_epoch += 1
            self.global_step += 1
            sequences_this_session += len(window_index)
            elapsed = max(time.perf_counter() - self.epoch_clock, 1e-9)
            self.display.advance(None, sequences_this_session / elapsed)
            self._notify("step")
            if self.stop_requested:
                break
        if pending is not None:
            self._account(*pending)
        self.display.stop()
        if self.stop_requested and self.step_in_epoch < len(slices):
            self._save_last()
            raise TrainingInterrupted(self.run_info.run_dir, self.epoch + 1, self.global_step)
        self.epoch_seconds = time.perf_counter() - self.epoch_clock
        self.epoch_sequences_session = sequences_this_session

    def _step(self, window_index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One optimiser step on the windows ``window_index``; returns the (device) loss
        and the batch's number of positions. With several processes ``window_index`` is the
        global batch, every rank builds it whole and trains on its slice; the loss returned
        is then ``[global batch loss, stop votes]``, reduced over the ranks."""
        tokens = trim_leading_padding(self.windows.tokens[window_index])
        batch = self.model.training_batch(tokens, self.data_generator)
        inputs, targets, factor = batch.inputs, batch.targets, 1.0
        batch_positives = None
        if self.world.enabled:
            batch_positives = _to_device(targets[targets >= 0], self.device)
            inputs, targets, factor = distributed.rank_rows(inputs, targets, self.world)
        rows, cols = (targets >= 0).nonzero(as_tuple=True)
        positives = targets[rows, cols]
        inputs, rows, cols, positives = (
            _to_device(t, self.device) for t in (inputs, rows, cols, positives)
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            hidden = self.forward(inputs)
            states = hidden[rows, cols]
            losses = self.objective(
                ObjectiveInput(
                    hidden=states,
                    positives=positives,
                    scorer=ModelScorer(self.model),
                    sequence_index=rows,
                    item_log_q=self.item_log_q,
                    generator=self.sampling_generator,
                )
            )
            # ADC balances gradient norms on the user states, the last layer all domains
            # share (the output embeddings are per item); other weightings ignore it.
            loss = self.weighting.reduce(losses.float(), positives, shared_parameter=states)
            extra = self.model.auxiliary_loss(inputs, targets, hidden, self.data_generator)
            if extra is not None:  # the model's own auxiliary loss (not domain-weighted)
                loss = loss + extra
            if batch_positives is not None:  # exact DDP scaling: see rank_loss_scale
                scale = distributed.rank_loss_scale(
                    self.weighting, positives, batch_positives, self.world.world_size
                )
                loss = loss * (scale * factor).to(loss.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if batch_positives is None:
            self.weighting.update(positives)
            return loss.detach(), int(rows.shape[0])
        # the weighting's state follows the global batch, so every rank keeps the same one
        self.weighting.update(batch_positives)
        reduced = distributed.reduce_step(self.world, loss, self.stop_vote)
        return reduced, int(batch_positives.shape[0])

    def _account(self, loss: torch.Tensor, n_positions: int, window_index, step: int) -> None:
        if self.world.enabled:  # [global loss, stop votes]: the same numbers on every rank
            value, votes = loss.tolist()
            self.stop_requested = self.stop_requested or votes > 0
        else:
            value = float(loss)
        if not math.isfinite(value):
            users = self.windows.users[window_index[:8]].tolist()
            raise TrainingDiverged(
                f"loss became {value} at step {step + 1} (epoch {self.epoch + 1}, batch "
                f"{self.step_in_epoch}; {len(window_index)} sequences, users {users}...); "
                f"domain weights {_rounded(self.weighting.domain_weights())}. "
                f"The last good checkpoints in {self.run_info.run_dir} are kept; "
                "try a lower --lr or --w-max"
            )
        self.epoch_loss_sum += value * n_positions
        self.epoch_positions += n_positions
        self.epoch_sequences += len(window_index)

    def _validate(self) -> dict[str, float]:
        """Validation metrics at K=10 (early stopping reads ``ndcg@10``); with several
        processes the cases are sharded and rank 0's metrics reach every rank."""
        return distributed.evaluate_sharded(
            self.model,
            self.run_info.dataset,
            self.run_info.split,
            self.world,
            which="valid",
            ks=(10,),
            batch_size=self.config.train.eval_batch_size,
            device=self.device,
        )

    def _end_epoch(self) -> None:
        self.epoch += 1
        valid = self._validate()
        seconds = self.epoch_seconds
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": self.epoch_loss_sum / max(self.epoch_positions, 1),
            "valid": valid,
            "domain_weights": self.weighting.domain_weights() or None,
            "seconds": seconds,
            "sequences_per_s": self.epoch_sequences_session / max(seconds, 1e-9),
            "positions_per_s": self.epoch_positions / max(seconds, 1e-9),
        }
        improved = valid["ndcg@10"] > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.best_valid = valid["ndcg@10"], self.epoch, valid
            self.patience_counter = 0
            self._save_best()
        else:
            self.patience_counter += 1
        record["best"] = improved
        self.log.append(record)
        self._write_log()
        self.step_in_epoch = 0
        self.epoch_loss_sum, self.epoch_positions, self.epoch_sequences = 0.0, 0, 0
        self._save_last()
        self.display.end_epoch(record, improved)
        self._notify("epoch", record)
        if self.world.enabled:  # a Ctrl-C seen during validation stops every rank here
            vote = self.stop_requested or self.stop_vote
            self.stop_requested = distributed.any_rank(self.world, vote, self.device)

    def _fit_untrainable(self) -> None:
        """Models without gradient training (pop): fit, validate once, write model.pt."""
        counts = training_item_counts(self.run_info.dataset, self.run_info.split)
        self.model.fit(counts)
        clock = time.perf_counter()
        valid = self._validate()
        record = {
            "epoch": 0,
            "step": 0,
            "train_loss": None,
            "valid": valid,
            "domain_weights": None,
            "seconds": time.perf_counter() - clock,
            "sequences_per_s": None,
            "positions_per_s": None,
            "best": True,
        }
        self.best_metric, self.best_valid, self.best_epoch = valid["ndcg@10"], valid, 0
        self.log = [record]
        self._write_log()
        self._save_best()
        self.display.end_epoch(record, True)

    def _finish(self, seconds: float) -> TrainResult:
        run_dir = self.run_info.run_dir
        stopped_early = self.patience_counter >= self.config.train.patience
        summary = {
            "finished": True,
            "epochs_run": self.epoch,
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "stopped_early": stopped_early,
            "seconds_this_session": seconds,
            "domain_weights": self.weighting.domain_weights() or None,
            **provenance(),
        }
        if self.world.is_main:
            write_json(run_dir / "train_done.json", summary)
        self.display.domain_table(self.domain_shares, self.weighting.domain_weights())
        reason = "early stop" if stopped_early else "done"
        self.display.line(
            f"{reason}: best epoch {self.best_epoch}, valid ndcg@10 "
            f"{self.best_valid.get('ndcg@10', float('nan')):.4f}, recall@10 "
            f"{self.best_valid.get('recall@10', float('nan')):.4f} -> {run_dir}"
        )
        return TrainResult(
            run_dir=run_dir,
            best_epoch=self.best_epoch,
            best_valid=self.best_valid,
            epochs_run=self.epoch,
            stopped_early=stopped_early,
            config=read_json(run_dir / "config.json"),
        )

    def _notify(self, event: str, info: dict | None = None) -> None:
        if self.callback is not None:
            default = {
                "epoch": self.epoch + 1,
                "step_in_epoch": self.step_in_epoch,
                "global_step": self.global_step,
            }
            self.callback(event, info if info is not None else default)

    # -- checkpoints

    def _save_best(self) -> None:
        if not self.world.is_main:
            return
        payload = checkpoint.best_state(
            self.model, self.model.n_items, self.run_info.dataset.fingerprint, self.best_epoch
        )
        checkpoint.save(self.run_info.run_dir / checkpoint.BEST, payload)

    def _save_last(self) -> None:
        payload = {
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "weighting_state": checkpoint.to_saveable(self.weighting.state_dict()),
            "rng": checkpoint.rng_states(self.data_generator, self.sampling_generator),
            "epoch_start_state": self.epoch_start_state,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_positions": self.epoch_positions,
            "epoch_sequences": self.epoch_sequences,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_valid": self.best_valid,
            "patience_counter": self.patience_counter,
            "dataset_fingerprint": self.run_info.dataset.fingerprint,
        }
        if self.world.enabled:  # every rank takes part in the gather; rank 0 writes
            states = distributed.rank_random_state(self.sampling_generator)
            payload["rank_rng"] = distributed.gather_objects(self.world, states)
            if not self.world.is_main:
                return
        checkpoint.save(self.run_info.run_dir / checkpoint.LAST, payload)

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.weighting.load_state_dict(state["weighting_state"])
        checkpoint.restore_rng_states(state["rng"], self.data_generator, self.sampling_generator)
        rank_states = state.get("rank_rng")
        if self.world.enabled and self.world.rank > 0:
            if rank_states is not None and len(rank_states) == self.world.world_size:
                distributed.restore_rank_random_state(
                    rank_states[self.world.rank], self.sampling_generator
                )
            else:  # resumed with another --nproc: fresh streams for this rank
                self._own_random_streams()
        self.epoch_start_state = state["epoch_start_state"]
        for name in (
            "epoch",
            "step_in_epoch",
            "global_step",
            "epoch_loss_sum",
            "epoch_positions",
            "epoch_sequences",
            "best_metric",
            "best_epoch",
            "best_valid",
            "patience_counter",
        ):
            setattr(self, name, state[name])
        log_path = self.run_info.run_dir / "log.jsonl"
        if log_path.exists():
            lines = log_path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
            self.log = [r for r in records if r["epoch"] <= self.epoch]

    def _write_log(self) -> None:
        from dwrec.io import atomic_path

        if not self.world.is_main:
            return
        text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in self.log)
        with atomic_path(self.run_info.run_dir / "log.jsonl") as tmp:
            tmp.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- helpers


class ModelScorer:
    """The :class:`dwrec.losses.base.Scorer` view of a model (losses never see models)."""

    def __init__(self, model: SequentialModel):
        self.model = model
        self.n_items = model.n_items

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.score(hidden)

    def score(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.model.score(hidden, items)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        return self.model.embed_items(items)

    def linear_factors(self, hidden: torch.Tensor):
        """The model's linear form of its scores, if any (the chunked softmax's fast path)."""
        return self.model.linear_factors(hidden)


def _optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """Fused AdamW; weight decay on matrices only, not on biases and LayerNorms.

    The fused kernel exists on CUDA and, since torch 2.4, on CPU, where it updates a large
    item table about 6x faster than the default multi-tensor loop (docs/performance.md);
    older torch on CPU falls back to the default implementation.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch version
        return torch.optim.AdamW(groups, lr=lr)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _domain_shares(dataset: Dataset, target_items: np.ndarray) -> dict[str, float]:
    """Share of training positives whose item lies in each domain."""
    if len(target_items) == 0:
        return {}
    per_item = np.bincount(target_items, minlength=dataset.n_items)
    per_domain = per_item.astype(np.float64) @ dataset.item_domain_matrix
    return dict(zip(dataset.domain_names, (per_domain / len(target_items)).tolist(), strict=True))


def _rounded(weights: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in weights.items()}


@contextlib.contextmanager
def _graceful_interrupt(trainer: Trainer):
    """First Ctrl-C: finish the current step, save last.pt, stop. Second: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        trainer.request_stop()
        signal.signal(signal.SIGINT, previous)
        trainer.display.stop()
        trainer.display.line("[yellow]stopping after this step (Ctrl-C again to abort)...[/]")

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
