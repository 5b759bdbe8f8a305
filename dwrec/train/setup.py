"""Opening a run: a new run dir (claimed, config written) or a stopped one to resume.

What :func:`dwrec.train.trainer.train` does before the first step: resolve the dataset,
check the options a resume may change, check what the run's classes allow (several
processes), claim the run dir and write ``config.json`` and ``environment.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dwrec.data.dataset import Dataset, load_dataset
from dwrec.data.split import Split, make_split
from dwrec.errors import DataFormatError, UsageError
from dwrec.io import provenance
from dwrec.losses.domains import domain_names_in  # noqa: F401 - re-exported
from dwrec.rundir import CONFIG, RunDir
from dwrec.train import checkpoint, distributed
from dwrec.train.config import RunConfig, config_sections, from_saved
from dwrec.train.progress import TrainingDisplay

RESUME_OVERRIDES = ("epochs", "patience", "device", "compile", "amp", "eval_batch_size")


@dataclass
class OpenRun:
    config: RunConfig
    run_dir: Path
    dataset: Dataset
    split: Split
    device: torch.device
    resume_state: dict | None = None
    world: distributed.World = distributed.SINGLE


def open_new(
    config: RunConfig, display: TrainingDisplay, world: distributed.World | None = None
) -> OpenRun:
    from dwrec.paths import resolve_dataset

    dataset_dir = resolve_dataset(config.dataset).resolve()
    display.line(f"dataset: {dataset_dir.name} ({dataset_dir})")
    dataset = load_dataset(dataset_dir)
    config.loss.bind_dataset(dataset)  # e.g. fixed: --weight-domains -> domain names
    split = make_split(dataset, config.train.split)
    world, device = start_world(world, config)
    # only rank 0 claims and writes; the others learn the run dir (or rank 0's error) from it
    run_dir = distributed.on_main(world, lambda: claim_run_dir(config, dataset.name))
    run = OpenRun(config, run_dir, dataset, split, device, world=world)
    if world.is_main:
        write_config(run)
    return run


def multiprocess_refusal(config: RunConfig) -> str | None:
    """Why this run cannot train with several processes (a capability of its model,
    objective or weighting), or ``None``."""
    from dwrec.models.registry import model_class

    model = model_class(config.model_name)
    if not model.supports_multiprocess:
        return (
            f"--model {model.name} cannot train with several processes (its auxiliary loss "
            "needs the whole batch); train it with one process"
        )
    for cls in (config.loss.objective_class(), config.loss.weighting_class()):
        if not cls.supports_multiprocess:
            return (
                f"--loss {cls.name} cannot train with several processes: it needs the whole "
                "batch (e.g. its gradients), which no rank holds; train it with one process"
            )
    return None


def start_world(
    world: distributed.World | None, config: RunConfig
) -> tuple[distributed.World, torch.device]:
    refusal = multiprocess_refusal(config) if world is not None else None
    if refusal is not None:
        raise UsageError(refusal)
    return distributed.start(world, config.train.device)


def open_resumed(
    run_dir: Path,
    options: dict,
    display: TrainingDisplay,
    world: distributed.World | None = None,
) -> OpenRun:
    given = check_resume_options(run_dir, options)
    folder = RunDir(run_dir)
    saved = folder.read_config(with_plugins=True)
    dataset_dir = folder.recorded_data(saved)[0]
    try:  # a hand-edited or damaged config.json: one line naming it, not a KeyError
        config = from_saved(saved)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataFormatError(
            folder.config_path, f"missing or invalid field {exc} (run-dir contract)"
        ) from None
    for key, value in given.items():
        setattr(config.train, key, value)
    config.train.validate()
    display.line(f"dataset: {dataset_dir.name} ({dataset_dir}); resuming {run_dir}")
    dataset, split = folder.load_data(saved, resuming=True)
    state = resume_state(run_dir, dataset.fingerprint, display)
    world, device = start_world(world, config)
    run = OpenRun(config, run_dir, dataset, split, device, state, world)
    if world.is_main:
        write_config(run)
    return run


def resume_state(run_dir: Path, fingerprint: str, display: TrainingDisplay) -> dict | None:
    """``last.pt``, checked against the run's dataset; None (start again from epoch 1) when the
    run was killed before its first checkpoint: training is deterministic, so that ends exactly
    where an uninterrupted run ends."""
    path = RunDir(run_dir).last_checkpoint
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


def check_resume_options(run_dir: Path, options: dict) -> dict:
    """The given (non-``None``) options of a resume; a usage error for any that may not
    change, or when ``run_dir`` is not a run dir."""
    if not RunDir(run_dir).has_config():
        raise UsageError(f"--resume {run_dir}: not a run dir (no {CONFIG})")
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


def claim_run_dir(config: RunConfig, dataset_name: str) -> Path:
    """Create the run dir. The default name gets ``-2``, ``-3``... when taken; an explicit
    ``out`` must be new or empty (a run is never overwritten)."""
    if config.out is not None:
        run_dir = Path(config.out)
        check_out_is_free(run_dir)
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


def check_out_is_free(run_dir: Path) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UsageError(
            f"--out {run_dir}: already exists and is not empty; choose another --out, "
            f"or continue it with --resume {run_dir}"
        )


def write_config(run: OpenRun) -> None:
    config = run.config
    label = config.run_label
    document = {
        "dataset": {
            "path": str(Path(run.dataset.path).resolve()),
            "name": run.dataset.name,
            "fingerprint": run.dataset.fingerprint,
        },
        "split": {"scheme": run.split.scheme, "fingerprint": run.split.fingerprint},
        **config_sections(config),
        "label": label,
        **({"plugins": config.plugins} if config.plugins else {}),
        **provenance(),
    }
    RunDir(run.run_dir).write_config(document, environment(run.device, run.world))


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
