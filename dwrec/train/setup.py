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
from dwrec.devices import cpu_name
from dwrec.errors import DataFormatError, DwrecError, UsageError
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
    created: bool = False  # a new run (open_new), not a resumed one
    created_dir: bool = True  # its folder did not exist before (removed with the run)


def open_new(
    config: RunConfig, display: TrainingDisplay, world: distributed.World | None = None
) -> OpenRun:
    from dwrec.paths import resolve_dataset

    dataset_dir = resolve_dataset(config.dataset).resolve()
    display.line(f"dataset: {dataset_dir.name} ({dataset_dir})")
    dataset = load_dataset(dataset_dir)
    # every check, the dataset-dependent ones included, comes before the run dir is claimed:
    # a bad setting leaves nothing behind (no orphan run dir, no "-2" for the next run)
    config.loss.bind_dataset(dataset)  # e.g. fixed: --weight-domains -> domain names
    check_against_dataset(config, dataset)
    split = make_split(dataset, config.train.split)
    world, device = start_world(world, config)
    # only rank 0 claims and writes; the others learn the run dir (or rank 0's error) from it
    existed = config.out is not None and Path(config.out).is_dir()
    run_dir = distributed.on_main(world, lambda: claim_run_dir(config, dataset.name))
    run = OpenRun(config, run_dir, dataset, split, device, world=world, created=True)
    run.created_dir = not existed
    if world.is_main:
        write_config(run)
    return run


def check_against_dataset(config: RunConfig, dataset: Dataset) -> None:
    """The checks that need the dataset: what the loss requires once ``--weight-domains``
    is resolved, sampled negatives below the catalogue size, and the model's own checks
    (built on the ``meta`` device: no memory, no random draws)."""
    from dwrec.models.registry import build_model

    config.loss.validate()  # e.g. --loss fixed with --weight-domains naming no domain
    negatives = getattr(config.loss.objective_config(), "negatives", None)
    if negatives is not None and negatives >= dataset.n_items:
        raise UsageError(
            f"--negatives {negatives} must be below the catalogue size: dataset "
            f"{dataset.name} has {dataset.n_items:,} items (at most {dataset.n_items - 1})"
        )
    try:
        with torch.device("meta"):
            build_model(config.model_name, dataset.n_items, config.model)
    except DwrecError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot be built on "meta" (a plugin's):
        pass  # the real build checks it, and discard_new_run removes the run dir on error


def discard_new_run(run: OpenRun) -> None:
    """Remove what :func:`open_new` wrote (config.json, environment.json) when the run
    fails before its first step; the folder too when it was created for this run. Files
    anyone else put there are left alone."""
    if not run.created or not run.world.is_main:
        return
    folder = RunDir(run.run_dir)
    written = {folder.config_path.name, folder.environment_path.name}
    if any(p.name not in written for p in run.run_dir.iterdir()):
        return
    for name in written:
        (run.run_dir / name).unlink(missing_ok=True)
    if run.created_dir:
        run.run_dir.rmdir()


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
    threads: int | None = None,
) -> OpenRun:
    given = check_resume_options(run_dir, options)
    folder = RunDir(run_dir)
    saved = folder.read_config(with_plugins=True)
    dataset_dir = folder.locate_dataset(saved, resuming=True)
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
    restore_threads(folder, saved, threads, display)
    dataset, split = folder.load_data(saved, resuming=True, dataset=dataset_dir)
    state = resume_state(run_dir, dataset.fingerprint, display)
    world, device = start_world(world, config)
    run = OpenRun(config, run_dir, dataset, split, device, state, world)
    if world.is_main:
        write_config(run)
    return run


def restore_threads(
    folder: RunDir, saved: dict, threads: int | None, display: TrainingDisplay
) -> None:
    """Train on as many torch threads as the run used so far (config.json ``"threads"``,
    else environment.json ``"torch_threads"``): float sums, hence the results, depend on
    the count. ``--threads N`` given again wins, with a warning when it differs."""
    recorded = saved.get("threads")
    if recorded is None and folder.environment_path.exists():
        try:
            from dwrec.io import read_json

            recorded = read_json(folder.environment_path).get("torch_threads")
        except (DataFormatError, AttributeError):
            recorded = None
    if threads is not None:
        if recorded is not None and threads != recorded:
            display.warn(
                f"--threads {threads}: the run used {recorded} thread(s) until now, so its "
                "results may differ from an uninterrupted run in the last digits"
            )
        torch.set_num_threads(threads)
    elif isinstance(recorded, int) and recorded >= 1 and recorded != torch.get_num_threads():
        torch.set_num_threads(recorded)
        display.line(f"threads: {recorded}, as the run used (--threads N changes it)")


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
    if not Path(run_dir).exists():
        raise UsageError(f"--resume {run_dir}: does not exist")
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
            # how to re-create it when it is gone (RunDir.recreate_hint)
            "request": run.dataset.meta.get("request"),
        },
        "split": {"scheme": run.split.scheme, "fingerprint": run.split.fingerprint},
        **config_sections(config),
        "label": label,
        **({"plugins": config.plugins} if config.plugins else {}),
        # torch's intra-op threads: restored on resume (float sums depend on the count)
        "threads": torch.get_num_threads(),
        **provenance(),
    }
    RunDir(run.run_dir).write_config(
        document, environment(run.device, run.world), resumed=not run.created
    )


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
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **provenance(),
    }
    if world is not None and world.enabled:  # the run's other ranks share rank 0's setup
        info["world_size"], info["backend"] = world.world_size, world.backend
    return info
