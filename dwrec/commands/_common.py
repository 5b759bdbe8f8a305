"""Shared pieces of the CLI commands."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def not_yet(command: str, issue: str) -> None:
    from dwrec.errors import NotImplementedYet

    raise NotImplementedYet(f"`dwrec {command}` is not yet implemented ({issue})")
