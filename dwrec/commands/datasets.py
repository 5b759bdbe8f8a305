"""``dwrec datasets``: the datasets dwrec knows and which are prepared locally."""

from __future__ import annotations

import typer
from rich.table import Table

from dwrec.commands._common import console


def register(app: typer.Typer) -> None:
    @app.command("datasets")
    def datasets_command() -> None:
        """List known datasets: domains source, size, licence, and whether a copy is prepared."""
        from dwrec.data.sources import all_sources
        from dwrec.paths import datasets_dir, default_dataset_dir

        table = Table(title=f"datasets (prepared copies live in {datasets_dir()})", show_lines=True)
        for column in ("name", "domains", "size", "licence", "prepared"):
            table.add_column(column, overflow="fold")
        for spec in all_sources():
            prepared = (default_dataset_dir(spec.name) / "dataset.json").exists()
            table.add_row(
                f"[bold]{spec.name}[/]\n[dim]{spec.description}[/]",
                spec.domains,
                spec.size,
                spec.licence,
                "[green]yes[/]" if prepared else "no",
            )
        console.print(table)
