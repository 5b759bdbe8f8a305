"""The report's tables: building them from aligned per-case values, rendering md/json/csv/latex.

One comparison table per cohort: a row per (domain, group) and an ``overall`` row per group
(every test case). For each metric a row carries the mean over seeds and its spread (std
over seeds), the lift over the baseline group with a paired bootstrap CI, and the corrected
p-value of a paired test; the family of a correction is every p-value of one table.
A domain table beside it gives items, training share and final learned domain weights.
"""

from __future__ import annotations

import csv
import io
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from tabulate import tabulate

from dwrec.report import stats
from dwrec.report.runs import CaseTable, RunGroup

FORMATS = ("md", "json", "csv", "latex")
DEGENERATE_MARK = "†"
OVERALL = "overall"
COHORT_MEANING = {
    "target": "cases whose target item lies in the domain",
    "power": "cases whose user has at least the power threshold of their training "
    "interactions in the domain",
    "general": "cases whose user has at most the general threshold of their training "
    "interactions in the domain",
}
TEST_NAMES = {
    "wilcoxon": "two-sided Wilcoxon signed-rank test (zero differences dropped; exact for "
    "n <= 50 without ties, else normal approximation with tie correction, as scipy)",
    "ttest": "two-sided paired t-test",
    "permutation": "two-sided paired sign-flip permutation test of the mean difference "
    "(exact enumeration when 2^n <= permutations, else p = (b+1)/(P+1))",
}


@dataclass
class MetricCell:
    """One metric of one row. Lifts are fractions; ``nan`` means not applicable."""

    mean: float
    std: float
    lift: float = math.nan
    lift_low: float = math.nan
    lift_high: float = math.nan
    p_raw: float = math.nan
    p: float = math.nan
    significant: bool = False
    note: str = ""


@dataclass
class Row:
    domain: str
    group: str
    baseline: bool
    n: int
    seeds: int
    cells: dict[str, MetricCell]


@dataclass
class CohortTable:
    cohort: str
    rows: list[Row]
    footnotes: list[str] = field(default_factory=list)


@dataclass
class DomainRow:
    domain: str
    items: int | None
    share: float
    weights: dict[str, float | None]


@dataclass
class Settings:
    """What the comparison was asked to do (recorded in every output)."""

    metrics: list[str]
    cohorts: list[str]
    test: str = "wilcoxon"
    alpha: float = 0.05
    correction: str = "holm"
    bootstrap: int = 1000
    permutations: int = 10_000
    level: float = 0.95
    seed: int = 0


@dataclass
class Report:
    """Everything the renderers need; ``header`` says which runs and baseline were used."""

    settings: Settings
    baseline: str
    header: list[str]
    tables: list[CohortTable]
    domain_rows: list[DomainRow]
    domain_footnotes: list[str]
    provenance: dict

    def render(self, fmt: str) -> str:
        renderers = {"md": to_markdown, "json": to_json, "csv": to_csv, "latex": to_latex}
        return renderers[fmt](self)


def build_cohort_table(
    case_table: CaseTable,
    groups: Sequence[RunGroup],
    baseline_index: int,
    cohort: str,
    domains: Sequence[str],
    settings: Settings,
) -> CohortTable:
    """Compare every group with the baseline in each domain of ``cohort`` and overall.

    All subsets (domains and overall), groups and metrics share one bootstrap resample
    matrix and one set of permutation sign flips, drawn over every test case.
    """
    members = case_table.members.get(cohort, {})
    n_all = case_table.case_id.size
    subsets = [*domains, OVERALL]
    masks = np.column_stack(
        [members.get(d, np.zeros(n_all, dtype=bool)) for d in domains] + [np.ones(n_all, bool)]
    )
    sizes = masks.sum(axis=0)
    g_count, metrics = len(groups), settings.metrics
    # columns metric-major, group-minor: column of (metric mi, group g) = mi * g_count + g
    values = np.column_stack([case_table.values[m][g] for m in metrics for g in range(g_count)])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (masks.T.astype(np.float64) @ values) / sizes[:, None]
    pairs = [(mi, g) for mi in range(len(metrics)) for g in range(g_count) if g != baseline_index]
    lifts = _bootstrap_lifts(values, masks, means, pairs, g_count, baseline_index, cohort, settings)
    tests = _tests(values, masks, pairs, g_count, baseline_index, cohort, settings)
    spreads = _seed_spreads(case_table, masks, sizes, metrics, g_count)
    rows = []
    for s, domain in enumerate(subsets):
        for g, group in enumerate(groups):
            cells = {}
            for mi, metric in enumerate(metrics):
                cell = MetricCell(float(means[s, mi * g_count + g]), float(spreads[mi][g][s]))
                if (mi, g) in pairs and sizes[s]:
                    column = pairs.index((mi, g))
                    cell.lift, cell.lift_low, cell.lift_high = map(float, lifts[s, column])
                    cell.p_raw, cell.note = tests[s][column]
                cells[metric] = cell
            rows.append(
                Row(domain, group.label, g == baseline_index, int(sizes[s]), len(group.runs), cells)
            )
    _correct(rows, settings)
    return CohortTable(cohort, rows)


def _seed_spreads(case_table, masks, sizes, metrics, g_count) -> list[list[np.ndarray]]:
    """metric -> group -> ``[S]`` std over seeds (ddof 1) of the subset means; nan for 1 seed."""
    spreads = []
    for metric in metrics:
        per_group = []
        for g in range(g_count):
            seed_values = case_table.seed_values[metric][g]
            with np.errstate(invalid="ignore", divide="ignore"):
                seed_means = (seed_values @ masks.astype(np.float64)) / sizes
            if seed_values.shape[0] > 1:
                per_group.append(seed_means.std(axis=0, ddof=1))
            else:
                per_group.append(np.full(masks.shape[1], np.nan))
        spreads.append(per_group)
    return spreads


def _rng(settings: Settings, purpose: str, cohort: str) -> np.random.Generator:
    """A generator seeded by (seed, purpose, cohort); draws cover every test case, so a
    domain's CI and p-value do not depend on which other domains the report shows."""
    tag = zlib.crc32(f"{purpose}/{cohort}".encode())
    return np.random.default_rng([settings.seed, tag])


def _bootstrap_lifts(values, masks, means, pairs, g_count, baseline_index, cohort, settings):
    """``[S, P, 3]``: (lift, low, high) per subset and compared (metric, group) pair."""
    result = np.full((masks.shape[1], len(pairs), 3), np.nan)
    if values.shape[0] == 0 or not pairs:
        return result
    boot = stats.bootstrap_subset_means(
        values, masks, settings.bootstrap, _rng(settings, "bootstrap", cohort)
    )
    group_columns = [mi * g_count + g for mi, g in pairs]
    base_columns = [mi * g_count + baseline_index for mi, _ in pairs]
    samples = stats.relative_lift(boot[:, :, group_columns], boot[:, :, base_columns])
    result[:, :, 1], result[:, :, 2] = stats.percentile_interval(samples, settings.level)
    result[:, :, 0] = stats.relative_lift(means[:, group_columns], means[:, base_columns])
    return result


def _tests(values, masks, pairs, g_count, baseline_index, cohort, settings):
    """subset -> pair -> (p, note) of the paired test of the group against the baseline."""
    subsets = masks.shape[1]
    if not pairs:
        return [[] for _ in range(subsets)]
    differences = np.column_stack(
        [values[:, mi * g_count + g] - values[:, mi * g_count + baseline_index] for mi, g in pairs]
    )
    degenerate = [
        [stats.degenerate_result(differences[masks[:, s], c]) for c in range(len(pairs))]
        for s in range(subsets)
    ]
    if settings.test == "permutation":
        rng = _rng(settings, "permutation", cohort)
        p_values = stats.sign_flip_subset_tests(differences, masks, settings.permutations, rng)
    else:
        p_values = np.full((subsets, len(pairs)), np.nan)
        for s in range(subsets):
            for c in range(len(pairs)):
                if degenerate[s][c] is None:
                    p_values[s, c] = stats.paired_test(differences[masks[:, s], c], settings.test).p
    return [
        [
            (outcome.p, outcome.note) if outcome else (float(p_values[s, c]), "")
            for c, outcome in enumerate(degenerate[s])
        ]
        for s in range(subsets)
    ]


def _correct(rows: list[Row], settings: Settings) -> None:
    cells = [c for row in rows for c in row.cells.values() if not row.baseline and row.n]
    adjusted = stats.adjust(np.array([c.p_raw for c in cells]), settings.correction)
    for cell, p in zip(cells, adjusted, strict=True):
        cell.p = float(p)
        cell.significant = bool(np.isfinite(p) and p < settings.alpha)


# ---------------------------------------------------------------- rendering


def _number(value: float, digits: int = 4) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_mean(cell: MetricCell) -> str:
    if not math.isfinite(cell.mean):
        return "-"
    spread = f" ± {cell.std:.4f}" if math.isfinite(cell.std) else ""
    return f"{cell.mean:.4f}{spread}"


def _percent(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{100 * value:+.1f}"


def format_lift(cell: MetricCell) -> str:
    if math.isnan(cell.lift):
        return "-"
    return f"{_percent(cell.lift)}% [{_percent(cell.lift_low)}, {_percent(cell.lift_high)}]"


def format_p(cell: MetricCell) -> str:
    if not math.isfinite(cell.p):
        return "-"
    text = f"{cell.p:.2e}" if cell.p < 1e-3 else f"{cell.p:.3g}"
    # a p-value set by rule rather than by the test (no difference at all) is marked
    return text + ("*" if cell.significant else "") + (DEGENERATE_MARK if cell.note else "")


def table_headers(settings: Settings) -> list[str]:
    headers = ["domain", "group", "n"]
    for metric in settings.metrics:
        level = round(100 * settings.level)
        headers += [metric, f"lift {metric} % ({level}% CI)", f"p {metric}"]
    return headers


def table_cells(table: CohortTable, settings: Settings) -> list[list[str]]:
    lines = []
    for row in table.rows:
        line = [row.domain, row.group + (" (baseline)" if row.baseline else ""), str(row.n)]
        for metric in settings.metrics:
            cell = row.cells[metric]
            line += [format_mean(cell), format_lift(cell), format_p(cell)]
        lines.append(line)
    return lines


def domain_headers(report: Report) -> list[str]:
    weighted = _weighted_groups(report)
    return ["domain", "items", "training share", *(f"final weight {g}" for g in weighted)]


def domain_cells(report: Report) -> list[list[str]]:
    weighted = _weighted_groups(report)
    lines = []
    for row in report.domain_rows:
        share = "-" if not math.isfinite(row.share) else f"{100 * row.share:.3g}%"
        items = "-" if row.items is None else str(row.items)
        weights = [_number(row.weights.get(g) or math.nan, 3) for g in weighted]
        lines.append([row.domain, items, share, *weights])
    return lines


def _weighted_groups(report: Report) -> list[str]:
    seen: dict[str, None] = {}
    for row in report.domain_rows:
        for group, weight in row.weights.items():
            if weight is not None:
                seen.setdefault(group, None)
    return list(seen)


def to_markdown(report: Report) -> str:
    parts = ["# dwrec report", "", *report.header, ""]
    for table in report.tables:
        parts += [f"## Cohort: {table.cohort}", ""]
        parts.append(
            tabulate(
                table_cells(table, report.settings),
                headers=table_headers(report.settings),
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


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def report_dict(report: Report) -> dict:
    """The report as plain JSON-able data (``nan`` -> ``null``, infinities as strings)."""
    return _clean(
        {
            "baseline": report.baseline,
            "header": report.header,
            "settings": asdict(report.settings),
            "tables": [asdict(t) for t in report.tables],
            "domains": [asdict(d) for d in report.domain_rows],
            "domain_footnotes": report.domain_footnotes,
            **report.provenance,
        }
    )


def to_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=True, allow_nan=False) + "\n"


CSV_COLUMNS = (
    "cohort", "domain", "group", "baseline", "n", "seeds", "metric", "mean", "std", "lift",
    "lift_low", "lift_high", "p_raw", "p", "significant", "note", "domain_items",
    "domain_share", "final_weight", "test", "correction", "alpha", "bootstrap", "level",
)  # fmt: skip


def to_csv(report: Report) -> str:
    """One line per (cohort, domain, group, metric) with the domain's statistics beside it."""
    by_domain = {d.domain: d for d in report.domain_rows}
    settings = report.settings
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table in report.tables:
        for row in table.rows:
            domain = by_domain.get(row.domain)
            for metric, cell in row.cells.items():
                writer.writerow(
                    _csv_values(
                        [
                            table.cohort, row.domain, row.group, row.baseline, row.n, row.seeds,
                            metric, cell.mean, cell.std, cell.lift, cell.lift_low,
                            cell.lift_high, cell.p_raw, cell.p, cell.significant, cell.note,
                            domain.items if domain else None,
                            domain.share if domain else None,
                            domain.weights.get(row.group) if domain else None,
                            settings.test, settings.correction, settings.alpha,
                            settings.bootstrap, settings.level,
                        ]
                    )
                )  # fmt: skip
    return buffer.getvalue()


def _csv_values(values: list) -> list:
    out = []
    for value in values:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append("")
        elif isinstance(value, float):
            out.append(repr(float(value)))
        else:
            out.append(value)
    return out


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"),
                          ("#", r"\#"), ("_", r"\_"), ("{", r"\{"), ("}", r"\}"),
                          ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):  # fmt: skip
        text = text.replace(char, escaped)
    return text.replace("±", r"$\pm$").replace(DEGENERATE_MARK, r"$\dagger$")


def to_latex(report: Report) -> str:
    """Booktabs tables (cells escaped), each followed by its notes; needs ``booktabs``."""
    parts = [f"% {_latex_escape(line)}" for line in report.header if line]
    for table in report.tables:
        body = tabulate(
            table_cells(table, report.settings), headers=table_headers(report.settings),
            tablefmt="latex_booktabs", disable_numparse=True,
        )  # fmt: skip
        parts += [
            r"\begin{table}[ht]", r"\centering", r"\scriptsize",
            rf"\caption{{dwrec comparison, cohort {_latex_escape(table.cohort)}}}",
            body.replace("±", r"$\pm$").replace(DEGENERATE_MARK, r"$\dagger$"),
            *(rf"\par\footnotesize {_latex_escape(note)}" for note in table.footnotes),
            r"\end{table}", "",
        ]  # fmt: skip
    body = tabulate(domain_cells(report), headers=domain_headers(report),
                    tablefmt="latex_booktabs", disable_numparse=True)  # fmt: skip
    parts += [r"\begin{table}[ht]", r"\centering", r"\caption{Domains}", body,
              *(rf"\par\footnotesize {_latex_escape(n)}" for n in report.domain_footnotes),
              r"\end{table}", ""]  # fmt: skip
    return "\n".join(parts)
