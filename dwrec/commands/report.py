"""`dwrec report` (not yet implemented)."""

from __future__ import annotations

import typer

from dwrec.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("report", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def report(ctx: typer.Context) -> None:
        """Not yet implemented (exit code 2)."""
        not_yet("report", "see the issue tracker")
