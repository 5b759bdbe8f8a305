"""What ``dwrec train`` shows while it runs: a progress bar per epoch (only on a terminal),
one line per epoch, and a closing summary with the domain weights."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


class TrainingDisplay:
    """Console output of one training run; silent when ``quiet``."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console()
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task = None

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, highlight=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        """A warning: on stderr, shown even when quiet."""
        Console(stderr=True).print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, done: int = 0) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[speed]} seq/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            "train", total=steps, completed=done, loss="-", speed="-"
        )

    def advance(self, loss: float | None, sequences_per_s: float) -> None:
        if self._progress is None:
            return
        fields = {"speed": f"{sequences_per_s:,.0f}"}
        if loss is not None:
            fields["loss"] = f"{loss:.4f}"
        self._progress.update(self._task, advance=1, **fields)

    def end_epoch(self, record: dict[str, Any], improved: bool) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        valid = record["valid"]
        loss = record["train_loss"]
        parts = [
            f"epoch {record['epoch']:>3}",
            f"loss {loss:.4f}" if loss is not None else "loss -",
            f"valid ndcg@10 {valid.get('ndcg@10', float('nan')):.4f}",
            f"recall@10 {valid.get('recall@10', float('nan')):.4f}",
            f"{record['seconds']:.1f}s",
            f"{record['sequences_per_s']:,.0f} seq/s" if record["sequences_per_s"] else "",
            "[green]best[/]" if improved else "",
        ]
        self.line("  ".join(p for p in parts if p))

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def domain_table(self, shares: dict[str, float], weights: dict[str, float]) -> None:
        """Domains sorted by training share, with their final weight."""
        if self.quiet or not weights:
            return
        table = Table(title="domain weights (end of training)")
        table.add_column("domain")
        table.add_column("share of positives", justify="right")
        table.add_column("weight", justify="right")
        for domain in sorted(weights, key=lambda d: -shares.get(d, 0.0)):
            table.add_row(domain, f"{shares.get(domain, 0.0):.2%}", f"{weights[domain]:.3f}")
        self.console.print(table)
