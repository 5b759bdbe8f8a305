"""docs/results.md quotes the standard reproduction's verdicts in its own words; every
figure it quotes there must be one the script wrote into docs/reproduction-standard.md or,
for the datasets the second pass has not redone yet, docs/reproduction-standard-first-pass.md
(verbatim tables), so a transcription slip fails here instead of reaching a reader."""

from __future__ import annotations

import math
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
LIFT_CI = re.compile(r"([+-]\d+\.\d)% \[([+-]\d+\.\d)%?, ([+-]\d+\.\d|\+inf)%?\]")
SIGNED_PCT = re.compile(r"[+-]\d+\.\d%")
METRIC = re.compile(r"(?<![\d.=])0\.\d{4}(?![\d%])")  # not a p-value
P_VALUE = re.compile(r"\bp ?= ?(\d[\d.]*(?:e-\d+)?)")
TABLE_P = re.compile(r"\| (\d\.\d+(?:e-\d+)?)\*?†?°? +\|")  # a report table's p column


def verdict_section(page: str) -> str:
    """The results page's verdict on the paper, up to how the run works."""
    start = page.index("## The verdict on the paper")
    return page[start : page.index("### How the standard reproduction runs", start)]


def rounds_to(quoted: str, written: list[float]) -> bool:
    """Whether some p-value of ``written`` rounds to ``quoted`` at the digits quoted."""
    value = float(quoted)
    mantissa = quoted.split("e")[0].replace(".", "").lstrip("0") or "0"
    unit = 10 ** (math.floor(math.log10(value)) - len(mantissa) + 1) if value else 1.0
    return any(abs(p - value) <= 0.5 * unit * (1 + 1e-6) for p in written)


def unquoted(section: str, source: str) -> list[str]:
    """The figures of ``section`` that ``source`` does not hold: lifts with their CIs, signed
    percentages, four-decimal metric values and p-values (up to the rounding quoted)."""
    missing = []
    for lift, low, high in LIFT_CI.findall(section):
        # the verdicts write "+1.0% [+0.5%, +2.0%]", the report tables "+1.0% [+0.5, +2.0]"
        if f"{lift}% [{low}%, {high}%]" not in source and f"{lift}% [{low}, {high}]" not in source:
            missing.append(f"{lift}% [{low}, {high}]")
    missing += [f for f in sorted(set(SIGNED_PCT.findall(section))) if f not in source]
    missing += [f for f in sorted(set(METRIC.findall(section))) if f not in source]
    written = [float(p) for p in P_VALUE.findall(source) + TABLE_P.findall(source)]
    missing += [f"p={p}" for p in P_VALUE.findall(section) if not rounds_to(p, written)]
    return missing


def test_every_verdict_figure_on_the_results_page_is_in_the_script_tables():
    section = verdict_section((DOCS / "results.md").read_text(encoding="utf-8"))
    pages = ("reproduction-standard.md", "reproduction-standard-first-pass.md")
    source = "\n".join((DOCS / name).read_text(encoding="utf-8") for name in pages)
    assert len(LIFT_CI.findall(section)) >= 10  # the section is the one that quotes them
    assert unquoted(section, source) == []


def test_the_check_catches_a_slip_in_each_kind_of_figure():
    source = "a: +49.4% [+20.0%, +98.3%] p=0.00852*; b: -31.2% [-43.9%, +inf] p=0.000565; 0.2596"
    assert unquoted("+49.4% [+20.0, +98.3] p=0.0085; -31.2% p=0.00057; 0.2596", source) == []
    assert unquoted("+49.4% [+20.0, +98.4]", source) == ["+49.4% [+20.0, +98.4]"]
    table = "| +85.4% [+16.2, +269.4] | 0.466       |"  # a report table's cells
    assert unquoted("+85.4% [+16.2, +269.4], p=0.466", table) == []
    assert unquoted("p=0.467", table) == ["p=0.467"]
    assert unquoted("+85.4% [+16.2, +269.5]", table) == ["+85.4% [+16.2, +269.5]"]
    assert unquoted("lift +49.5%", source) == ["+49.5%"]
    assert unquoted("recall 0.2597", source) == ["0.2597"]
    assert unquoted("p=0.0086", source) == ["p=0.0086"]
    assert unquoted("p=0.0006", source) == []  # 0.000565 at one digit
    assert unquoted("p=0.0007", source) == ["p=0.0007"]
