"""Text renderers of a :class:`~dwrec.report.tables.Report`: Markdown and LaTeX, and the cell
formatting they share with the console renderer (:mod:`.console`)."""

from __future__ import annotations

import math

from tabulate import tabulate

from dwrec.report.tables import (
    DEGENERATE_MARK,
    RENDERERS,
    UNDECIDED_MARK,
    UNREACHABLE_MARK,
    CohortTable,
    MetricCell,
    Report,
    Settings,
)


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_mean(cell: MetricCell) -> str:
    if not math.isfinite(cell.mean):
        return "-"
    spread = f" ± {cell.std:.4f}" if math.isfinite(cell.std) else ""
    return f"{cell.mean:.4f}{spread}"


def percent(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{100 * value:+.1f}"


def format_lift(cell: MetricCell) -> str:
    """``+83.2% [+60.1, +110.5]``; ``-`` where there is no lift (no case, or 0 over 0);
    ``?`` after it where ``--effect`` finds the cell undecided."""
    if math.isnan(cell.lift):
        return "-"
    mark = f" {UNDECIDED_MARK}" if cell.undecided else ""
    return f"{percent(cell.lift)}% [{percent(cell.lift_low)}, {percent(cell.lift_high)}]{mark}"


def format_seed_range(cell: MetricCell) -> str:
    """``+70.1..+95.3`` (%): the lift's range over seed pairs; ``!`` when signs disagree."""
    if math.isnan(cell.seed_lift_min):
        return "-"
    mark = "!" if cell.sign_consistent is False else ""
    return f"{percent(cell.seed_lift_min)}..{percent(cell.seed_lift_max)}{mark}"


def format_p(cell: MetricCell) -> str:
    if not math.isfinite(cell.p):
        return "-"
    text = f"{cell.p:.2e}" if cell.p < 1e-3 else f"{cell.p:.3g}"
    # a p-value set by rule rather than by the test (no difference at all) is marked
    marks = ("*" if cell.significant else "") + (DEGENERATE_MARK if cell.note else "")
    return text + marks + (UNREACHABLE_MARK if cell.unreachable else "")


def multi_seed(report_or_table) -> bool:
    tables = getattr(report_or_table, "tables", None) or [report_or_table]
    return any(row.seeds > 1 for table in tables for row in table.rows)


def group_text(row, report: Report) -> str:
    unfinished = {g.label for g in report.groups if g.unfinished}
    return (
        row.group
        + (" (baseline)" if row.baseline else "")
        + (" (unfinished)" if row.group in unfinished else "")
    )


def table_headers(settings: Settings, seeds: bool = False) -> list[str]:
    headers = ["domain", "group", "n"]
    level = round(100 * settings.level)
    for metric in settings.metrics:
        headers += [metric, f"lift {metric} % ({level}% CI)"]
        headers += [f"seed lifts {metric} %"] if seeds else []
        headers += [f"p {metric}"]
    return headers


def table_cells(table: CohortTable, report: Report, seeds: bool = False) -> list[list[str]]:
    lines = []
    for row in table.rows:
        line = [row.domain, group_text(row, report), str(row.n)]
        for metric in report.settings.metrics:
            cell = row.cells[metric]
            line += [format_mean(cell), format_lift(cell)]
            line += [format_seed_range(cell)] if seeds else []
            line += [format_p(cell)]
        lines.append(line)
    return lines


def domain_headers(report: Report) -> list[str]:
    weighted = weighted_groups(report)
    return ["domain", "items", "training share", *(f"final weight {g}" for g in weighted)]


def domain_cells(report: Report) -> list[list[str]]:
    weighted = weighted_groups(report)
    lines = []
    for row in report.domain_rows:
        share = "-" if not math.isfinite(row.share) else f"{100 * row.share:.3g}%"
        items = "-" if row.items is None else str(row.items)
        weights = [number(row.weights.get(g) or math.nan, 3) for g in weighted]
        lines.append([row.domain, items, share, *weights])
    return lines


def weighted_groups(report: Report) -> list[str]:
    seen: dict[str, None] = {}
    for row in report.domain_rows:
        for group, weight in row.weights.items():
            if weight is not None:
                seen.setdefault(group, None)
    return list(seen)


GROUP_HEADERS = ["group", "model", "loss", "objective", "seeds", "status"]


def group_cells(report: Report) -> list[list[str]]:
    lines = []
    for group in report.groups:
        seeds = ", ".join("?" if s is None else str(s) for s in group.seeds)
        status = (
            f"unfinished: {len(group.unfinished)} of {len(group.runs)} runs"
            if group.unfinished
            else "finished"
        )
        label = group.label + (" (baseline)" if group.baseline else "")
        lines.append([label, group.model, group.loss, group.objective, seeds, status])
    return lines


def to_markdown(report: Report) -> str:
    parts = ["# dwrec report", "", *report.header, ""]
    if report.warnings:
        parts += [*(f"> **Warning:** {w}" for w in report.warnings), ""]
    if report.groups:
        parts += ["## Groups", ""]
        parts.append(tabulate(group_cells(report), headers=GROUP_HEADERS, tablefmt="github",
                              disable_numparse=True))  # fmt: skip
        parts.append("")
    seeds = multi_seed(report)
    for table in report.tables:
        parts += [f"## Cohort: {table.cohort}", ""]
        parts.append(
            tabulate(
                table_cells(table, report, seeds),
                headers=table_headers(report.settings, seeds),
                tablefmt="github",
                disable_numparse=True,
            )
        )
        parts += ["", *(f"- {note}" for note in table.footnotes), ""]
    parts += ["## Domains", ""]
    parts.append(
        tabulate(
            domain_cells(report),
            headers=domain_headers(report),
            tablefmt="github",
            disable_numparse=True,
        )  # fmt: skip
    )
    parts += ["", *(f"- {note}" for note in report.domain_footnotes), ""]
    return "\n".join(parts)


def latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
                          ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):  # fmt: skip
        text = text.replace(char, escaped)
    return _latex_marks(text)


def _latex_marks(text: str) -> str:
    for char, command in (("±", r"$\pm$"), (DEGENERATE_MARK, r"$\dagger$"),
                          (UNREACHABLE_MARK, r"$^\circ$")):  # fmt: skip
        text = text.replace(char, command)
    return text


def to_latex(report: Report) -> str:
    """Booktabs tables (cells escaped), each followed by its notes; needs ``booktabs``."""
    parts = [f"% {latex_escape(line)}" for line in report.header if line]
    parts += [f"% WARNING: {latex_escape(w)}" for w in report.warnings]
    seeds = multi_seed(report)
    if report.groups:
        body = tabulate(group_cells(report), headers=GROUP_HEADERS, tablefmt="latex_booktabs",
                        disable_numparse=True)  # fmt: skip
        parts += [r"\begin{table}[ht]", r"\centering", r"\caption{Groups}", body,
                  r"\end{table}", ""]  # fmt: skip
    for table in report.tables:
        body = tabulate(
            table_cells(table, report, seeds), headers=table_headers(report.settings, seeds),
            tablefmt="latex_booktabs", disable_numparse=True,
        )  # fmt: skip
        parts += [
            r"\begin{table}[ht]", r"\centering", r"\scriptsize",
            rf"\caption{{dwrec comparison, cohort {latex_escape(table.cohort)}}}",
            _latex_marks(body),
            *(rf"\par\footnotesize {latex_escape(note)}" for note in table.footnotes),
            r"\end{table}", "",
        ]  # fmt: skip
    body = tabulate(domain_cells(report), headers=domain_headers(report),
                    tablefmt="latex_booktabs", disable_numparse=True)  # fmt: skip
    parts += [r"\begin{table}[ht]", r"\centering", r"\caption{Domains}", body,
              *(rf"\par\footnotesize {latex_escape(n)}" for n in report.domain_footnotes),
              r"\end{table}", ""]  # fmt: skip
    return "\n".join(parts)


RENDERERS.update(md=to_markdown, latex=to_latex)
