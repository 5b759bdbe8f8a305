"""A model's second training stage (:meth:`~dwrec.models.base.SequentialModel.
second_stage_epochs`, e.g. ``calrec --stage2-epochs N``: the paper's per-category
fine-tuning after training on all categories).

Stage 1 is the normal run: up to ``--epochs`` epochs, each a shuffled permutation of the
training windows, ended early after ``--patience`` epochs without a better validation
NDCG@10. When it ends and the model asks for a second stage, the trainer reloads the best
weights so far (``model.pt``), starts a fresh optimiser (same settings) and a fresh patience
count, writes ``last.pt`` (so a resume from here repeats nothing), and trains up to
``second_stage_epochs()`` more epochs, each cut into batches by the model's
:meth:`~dwrec.models.base.SequentialModel.second_stage_batches`. ``model.pt`` stays the
best epoch of both stages; the domain weighting and the random streams carry on. A model
without a second stage (every model by default) trains, saves and logs exactly as before.
"""

from __future__ import annotations

import torch

from dwrec.errors import UsageError
from dwrec.rundir import RunDir
from dwrec.train import checkpoint
from dwrec.train.batches import batch_slices, length_grouped_slices, window_lengths
from dwrec.train.steps import build_optimizer

STATE = (("stage", 1), ("stage_start", 0))
"""What ``last.pt`` holds of the stages (attribute, value before any): the current stage
and the completed epochs when it began. Saved only for a model with a second stage."""


def refuse_unsupported(model, world, schedule: str = "constant") -> None:
    """Refuse what a second stage cannot do: several processes, or a decaying learning rate
    (it reaches 0 at ``--epochs``, so a second stage after a full first one would not train)."""
    if model.second_stage_epochs() == 0:
        return
    if world.enabled:
        raise UsageError(
            f"--model {model.name} with a second training stage trains with one process only"
        )
    if schedule != "constant":
        raise UsageError(
            f"--lr-schedule {schedule} decays to 0 at --epochs, so --model {model.name}'s "
            "second stage could train at rate 0: use --lr-schedule constant with a second stage"
        )


def stage_over(trainer) -> bool:
    """The current stage has run its epochs or stopped early."""
    settings = trainer.config.train
    if trainer.patience_counter >= settings.patience:
        return True
    if trainer.stage == 1:
        return trainer.epoch >= settings.epochs
    return trainer.epoch - trainer.stage_start >= trainer.model.second_stage_epochs()


def done(trainer) -> bool:
    """No epoch is left in this stage and no stage after it."""
    return stage_over(trainer) and (trainer.stage > 1 or trainer.model.second_stage_epochs() == 0)


def advance(trainer) -> bool:
    """Start the second stage when the first is over and the model has one (the best
    weights, a fresh optimiser and patience count); ``True`` when it started."""
    if trainer.stage > 1 or trainer.model.second_stage_epochs() == 0 or not stage_over(trainer):
        return False
    best = checkpoint.load(RunDir(trainer.run_info.run_dir).best_checkpoint)
    trainer.model.load_state_dict(best["model_state"])
    settings = trainer.config.train
    trainer.optimizer = build_optimizer(
        trainer.model, settings.lr, settings.weight_decay, trainer.device
    )
    trainer.stage, trainer.stage_start, trainer.patience_counter = 2, trainer.epoch, 0
    trainer.display.line(
        f"stage 2 from the best weights (epoch {trainer.best_epoch}): up to "
        f"{trainer.model.second_stage_epochs()} epochs"
    )
    return True


def epoch_batches(trainer) -> list[torch.Tensor]:
    """The epoch's batches of window indices, drawn from the data generator."""
    settings, windows = trainer.config.train, trainer.windows
    if trainer.stage > 1:
        return trainer.model.second_stage_batches(
            windows.tokens, settings.batch_size, trainer.data_generator
        )
    if settings.batch_order == "by-length":
        return length_grouped_slices(
            window_lengths(windows.tokens), settings.batch_size, trainer.data_generator
        )
    return list(batch_slices(len(windows), settings.batch_size, trainer.data_generator))


def planned_epochs(trainer) -> int:
    """The epoch count the progress display shows."""
    if trainer.stage > 1:
        return trainer.stage_start + trainer.model.second_stage_epochs()
    return trainer.config.train.epochs


def saved(trainer) -> dict:
    """The stage entries of ``last.pt`` and of each log line (none without a second stage)."""
    if trainer.model.second_stage_epochs() == 0:
        return {}
    return {name: getattr(trainer, name) for name, _ in STATE}


def restore(trainer, state: dict) -> None:
    for name, default in STATE:
        setattr(trainer, name, state.get(name, default))
