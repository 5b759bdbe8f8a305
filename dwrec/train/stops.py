"""How a training run stops early: diverged (a non-finite loss) or interrupted (Ctrl-C)."""

from __future__ import annotations

from pathlib import Path

from dwrec.errors import DwrecError


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


__all__ = ["TrainingDiverged", "TrainingInterrupted"]
