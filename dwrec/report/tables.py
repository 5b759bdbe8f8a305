"""The report's data: what a comparison table holds, and the report that gathers them.

One comparison table per cohort: a row per (domain, group) and an ``overall`` row per group
(every test case). For each metric a row carries the mean over seeds and its spread (std
over seeds), the lift over the baseline group with its bootstrap CI, the range of the lift
over seed pairs, and the corrected p-value of a paired test. :mod:`.compare` computes them;
:mod:`.render_text` (md, latex), :mod:`.render_data` (json, csv) and :mod:`.console` (rich,
for a terminal) render them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

FORMATS = ("md", "json", "csv", "latex")
DEGENERATE_MARK = "†"
UNDECIDED_MARK = "?"  # --effect: the CI holds both 0 and that lift
UNREACHABLE_MARK = "°"  # too few non-zero differences for the test to reach p < alpha
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
# family of a tested comparison (MetricCell.family)
CONFIRMATORY = "confirmatory"
EXPLORATORY = "exploratory"


RENDERERS: dict[str, Callable[[Report], str]] = {}
"""Format -> renderer; filled by :mod:`dwrec.report.render_text` and
:mod:`dwrec.report.render_data` (imported by the package), which import this module."""


@dataclass
class MetricCell:
    """One metric of one row. Lifts are fractions; ``nan`` means not applicable.

    ``seed_lift_min``/``seed_lift_max``: the lift's range over every (group seed, baseline
    seed) pair; ``sign_consistent``: every such lift has the pooled lift's sign (``None``
    when both groups have one seed); ``family``: the multiple-comparison family of the
    p-value (:data:`CONFIRMATORY`, :data:`EXPLORATORY`, or ``""`` when not tested);
    ``undecided`` (with ``--effect`` only, else ``None``): not significant, and the CI holds
    both 0 and the ``--effect`` lift; ``nonzero``: the tested cases whose paired difference
    is not 0 (``None`` when not tested); ``unreachable``: so few of them that the test's
    smallest possible p (:func:`dwrec.report.stats.smallest_p`) is at least alpha, so the
    cell could not have been significant whatever the lift.
    """

    mean: float
    std: float
    lift: float = math.nan
    lift_low: float = math.nan
    lift_high: float = math.nan
    p_raw: float = math.nan
    p: float = math.nan
    significant: bool = False
    note: str = ""
    seed_lift_min: float = math.nan
    seed_lift_max: float = math.nan
    sign_consistent: bool | None = None
    family: str = ""
    undecided: bool | None = None
    nonzero: int | None = None
    unreachable: bool = False


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
    # (family name, domains in it, number of comparisons), in footnote order
    families: list[tuple[str, list[str], int]] = field(default_factory=list)


@dataclass
class DomainRow:
    domain: str
    items: int | None
    share: float
    weights: dict[str, float | None]


@dataclass
class GroupInfo:
    """What a group is: its model and objective, seeds, and runs that did not finish."""

    label: str
    model: str
    loss: str
    objective: str
    seeds: list[int | None]
    runs: list[str]
    unfinished: list[str] = field(default_factory=list)
    baseline: bool = False

    @property
    def description(self) -> str:
        text = f"{self.label}: model {self.model}, loss {self.loss}, objective {self.objective}"
        if self.unfinished:
            text += f", UNFINISHED runs: {', '.join(self.unfinished)}"
        return text


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
    min_cases: int = 20
    family: list[str] = field(default_factory=list)
    allow_mismatch: bool = False
    effect: float | None = None


@dataclass
class Report:
    """Everything the renderers need; ``header`` says which runs and baseline were used,
    ``warnings`` what the reader must know (unfinished runs, skipped runs, mismatches)."""

    settings: Settings
    baseline: str
    header: list[str]
    tables: list[CohortTable]
    domain_rows: list[DomainRow]
    domain_footnotes: list[str]
    provenance: dict
    groups: list[GroupInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def render(self, fmt: str) -> str:
        """The report as ``fmt`` (md, json, csv or latex: :data:`RENDERERS`)."""
        return RENDERERS[fmt](self)
