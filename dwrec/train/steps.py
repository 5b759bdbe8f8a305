"""The small pieces of a training step the trainer composes: the scorer view of a model,
the optimiser, seeding, device copies and graceful Ctrl-C."""

from __future__ import annotations

import contextlib
import math
import signal
import threading

import numpy as np
import torch

from dwrec.data.dataset import Dataset
from dwrec.models.base import SequentialModel


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


def build_optimizer(
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


SCHEDULES = ("constant", "linear", "cosine")
"""The learning-rate schedules after warm-up (``--lr-schedule``)."""


def learning_rate(
    step: int, peak: float, schedule: str, warmup_steps: int, total_steps: int
) -> float:
    """The learning rate of optimiser step ``step`` (0-based).

    Warm-up: ``peak * (step + 1) / warmup_steps`` for the first ``warmup_steps`` steps.
    Then, with ``p = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to
    [0, 1]: ``constant`` keeps ``peak``, ``linear`` gives ``peak * (1 - p)``, ``cosine``
    ``peak * (1 + cos(pi * p)) / 2``; both decays reach 0 at ``total_steps`` (the last step,
    ``total_steps - 1``, still has a rate above 0).
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(max((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0), 1.0)
    if schedule == "linear":
        return peak * (1.0 - progress)
    if schedule == "cosine":
        return peak * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r} (one of {SCHEDULES})")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def domain_shares(dataset: Dataset, target_items: np.ndarray) -> dict[str, float]:
    """Share of training positives whose item lies in each domain."""
    if len(target_items) == 0:
        return {}
    per_item = np.bincount(target_items, minlength=dataset.n_items)
    per_domain = per_item.astype(np.float64) @ dataset.item_domain_matrix
    return dict(zip(dataset.domain_names, (per_domain / len(target_items)).tolist(), strict=True))


def rounded(weights: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in weights.items()}


@contextlib.contextmanager
def graceful_interrupt(trainer):
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
