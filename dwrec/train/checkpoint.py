"""Checkpoints of a run: ``model.pt`` (best state, for evaluation) and ``last.pt`` (resume).

Both are written atomically and load with ``torch.load(..., weights_only=True)``: they hold
only tensors, numbers, strings, lists, tuples and dicts. ``last.pt`` holds everything an
uninterrupted run would still have in memory, so a resumed run ends exactly where an
uninterrupted one ends: model and optimiser states, every random number generator (torch's
global CPU and CUDA generators, the trainer's own shuffling and sampling generators,
Python's and NumPy's), the position in the current epoch, the best metric so far and the
early-stopping counter, and the domain weighting's state.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dwrec.io import atomic_path, load_checkpoint
from dwrec.rundir import BEST_CHECKPOINT, LAST_CHECKPOINT

LAST = LAST_CHECKPOINT
BEST = BEST_CHECKPOINT
PROGRESS = (
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
)
"""The trainer's counters ``last.pt`` holds (by attribute name), besides the states."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path) -> dict[str, Any]:
    return load_checkpoint(path, "not found: nothing to resume from")


def best_state(model: torch.nn.Module, n_items: int, fingerprint: str, epoch: int) -> dict:
    """The ``model.pt`` payload (the run-dir contract)."""
    return {
        "model_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "n_items": int(n_items),
        "dataset_fingerprint": fingerprint,
        "model": model.name,
        "epoch": int(epoch),
    }


def rng_states(shuffle: torch.Generator, sampling: torch.Generator) -> dict[str, Any]:
    """Every random state a training step may draw from."""
    numpy_state = np.random.get_state()
    states: dict[str, Any] = {
        "torch_cpu": torch.get_rng_state(),
        "shuffle": shuffle.get_state(),
        "sampling": sampling.get_state(),
        "python": _to_lists(random.getstate()),
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            *(float(x) if isinstance(x, float) else int(x) for x in numpy_state[2:]),
        ],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(
    states: dict[str, Any], shuffle: torch.Generator, sampling: torch.Generator
) -> None:
    torch.set_rng_state(states["torch_cpu"])
    shuffle.set_state(states["shuffle"])
    sampling.set_state(states["sampling"])
    random.setstate(_to_tuples(states["python"]))
    name, keys, *rest = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "torch_cuda" in states and torch.cuda.is_available():
        cuda_states = states["torch_cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _to_lists(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_lists(v) for v in value]
    return value


def _to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuples(v) for v in value)
    return value


def to_saveable(value: Any) -> Any:
    """NumPy arrays and scalars (e.g. inside a weighting's state) -> tensors and numbers, so
    the checkpoint stays loadable with ``weights_only=True``."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_saveable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_saveable(v) for v in value)
    return value
