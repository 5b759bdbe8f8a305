"""Shared pieces of the CLI commands."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


THREADS_HELP = (
    "CPU threads for torch \\[all cores]. On a machine shared with other jobs use at most "
    "the free cores: threads that wait on each other can make a run several times slower."
)


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads, here and in any worker process started later
    (through ``OMP_NUM_THREADS``, which a new process reads when it imports torch)."""
    if threads is None:
        return
    if threads < 1:
        from dwrec.errors import UsageError

        raise UsageError(f"--threads must be >= 1, got {threads}")
    import os

    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def next_step(command: str) -> None:
    """The one closing line every command prints: what to run next."""
    console.print(f"next: {command}", highlight=False, soft_wrap=True)


def progress_console(quiet: bool = False) -> Console | None:
    """The stderr console a progress bar draws on, or ``None`` (no bar) when ``quiet`` or
    stderr is not a terminal."""
    if quiet or not err_console.is_terminal:
        return None
    return err_console
