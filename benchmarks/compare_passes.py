"""Compare two passes of a reproduction from the tables their pages hold.

The standard reproduction ran twice (docs/reproduction-standard-first-pass.md, then
docs/reproduction-standard.md), on different CPUs: the same seeds do not train bit for bit
alike there, so the passes can only agree within the seeds' spread. For every dataset whose
tables both pages hold, this script sets side by side

- each group's overall test Recall@10 / NDCG@10 (mean and sd over seeds), with Welch's
  t-test of the two passes' means (3 seeds each: a coarse check, Holm-corrected over all
  the comparisons), and the epochs each seed trained;
- every confirmatory-family cell of the target cohort (a group's lift over its baseline
  with its CI and significance), counting the cells whose significance and sign agree and
  whose lift lies inside the other pass's CI, and listing the cells that disagree.

It reads the two markdown pages only (the first pass's run folders are gone) and trains
nothing. The output names no date or machine: the same pages give the same bytes.

    python benchmarks/compare_passes.py --first docs/reproduction-standard-first-pass.md \\
        --second docs/reproduction-standard.md --write docs/reproduction-passes.md
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from _common import publish

DATASET = re.compile(r"^# (\S+) \(([^\s()]+)\)$")  # "# ml-1m (MovieLens)"
REPORT = re.compile(r"^## (\S+)$")  # "## sasrec", "## sasrec-dynamic-vs-sigma"
MEAN_SD = re.compile(r"^(\d+\.\d+) \((\d+\.\d+)\)$")  # "0.2596 (0.0037)"
LIFT = re.compile(r"^([+-]?(?:\d+\.\d+|inf))% \[([+-]?(?:\d+\.\d+|inf)), ([+-]?(?:\d+\.\d+|inf))\]")
METRICS = ("recall@10", "ndcg@10")
ALPHA = 0.05


@dataclass(frozen=True)
class Cell:
    """One target-cohort cell: a group's lift over the report's baseline on a domain."""

    lift: float  # percent
    low: float
    high: float
    significant: bool
    text: str  # as the page writes it, e.g. "+49.4% [+20.0, +98.3] p=0.00852*"

    def status(self) -> str:
        if not self.significant:
            return "not significant"
        return "significantly up" if self.lift > 0 else "significantly down"


@dataclass
class Tables:
    """What one page holds for one dataset."""

    family: str
    overall: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    epochs: dict[str, str] = field(default_factory=dict)
    cells: dict[tuple[str, str, str, str], Cell] = field(default_factory=dict)


def table_rows(lines: list[str], start: int) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the first markdown table at or after ``start``."""
    index = start
    while index < len(lines) and not lines[index].startswith("|"):
        index += 1
    block = []
    while index < len(lines) and lines[index].startswith("|"):
        block.append([part.strip() for part in lines[index].strip().strip("|").split("|")])
        index += 1
    if not block:
        return [], []
    body = [row for row in block[1:] if not all(set(cell) <= set(":-") for cell in row)]
    return block[0], body


def parse(page: Path) -> dict[str, Tables]:
    """Each dataset's overall metrics and confirmatory target-cohort cells, by dataset key."""
    try:
        lines = page.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise SystemExit(f"compare_passes: cannot read {page}: {error.strerror}") from None
    found: dict[str, Tables] = {}
    key = report = None
    family: list[str] = []
    for number, line in enumerate(lines):
        if match := DATASET.match(line):
            key, report, family = match.group(1), None, []
            found[key] = Tables(match.group(2))
        elif key is None:
            continue
        elif line.startswith("# "):
            key = None  # the verdicts or the timing: no dataset's tables
        elif line.startswith("Confirmatory family (declared"):
            family = [d.strip() for d in line.split(":", 1)[1].split(";")[0].split(",")]
        elif line.startswith("## Overall test metrics"):
            header, body = table_rows(lines, number + 1)
            for row in body:
                values = dict(zip(header, row, strict=False))
                group = values["group"]
                for metric, column in zip(METRICS, ("Recall@10", "NDCG@10"), strict=True):
                    if match := MEAN_SD.match(values.get(column, "")):
                        found[key].overall.setdefault(group, {})[metric] = (
                            float(match.group(1)), float(match.group(2)))  # fmt: skip
                found[key].seeds[group] = int(values["seeds"])
                found[key].epochs[group] = values.get("epochs (best)", "")
        elif match := REPORT.match(line):
            report = match.group(1)
        elif line == "### Cohort: target" and report is not None:
            header, body = table_rows(lines, number + 1)
            for row in body:
                values = dict(zip(header, row, strict=False))
                if values.get("domain") not in family:
                    continue
                for metric in METRICS:
                    cell = parse_cell(values, metric)
                    if cell is not None:
                        found[key].cells[(report, values["domain"], values["group"], metric)] = cell
    return found


def parse_cell(values: dict[str, str], metric: str) -> Cell | None:
    """A target-cohort row's lift cell for ``metric``; None for the baseline's row."""
    lift_text = values.get(f"lift {metric} % (95% CI)", "-")
    match = LIFT.match(lift_text)
    if match is None:
        return None
    p_text = values.get(f"p {metric}", "-")
    lift, low, high = (float(group) for group in match.groups())
    return Cell(lift, low, high, p_text.rstrip("°†").endswith("*"), f"{lift_text} p={p_text}")


def welch(first: tuple[float, float], second: tuple[float, float], n1: int, n2: int) -> float:
    """Two-sided p of Welch's t-test for the means (mean, sample sd) of two passes."""
    from scipy import stats

    (m1, s1), (m2, s2) = first, second
    if s1 == 0 and s2 == 0:
        return 1.0 if m1 == m2 else 0.0
    return float(stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False).pvalue)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order."""
    order = sorted(range(len(pvalues)), key=pvalues.__getitem__)
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def inside(value: float, cell: Cell) -> bool:
    return cell.low <= value <= cell.high


def overall_section(keys: list[str], first: dict, second: dict) -> list[str]:
    rows = []
    for key in keys:
        one, two = first[key], second[key]
        for group in [g for g in one.overall if g in two.overall]:
            for metric in METRICS:
                if metric in one.overall[group] and metric in two.overall[group]:
                    a, b = one.overall[group][metric], two.overall[group][metric]
                    p = welch(a, b, one.seeds[group], two.seeds[group])
                    rows.append((key, group, metric, a, b, p, one.epochs[group],
                                 two.epochs[group]))  # fmt: skip
    adjusted = holm([row[5] for row in rows])
    lines = [
        "## Overall test metrics",
        "",
        "| dataset | group | metric | first pass | second pass | difference | Welch p | Holm p "
        "| epochs (best), first | epochs (best), second |",
        "|---|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for (key, group, metric, a, b, p, e1, e2), q in zip(rows, adjusted, strict=True):
        lines.append(f"| {key} | {group} | {metric} | {a[0]:.4f} ({a[1]:.4f}) | {b[0]:.4f} "
                     f"({b[1]:.4f}) | {b[0] - a[0]:+.4f} | {p:.3g} | {q:.3g} | {e1} | {e2} |")  # fmt: skip
    below = sum(row[5] < ALPHA for row in rows)
    lines += [
        "",
        f"{len(rows)} comparisons; {below} with Welch p < {ALPHA} (about "
        f"{ALPHA * len(rows):.1f} expected by chance if the passes drew from the same spread), "
        f"{sum(q < ALPHA for q in adjusted)} after Holm's correction over all {len(rows)}. "
        "With three seeds a pass the test is coarse: a difference of a few sds can pass it.",
    ]
    return lines


def cells_section(keys: list[str], first: dict, second: dict) -> list[str]:
    lines = ["## Confirmatory cells (target cohort)", ""]
    lines += ["| dataset | report | cells in both | same outcome (significantly up, down, neither) | second pass's "
              "lift inside the first's CI | first's inside the second's |",
              "|---|---|---:|---:|---:|---:|"]  # fmt: skip
    differing, totals = [], [0, 0, 0, 0]
    for key in keys:
        shared = set(first[key].cells) & set(second[key].cells)
        for report in dict.fromkeys(name[0] for name in first[key].cells):
            names = [name for name in first[key].cells if name in shared and name[0] == report]
            counts = [len(names), 0, 0, 0]
            for name in names:
                a, b = first[key].cells[name], second[key].cells[name]
                counts[1] += a.status() == b.status()
                counts[2] += inside(b.lift, a)
                counts[3] += inside(a.lift, b)
                if a.status() != b.status():
                    differing.append((key, *name, a, b))
            if names:
                lines.append(f"| {key} | {report} | " + " | ".join(map(str, counts)) + " |")
                totals = [t + c for t, c in zip(totals, counts, strict=True)]
    lines.append("| all | | " + " | ".join(f"**{t}**" for t in totals) + " |")
    lines += ["", "A cell is a group's lift over its report's baseline on one domain of the "
              "declared family, for one metric; its significance is the page's own (`*`: Holm "
              "within the family and the same sign in every seed pair).", "",
              f"Cells whose significance or sign differs between the passes ({len(differing)}):",
              ""]  # fmt: skip
    if differing:
        lines += ["| dataset | report | domain | group | metric | first pass | second pass |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for key, report, domain, group, metric, a, b in differing:
            lines.append(f"| {key} | {report} | {domain} | {group} | {metric} | {a.text} "
                         f"| {b.text} |")  # fmt: skip
    else:
        lines.append("none.")
    return lines


def compare(first_page: Path, second_page: Path, command: str) -> str:
    first, second = parse(first_page), parse(second_page)
    keys = [key for key in first if key in second]
    if not keys:
        raise SystemExit(
            f"compare_passes: no dataset has tables in both {first_page} ({', '.join(first) or 'none'}) "
            f"and {second_page} ({', '.join(second) or 'none'}): a dataset's tables appear once "
            "all its runs are done"
        )
    lines = [
        "# The reproduction's two passes compared",
        "",
        f"- command: `{command}`",
        f"- first pass: {first_page.name}; second pass: {second_page.name}",
        f"- datasets in both: {', '.join(keys)}",
        "",
        *overall_section(keys, first, second),
        "",
        *cells_section(keys, first, second),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--first", type=Path, required=True, help="the first pass's page")
    parser.add_argument("--second", type=Path, required=True, help="the second pass's page")
    parser.add_argument("--write", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    shown = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    text = compare(args.first, args.second, f"python benchmarks/compare_passes.py {shown}")
    publish(text.splitlines(), args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
