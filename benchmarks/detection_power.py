"""How often would the standard reproduction call a lift of the paper's size significant on a
domain with only ``k`` test cases? An empirical power check on real per-case values.

A domain where the lift is established and close to the paper's serves as the population:
by default ML-1M's Film-Noir, where ``dynamic`` lifts SASRec's Recall@10 / NDCG@10 by
+49% / +81% (the paper: +52% / +75%). For each sparse domain of the reproduction's plan
(HetRec Last.fm's 22-33 test cases, S3-Rec Last.fm's 34-46, Beauty's and Yelp's 86-155) the
script draws ``--draws`` samples of that domain's size from the population's test cases,
with replacement (each sample: a new domain of ``k`` cases with the population's mix of
per-case effects), and tests each sample as ``dwrec report`` tests a cell
(``dwrec.report.power``):

- the two-sided Wilcoxon signed-rank test of the per-case differences ``dynamic - generic``,
  each case's value averaged over the seeds;
- significant when ``p`` is under the threshold *and* every (dynamic seed, generic seed)
  pair's lift over the sample has the sign of the pooled lift, which is positive.

Two thresholds bracket Holm's correction within the target dataset's family of ``m`` cells
(its domains x 2 metrics x the backbone's compared groups, from ``OUT/tables/<dataset>.json``
once the dataset is complete, else from the same backbone's family on a complete dataset):
``alpha / m``, the threshold of Holm's first step, which a lone true effect in a family of
nulls must pass (a lower bound on the power), and ``alpha`` uncorrected (an upper bound).

A second table dilutes the population to each domain's own hit rate (``keep``: the
baseline's Recall@10 on the domain, from ``OUT/tables/<dataset>.json``, over the
population's): each drawn case is then, with probability ``1 - keep``, one neither model hits.
A third gives, on each sparse domain of a complete dataset, the test cases where the run's own
two groups differ (the report's ``nonzero``), with the smallest p the report's Wilcoxon test
can give on them (``dwrec.report.stats.smallest_p``). Both power tables carry the
population's per-case mix of effects, not each domain's own; the population is one domain of
68 test cases, so the draws repeat its cases.

    python benchmarks/detection_power.py [--out .bench/reproduce-standard] [--draws 2000]
        [--write FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import publish, report_header, write_output

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("recall@10", "ndcg@10")
LABELS = {"ml-1m": "ML-1M", "ml-100k": "ML-100K", "lastfm": "HetRec Last.fm",
          "s3rec-lastfm": "S3-Rec Last.fm", "s3rec-beauty": "S3-Rec Beauty",
          "s3rec-yelp": "S3-Rec Yelp"}  # fmt: skip


@dataclass
class Population:
    """Per-seed per-case values of the two groups on the population domain's test cases."""

    group: dict[str, np.ndarray]  # metric -> [S_group, n]
    baseline: dict[str, np.ndarray]  # metric -> [S_baseline, n]

    @property
    def cases(self) -> int:
        return next(iter(self.group.values())).shape[1]


def load_pair(out: Path, dataset: str, model: str, group: str, baseline: str):
    """The two groups' per-case values on ``dataset`` (a ``CaseTable``: group first)."""
    from dwrec.report.runs import group_runs, load_cases, load_run

    runs_dir = out / "runs" / dataset
    sides = {}
    for name in (group, baseline):
        paths = sorted(runs_dir.glob(f"{model}-{name}-s*"))
        paths = [p for p in paths if (p / "per_user.parquet").exists()]
        if not paths:
            sys.exit(f"detection_power: no evaluated run {runs_dir}/{model}-{name}-s*")
        sides[name] = [load_run(p) for p in paths]
    groups = group_runs(sides[group]) + group_runs(sides[baseline])
    if len(groups) != 2:
        sys.exit(f"detection_power: {model}-{group} and {model}-{baseline} runs under "
                 f"{runs_dir} do not form two groups")  # fmt: skip
    return load_cases(groups, METRICS, ["target"])


def on_domain(cases, dataset: str, domain: str) -> Population:
    """The two groups' per-seed values on ``domain``'s target-cohort cases."""
    members = cases.members["target"].get(domain)
    if members is None or not members.any():
        sys.exit(f"detection_power: no test case of {dataset} has its target in {domain!r}")
    return Population(
        group={m: cases.seed_values[m][0][:, members] for m in METRICS},
        baseline={m: cases.seed_values[m][1][:, members] for m in METRICS},
    )


def written_reports(out: Path, plan: dict) -> dict[str, dict]:
    """``dataset -> its reports`` from ``OUT/tables/<dataset>.json``, for the datasets whose
    tables are written (all their runs done), each file read once."""
    reports = {}
    for key in plan["datasets"]:
        path = out / "tables" / f"{key}.json"
        if path.exists():
            reports[key] = json.loads(path.read_text())["reports"]
    return reports


def family_sizes(plan: dict, reports: dict[str, dict]) -> dict[tuple[str, str], int]:
    """``(dataset, model) -> m``, the confirmatory family's size in the backbone's report: from
    the dataset's written tables, else the same backbone's number of compared groups on a
    complete dataset times the dataset's family domains times the metrics."""
    sizes, compared = {}, {}
    for key, by_model in reports.items():
        for model, report in by_model.items():
            for table in report["tables"]:
                for family, _domains, size in table["families"]:
                    if family == "confirmatory":
                        sizes[(key, model)] = int(size)
            compared[model] = len(report["groups"]) - 1
    for key, entry in plan["datasets"].items():
        for model, groups in compared.items():
            sizes.setdefault((key, model), len(entry["declared"]["family"]) * len(METRICS) * groups)
    return sizes


def target_rows(reports: dict[str, dict], key: str, model: str, label: str) -> dict:
    """``domain -> row`` of group ``label`` in the target cohort of ``key``'s report for
    ``model`` (empty while the dataset has no tables)."""
    report = reports.get(key, {}).get(model)
    if report is None:
        return {}
    return {row["domain"]: row for table in report["tables"] if table["cohort"] == "target"
            for row in table["rows"] if row["group"] == label}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from dwrec.report.power import detection_power, sample_cell
    from dwrec.report.stats import smallest_p

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "reproduce-standard",
                        help="the standard reproduction's output folder (runs/, plan.json)")  # fmt: skip
    parser.add_argument("--dataset", default="ml-1m", help="population dataset (ml-1m)")
    parser.add_argument("--domain", default="Film-Noir", help="population domain (Film-Noir)")
    parser.add_argument("--models", nargs="+", default=["sasrec", "pinnerformer"],
                        help="backbones, each its own population (sasrec pinnerformer)")  # fmt: skip
    parser.add_argument("--group", default="dynamic", help="the group tested (dynamic)")
    parser.add_argument("--baseline", default="generic", help="its baseline (generic)")
    parser.add_argument("--draws", type=int, default=2000, help="samples per size (2000)")
    parser.add_argument("--alpha", type=float, default=0.05, help="test level (0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (0)")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args(argv)
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    plan_path = args.out / "plan.json"
    if not plan_path.exists():
        sys.exit(f"detection_power: no {plan_path}; run benchmarks/reproduce_paper.py first")
    plan = json.loads(plan_path.read_text())
    reports = written_reports(args.out, plan)
    sizes = family_sizes(plan, reports)
    order = [*LABELS, *sorted(set(plan["datasets"]) - set(LABELS))]  # the run's order
    targets = [(key, domain, plan["datasets"][key]["declared"]["test_cases"][domain])
               for key in order if key in plan["datasets"]
               for domain in plan["datasets"][key]["declared"]["sparse"]]  # fmt: skip
    populations = {m: on_domain(load_pair(args.out, args.dataset, m, args.group, args.baseline),
                                args.dataset, args.domain) for m in args.models}  # fmt: skip
    n = populations[args.models[0]].cases
    population_rate = {m: float(populations[m].baseline["recall@10"].mean()) for m in args.models}
    numbers, rows, own_rows = [], [], []
    for key, domain, k in targets:
        cells, own_cells, keeps = [], [], []
        for model in args.models:
            m = sizes.get((key, model))
            if m is None:
                sys.exit(f"detection_power: no family size for {key} {model}: no complete dataset")
            thresholds = (args.alpha / m, args.alpha)
            row = target_rows(reports, key, model, f"{model}+{args.baseline}").get(domain)
            rate = None if row is None else float(row["cells"]["recall@10"]["mean"])
            # diluted to the domain's own hit rate (never enriched above the population's)
            keep = None if rate is None else rate / population_rate[model]
            if keep is not None:  # 1 up to the JSON's rounding of the same mean
                keep = 1.0 if keep > 1 - 1e-9 else max(keep, 1e-9)
            keeps.append("-" if keep is None else f"{keep:.2f}")
            population = populations[model]
            for metric in METRICS:
                entry = {"dataset": key, "domain": domain, "test_cases": k, "model": model,
                         "metric": metric, "family_size": m, "baseline_recall": rate,
                         "keep": keep}  # fmt: skip
                for name, factor in (("", 1.0), ("_own_rate", keep)):
                    if factor is None:
                        own_cells.append("-")
                        continue
                    rng = np.random.default_rng([args.seed, k, METRICS.index(metric)])
                    shares, median_lift = detection_power(
                        population.group[metric], population.baseline[metric], k, thresholds,
                        args.draws, rng, keep=factor,
                    )  # fmt: skip
                    (own_cells if name else cells).append(f"{shares[0]:.0%} ({shares[1]:.0%})")
                    entry.update({f"power_first_holm_step{name}": shares[0],
                                  f"power_uncorrected{name}": shares[1],
                                  f"median_sample_lift{name}": median_lift})  # fmt: skip
                numbers.append(entry)
        family = "/".join(str(sizes[(key, model)]) for model in args.models)
        head = f"| {LABELS.get(key, key)} | {domain} | {k} |"
        rows.append(f"{head} {family} | {' | '.join(cells)} |")
        if "-" not in keeps:
            own_rows.append(f"{head} {' / '.join(keeps)} | {family} | {' | '.join(own_cells)} |")
    observed_rows, observed = [], []
    for key, domain, k in targets:
        if key not in reports:
            continue  # the dataset's runs are not all in yet
        cells = []
        for model in args.models:
            row = target_rows(reports, key, model, f"{model}+{args.group}")[domain]
            for metric in METRICS:
                count = row["cells"][metric].get("nonzero")  # the report's own count
                if count is None:
                    sys.exit(f"detection_power: {key}'s tables predate the non-zero counts; "
                             "rewrite them with reproduce_paper.py --tables-only")  # fmt: skip
                floor = smallest_p("wilcoxon", row["n"], count)
                cells.append(f"{count} (p >= {floor:.2g})")
                observed.append({"dataset": key, "domain": domain, "model": model,
                                 "metric": metric, "nonzero_differences": count,
                                 "smallest_p": floor})  # fmt: skip
        family = "/".join(str(sizes[(key, model)]) for model in args.models)
        observed_rows.append(f"| {LABELS.get(key, key)} | {domain} | {k} | {family} | "
                             f"{' | '.join(cells)} |")  # fmt: skip
    full = {}
    for model in args.models:
        pop = populations[model]
        for metric in METRICS:
            everything = np.arange(pop.cases)
            full[(model, metric)] = sample_cell(pop.group[metric], pop.baseline[metric],
                                                everything)[1]  # fmt: skip
    lifts = ", ".join(f"{model} {metric} {full[(model, metric)]:+.1%}"
                      for model in args.models for metric in METRICS)  # fmt: skip
    rates = ", ".join(f"{model} {population_rate[model]:.3f}" for model in args.models)
    heads = " | ".join(f"{model} {metric[:-3]}" for model in args.models for metric in METRICS)
    models = "/".join(args.models)
    columns = len(args.models) * len(METRICS)
    where = f"{args.domain} on {LABELS.get(args.dataset, args.dataset)}"
    lines = report_header("Detection power of the standard reproduction on sparse domains", None)
    lines += [
        f"- population: {where}, {n} test cases (target cohort), {args.group} vs "
        f"{args.baseline} over the runs' seeds; its lifts: {lifts}; {args.baseline}'s "
        f"Recall@10 there: {rates}",
        f"- {args.draws} samples per cell, drawn with replacement (rows of equal size share "
        f"their draws); seed {args.seed}",
        "",
        f"Each cell: the share of samples significantly positive at Holm's first step (p < "
        f"{args.alpha} / m) and, in brackets, uncorrected (p < {args.alpha}); both with every "
        "seed pair's lift positive. m: the target dataset's confirmatory family, per backbone.",
        "",
        "**At the population's hit rate.** Samples of the domain's size from the population "
        "as it is.",
        "",
        f"| dataset | sparse domain | test cases | m ({models}) | {heads} |",
        "|---|---|---:|---:|" + "---:|" * columns,
        *rows,
        "",
        f"**At the domain's own hit rate.** The population diluted to the hit rate of "
        f"{args.baseline} on the target domain (keep: that Recall@10 over the population's, per "
        "backbone): each drawn case is, with probability 1 - keep, one that neither model hits "
        "in any seed. The relative lift is the population's; fewer cases can show it. Rows "
        "appear once the dataset's tables exist.",
        "",
        f"| dataset | sparse domain | test cases | keep ({models}) | m ({models}) | {heads} |",
        "|---|---|---:|---:|---:|" + "---:|" * columns,
        *own_rows,
        "",
        f"Both tables carry the per-case mix of effects of {where}, not each target domain's "
        "own: they say how often the protocol would confirm a lift of that size and kind there.",
        "",
        f"**What the run's own cells could show.** On each sparse domain of a complete dataset, "
        f"the test cases where {args.group} and {args.baseline} differ (seed-averaged): the only "
        "ones a Wilcoxon test counts. In brackets, the smallest p the report's Wilcoxon test "
        "can give on them whatever their values (`dwrec.report.stats.smallest_p`: above 13 "
        "test cases, the normal approximation's 2 Phi(-sqrt n) for n of them, all tied and of "
        f"one sign); Holm's first threshold is {args.alpha} / m.",
        "",
        f"| dataset | sparse domain | test cases | m ({models}) | {heads} |",
        "|---|---|---:|---:|" + "---:|" * columns,
        *observed_rows,
    ]
    publish(lines, args.write)
    if args.json:
        payload = {"population": {"dataset": args.dataset, "domain": args.domain, "cases": n},
                   "cells": numbers, "observed": observed}  # fmt: skip
        write_output(args.json, json.dumps(payload, indent=2) + "\n")
    if any(not math.isfinite(x["median_sample_lift"]) for x in numbers):  # a zero baseline
        print("note: some samples had a baseline mean of 0 (infinite lift)", file=sys.stderr)


if __name__ == "__main__":
    main()
