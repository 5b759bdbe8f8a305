"""``dwrec quickstart``: the whole pipeline on the embedded synthetic dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dwrec.commands._common import THREADS_HELP, console, set_threads


def register(app: typer.Typer) -> None:
    @app.command("quickstart")
    def quickstart_command(
        out: Path = typer.Option(
            Path("runs/quickstart"), "--out", help="Folder for runs and report."
        ),
        seeds: int = typer.Option(2, "--seeds", help="Seeds per loss."),
        epochs: int = typer.Option(25, "--epochs", help="Maximum epochs per run."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
    ) -> None:
        """Prepare the synthetic dataset, train SASRec with generic, fixed and dynamic domain
        weights on several seeds, evaluate, and print the significance-tested report.

        Running it again continues where it stopped and reuses finished runs.
        """
        from dwrec.quickstart import quickstart

        set_threads(threads)

        started = time.perf_counter()
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        state: dict = {}

        def on_event(kind: str, info: dict) -> None:
            if kind == "dataset":
                meta = info["meta"]["counts"]
                console.print(
                    f"dataset: synthetic ({meta['users']:,} users, {meta['items']:,} items, "
                    f"{meta['interactions']:,} interactions, {meta['domains']} domains) "
                    f"in {info['path']}"
                )
                console.print(
                    f"fixed weighting up-weights the sparsest: {', '.join(info['fixed'])}"
                )
                state["overall"] = progress.add_task("runs", total=None)
                progress.start()
            elif kind == "run":
                progress.update(state["overall"], total=info["total"], completed=info["index"] - 1)
                if "task" in state:
                    progress.remove_task(state["task"])
                state["task"] = progress.add_task(
                    f"  sasrec+{info['loss']} seed {info['seed']}", total=None
                )
            elif kind == "step" and "task" in state:
                progress.update(state["task"], advance=1)
            elif kind == "evaluate":
                progress.update(state["task"], description=f"  evaluating {info['run_dir'].name}")

        try:
            result = quickstart(out, seeds=seeds, epochs=epochs, device=device, on_event=on_event)
        finally:
            progress.stop()
        # Compact tables that fit the terminal; the markdown is in result.report_path.
        from dwrec.report.console import print_report

        print_report(result.report, console)
        console.print()
        console.print(f"dataset:  {result.dataset}")
        console.print(f"runs:     {', '.join(str(r) for r in result.runs)}")
        console.print(f"report:   {result.report_path}")
        console.print(f"finished in {time.perf_counter() - started:.0f} s")
