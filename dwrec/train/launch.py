"""``dwrec train --nproc N``: spawn N local ranks and collect their outcomes.

Each worker gets torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and calls the ordinary ``train``, which meets
:func:`dwrec.train.distributed.start`; see :mod:`dwrec.train.distributed` for what a rank does.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_module
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dwrec import runtime
from dwrec.errors import DwrecError, UsageError
from dwrec.train.distributed import world_from_environment
from dwrec.train.stops import TrainingInterrupted


def check_nproc(nproc: int, device_name: str, refusal: str | None = None) -> None:
    """Refuse a launch that cannot work, before any worker starts (``refusal``: why the
    run's model or loss cannot train with several processes, if it cannot)."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise UsageError(f"--nproc must be an integer >= 1, got {nproc!r}")
    if nproc == 1:
        return
    if world_from_environment() is not None:
        raise UsageError(
            f"--nproc {nproc}: this process is already one rank of WORLD_SIZE="
            f"{os.environ['WORLD_SIZE']} (torchrun); use either torchrun or --nproc, not both"
        )
    if refusal is not None:
        raise UsageError(refusal)
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise UsageError(
            f"--nproc {nproc} --device {device_name}: CUDA is not available on this machine "
            f"(torch {torch.__version__}, {build}); use --device cpu for {nproc} CPU "
            "processes (gloo)"
        )
    if device_name.startswith("cuda:"):
        raise UsageError(
            f"--device {device_name}: with --nproc each rank uses its own GPU "
            "(cuda:0 ... cuda:N-1); pass --device cuda"
        )
    wants_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if wants_cuda and nproc > torch.cuda.device_count():
        raise UsageError(
            f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA device(s); one process "
            "per GPU (or --device cpu)"
        )


def free_port() -> int:
    """A TCP port free on the loopback interface right now (rank 0's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def spawn(nproc: int, arguments: dict[str, Any], entry: Callable[..., Any]) -> Any:
    """Run ``entry(**arguments)`` (:func:`dwrec.train.trainer.train`, a module-level function
    the workers import by name) in ``nproc`` worker processes (ranks 0..N-1 on this
    machine; see :func:`_start_context`) and return rank 0's :class:`~dwrec.train.trainer.TrainResult`.

    A worker's :class:`DwrecError` comes back as the same kind of error with the same
    message; a crash comes back with its traceback printed and a one-line summary. When one
    worker fails the others are stopped after a grace period (they may be waiting for it
    inside a collective). Ctrl-C reaches every worker (one process group on a terminal);
    they agree on a step to stop after, save ``last.pt`` and report the interruption.
    """
    context = _start_context()
    reports = context.Queue()
    port = free_port()
    # a forkserver started earlier has an older cwd and environment: send today's (and
    # whether this process tuned glibc's malloc, dwrec/runtime.py, so the workers do too)
    here = (os.getcwd(), dict(os.environ), runtime.applied)
    workers = [
        context.Process(
            target=_worker,
            args=(rank, nproc, port, arguments, reports, here, entry),
            name=f"dwrec-train-rank{rank}",
        )
        for rank in range(nproc)
    ]
    with _parent_ignores_interrupts():
        for worker in workers:
            worker.start()
        outcomes = _collect(workers, reports)
    return _outcome(outcomes, nproc)


def _start_context():
    """``forkserver`` where there is one: a server process imports torch and the trainer
    once, then forks every worker from it (later launches from the same program reuse it),
    instead of N fresh interpreters each importing torch. Nothing in the server has
    started threads or CUDA, so forking from it is safe. ``spawn`` elsewhere."""
    import multiprocessing

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["dwrec.train.trainer"])
    return context


@contextlib.contextmanager
def _parent_ignores_interrupts():
    """Ctrl-C is for the workers (they stop together and save); the parent waits for them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(workers: list, reports, grace_s: float = 20.0) -> dict[int, tuple[str, Any]]:
    """Each rank's report, in the order they arrived (a crash's first report is usually
    its cause; the others' are the broken collectives that follow)."""
    outcomes: dict[int, tuple[str, Any]] = {}
    failed_at: float | None = None
    while len(outcomes) < len(workers):
        try:
            rank, kind, payload = reports.get(timeout=0.2)
            outcomes[rank] = (kind, payload)
            # an interrupted rank is no failure: rank 0 may still be writing last.pt
            if kind not in ("ok", "interrupted") and failed_at is None:
                failed_at = time.monotonic()
            continue
        except queue_module.Empty:
            pass
        for rank, worker in enumerate(workers):
            if rank not in outcomes and not worker.is_alive():
                # a report can still be in flight when the process has just exited
                with contextlib.suppress(queue_module.Empty):
                    late_rank, kind, payload = reports.get(timeout=1.0)
                    outcomes[late_rank] = (kind, payload)
                if rank not in outcomes:
                    outcomes[rank] = ("died", worker.exitcode)
                failed_at = failed_at or time.monotonic()
        if failed_at is not None and time.monotonic() - failed_at > grace_s:
            for rank, worker in enumerate(workers):
                if rank not in outcomes:
                    worker.terminate()
                    outcomes[rank] = ("stopped", None)
    for worker in workers:
        worker.join()
    return outcomes


def _outcome(outcomes: dict[int, tuple[str, Any]], nproc: int) -> Any:
    """Rank 0's result, or the most telling failure: an interruption, then a dwrec error
    (every rank raises the same), then a rank that died without a report (killed, out of
    memory: the others then fail in their collectives), then the first crash reported. The
    message names the other ranks' failures too."""
    if all(kind == "ok" for kind, _ in outcomes.values()):
        return outcomes[0][1]
    order = {"interrupted": 0, "usage": 1, "error": 1, "died": 2, "crash": 3, "stopped": 4}
    arrival = {rank: position for position, rank in enumerate(outcomes)}
    failures = sorted(
        ((r, o) for r, o in outcomes.items() if o[0] != "ok"),
        key=lambda item: (order[item[1][0]], arrival[item[0]]),
    )
    rank, (kind, payload) = failures[0]
    if kind == "interrupted":
        run_dir, epoch, step = payload
        raise TrainingInterrupted(Path(run_dir), epoch, step)
    if kind == "usage":
        raise UsageError(payload)
    if kind == "error":
        raise DwrecError(payload)
    if kind == "crash":
        import sys

        print(f"--- rank {rank} of {nproc} failed:\n{payload}", file=sys.stderr)
    others = "; ".join(_failure_line(r, k, p) for r, (k, p) in failures[1:])
    raise DwrecError(
        f"training {_failure_line(rank, kind, payload)}" + (f" (also: {others})" if others else "")
    )


def _failure_line(rank: int, kind: str, payload: Any) -> str:
    if kind == "crash":
        lines = str(payload).strip().splitlines()
        return f"rank {rank} failed: {lines[-1] if lines else 'unknown error'}"
    if kind == "died":
        return f"rank {rank} exited with code {payload} without a report (killed? out of memory?)"
    if kind == "stopped":
        return f"rank {rank} was stopped"
    return f"rank {rank}: {payload}"


def _worker(
    rank: int,
    world_size: int,
    port: int,
    arguments: dict,
    reports,
    here: tuple[str, dict, bool],
    entry: Callable[..., Any],
) -> None:
    """One rank of ``--nproc``: the parent's cwd, environment and malloc tuning plus
    torchrun's variables, then the ordinary ``train``."""
    cwd, environment, malloc_tuned = here
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environment)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    if malloc_tuned:
        runtime.tune_malloc()
    if "OMP_NUM_THREADS" not in os.environ:  # N ranks share the cores (torchrun's habit)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        result = entry(**arguments)
        reports.put((rank, "ok", result if rank == 0 else None))
    except TrainingInterrupted as stopped:
        reports.put((rank, "interrupted", (str(stopped.run_dir), stopped.epoch, stopped.step)))
    except DwrecError as exc:
        reports.put((rank, "usage" if isinstance(exc, UsageError) else "error", str(exc)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which prints it
        reports.put((rank, "crash", traceback.format_exc()))
