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

import os
from pathlib import Path
from typing import Any

import torch

from dwrec.errors import UsageError
from dwrec.plugins import load_plugins
from dwrec.rundir import RunDir
from dwrec.train import distributed, launch
from dwrec.train.config import from_saved, resolve
from dwrec.train.loop import Callback, Trainer, TrainResult  # noqa: F401 - re-exported
from dwrec.train.progress import TrainingDisplay
from dwrec.train.setup import (  # noqa: F401 - OpenRun, claim_run_dir... re-exported
    RESUME_OVERRIDES,
    OpenRun,
    check_out_is_free,
    check_resume_options,
    claim_run_dir,
    discard_new_run,
    domain_names_in,
    environment,
    multiprocess_refusal,
    open_new,
    open_resumed,
)
from dwrec.train.steps import ModelScorer  # noqa: F401 - re-exported
from dwrec.train.stops import TrainingDiverged, TrainingInterrupted  # noqa: F401 - re-exported

_open_new = open_new  # the name benchmarks/weighting_overhead.py used


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
    plugins: list[str | os.PathLike] | None = None,
    threads: int | None = None,
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
        threads: torch's CPU threads for this run (``None``: the current count; a resumed
            run restores the count it used, recorded in config.json). The caller's count is
            restored afterwards.
        options: any other option by its flat name (``epochs=3``, ``hidden=32``,
            ``negatives=128``...; see :mod:`dwrec.train.config`).
        plugins: Python files that register a loss, weighting or model (:mod:`dwrec.plugins`);
            recorded with their SHA-256 in ``config.json``.
    """
    records = load_plugins(plugins)
    if nproc is not None and nproc != 1:
        return _spawn(
            nproc,
            dict(
                dataset=dataset, model=model, loss=loss, out=out, config_file=config_file,
                resume=resume, quiet=quiet, plugins=plugins, **options,
            ),
            callback,
        )  # fmt: skip
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    world = distributed.world_from_environment()
    display = TrainingDisplay(console, quiet or (world is not None and not world.is_main))
    caller_threads = torch.get_num_threads()
    try:
        if resume is not None:
            run = open_resumed(Path(resume), options, display, world, threads)
        else:
            if threads is not None:
                torch.set_num_threads(threads)
            given = dict(options, dataset=dataset, model=model, loss=loss, out=out)
            config = resolve(given, config_file)
            config.plugins = records
            run = open_new(config, display, world)
        try:
            try:
                trainer = Trainer(run, display, callback)
            except BaseException:
                discard_new_run(run)  # failed before its first step: leave nothing behind
                raise
            return trainer.run()
        finally:
            distributed.stop(run.world)
    finally:
        torch.set_num_threads(caller_threads)


def _spawn(nproc: int, arguments: dict[str, Any], callback: Callback | None) -> TrainResult:
    """``train(nproc=N)``: check what can be checked here (flags, devices), then run the N
    ranks as worker processes (:func:`dwrec.train.launch.spawn`)."""
    if callback is not None:
        raise UsageError("train(callback=...) cannot be combined with nproc > 1 (it would run "
                         "in the worker processes)")  # fmt: skip
    launch_keys = ("dataset", "model", "loss", "out", "config_file", "resume", "quiet", "plugins")
    options = {k: v for k, v in arguments.items() if k not in launch_keys}
    if arguments["resume"] is not None:
        run_dir = Path(arguments["resume"])
        check_resume_options(run_dir, options)
        config = from_saved(RunDir(run_dir).read_config(with_plugins=True))
        device = options.get("device") or config.train.device
    else:
        given = dict(options, dataset=arguments["dataset"], model=arguments["model"])
        given.update(loss=arguments["loss"], out=arguments["out"])
        config = resolve(given, arguments["config_file"])
        if config.out is not None:
            check_out_is_free(Path(config.out))
        device = config.train.device
    launch.check_nproc(nproc, device, multiprocess_refusal(config))
    return launch.spawn(nproc, arguments, train)
