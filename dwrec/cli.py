"""The ``dwrec`` command line: a thin Typer layer over the library functions.

Each subcommand lives in ``dwrec/commands/<name>.py`` and exposes ``register(app)``.
Errors of type :class:`dwrec.errors.DwrecError` print as one line, never a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from dwrec._version import __version__
from dwrec.errors import DwrecError
from dwrec.runtime import tune_malloc

# torch's CPU kernels run on OpenMP threads that spin while they wait for each other (GNU
# OpenMP: 300,000 spins by default). Beside any other busy process, a run with as many threads
# as cores then slows down 2-13x; capping the spins at 1,000 recovers most of that and costs
# about 9% on an idle 2-core machine (docs/performance.md). Read
# once, when torch loads, so it is set here, before any command imports torch. A wait policy
# or spin count the user set wins; other OpenMP runtimes ignore the variable.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
# Keep large freed blocks in glibc's heap instead of returning them to the kernel after every
# training step (dwrec/runtime.py; DWREC_MALLOC_TUNING=0 or glibc's own variables opt out).
tune_malloc()


def _hide_flag_types() -> None:
    """Show no ``<bool>`` type beside on/off flags (``--help``, ``--quiet``, ``--dedupe``):
    they take no value."""
    try:
        from typer.core import TyperOption
    except ImportError:  # another Typer layout: keep its default display
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()

COMMAND_MODULES = ("quickstart", "prepare", "datasets", "train", "evaluate", "report")

app = typer.Typer(
    name="dwrec",
    help=(
        "Benchmark sequential recommenders on sparse domains: prepare public data, train with "
        "generic / fixed / dynamic domain-weighted losses, evaluate per domain, and report "
        "significance-tested sparse-vs-dense tables."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dwrec {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """dwrec: sequential recommendation benchmarks on sparse domains."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"dwrec.commands.{_name}").register(app)


def _click():
    """Click itself, or the copy that recent Typer releases vendor as ``typer._click``."""
    try:
        import click
    except ModuleNotFoundError:
        from typer import _click as click
    return click


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dwrec`` console script."""
    try:
        code = app(args=argv, standalone_mode=False)
        # without standalone mode click *returns* a typer.Exit's code instead of raising it
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except DwrecError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except SystemExit as exc:  # typer.Exit / click usage errors
        return int(exc.code or 0)
    except Exception as exc:  # click exceptions carry their own exit codes
        click = _click()
        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, typer.Abort):
            err_console.print("[yellow]aborted[/]")
            return 1
        if isinstance(exc, typer.Exit):
            return exc.exit_code
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
