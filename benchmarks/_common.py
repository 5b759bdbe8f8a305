"""What every benchmark shares: what a report says about the machine it ran on, and a timing
helper (the one module benchmarks share; each script otherwise uses dwrec's public API)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dwrec.devices import cpu_name


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"1.20, 0.80, 0.50"``."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """The shortest wall time of ``repeats`` calls of ``work()``, in seconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def report_header(title: str, threads: int | None) -> list[str]:
    """The opening lines of a benchmark's markdown: title, date, load, machine, command
    (``threads`` None: the report trains nothing, so no thread count is claimed)."""
    import torch

    used = "" if threads is None else f" ({threads} threads)"
    script = Path(sys.argv[0]).name
    return [
        f"## {title}",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average at the "
        f"end {load_average()}",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs visible, torch {torch.__version__}{used}",
        f"- command: `python benchmarks/{script} {' '.join(sys.argv[1:])}`".rstrip(),
    ]


def write_output(path: Path, text: str) -> None:
    """Write a benchmark's output file atomically (a temporary name, then a rename): an
    interrupted run leaves the previous file or none, never half of one."""
    from dwrec.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def publish(lines: list[str], write: Path | None) -> None:
    """Print the markdown, and write it to ``write`` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if write:
        write_output(write, text)
