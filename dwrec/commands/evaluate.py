"""`dwrec evaluate`: full-ranking evaluation of finished runs, overall and per domain."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dwrec.commands._common import (
    THREADS_HELP,
    console,
    err_console,
    next_step,
    progress_console,
    set_threads,
)
from dwrec.errors import UsageError
from dwrec.rundir import TRAIN_DONE, RunDir

N_DOMAINS_SHOWN = 5


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate(
        runs: list[Path] = typer.Argument(
            None,
            help="Run directories. None: every finished, not yet evaluated run under --runs-dir.",
            show_default=False,
        ),
        split: str = typer.Option("test", "--split", help="Which held-out cases: test or valid."),
        ks: list[int] = typer.Option([10], "--k", help="Cut-off K (repeat for several)."),
        out: Path = typer.Option(
            None, "--out", help="Write outputs here instead of the run dir.", show_default=False
        ),
        export_trec: Path = typer.Option(
            None,
            "--export-trec",
            help="Also write TREC run + qrels files here.",
            show_default=False,
        ),
        keep_history: bool = typer.Option(
            False, "--keep-history", help="Do not exclude the user's history items from ranking."
        ),
        sampled: int = typer.Option(
            None,
            "--sampled",
            help="Rank among N sampled negatives instead of the full catalogue (not comparable!).",
            show_default=False,
        ),
        power_threshold: float = typer.Option(
            0.5, "--power-threshold", help="Power cohort: share >= this."
        ),
        general_threshold: float = typer.Option(
            0.1, "--general-threshold", help="General cohort: share <= this."
        ),
        batch_size: int = typer.Option(256, "--batch-size", help="Cases ranked at once."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
        seed: int = typer.Option(0, "--seed", help="Seed of --sampled negatives."),
        threads: int = typer.Option(None, "--threads", help=THREADS_HELP),
        runs_dir: Path = typer.Option(
            Path("runs"), "--runs-dir", help="Where to look for runs when none is given."
        ),
        force: bool = typer.Option(
            False, "--force", help="With no RUN: also re-evaluate runs that have metrics."
        ),
        dataset: str = typer.Option(
            None,
            "--dataset",
            help="The run's dataset: a folder or a prepared name, when it moved or the run "
            r"was copied (its fingerprint is still checked) \[default: where the run recorded "
            "it, else a prepared dataset with its name and fingerprint].",
            show_default=False,
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
        prior_from: Path = typer.Option(
            None,
            "--prior-from",
            help="Prior-shift control: rank RUN's scores plus tau * log w(item), w = this "
            "weighted run's final domain weights (no retraining); tau chosen on validation.",
            show_default=False,
            rich_help_panel="Prior-shift control",
        ),
        prior_tau: list[float] = typer.Option(
            None,
            "--prior-tau",
            help="Grid of tau values for --prior-from (repeat). "
            "[default: 0 0.25 0.5 0.75 1 1.25 1.5 2 3]",
            show_default=False,
            rich_help_panel="Prior-shift control",
        ),
        prior_criterion: str = typer.Option(
            "match",
            "--prior-criterion",
            help="match: tau whose overall validation NDCG@10 is closest to the weighted "
            "run's (equal overall cost); best: the highest validation NDCG@10.",
            rich_help_panel="Prior-shift control",
        ),
        label: str = typer.Option(
            None,
            "--label",
            help="Label of a --prior-from evaluation in reports. [default: <RUN label>+prior]",
            show_default=False,
            rich_help_panel="Prior-shift control",
        ),
    ) -> None:
        """Rank every item for every held-out case; write per_user.parquet and metrics.json.

        Ties are broken by the smaller item id; the user's history is excluded unless
        --keep-history. Per-domain cohorts: target, power and general users.
        """
        from dwrec.eval.evaluator import evaluate_run

        set_threads(threads)
        if split not in ("test", "valid"):
            raise UsageError(f"--split must be 'test' or 'valid', got {split!r}")
        if prior_from is not None:
            if dataset is not None:
                raise UsageError(
                    "--dataset cannot be combined with --prior-from; evaluate the runs where "
                    "their dataset is found (see docs/evaluate.md, 'A moved or shared run')"
                )
            _evaluate_prior(
                runs,
                prior_from,
                prior_tau,
                prior_criterion,
                label,
                out,
                split=split,
                ks=ks,
                power_threshold=power_threshold,
                general_threshold=general_threshold,
                batch_size=batch_size,
                device=device,
            )
            return
        if label is not None:
            raise UsageError("--label names a --prior-from evaluation; give --prior-from too")
        selected = list(runs) if runs else _pending_runs(runs_dir, split, force)
        for run_dir in selected:
            run_out = out / run_dir.name if out is not None and len(selected) > 1 else out
            if sampled:
                _warn_sampled(sampled)
            _warn_unfinished(run_dir)
            with _progress(quiet, run_dir) as progress:
                result = evaluate_run(
                    run_dir,
                    split=split,
                    ks=ks,
                    out=run_out,
                    keep_history=keep_history,
                    sampled=sampled,
                    power_threshold=power_threshold,
                    general_threshold=general_threshold,
                    batch_size=batch_size,
                    device=device,
                    export_trec=export_trec,
                    seed=seed,
                    dataset=dataset,
                    progress=progress,
                )
            print_result(result, run_out or run_dir)
        if selected:  # the folders holding the runs (a report compares several runs)
            folders = sorted({str(Path(p).parent) for p in selected}) if runs else [str(runs_dir)]
            next_step("dwrec report" + ("" if folders == ["runs"] else " " + " ".join(folders)))


def _evaluate_prior(runs, prior_from, taus, criterion, label, out, *, split, **options) -> None:
    from dwrec.eval.prior import DEFAULT_TAUS, default_out_dir, evaluate_prior_shift

    if not runs or len(runs) != 1:
        raise UsageError("--prior-from takes exactly one RUN (the run trained without weights)")
    if split != "test":
        raise UsageError("--prior-from evaluates the test cases (tau is chosen on validation)")
    run_dir = runs[0]
    where = out if out is not None else default_out_dir(run_dir, prior_from)
    result = evaluate_prior_shift(
        run_dir,
        prior_from,
        taus=taus or DEFAULT_TAUS,
        criterion=criterion,
        label=label,
        out=where,
        **options,
    )
    prior = result["prior"]
    grid = ", ".join(f"{float(t):g}: {v:.4f}" for t, v in prior["grid"].items())
    target = prior["weighted_valid"]
    console.print(
        f"prior shift from {prior['from_label']}: tau {prior['tau']:g} ({prior['criterion']}"
        + (f", weighted run's valid ndcg@10 {target:.4f}" if target is not None else "")
        + f"); valid ndcg@10 by tau: {grid}",
        highlight=False,
    )
    print_result(result, where)


def _pending_runs(runs_dir: Path, split: str, force: bool) -> list[Path]:
    from dwrec.eval.evaluator import is_finished, output_names

    if not runs_dir.is_dir():
        raise UsageError(f"no RUN given and --runs-dir {runs_dir} is not a directory")
    metrics_name = output_names(split)[1]
    pending = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if RunDir(p).has_config()):
        state = RunDir(run_dir).evaluation_state(split)
        if not is_finished(run_dir):
            console.print(
                f"skip {run_dir}: training has not finished (`dwrec train --resume "
                f"{run_dir}` continues it; `dwrec evaluate {run_dir}` evaluates it as it is)",
                highlight=False,
            )
        elif state == "stale":
            console.print(
                f"re-evaluate {run_dir}: its {metrics_name} is stale (model.pt changed since)",
                highlight=False,
            )
            pending.append(run_dir)
        elif state == "current" and not force:
            console.print(
                f"skip {run_dir}: {metrics_name} exists (--force re-evaluates)", highlight=False
            )
        else:
            pending.append(run_dir)
    if pending:
        console.print(f"evaluating {len(pending)} run(s): " + ", ".join(p.name for p in pending))
    else:
        console.print(f"nothing to evaluate under {runs_dir}")
    return pending


def _warn_unfinished(run_dir: Path) -> None:
    """An unfinished run is evaluated as it is (its best model so far), loudly: its
    metrics.json records ``"finished": false`` and ``dwrec report`` marks it."""
    folder = RunDir(run_dir)
    if folder.has_config() and not folder.is_finished():
        err_console.print(
            f"[bold yellow]warning:[/] {run_dir} has not finished training (no "
            f"{TRAIN_DONE}): evaluating its best model so far; metrics.json records "
            f'"finished": false and reports mark it. `dwrec train --resume {run_dir}` '
            "finishes it.",
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def _progress(quiet: bool, run_dir: Path):
    """Yields the ``progress`` callback of :func:`evaluate_run`: a bar of ranked cases on
    stderr (a terminal only, and not with --quiet), else ``None``."""
    where = progress_console(quiet)
    if where is None:
        yield None
        return
    bar = Progress(
        TextColumn(f"evaluating {run_dir.name}"[:40]),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=where,
        transient=True,
    )
    task = bar.add_task("rank", total=None)

    def advance(cases: int, total: int) -> None:
        bar.update(task, advance=cases, total=total)

    with bar:
        yield advance


def _warn_sampled(n: int) -> None:
    console.print(
        Panel(
            f"SAMPLED METRICS: the target is ranked among {n} sampled negatives, not the full "
            "catalogue. These numbers are NOT comparable with full-ranking results or papers "
            "that rank all items.",
            title="warning",
            style="bold red",
        )
    )


def print_result(result: dict, where: Path) -> None:
    """Overall metrics (one column per K) and the sparsest and densest domains."""
    ks = result["ks"]
    sampled = result.get("sampled")
    title = f"{result['label']} ({result['split']}, {result['n_cases']} cases)"
    if sampled:
        title += f"  SAMPLED ({sampled} negatives)"
    overall = Table(title=title)
    overall.add_column("metric")
    for k in ks:
        overall.add_column(f"@{k}", justify="right")
    for name in ("recall", "ndcg", "mrr", "coverage", "mean_popularity"):
        overall.add_row(name, *(_fmt(result["overall"].get(f"{name}@{k}")) for k in ks))
    console.print(overall)
    console.print(_domain_table(result, ks[0]))
    console.print(f"wrote evaluation of {result['run']} to {where}", highlight=False)


def _domain_table(result: dict, k: int) -> Table:
    domains = result["domains"]
    ordered = sorted(domains, key=lambda name: (domains[name]["train_share"], name))
    shown = (
        ordered
        if len(ordered) <= 2 * N_DOMAINS_SHOWN
        else (ordered[:N_DOMAINS_SHOWN] + ordered[-N_DOMAINS_SHOWN:])
    )
    table = Table(title=f"sparsest and densest domains (by training share), @{k}")
    for column in ("domain", "train share", "cases", f"recall@{k}", f"ndcg@{k}", "rec. share"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    share = result.get(f"recommendation_share@{k}", {})
    for name in shown:
        target = domains[name]["target"]
        table.add_row(
            name,
            f"{domains[name]['train_share']:.4f}",
            str(target["n"]),
            _fmt(target.get(f"recall@{k}")),
            _fmt(target.get(f"ndcg@{k}")),
            _fmt(share.get(name)),
        )
    return table


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
