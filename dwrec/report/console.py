"""Console renderer: compact rich tables that fit a terminal (at most 100 columns).

One table per (cohort, metric) with short headers; notes wrap to the width. Markdown
(``--format md`` / ``--out``) keeps every metric of a cohort in one table.
"""

from __future__ import annotations

import io
import math

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from dwrec.report.render_text import (
    GROUP_HEADERS,
    domain_cells,
    domain_headers,
    format_p,
    format_seed_range,
    group_cells,
    multi_seed,
    percent,
)
from dwrec.report.tables import UNDECIDED_MARK, MetricCell, Report

MAX_WIDTH = 100


def _mean(cell: MetricCell) -> str:
    """``0.278 ± 0.032`` (3 decimals: the console's short form of the markdown cell)."""
    if not math.isfinite(cell.mean):
        return "-"
    return f"{cell.mean:.3f}" + (f" ± {cell.std:.3f}" if math.isfinite(cell.std) else "")


def _lift(cell: MetricCell, baseline: bool) -> str:
    """``+61.3 [-52.2, +196.2]`` (%, the header says so); ``baseline`` on the baseline's rows."""
    if baseline:
        return "baseline"
    if math.isnan(cell.lift):
        return "-"
    mark = f" {UNDECIDED_MARK}" if cell.undecided else ""
    return f"{percent(cell.lift)} [{percent(cell.lift_low)}, {percent(cell.lift_high)}]{mark}"


def _table(title: str, headers: list[str], right: set[int] = frozenset()) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                  padding=(0, 1, 0, 0), show_edge=False)  # fmt: skip
    for index, header in enumerate(headers):
        numeric = index in right
        table.add_column(header, overflow="fold", no_wrap=numeric,
                         justify="right" if numeric else "left")  # fmt: skip
    return table


def print_report(report: Report, console: Console) -> None:
    """Print ``report`` to ``console`` at ``min(console.width, 100)`` columns (100 when the
    output is not a terminal)."""
    if not console.is_terminal and console.width != MAX_WIDTH:  # piped: 100 columns
        console = Console(file=console.file, width=MAX_WIDTH, color_system=None)
    width = min(console.width, MAX_WIDTH)
    seeds = multi_seed(report)
    level = round(100 * report.settings.level)
    for line in report.header:
        console.print(Text(line), overflow="fold", width=width)
    for warning in report.warnings:
        console.print(Text(f"Warning: {warning}", style="bold yellow"), overflow="fold",
                      width=width)  # fmt: skip
    if report.groups:
        groups = _table("Groups", GROUP_HEADERS)
        for line in group_cells(report):
            groups.add_row(*line)
        console.print()
        console.print(groups, width=width)
    unfinished = {g.label for g in report.groups if g.unfinished}
    for table in report.tables:
        for metric in report.settings.metrics:
            headers = ["domain", "group", "n", metric, f"lift % [{level}% CI]"]
            headers += ["seeds %"] if seeds else []
            headers += ["p"]
            numeric = set(range(2, len(headers)))
            out = _table(f"{table.cohort} cohort: {metric}", headers, numeric)
            previous = None
            for row in table.rows:
                cell = row.cells[metric]
                name = row.group + (" (unfinished)" if row.group in unfinished else "")
                domain = row.domain if row.domain != previous else ""
                previous = row.domain
                line = [domain, name, str(row.n), _mean(cell), _lift(cell, row.baseline)]
                line += [format_seed_range(cell)] if seeds else []
                line += [format_p(cell)]
                out.add_row(*line)
            console.print()
            console.print(out, width=width)
        _notes_at(console, table.footnotes, width)
    domains = _table("Domains", domain_headers(report), right={1, 2})
    for line in domain_cells(report):
        domains.add_row(*line)
    console.print()
    console.print(domains, width=width)
    _notes_at(console, report.domain_footnotes, width)


def _notes_at(console: Console, notes: list[str], width: int) -> None:
    for note in notes:
        console.print(Text(f"- {note}"), overflow="fold", width=width)


def console_text(report: Report, width: int = MAX_WIDTH) -> str:
    """The console rendering as plain text at ``width`` columns (no colour)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False,
                      legacy_windows=False)  # fmt: skip
    print_report(report, console)
    return buffer.getvalue()
