"""The training loop: one run's state, its steps, epochs, validation and checkpoints.

The model, the objective and the domain weighting meet only here: per batch, hidden states
are gathered at the positions that have a target, the objective gives a loss per position,
the weighting reduces them (then updates its state), and the model may add an auxiliary
loss (:meth:`~dwrec.models.base.SequentialModel.auxiliary_loss`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dwrec.io import provenance
from dwrec.losses.base import ObjectiveInput
from dwrec.models.base import SequentialModel, trim_leading_padding
from dwrec.rundir import RunDir
from dwrec.train import checkpoint, distributed, stages
from dwrec.train.batches import (
    TrainingWindows,
    n_batches,
    training_item_counts,
    training_windows,
)
from dwrec.train.progress import TrainingDisplay
from dwrec.train.setup import OpenRun
from dwrec.train.steps import (
    ModelScorer,
    build_optimizer,
    domain_shares,
    graceful_interrupt,
    learning_rate,
    rounded,
    seed_everything,
    to_device,
)
from dwrec.train.stops import TrainingDiverged, TrainingInterrupted

Callback = Callable[[str, dict[str, Any]], None]
"""``callback(event, info)``: ``("step", {epoch, step_in_epoch, global_step})`` after every
optimiser step, ``("epoch", log_record)`` after every epoch."""


@dataclass
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    stopped_early: bool
    config: dict = field(repr=False, default_factory=dict)


# ---------------------------------------------------------------- the training loop


class Trainer:
    """Holds one run's state; :meth:`run` trains until done, stopped early or interrupted."""

    def __init__(self, run: OpenRun, display: TrainingDisplay, callback: Callback | None):
        from dwrec.losses.registry import build_objective, build_weighting, item_log_frequencies
        from dwrec.models.registry import build_model

        self.run_info, self.display, self.callback = run, display, callback
        self.config, self.device, self.world = run.config, run.device, run.world
        settings = self.config.train
        seed_everything(settings.seed)
        dataset = run.dataset
        self.model: SequentialModel = build_model(
            self.config.model_name, dataset.n_items, self.config.model
        )
        self.model.bind_dataset(dataset)
        self.model.to(self.device)
        self.windows: TrainingWindows = training_windows(
            dataset, run.split, self.config.model.max_len
        )
        target_items = self.windows.target_items()
        self.domain_shares = domain_shares(dataset, target_items)
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
            build_optimizer(self.model, settings.lr, settings.weight_decay, self.device)
            if self.model.trainable
            else None
        )
        # the schedule's horizon, fixed here (a resume restores it, whatever its --epochs)
        self.schedule_steps = settings.epochs * n_batches(len(self.windows), settings.batch_size)
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
        self.stage, self.stage_start = 1, 0  # dwrec.train.stages
        stages.refuse_unsupported(self.model, self.world, self.config.train.lr_schedule)
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
        if getattr(self.objective, "per_position_negatives", False):
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
            RunDir(run_dir).clear_done()
        started = time.perf_counter()
        if not self.model.trainable:
            self._fit_untrainable()
        else:
            with graceful_interrupt(self):
                while not self._done():
                    if stages.advance(self):  # the second stage begins: resumable from here
                        self._save_last()
                    self._train_epoch()
                    self._end_epoch()
                    if self.stop_requested and not self._done():
                        raise TrainingInterrupted(run_dir, self.epoch, self.global_step)
        result = self._finish(time.perf_counter() - started)
        return result

    # -- steps and epochs

    def _done(self) -> bool:
        return stages.done(self)

    def _train_epoch(self) -> None:
        if self.step_in_epoch == 0:
            self.epoch_start_state = self.data_generator.get_state()
        resumed_state = self.data_generator.get_state()
        self.data_generator.set_state(self.epoch_start_state)
        slices = stages.epoch_batches(self)
        if self.step_in_epoch > 0:  # mid-epoch resume: same permutation, then the saved state
            self.data_generator.set_state(resumed_state)
        self.model.train()
        total = stages.planned_epochs(self)
        self.display.start_epoch(self.epoch + 1, total, len(slices), self.step_in_epoch)
        self.epoch_clock = time.perf_counter()
        first_step, positions_before = self.step_in_epoch, self.epoch_positions
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
            # the running mean of the steps accounted so far (one step behind): no extra
            # device sync, the loss was read anyway
            running = self.epoch_loss_sum / self.epoch_positions if self.epoch_positions else None
            self.display.advance(running, sequences_this_session / elapsed)
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
        # what this process ran of the epoch (after a mid-epoch resume, not all of it)
        self.epoch_timed = (
            self.step_in_epoch - first_step,
            sequences_this_session,
            self.epoch_positions - positions_before,
        )

    def step(self, window_index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One optimiser step on the training windows ``window_index`` (the public seam for
        benchmarks): returns the (device) loss and the batch's number of positions."""
        return self._step(window_index)

    def validate(self) -> dict[str, float]:
        """Validation metrics at K=10 of the current model (what early stopping reads)."""
        return self._validate()

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
            batch_positives = to_device(targets[targets >= 0], self.device)
            inputs, targets, factor = distributed.rank_rows(inputs, targets, self.world)
        rows, cols = (targets >= 0).nonzero(as_tuple=True)
        positives = targets[rows, cols]
        inputs, rows, cols, positives = (
            to_device(t, self.device) for t in (inputs, rows, cols, positives)
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
            if extra is not None:
                loss = loss + extra
            if batch_positives is not None:  # exact DDP scaling: see rank_loss_scale
                scale = distributed.rank_loss_scale(
                    self.weighting, positives, batch_positives, self.world.world_size
                )
                loss = loss * (scale * factor).to(loss.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._set_learning_rate()
        self.optimizer.step()
        if batch_positives is None:
            self.weighting.update(positives)
            return loss.detach(), int(rows.shape[0])
        # the weighting's state follows the global batch, so every rank keeps the same one
        self.weighting.update(batch_positives)
        reduced = distributed.reduce_step(self.world, loss, self.stop_vote)
        return reduced, int(batch_positives.shape[0])

    def _set_learning_rate(self) -> None:
        """The rate of step ``global_step`` (:func:`~dwrec.train.steps.learning_rate`)."""
        settings = self.config.train
        rate = learning_rate(
            self.global_step,
            settings.lr,
            settings.lr_schedule,
            settings.warmup_steps,
            self.schedule_steps,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = rate

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
                f"domain weights {rounded(self.weighting.domain_weights())}. "
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
        steps, sequences, positions = self.epoch_timed
        record = {
            "epoch": self.epoch,
            "step": self.global_step,
            "train_loss": self.epoch_loss_sum / max(self.epoch_positions, 1),
            "valid": valid,
            "domain_weights": self.weighting.domain_weights() or None,
            "seconds": seconds,
            "steps_timed": steps,  # the steps ``seconds`` covers
            "sequences_per_s": sequences / max(seconds, 1e-9),
            "positions_per_s": positions / max(seconds, 1e-9),
            "lr": self.optimizer.param_groups[0]["lr"],
            **stages.saved(self),
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
            RunDir(run_dir).write_done(summary)
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
            config=RunDir(run_dir).read_config(),
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
        folder = RunDir(self.run_info.run_dir)
        checkpoint.save(folder.best_checkpoint, payload)
        # evaluations of the replaced model.pt are stale: removed (a kill right here is
        # caught by the sha256 they record, RunDir.stale_reason)
        folder.invalidate_evaluations()

    def _save_last(self) -> None:
        payload = {
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "weighting_state": checkpoint.to_saveable(self.weighting.state_dict()),
            "rng": checkpoint.rng_states(self.data_generator, self.sampling_generator),
            "epoch_start_state": self.epoch_start_state,
            "schedule_steps": self.schedule_steps,
            **{name: getattr(self, name) for name in checkpoint.PROGRESS},
            **stages.saved(self),
            "dataset_fingerprint": self.run_info.dataset.fingerprint,
        }
        if self.world.enabled:  # every rank takes part in the gather; rank 0 writes
            states = distributed.rank_random_state(self.sampling_generator)
            payload["rank_rng"] = distributed.gather_objects(self.world, states)
            if not self.world.is_main:
                return
        checkpoint.save(RunDir(self.run_info.run_dir).last_checkpoint, payload)

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
        self.schedule_steps = state.get("schedule_steps", self.schedule_steps)
        for name in checkpoint.PROGRESS:
            setattr(self, name, state[name])
        stages.restore(self, state)
        records = RunDir(self.run_info.run_dir).read_log()
        self.log = [r for r in records if r["epoch"] <= self.epoch]

    def _write_log(self) -> None:
        if self.world.is_main:
            RunDir(self.run_info.run_dir).write_log(self.log)
