"""``dwrec prepare``: raw public data -> a dataset directory (Parquet)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from dwrec.commands._common import console, next_step
from dwrec.data.sources.synthetic import DEFAULTS as SYNTHETIC
from dwrec.errors import UsageError


def _parse_options(pairs: list[str]) -> dict:
    options: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--option {pair!r}: expected KEY=VALUE")
        key, value = pair.split("=", 1)
        options[key.strip().replace("-", "_")] = _number_or_text(value.strip())
    return options


def _number_or_text(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def register(app: typer.Typer) -> None:
    @app.command("prepare")
    def prepare_command(
        dataset: str = typer.Argument(
            ..., help="Dataset name (`dwrec datasets` lists them), e.g. movielens-1m or synthetic."
        ),
        source: Path = typer.Option(
            None,
            "--source",
            help="The downloaded archive or its extracted folder (skips the download).",
        ),
        out: Path = typer.Option(
            None, "--out", help="Output directory \\[default: $DWREC_HOME/datasets/DATASET]."
        ),
        min_rating: float = typer.Option(
            None,
            "--min-rating",
            help="Keep only interactions rated at least this \\[default: keep all].",
        ),
        min_user_interactions: int = typer.Option(
            None,
            "--min-user-interactions",
            help="Iterative k-core: users need this many interactions \\[default: 5 for "
            "lastfm, lastfm-1k, amazon*, yelp; 0 (none) for movielens-*, s3rec*, synthetic].",
        ),
        min_item_interactions: int = typer.Option(
            None,
            "--min-item-interactions",
            help="Iterative k-core: items need this many interactions \\[default: as above].",
        ),
        dedupe: bool = typer.Option(
            False, "--dedupe", help="Keep only the first interaction of each (user, item) pair."
        ),
        force: bool = typer.Option(
            False,
            "--force",
            help="Rebuild even if an identical dataset exists; replace a different one.",
        ),
        name: str = typer.Option(
            None,
            "--name",
            help="Name of the prepared dataset and its folder under $DWREC_HOME/datasets "
            "(keeps two variants apart, e.g. ml-1m-rating4) \\[default: the dataset's name].",
        ),
        users: int = typer.Option(
            None, "--users", help=f"synthetic: number of users \\[{SYNTHETIC['users']}]."
        ),
        items: int = typer.Option(
            None, "--items", help=f"synthetic: number of items \\[{SYNTHETIC['items']}]."
        ),
        domains: int = typer.Option(
            None, "--domains", help=f"synthetic: number of domains \\[{SYNTHETIC['domains']}]."
        ),
        mean_length: int = typer.Option(
            None,
            "--mean-length",
            help=f"synthetic: mean sequence length \\[{SYNTHETIC['mean_length']}].",
        ),
        seed: int = typer.Option(None, "--seed", help="synthetic: generator seed [0]."),
        option: list[str] = typer.Option(
            [],
            "--option",
            help="Reader option KEY=VALUE (e.g. top_tags=20 for lastfm); repeatable.",
        ),
    ) -> None:
        """Turn raw public data into Parquet with per-item domains.

        Without --source the raw files are looked up in $DWREC_HOME/raw/DATASET (place them
        there by hand on offline machines) and downloaded from the official URL, checked
        against a pinned checksum, when missing. A folder holding a different dataset is
        never replaced without --force.

        Datasets: synthetic, movielens-100k/1m/10m/20m/25m/latest-small, lastfm, lastfm-1k,
        amazon-electronics, amazon, yelp, s3rec, s3rec-beauty/sports/toys/yelp/lastfm
        (`dwrec datasets` describes them).

        Examples:

          dwrec prepare synthetic

          dwrec prepare movielens-1m --source ~/Downloads/ml-1m.zip

          dwrec prepare movielens-1m --min-rating 4 --name ml-1m-rating4

          dwrec prepare lastfm --min-user-interactions 10 --min-item-interactions 10

          dwrec prepare s3rec --source ~/data/S3-Rec/data --option set=Beauty
        """
        from dwrec.data.prepare import prepare
        from dwrec.data.sources import get_source

        spec = get_source(dataset)
        options = _parse_options(option)
        synthetic = {
            "users": users,
            "items": items,
            "domains": domains,
            "mean_length": mean_length,
            "seed": seed,
        }
        given = {k: v for k, v in synthetic.items() if v is not None}
        if given and spec.family != "synthetic":
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
            raise UsageError(f"{flags} only apply to `dwrec prepare synthetic`")
        options.update(given)
        with _working(f"preparing {dataset}"):
            result = prepare(
                dataset,
                source=source,
                out=out,
                min_rating=min_rating,
                min_user_interactions=min_user_interactions,
                min_item_interactions=min_item_interactions,
                dedupe=dedupe,
                force=force,
                options=options,
                progress=True,
                dataset_name=name,
            )
        if result.skipped:
            console.print(
                f"[green]{result.path}[/] is already prepared and up to date (same files and "
                "flags); it is now the most recent dataset. --force rebuilds it."
            )
        else:
            console.print(f"prepared [bold]{result.meta['name']}[/] -> [green]{result.path}[/]")
        print_summary(result.meta)
        from dwrec.paths import default_dataset_dir

        named = Path(result.path).resolve() == default_dataset_dir(result.meta["name"]).resolve()
        next_step(f"dwrec train --dataset {result.meta['name'] if named else result.path}")

    return None


@contextmanager
def _working(text: str):
    """A spinner with the elapsed time while ``prepare`` works (terminals only; on stdout
    as before, downloads draw their own bars on stderr)."""
    where = console if console.is_terminal else None
    if where is None:
        yield
        return
    with Progress(
        SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=where, transient=True
    ):
        yield


SUMMARY_DOMAINS = 20
"""At most this many domains in the summary table (dataset.json lists all of them)."""


def print_summary(meta: dict) -> None:
    counts = meta["counts"]
    overview = Table(title=f"{meta['name']}", show_header=False, box=None)
    overview.add_row("users", f"{counts['users']:,}")
    overview.add_row("items", f"{counts['items']:,}")
    overview.add_row("interactions", f"{counts['interactions']:,}")
    overview.add_row("density", f"{counts['density']:.4%}")
    overview.add_row("domains", f"{counts['domains']}")
    if counts.get("items_without_domain"):
        overview.add_row("items without domain", f"{counts['items_without_domain']:,}")
    console.print(overview)
    table = Table(title="domains by share of interactions (sparsest last)")
    table.add_column("domain")
    table.add_column("items", justify="right")
    table.add_column("interactions", justify="right")
    table.add_column("share", justify="right")
    rows = sorted(meta["domains"].items(), key=lambda kv: -kv[1]["share"])
    hidden = 0
    if len(rows) > SUMMARY_DOMAINS:
        # Many domains (S3-Rec sets have up to 125): the densest and the sparsest tell most.
        half = SUMMARY_DOMAINS // 2
        hidden = len(rows) - 2 * half
        rows = rows[:half] + [("...", None)] + rows[-half:]
    for name, stats in rows:
        if stats is None:
            table.add_row(f"... {hidden} more", "", "", "", style="dim")
            continue
        style = "yellow" if stats["share"] < 0.01 else None
        table.add_row(
            name,
            f"{stats['items']:,}",
            f"{stats['interactions']:,}",
            f"{stats['share']:.2%}",
            style=style,
        )
    console.print(table)
    ties = tie_summary(meta)
    if ties:
        console.print(ties)
    for note in meta.get("notes", []):
        console.print(f"[dim]note: {note}[/]")


def tie_summary(meta: dict) -> str | None:
    """One line on held-out items that tie in time under ``loo`` (None when none do)."""
    loo = (meta.get("held_out_ties") or {}).get("loo")
    if not loo or not loo.get("users"):
        return None
    ties, users = loo["test_ties_validation"], loo["users"]
    if not ties:
        return f"held-out ties (loo): none of {users:,} users' test and validation items share a timestamp"
    return (
        f"held-out ties (loo): {ties:,} of {users:,} users ({ties / users:.1%}) have test and "
        "validation items with the same timestamp; the raw file's order decides which is the "
        "test item (docs/datasets.md, 'Ties in time')"
    )
