"""``dwrec report``: significance-tested markdown (json/csv/latex) tables of evaluated runs."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperCommand

from dwrec.commands._common import console, err_console

# options that take several values after one flag (``--domains Film-Noir Horror``)
MULTI_VALUE_OPTIONS = ("--domains", "--family", "--metrics", "--cohort", "--label")


class _MultiValueCommand(TyperCommand):
    """Lets ``--domains A B C`` mean ``--domains A --domains B --domains C``.

    A list ends at the next token starting with ``-`` or at a token naming an existing file
    or folder (a RUN); ``--`` also ends it.
    """

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        expanded: list[str] = []
        index = 0
        while index < len(args):
            token = args[index]
            expanded.append(token)
            index += 1
            if token in MULTI_VALUE_OPTIONS:
                first = True
                while index < len(args) and not args[index].startswith("-"):
                    if not first and Path(args[index]).exists():
                        break
                    if not first:
                        expanded.append(token)
                    expanded.append(args[index])
                    first = False
                    index += 1
        return super().parse_args(ctx, expanded)


def register(app: typer.Typer) -> None:
    @app.command("report", cls=_MultiValueCommand)
    def report_command(
        runs: list[Path] = typer.Argument(
            None,
            help="Run dirs, or folders holding run dirs \\[default: every evaluated run under "
            "./runs of the most recent dataset].",
            show_default=False,
        ),
        domains: list[str] = typer.Option(
            None,
            "--domains",
            help="Domains to show, space- or comma-separated (rows only: every domain with "
            "--min-cases test cases is tested whatever is shown) \\[default: the 3 sparsest "
            "and 3 densest].",
        ),
        family: list[str] = typer.Option(
            None,
            "--family",
            help="Declare a confirmatory family of domains, corrected on its own (e.g. "
            "--family Film-Noir Horror); the other domains form the exploratory family.",
        ),
        min_cases: int = typer.Option(
            20, "--min-cases", help="Test a domain when it has at least this many test cases."
        ),
        allow_mismatch: bool = typer.Option(
            False,
            "--allow-mismatch",
            help="Compare groups trained with other settings than the baseline (beyond loss, "
            "label and seed); the footnote lists the differences.",
        ),
        baseline: str = typer.Option(
            None, "--baseline", help="Label of the baseline group \\[default: the generic group]."
        ),
        metrics: list[str] = typer.Option(
            None, "--metrics", help="Per-case metrics \\[default: recall@10 ndcg@10]."
        ),
        cohort: list[str] = typer.Option(
            None,
            "--cohort",
            help="target | power | general; several give one table each \\[target].",
        ),
        test: str = typer.Option("wilcoxon", "--test", help="wilcoxon | ttest | permutation."),
        alpha: float = typer.Option(
            0.05,
            "--alpha",
            help="Significance level of the * marker; a p marked ° could not fall below it "
            "(too few non-zero paired differences).",
        ),
        correction: str = typer.Option(
            "holm", "--correction", help="holm | bonferroni | none, within each family."
        ),
        fmt: str = typer.Option(
            None,
            "--format",
            help="md | json | csv | latex \\[default: md with --out, else compact tables "
            "for the terminal].",
            show_default=False,
        ),
        plot: Path = typer.Option(
            None,
            "--plot",
            help="Also draw lift against domain share to this PNG (needs matplotlib).",
        ),
        out: Path = typer.Option(
            None, "--out", help="Write here (atomically) instead of printing."
        ),
        label: list[str] = typer.Option(
            None, "--label", help="RUN=LABEL: put a run into another group (repeatable)."
        ),
        bootstrap: int = typer.Option(
            1000, "--bootstrap", help="Bootstrap resamples of the CI (seeds, then test cases)."
        ),
        permutations: int = typer.Option(
            10_000, "--permutations", help="Random sign flips of --test permutation."
        ),
        ci: float = typer.Option(0.95, "--ci", help="Level of the lift's bootstrap CI."),
        seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and permutation draws."),
        effect: float = typer.Option(
            None,
            "--effect",
            help="A lift worth detecting (0.5 for +50%): mark with ? each lift that is not "
            "significant and whose CI holds both 0 and it (too few test cases to tell).",
            show_default=False,
        ),
    ) -> None:
        """Compare groups of evaluated runs with a baseline per domain: lifts with bootstrap
        CIs and corrected paired tests (reads evaluation outputs only, never a model)."""
        from dwrec.report import report, write_report

        result = report(
            [str(r) for r in runs or []],
            domains=domains or None,
            baseline=baseline,
            metrics=metrics or None,
            cohorts=cohort or ("target",),
            test=test,
            alpha=alpha,
            correction=correction,
            bootstrap=bootstrap,
            permutations=permutations,
            level=ci,
            seed=seed,
            labels=label or (),
            family=family or None,
            min_cases=min_cases,
            allow_mismatch=allow_mismatch,
            effect=effect,
        )
        for warning in result.warnings if fmt or out is not None else ():
            err_console.print(f"warning: {warning}", markup=False, highlight=False)
        if plot is not None:
            from dwrec.report.plots import plot_lift, require_matplotlib

            require_matplotlib()
        text = write_report(result, fmt or "md", out) if fmt or out is not None else None
        if plot is not None:
            plot_lift(result, plot)
            err_console.print(f"plot written to {plot}")
        if out is None and text is None:
            from dwrec.report.console import print_report

            print_report(result, console)
        elif out is None:
            console.out(text, end="", highlight=False)
        else:
            groups = len({row.group for row in result.tables[0].rows})
            err_console.print(
                f"report of {groups} groups (baseline {result.baseline}) written to {out}"
            )
