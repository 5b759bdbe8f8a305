"""``dwrec report``: significance-tested tables of evaluated runs (sparse vs dense domains).

The report reads only evaluation outputs (``per_user.parquet``, ``metrics.json``,
``config.json``, ``log.jsonl``); it never loads a model.

    >>> from dwrec.report import report, write_report
    >>> result = report(["runs/"], domains=["Film-Noir", "Horror"])   # doctest: +SKIP
    >>> print(result.render("md"))                                     # doctest: +SKIP

Modules: :mod:`.stats` (tests, corrections, bootstrap), :mod:`.runs` (finding and grouping
runs), :mod:`.checks` (matched settings, unfinished runs, domain names), :mod:`.compare`
(statistics of a cohort, families), :mod:`.tables` (the report's data), :mod:`.render_text`,
:mod:`.render_data`, :mod:`.console` (renderers), :mod:`.plots` (optional figure).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dwrec.errors import UsageError
from dwrec.io import atomic_path, provenance
from dwrec.report import checks, render_data, render_text, stats  # noqa: F401 (renderers register)
from dwrec.report import domains as domains_module
from dwrec.report import runs as runs_module
from dwrec.report.compare import build_cohort_table
from dwrec.report.tables import (
    COHORT_MEANING,
    CONFIRMATORY,
    DEGENERATE_MARK,
    FORMATS,
    TEST_NAMES,
    UNDECIDED_MARK,
    UNREACHABLE_MARK,
    CohortTable,
    DomainRow,
    GroupInfo,
    Report,
    Settings,
)

__all__ = ["FORMATS", "Report", "report", "write_report"]

DEFAULT_METRICS = ("recall@10", "ndcg@10")


def report(
    run_paths: Sequence[str | os.PathLike] | None = None,
    *,
    domains: Sequence[str] | None = None,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    cohorts: Sequence[str] = ("target",),
    test: str = "wilcoxon",
    alpha: float = 0.05,
    correction: str = "holm",
    bootstrap: int = 1000,
    permutations: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    labels: Sequence[str] = (),
    runs_root: str | os.PathLike = "runs",
    family: Sequence[str] | None = None,
    min_cases: int = 20,
    allow_mismatch: bool = False,
    effect: float | None = None,
) -> Report:
    """Compare every group of evaluated runs with the baseline group, per domain and cohort.

    Args:
        run_paths: run dirs or folders holding run dirs; ``None``/empty: every evaluated run
            under ``runs_root`` of the most recent dataset.
        domains: domains to show (default: the 3 sparsest and 3 densest by training share);
            rows only: which comparisons are tested and corrected does not depend on it.
        baseline: the baseline group's label (default: the generic group, see
            :func:`dwrec.report.runs.choose_baseline`).
        metrics: per-case metric columns of per_user.parquet (default recall@10, ndcg@10).
        cohorts: one table per cohort, of ``target``, ``power``, ``general``.
        test, alpha, correction: paired test, significance level, multiple-comparison
            correction within each family (see :mod:`dwrec.report.compare`).
        bootstrap, level: resamples and level of the two-level bootstrap CI of lifts.
        permutations: random sign flips of the permutation test.
        seed: seeds the bootstrap and permutation draws (per cohort).
        labels: ``RUN=LABEL`` overrides of group labels.
        family: the confirmatory family's domains (corrected on their own).
        min_cases: a domain is tested when it has at least this many test cases in a cohort.
        allow_mismatch: compare groups trained with other settings (listed in the footnote).
        effect: a lift worth detecting (0.5: +50%); compared cells that are not significant
            and whose CI holds both 0 and it are marked undecided (``?``).
    """
    settings = _settings(metrics, cohorts, test, alpha, correction, bootstrap, permutations,
                         level, seed, min_cases, allow_mismatch, effect)  # fmt: skip
    discovery = runs_module.discover_runs(list(run_paths or []), runs_root)
    runs_module.apply_labels(discovery.runs, labels)
    runs_module.check_comparable(discovery.runs)
    groups = runs_module.group_runs(discovery.runs)
    baseline_group, rule = runs_module.choose_baseline(groups, baseline)
    if len(groups) < 2:
        raise UsageError(
            f"only one group ({baseline_group.label}) among the runs: nothing to compare it with"
        )
    # the baseline leads every domain's rows
    groups = [baseline_group] + [g for g in groups if g is not baseline_group]
    warnings = _unfinished_warnings(groups, baseline_group, rule)
    differences = checks.check_matched(groups, baseline_group, settings.allow_mismatch)
    if differences:
        warnings.append(
            f"--allow-mismatch: groups differ in {len(differences)} setting(s) beyond their "
            "loss (see the footnotes)"
        )
    if discovery.skipped:
        warnings.append(f"{len(discovery.skipped)} run(s) skipped (listed under Skipped)")
    settings.metrics = _check_metrics(discovery.runs[0], settings.metrics)
    case_table = runs_module.load_cases(groups, settings.metrics, settings.cohorts)
    info = runs_module.domain_info(discovery.runs, case_table)
    known = set().union(*(set(m) for m in case_table.members.values()))
    valid = known | set(info.share)
    requested = domains_module.split_names(domains)
    domains_module.check_domain_names("--domains", requested, valid)
    settings.family = domains_module.split_names(family)
    domains_module.check_domain_names("--family", settings.family, valid)
    chosen = runs_module.select_domains(requested or None, info, known)
    tables = []
    for cohort in settings.cohorts:
        table = build_cohort_table(case_table, groups, 0, cohort, chosen, settings,
                                   all_domains=sorted(valid))  # fmt: skip
        table.footnotes = _footnotes(table, settings, groups, discovery.runs[0], case_table,
                                     differences)  # fmt: skip
        tables.append(table)
    domain_rows = [
        DomainRow(d, info.items.get(d), info.share.get(d, float("nan")), _weights(groups, d))
        for d in chosen
    ]
    domain_notes = [
        f"Training share: {info.source}.",
        "Final weight: the domain_weights of the last line of each run's log.jsonl, mean over "
        "the group's seeds; only groups that learned weights have a column.",
    ]
    header = _header(discovery, groups, baseline_group, rule)
    return Report(settings, baseline_group.label, header, tables, domain_rows, domain_notes,
                  provenance(), _group_infos(groups), warnings)  # fmt: skip


def _settings(metrics, cohorts, test, alpha, correction, bootstrap, permutations, level, seed,
              min_cases, allow_mismatch, effect=None):  # fmt: skip
    checks_ = (
        ("--test", test, stats.TESTS),
        ("--correction", correction, stats.CORRECTIONS),
    )
    for flag, value, choices in checks_:
        if value not in choices:
            raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    for cohort in cohorts:
        if cohort not in runs_module.COHORTS:
            raise UsageError(
                f"--cohort must be one of {', '.join(runs_module.COHORTS)}, got {cohort!r}"
            )
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha must be in (0, 1), got {alpha}")
    if not 0 < level < 1:
        raise UsageError(f"--ci must be in (0, 1), got {level}")
    if bootstrap < 1:
        raise UsageError(f"--bootstrap must be >= 1, got {bootstrap}")
    if permutations < 1:
        raise UsageError(f"--permutations must be >= 1, got {permutations}")
    if min_cases < 2:
        raise UsageError(f"--min-cases must be >= 2 (a paired test needs 2 cases), got {min_cases}")
    if effect is not None and not (math.isfinite(effect) and effect != 0 and effect > -1):
        raise UsageError(
            f"--effect must be a lift other than 0 and above -1 (0.5 for +50%), got {effect}"
        )
    return Settings(
        metrics=list(dict.fromkeys(metrics or DEFAULT_METRICS)),
        cohorts=list(dict.fromkeys(cohorts)) or ["target"],
        test=test, alpha=alpha, correction=correction, bootstrap=bootstrap,
        permutations=permutations, level=level, seed=seed, min_cases=min_cases,
        allow_mismatch=allow_mismatch, effect=effect,
    )  # fmt: skip


def _unfinished_warnings(groups, baseline_group, rule) -> list[str]:
    """Warnings for runs whose training did not finish; refuses an unfinished baseline that
    was not chosen explicitly (``--baseline``)."""
    warnings = []
    for group in groups:
        unfinished = [run for run in group.runs if not checks.is_finished(run)]
        if not unfinished:
            continue
        names = ", ".join(str(run.path) for run in unfinished)
        if group is baseline_group and rule != "--baseline":
            raise UsageError(
                f"the baseline group {group.label} holds unfinished runs ({names}: no "
                f"{checks.TRAIN_DONE_FILE}); finish them with `dwrec train --resume RUN`, leave "
                "them out, or choose the baseline explicitly with --baseline LABEL"
            )
        role = "the baseline " if group is baseline_group else ""
        warnings.append(
            f"{role}group {group.label} holds unfinished runs (no {checks.TRAIN_DONE_FILE}): "
            f"{names}; their numbers are those of the last checkpoint"
        )
    return warnings


def _group_infos(groups) -> list[GroupInfo]:
    infos = []
    for index, group in enumerate(groups):
        config = group.runs[0].config
        loss = config.get("loss", {})
        infos.append(
            GroupInfo(
                label=group.label,
                model=str(config.get("model", {}).get("name", "?")),
                loss=str(loss.get("loss", "?")),
                objective=str(loss.get("objective", "?")),
                seeds=list(group.seeds),
                runs=[str(run.path) for run in group.runs],
                unfinished=[str(r.path) for r in group.runs if not checks.is_finished(r)],
                baseline=index == 0,
            )
        )
    return infos


def _check_metrics(run: runs_module.EvaluatedRun, metrics: list[str]) -> list[str]:
    import pyarrow.parquet as pq

    available = [c for c in pq.read_schema(run.path / runs_module.PER_USER_FILE).names if "@" in c]
    for metric in metrics:
        if metric not in available:
            close = difflib.get_close_matches(metric, available, n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(
                f"--metrics: {metric!r} is not a per-case metric of {run.path} "
                f"(available: {', '.join(available)}){hint}"
            )
    return metrics


def _weights(groups: Sequence[runs_module.RunGroup], domain: str) -> dict[str, float | None]:
    weights: dict[str, float | None] = {}
    for group in groups:
        finals = [run.final_domain_weights() for run in group.runs]
        values = [f[domain] for f in finals if f and domain in f]
        weights[group.label] = float(np.mean(values)) if values else None
    return weights


def _seeds_text(groups: Sequence[runs_module.RunGroup]) -> str:
    parts = []
    for group in groups:
        seeds = ", ".join("?" if s is None else str(s) for s in group.seeds)
        parts.append(f"{group.label}: {seeds}")
    return "; ".join(parts)


def _groups_text(groups: Sequence[runs_module.RunGroup]) -> str:
    return "; ".join(info.description for info in _group_infos(groups))


def _deviation_notes(groups: Sequence[runs_module.RunGroup]) -> list[str]:
    """One note per model shown whose dwrec version departs from the published one."""
    from dwrec.models.registry import model_class, model_names

    known = set(model_names())
    models = dict.fromkeys(str(g.runs[0].config.get("model", {}).get("name")) for g in groups)
    return [
        f"Model {name}: dwrec's version deviates from the original: {deviation}."
        for name in models
        if name in known and (deviation := model_class(name).deviation)
    ]


def _family_notes(table: CohortTable, settings: Settings) -> list[str]:
    how = {
        "holm": "Holm-corrected",
        "bonferroni": "Bonferroni-corrected",
        "none": "not corrected for multiple comparisons",
    }[settings.correction]
    notes = []
    for name, domains, size in table.families:
        if name == CONFIRMATORY:
            notes.append(
                f"Confirmatory family (declared by --family): {', '.join(domains)}; {size} "
                f"comparisons (domains x compared groups x metrics), {how} within it."
            )
        else:
            others = len(domains) - 1
            lead = "the other" if table.families[0][0] == CONFIRMATORY else "all"
            notes.append(
                f"Exploratory family: {lead} {others} domain(s) with at least "
                f"{settings.min_cases} test cases in this cohort (--min-cases) and the overall "
                f"rows; {size} comparisons, {how}"
                + (" separately." if len(table.families) > 1 else ".")
                + " The families are fixed by the data, not by the domains shown."
            )
    return notes


def _footnotes(table, settings, groups, reference, case_table, differences) -> list[str]:
    level = round(100 * settings.level)
    seed_counts = [len(g.runs) for g in groups]
    if max(seed_counts) > 1:
        ci = (
            f"Lift: (mean_group - mean_baseline) / mean_baseline in %, with a {level}% "
            f"two-level percentile bootstrap CI ({settings.bootstrap} resamples, seed "
            f"{settings.seed}): each resample draws every group's seeds with replacement, then "
            "the test cases with replacement, the same cases for every group (paired)."
        )
        if min(seed_counts) == 1:
            ci += " Groups with one seed add no seed variance."
        seeds = (
            "Seed lifts: the lift's range (min..max) over every (group seed, baseline seed) "
            "pair; '!' marks pairs of opposite signs. * needs the corrected p below "
            f"{settings.alpha} and the same sign in every pair."
        )
    else:
        ci = (
            f"Lift: (mean_group - mean_baseline) / mean_baseline in %, with a {level}% paired "
            f"percentile bootstrap CI ({settings.bootstrap} resamples of the test cases, the "
            f"same resample for both groups, seed {settings.seed}). One seed per group: the CI "
            "ignores seed variance."
        )
        seeds = ""
    dataset = reference.metrics.get("dataset", {})
    notes = [
        f"Groups: {_groups_text(groups)}.",
        *_deviation_notes(groups),
        f"Cohort {table.cohort}: {COHORT_MEANING[table.cohort]}; overall: every test case.",
        "Values: mean over seeds ± std over seeds (ddof 1; no spread with one seed).",
        ci,
        *([seeds] if seeds else []),
        f"p: {TEST_NAMES[settings.test]}"
        + (f" with {settings.permutations} random sign flips" if settings.test == "permutation"
           else "")
        + f", on per-case values averaged over seeds; * marks corrected p < {settings.alpha}.",
        *_family_notes(table, settings),
        f"Seeds: {_seeds_text(groups)}.",
        f"Dataset: {dataset.get('name', '?')} (fingerprint {reference.dataset_fingerprint}), "
        f"split {reference.metrics.get('split_scheme', '?')} (fingerprint "
        f"{reference.split_fingerprint}), {case_table.case_id.size} test cases.",
    ]  # fmt: skip
    if differences:
        notes.append("Settings that differ between groups (--allow-mismatch): "
                     + "; ".join(differences) + ".")  # fmt: skip
    if settings.effect is not None:
        notes.append(
            f"{UNDECIDED_MARK} (--effect {100 * settings.effect:+.1f}%): not significant, and "
            "the CI holds both 0 and that lift: too few test cases to tell a lift of that size "
            "from none (no evidence either way). A lift without it and without * has a CI that "
            "excludes that size or 0."
        )
    if any(c.unreachable for row in table.rows for c in row.cells.values()):
        floor = (
            "the Wilcoxon test on n of them: at least 2 / 2^n where enumerated, 2 Phi(-sqrt n) "
            "under the normal approximation"
            if settings.test == "wilcoxon"
            else "the sign-flip test on n of them: at least 2 / 2^n while it enumerates"
        )
        notes.append(
            f"{UNREACHABLE_MARK} after p: the tested cases hold so few non-zero paired "
            f"differences that no p of this test falls below {settings.alpha} whatever their "
            f"values ({floor}): the cell could not be significant whatever the lift."
        )
    degenerate = sorted({c.note for row in table.rows for c in row.cells.values() if c.note})
    for note in degenerate:
        mark = f"{DEGENERATE_MARK} " if note.startswith("every") else "'-' "
        notes.append(f"{mark}where {note}.")
    if any(row.n == 0 for row in table.rows):
        notes.append("n = 0: no test case of this cohort in the domain ('-').")
    return notes


def _header(discovery, groups, baseline_group, rule) -> list[str]:
    skipped_schemes = {checks.split_scheme_at(path) for path, _ in discovery.skipped}
    schemes = {run.metrics.get("split_scheme") for run in discovery.runs}
    with_split = len(schemes | (skipped_schemes - {None})) > 1
    lines = [f"Runs ({len(discovery.runs)}; {discovery.rule}):", ""]
    for group in groups:
        paths = ", ".join(
            f"{checks.run_name(run, with_split)} (seed {'?' if run.seed is None else run.seed}"
            + ("" if checks.is_finished(run) else ", unfinished")
            + ")"
            for run in group.runs
        )
        lines.append(f"- {group.label}: {paths}")
    lines += ["", f"Baseline: {baseline_group.label} ({rule})."]
    if discovery.skipped:
        lines += ["", "Skipped:"]
        for path, why in discovery.skipped:
            scheme = checks.split_scheme_at(path) if with_split else None
            lines.append(f"- {path}" + (f" [split {scheme}]" if scheme else "") + f": {why}")
    return lines


def write_report(result: Report, fmt: str = "md", out: str | os.PathLike | None = None) -> str:
    """Render ``result`` as ``fmt`` and write it atomically to ``out`` (when given)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    text = result.render(fmt)
    if out is not None:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return text


class _CallablePackage(types.ModuleType):
    """``dwrec.report`` is this package and, called, the library function :func:`report`
    (importing the package rebinds the attribute ``dwrec.report``, so the package forwards)."""

    def __call__(self, *args, **kwargs):
        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
