"""The verdict rule of the paper reproduction (``benchmarks/reproduce_paper.py``).

Each claim of the Dynamic Weighted Loss paper gets one of :data:`VERDICTS`, decided from the
cells of ``dwrec report --format json`` (lift, its CI over seeds and cases, corrected p and
``significant``, which already requires the corrected test to pass *and* the lift to have the
same sign in every seed). The rules, applied to the cells a claim names:

- **improvement** (claims 1 and 4: "A beats B"): a cell *confirms* when it is significant with
  a positive lift and *contradicts* when it is significant with a negative lift.
  ``reproduced``: every cell confirms; ``partly``: some cells confirm, not all;
  ``not reproduced``: no cell confirms (the reason says whether cells contradict, or how
  many lifts are positive without being significant: a claim that no cell supports is not
  reproduced, however its point estimates lean).
- **non-inferiority** (claims 2 and 3: "maintained", "not harmed") with margin
  :data:`MARGIN` (a relative drop of 5%): ``reproduced``: every cell's CI lies above
  ``-MARGIN`` (no drop larger than 5% is compatible with the data); ``not reproduced``: a
  cell is significant with a lift below ``-MARGIN``; ``partly``: anything in between (CIs too
  wide to exclude a 5% drop, or a significant drop smaller than 5%).
- **same pattern everywhere** (claim 5): each dataset family gets the improvement verdict of
  its own sparse-domain cells (its reason also counts the cells whose CI holds both 0 and the
  paper's Film-Noir lift, :func:`undecided`: too small a sample to tell either way; claim 4's
  reason counts them too, the Film-Noir lift as a yardstick of a lift worth detecting); ``reproduced`` when every family required is present and
  reproduced; ``not reproduced`` when none of the present families is reproduced or partly;
  ``partly`` otherwise, or when a family is missing but some present ones reproduce;
  ``not testable here`` when no family has cells.
- **overhead** (claim 6, "under 1% of training time"): the median over paired runs of
  ``dynamic step time / generic step time - 1``: below :data:`OVERHEAD_LIMIT` (1%)
  ``reproduced``; below :data:`OVERHEAD_PARTLY` (5%) ``partly``; else ``not reproduced``.
  When the ratios' spread (half their interquartile range, or half their range with fewer
  than four pairs) exceeds :data:`OVERHEAD_PARTLY`, the timings are too noisy to tell
  (another job on the same cores): ``not testable here``.

Any rule without a single usable cell (no runs, a domain under ``--min-cases`` test cases, a
model this dwrec lacks) answers ``not testable here`` with the reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dwrec.report.stats import ci_holds_both

VERDICTS = ("reproduced", "partly", "not reproduced", "not testable here")
MARGIN = 0.05
OVERHEAD_LIMIT = 0.01
OVERHEAD_PARTLY = 0.05
TIE = 1e-9  # a relative lift this small is float rounding of two equal means, not a gain


@dataclass(frozen=True)
class Cell:
    """One compared cell of a report: group vs baseline on one domain and metric."""

    where: str  # e.g. "ml-1m sasrec Film-Noir recall@10", for reasons
    lift: float
    lift_low: float
    lift_high: float
    p: float
    significant: bool
    metric: str = ""
    unreachable: bool = False  # too few non-zero differences for the test to reach alpha


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def noted(self, note: str) -> Verdict:
        """The same verdict with ``note`` appended to its reason ("": unchanged)."""
        return Verdict(self.verdict, f"{self.reason}; {note}") if note else self


def _number(value) -> float:
    return math.nan if value is None else float(value)


def cells_from_report(
    report: Mapping,
    group: str,
    domains: Sequence[str],
    metrics: Sequence[str],
    *,
    cohort: str = "target",
    where: str = "",
) -> list[Cell]:
    """The cells of ``group`` on ``domains`` x ``metrics`` of a report's JSON (as parsed);
    cells without a lift (too few cases, no baseline value) are left out; an infinite lift
    (the JSON's ``"inf"``: the baseline scored 0 there) is kept."""
    cells = []
    for table in report.get("tables", []):
        if table.get("cohort") != cohort:
            continue
        for row in table.get("rows", []):
            if row.get("group") != group or row.get("domain") not in domains:
                continue
            for metric in metrics:
                cell = row.get("cells", {}).get(metric)
                if cell is None or cell.get("lift") is None:
                    continue
                lift = _number(cell["lift"])  # "inf": the baseline scored 0, a real cell
                if math.isnan(lift):
                    continue
                cells.append(
                    Cell(
                        where=" ".join(x for x in (where, row["domain"], metric) if x),
                        lift=lift,
                        lift_low=_number(cell.get("lift_low")),
                        lift_high=_number(cell.get("lift_high")),
                        p=_number(cell.get("p")),
                        significant=bool(cell.get("significant")),
                        metric=metric,
                        unreachable=bool(cell.get("unreachable")),
                    )
                )
    return cells


def paper_inside(cells: Sequence[Cell], paper: Mapping[str, float]) -> str:
    """Whether the paper's lift of each cell's metric (``paper[metric]``) lies in its CI."""
    parts = []
    for cell in cells:
        if cell.metric not in paper:
            continue
        value = paper[cell.metric]
        inside = cell.lift_low <= value <= cell.lift_high  # nan bounds: outside
        parts.append(f"paper's {value:+.1%} {'inside' if inside else 'outside'} the CI of "
                     f"{cell.where}")  # fmt: skip
    return "; ".join(parts)


def undecided(cells: Sequence[Cell], reference: Callable[[Cell], float | None]) -> list[Cell]:
    """The cells that cannot tell a lift of the size ``reference(cell)`` from none: not
    significant, with a CI that holds both 0 and that lift (``None``: the cell has no
    reference and is not counted). Such a cell is no evidence either way, only too small a
    sample to test the claim."""
    loose = []
    for cell in cells:
        value = reference(cell)
        if value is None or cell.significant:
            continue
        if ci_holds_both(cell.lift_low, cell.lift_high, value):
            loose.append(cell)
    return loose


def undecided_note(cells: Sequence[Cell], reference: Callable[[Cell], float | None],
                   what: str) -> str:  # fmt: skip
    """``undecided`` as a reason's clause ("" when no cell is undecided); ``what`` names the
    reference lift."""
    loose = undecided(cells, reference)
    if not loose:
        return ""
    return (f"{len(loose)} of {len(cells)} CIs hold both 0 and {what}: too few test cases "
            "there to tell such a lift from none")  # fmt: skip


def unreachable_note(cells: Sequence[Cell]) -> str:
    """The cells whose test could not have reached significance whatever the lift (the
    report's ``°``: too few non-zero paired differences), as a reason's clause ("" when
    none)."""
    blind = [c for c in cells if c.unreachable]
    if not blind:
        return ""
    return (f"{len(blind)} of {len(cells)} cells hold so few test cases where the two differ "
            "that their test could not reach significance whatever the lift")  # fmt: skip


def paper_note(cells: Sequence[Cell], paper: Mapping[str, float], name: str = "lift") -> str:
    """:func:`undecided_note` against the paper's lift of each cell's metric (``paper``;
    ``name`` says which lift of the paper it is, e.g. its Film-Noir lift as a yardstick)."""
    metrics = dict.fromkeys(c.metric for c in cells if c.metric in paper)
    sizes = ", ".join(f"{m} {paper[m]:+.1%}" for m in metrics)
    return undecided_note(cells, lambda c: paper.get(c.metric), f"the paper's {name} ({sizes})")


def improvement(cells: Sequence[Cell], untestable: str = "no comparable cells") -> Verdict:
    """ "A beats B" from ``cells`` of A's lift over B (see the module docstring)."""
    if not cells:
        return Verdict("not testable here", untestable)
    confirmed = [c for c in cells if c.significant and c.lift > 0]
    contradicted = [c for c in cells if c.significant and c.lift < 0]
    n = len(cells)
    if len(confirmed) == n:
        return Verdict("reproduced", f"all {n} cells significantly positive")
    positive = sum(c.lift > TIE for c in cells)
    if not confirmed:
        why = f"none of {n} cells significantly positive; {positive} positive"
        return Verdict("not reproduced", f"{why}, {len(contradicted)} significantly negative")
    return Verdict(
        "partly",
        f"{len(confirmed)} of {n} cells significantly positive, {positive} positive, "
        f"{len(contradicted)} significantly negative",
    )


def non_inferiority(
    cells: Sequence[Cell], margin: float = MARGIN, untestable: str = "no comparable cells"
) -> Verdict:
    """ "Maintained / not harmed" from ``cells`` (see the module docstring)."""
    if not cells:
        return Verdict("not testable here", untestable)
    n = len(cells)
    harmed = [c for c in cells if c.significant and c.lift < -margin]
    if harmed:
        worst = min(harmed, key=lambda c: c.lift)
        return Verdict(
            "not reproduced",
            f"{len(harmed)} of {n} cells significantly below -{margin:.0%} "
            f"(worst {worst.where}: {worst.lift:+.1%})",
        )
    safe = [c for c in cells if math.isfinite(c.lift_low) and c.lift_low >= -margin]
    if len(safe) == n:
        return Verdict("reproduced", f"all {n} CIs above -{margin:.0%}")
    return Verdict(
        "partly",
        f"{n - len(safe)} of {n} CIs reach below -{margin:.0%} (no significant drop beyond it)",
    )


def across_families(per_family: Mapping[str, Verdict], required: Iterable[str]) -> Verdict:
    """ "The same pattern on every dataset family" from each family's own verdict."""
    required = list(required)
    present = {f: v for f, v in per_family.items() if v.verdict != "not testable here"}
    missing = [f for f in required if f not in present]
    if not present:
        return Verdict("not testable here", "no dataset family has comparable cells")
    listing = "; ".join(f"{f}: {v.verdict}" for f, v in sorted(present.items()))
    gap = f"; not run or not testable: {', '.join(missing)}" if missing else ""
    good = [f for f, v in present.items() if v.verdict == "reproduced"]
    some = [f for f, v in present.items() if v.verdict in ("reproduced", "partly")]
    if not missing and len(good) == len(present):
        return Verdict("reproduced", listing)
    if not some:
        return Verdict("not reproduced", listing + gap)
    return Verdict("partly", listing + gap)


def overhead(ratios: Sequence[float]) -> Verdict:
    """ "Overhead under 1%" from paired ``dynamic / generic - 1`` step-time ratios."""
    values = [r for r in ratios if math.isfinite(r)]
    if not values:
        return Verdict("not testable here", "no paired dynamic and generic runs")
    median = statistics.median(values)
    if len(values) >= 4:
        low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    else:
        low, high = min(values), max(values)
    noise = (high - low) / 2
    what = f"median {median:+.1%} over {len(values)} paired runs, spread +/-{noise:.1%}"
    if noise > OVERHEAD_PARTLY:
        return Verdict("not testable here", what + " (step times too noisy on this machine)")
    if median < OVERHEAD_LIMIT:
        return Verdict("reproduced", what)
    if median < OVERHEAD_PARTLY:
        return Verdict("partly", what + f" (under the {OVERHEAD_PARTLY:.0%} timing noise)")
    return Verdict("not reproduced", what)
