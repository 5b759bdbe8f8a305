"""`dwrec train` (not yet implemented)."""

from __future__ import annotations

import typer

from dwrec.commands._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train(ctx: typer.Context) -> None:
        """Not yet implemented (exit code 2)."""
        not_yet("train", "see the issue tracker")
