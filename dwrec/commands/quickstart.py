"""``dwrec quickstart``: the whole pipeline on the embedded synthetic dataset."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dwrec.commands._common import THREADS_HELP, console, err_console, next_step, set_threads


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
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Prepare the synthetic dataset, train SASRec with generic, fixed and dynamic domain
        weights on several seeds, evaluate, and print the significance-tested report.

        Running it again continues where it stopped and reuses finished runs, only when
        they were made with the same settings (otherwise it refuses: pass another --out).
        """
        from dwrec.quickstart import quickstart

        set_threads(threads)

        started = time.perf_counter()
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=quiet,
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
                state["overall"] = progress.add_task("runs", total=None, count="")
                progress.start()
            elif kind == "run":
                done, total = info["index"] - 1, info["total"]
                progress.update(
                    state["overall"], total=total, completed=done, count=f"{done}/{total} runs"
                )
                if "task" in state:
                    progress.remove_task(state["task"])
                state["epochs"] = info["epochs"]
                state["task"] = progress.add_task(
                    f"  sasrec+{info['loss']} seed {info['seed']}",
                    total=info["epochs"],
                    count=f"epoch 1/{info['epochs']}",
                )
            elif kind == "step" and "task" in state:
                epochs = state["epochs"]
                count = f"epoch {info['epoch']}/{epochs}, step {info['global_step']}"
                progress.update(state["task"], count=count)
            elif kind == "epoch" and "task" in state:
                epochs = state["epochs"]
                progress.update(
                    state["task"], completed=info["epoch"], count=f"epoch {info['epoch']}/{epochs}"
                )
            elif kind == "evaluate" and "task" in state:
                progress.update(
                    state["task"], description=f"  evaluating {info['run_dir'].name}", count=""
                )

        try:
            result = quickstart(out, seeds=seeds, epochs=epochs, device=device, on_event=on_event)
            if "overall" in state:
                total = len(result.runs)
                progress.update(state["overall"], completed=total, count=f"{total}/{total} runs")
        except KeyboardInterrupt:
            progress.stop()
            again = f"dwrec quickstart --out {out} --seeds {seeds} --epochs {epochs}"
            err_console.print(
                f"[yellow]interrupted:[/] finished runs in {out} are kept, the current one "
                f"can resume from its last.pt; `{again}` continues",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(130) from None
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
        next_step(f"dwrec report {out} --domains {' '.join(result.fixed_domains)}")
