"""dwrec.report.verdict: each verdict string of the reproduction's documented rule, from
report JSON inputs written out by hand."""

from __future__ import annotations

import math

import pytest

from dwrec.report import verdict as rule


def cell(lift, low, high, p, significant):
    return {"lift": lift, "lift_low": low, "lift_high": high, "p": p, "significant": significant,
            "mean": 0.1, "std": 0.0}  # fmt: skip


def report_json(rows: dict[tuple[str, str], dict[str, dict]], cohort: str = "target") -> dict:
    """A report's JSON as ``dwrec report --format json`` writes it (only the keys read)."""
    return {
        "tables": [
            {
                "cohort": cohort,
                "rows": [
                    {"domain": d, "group": g, "baseline": False, "n": 50, "seeds": 3, "cells": c}
                    for (d, g), c in rows.items()
                ],
            }
        ]
    }


def both(c):
    return {"recall@10": c, "ndcg@10": c}


def cells(rows, group="sasrec+dynamic", domains=("Film-Noir",)):
    return rule.cells_from_report(report_json(rows), group, list(domains), ["recall@10", "ndcg@10"])


def test_cells_from_report_reads_the_group_domains_and_metrics_and_drops_missing_lifts():
    rows = {
        ("Film-Noir", "sasrec+dynamic"): {
            "recall@10": cell(0.5, 0.1, 0.9, 0.01, True),
            "ndcg@10": cell(None, None, None, None, False),  # too few cases: no lift
        },
        ("Film-Noir", "sasrec+fixed"): both(cell(0.2, 0.1, 0.3, 0.01, True)),
        ("Drama", "sasrec+dynamic"): both(cell(-0.1, -0.2, 0.0, 0.01, True)),
        # the baseline scored 0: the JSON writes the lift and its upper bound as "inf"
        ("Western", "sasrec+dynamic"): {"ndcg@10": cell("inf", 0.5, "inf", 0.02, True)},
    }
    found = cells(rows)
    assert len(found) == 1
    assert (found[0].lift, found[0].lift_low, found[0].metric) == (0.5, 0.1, "recall@10")
    assert found[0].where == "Film-Noir recall@10"
    western = cells(rows, domains=("Western",))
    assert len(western) == 1 and western[0].lift == math.inf == western[0].lift_high
    assert rule.improvement(western).verdict == "reproduced"
    other = rule.cells_from_report(report_json(rows, "power"), "sasrec+dynamic", ["Film-Noir"],
                                   ["recall@10"])  # fmt: skip
    assert other == []  # only the target cohort is read


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([(0.5, 0.2, 0.8, 0.01, True), (0.7, 0.3, 1.0, 0.02, True)], "reproduced"),
        ([(0.5, 0.2, 0.8, 0.01, True), (0.3, -0.1, 0.8, 0.2, False)], "partly"),
        # every lift positive, none significant: nothing supports the claim
        ([(0.3, -0.1, 0.8, 0.2, False), (0.1, -0.2, 0.5, 0.6, False)], "not reproduced"),
        ([(0.3, -0.1, 0.8, 0.2, False), (-0.1, -0.2, 0.05, 0.6, False)], "not reproduced"),
        ([(-0.3, -0.5, -0.1, 0.01, True), (0.1, -0.2, 0.5, 0.6, False)], "not reproduced"),
        ([(-0.1, -0.3, 0.1, 0.5, False), (0.0, -0.2, 0.2, 1.0, False)], "not reproduced"),
        ([], "not testable here"),
    ],
)
def test_improvement_rule(values, expected):
    found = [rule.Cell(f"c{i}", *v) for i, v in enumerate(values)]
    assert rule.improvement(found, "no MovieLens").verdict == expected
    if not values:
        assert rule.improvement(found, "no MovieLens").reason == "no MovieLens"


def test_a_lift_that_is_float_rounding_of_equal_means_is_not_counted_positive():
    # the same hits summed in another order: 1.1e-16 (HetRec Last.fm, SASRec + dynamic vs
    # SparseEnNet, experimental Recall@10 in the standard reproduction's second pass)
    equal = (0.1 + 0.2) / 0.3 - 1  # 2.2e-16
    assert 0 < equal < 1e-15
    found = [rule.Cell("tie", equal, -0.5, 1.3, 1.0, False),
             rule.Cell("up", 0.3, -0.1, 0.8, 0.2, False)]  # fmt: skip
    reason = rule.improvement(found).reason
    assert reason.startswith("none of 2 cells significantly positive; 1 positive")


def test_improvement_rule_from_report_json():
    good = {("Film-Noir", "sasrec+dynamic"): both(cell(0.6, 0.2, 1.1, 0.003, True))}
    assert rule.improvement(cells(good)).verdict == "reproduced"
    # significant in the corrected test but not in every seed: report says not significant
    mixed = {("Film-Noir", "sasrec+dynamic"): both(cell(0.6, -0.1, 1.1, 0.003, False))}
    verdict = rule.improvement(cells(mixed))
    assert verdict.verdict == "not reproduced"
    assert (
        verdict.reason
        == "none of 2 cells significantly positive; 2 positive, 0 significantly negative"
    )
    assert rule.improvement(cells(mixed, domains=("Horror",))).verdict == "not testable here"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([(0.01, -0.03, 0.05, 0.8, False), (0.0, -0.04, 0.04, 1.0, False)], "reproduced"),
        ([(0.05, 0.01, 0.09, 0.01, True)], "reproduced"),  # slightly improved
        ([(0.0, -0.2, 0.2, 1.0, False)], "partly"),  # too wide to exclude a 5% drop
        ([(-0.03, -0.045, -0.01, 0.01, True)], "reproduced"),  # a drop within the margin
        ([(-0.04, -0.07, -0.01, 0.01, True)], "partly"),  # could exceed 5%, not shown to
        ([(-0.2, -0.3, -0.1, 0.001, True), (0.0, -0.01, 0.01, 1, False)], "not reproduced"),
        ([(-0.2, -0.5, 0.1, 0.3, False)], "partly"),  # large but not significant
        ([], "not testable here"),
    ],
)
def test_non_inferiority_rule(values, expected):
    found = [rule.Cell(f"c{i}", *v) for i, v in enumerate(values)]
    assert rule.non_inferiority(found).verdict == expected


def test_non_inferiority_with_an_unknown_ci_is_not_reproduced_only_when_harmed():
    nan = math.nan
    assert rule.non_inferiority([rule.Cell("c", 0.1, nan, nan, nan, False)]).verdict == "partly"


def test_across_families_rule():
    yes, part = rule.Verdict("reproduced", "r"), rule.Verdict("partly", "p")
    no, untestable = rule.Verdict("not reproduced", "n"), rule.Verdict("not testable here", "t")
    families = ("MovieLens", "Last.fm", "Amazon", "Yelp")
    assert rule.across_families(dict.fromkeys(families, yes), families).verdict == "reproduced"
    three = {"MovieLens": yes, "Last.fm": yes, "Amazon": yes}
    result = rule.across_families(three, families)
    assert result.verdict == "partly" and "Yelp" in result.reason
    mixed = {"MovieLens": yes, "Last.fm": no, "Amazon": part, "Yelp": yes}
    assert rule.across_families(mixed, families).verdict == "partly"
    assert rule.across_families(dict.fromkeys(families, no), families).verdict == "not reproduced"
    only_untestable = {"MovieLens": untestable}
    assert rule.across_families(only_untestable, families).verdict == "not testable here"
    assert rule.across_families({}, families).verdict == "not testable here"


@pytest.mark.parametrize(
    ("ratios", "expected"),
    [
        ([0.002, -0.01, 0.008], "reproduced"),
        ([0.02, 0.03, -0.01], "partly"),  # median 2%
        ([0.10, 0.07, 0.12], "not reproduced"),
        ([math.nan], "not testable here"),
        ([], "not testable here"),
    ],
)
def test_overhead_rule(ratios, expected):
    assert rule.overhead(ratios).verdict == expected


def test_overhead_uses_the_median_of_finite_ratios():
    result = rule.overhead([0.03, 0.001, 0.002, 0.004, math.nan])  # median 0.3%
    assert result.verdict == "reproduced" and "+0.3% over 4" in result.reason
    quartiles = rule.overhead([0.002, 0.003, 0.004, 0.005, 0.9])  # IQR ignores one outlier
    assert quartiles.verdict == "reproduced"


def test_overhead_too_noisy_is_not_testable():
    noisy = rule.overhead([0.10, -0.18])  # half the range 14% > 5%
    assert noisy.verdict == "not testable here" and "too noisy" in noisy.reason


def test_paper_figure_inside_or_outside_the_ci():
    inside = rule.Cell("ml-1m sasrec+dynamic Film-Noir recall@10", 0.4, 0.2, 0.6, 0.01, True,
                       "recall@10")  # fmt: skip
    outside = rule.Cell("ml-1m sasrec+dynamic Film-Noir ndcg@10", 0.3, 0.1, 0.5, 0.01, True,
                        "ndcg@10")  # fmt: skip
    text = rule.paper_inside([inside, outside], {"recall@10": 0.524, "ndcg@10": 0.745})
    assert "+52.4% inside the CI of ml-1m sasrec+dynamic Film-Noir recall@10" in text
    assert "+74.5% outside the CI of ml-1m sasrec+dynamic Film-Noir ndcg@10" in text


def test_verdict_strings_are_the_four_documented():
    assert rule.VERDICTS == ("reproduced", "partly", "not reproduced", "not testable here")
    with pytest.raises(ValueError, match="verdict must be one of"):
        rule.Verdict("maybe", "")


def test_undecided_counts_cells_whose_ci_holds_both_zero_and_the_paper_lift():
    paper = {"recall@10": 0.524, "ndcg@10": 0.745}
    wide = rule.Cell("a", 0.3, -0.5, 2.0, 0.4, False, "recall@10")  # holds 0 and +52.4%
    infinite = rule.Cell("b", 0.1, -1.0, math.inf, 1.0, False, "ndcg@10")  # baseline 0 in a seed
    short = rule.Cell("c", 0.1, -0.2, 0.7, 0.5, False, "ndcg@10")  # below +74.5%: excludes it
    above = rule.Cell("d", 0.9, 0.1, 2.0, 0.04, False, "recall@10")  # excludes 0
    significant = rule.Cell("e", 0.6, -0.1, 1.5, 0.01, True, "recall@10")  # decided by its test
    other = rule.Cell("f", 0.2, -0.5, 9.0, 0.5, False, "mrr@10")  # no paper figure
    text = rule.paper_note([wide, infinite, short, above, significant, other], paper)
    assert text.startswith(
        "2 of 6 CIs hold both 0 and the paper's lift (recall@10 +52.4%, ndcg@10 +74.5%)"
    )
    assert rule.paper_note([short, above, significant], paper) == ""
    # a CI exactly at 0 and at the paper's figure holds them (closed interval)
    edge = rule.Cell("g", 0.2, 0.0, 0.524, 0.3, False, "recall@10")
    assert rule.paper_note([edge], paper).startswith("1 of 1 CIs")
    named = rule.paper_note([wide], paper, "Film-Noir lift")
    assert named.startswith(
        "1 of 1 CIs hold both 0 and the paper's Film-Noir lift (recall@10 +52.4%)"
    )


def test_undecided_against_a_reference_per_cell_including_a_negative_one():
    lifts = {"a": 0.8, "b": -0.3}  # e.g. dynamic's own lift over generic, per cell
    a = rule.Cell("a", 0.1, -0.2, 1.0, 0.6, False, "recall@10")  # holds 0 and +0.8
    b = rule.Cell("b", -0.1, -0.4, 0.1, 0.6, False, "recall@10")  # holds -0.3 and 0
    c = rule.Cell("c", 0.1, -0.9, 9.0, 0.6, False, "recall@10")  # no reference: not counted
    b_short = rule.Cell("b", -0.1, -0.2, 0.1, 0.6, False, "recall@10")  # misses -0.3
    assert rule.undecided([a, b, c, b_short], lambda cell: lifts.get(cell.where)) == [a, b]
    note = rule.undecided_note([a, c], lambda cell: lifts.get(cell.where), "its own lift")
    assert note == ("1 of 2 CIs hold both 0 and its own lift: too few test cases there to "
                    "tell such a lift from none")  # fmt: skip


def test_a_note_extends_the_reason_and_keeps_the_verdict():
    v = rule.Verdict("partly", "2 of 4 cells")
    assert v.noted("1 of 4 CIs hold both") == rule.Verdict(
        "partly", "2 of 4 cells; 1 of 4 CIs hold both"
    )
    assert v.noted("") is v


def test_unreachable_cells_are_read_from_the_report_and_counted_in_a_note():
    blind = dict(cell(0.5, -0.6, 3.0, 1.0, False), unreachable=True)
    rows = {("Film-Noir", "sasrec+dynamic"): {"recall@10": blind, "ndcg@10": blind},
            ("Western", "sasrec+dynamic"): both(cell(0.3, 0.1, 0.6, 0.01, True))}  # fmt: skip
    found = cells(rows, domains=("Film-Noir", "Western"))
    assert [c.unreachable for c in found] == [True, True, False, False]
    note = rule.unreachable_note(found)
    assert note.startswith("2 of 4 cells hold so few test cases where the two differ")
    assert rule.unreachable_note(found[2:]) == ""  # none: no clause
    # a report written before the field existed reads as reachable
    assert not cells({("Western", "sasrec+dynamic"): both(cell(0.3, 0.1, 0.6, 0.01, True))},
                     domains=("Western",))[0].unreachable  # fmt: skip
