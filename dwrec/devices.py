"""Turning ``--device`` into a ``torch.device``, the same way for every command, and naming
the CPU a run computed on."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from dwrec.errors import UsageError


def resolve_device(
    name: str | torch.device | None, model: torch.nn.Module | None = None
) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; with a ``model`` that has parameters or
    buffers, ``auto`` (or ``None``) is the model's device. ``cuda`` without CUDA, an index
    past the devices there are, or a name torch does not know is a usage error naming the
    flag."""
    if (name is None or str(name) == "auto") and model is not None:
        tensor = next(iter(model.parameters()), None)
        tensor = tensor if tensor is not None else next(iter(model.buffers()), None)
        if tensor is not None:
            return tensor.device
    name = "auto" if name is None else str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"--device {name}: CUDA is not available on this machine (torch {torch.__version__}, "
            f"{build}); use --device cpu (or --device auto)"
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s ``model name``), else what :mod:`platform`
    knows. Float results of a CPU training depend on it: kernels pick their vector
    instructions by CPU, so the same seed and thread count can train differently on another
    processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
