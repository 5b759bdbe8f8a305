"""Statistics orchestration: every comparison of a cohort, its CIs, tests and families.

For one cohort, every group is compared with the baseline on every *tested* domain (each
domain with at least ``min_cases`` test cases in the cohort, every domain of a declared
``--family``, and ``overall``), whatever the report shows: the p-values and their
multiple-comparison correction therefore do not depend on ``--domains`` or on the format.
Shown domains below ``min_cases`` get means and CIs but no test.

Families (each corrected on its own, by ``settings.correction``):

- ``confirmatory``: the domains of ``--family`` x compared groups x metrics (empty without
  ``--family``);
- ``exploratory``: every other tested domain, and the ``overall`` rows, x groups x metrics.

CIs come from a two-level bootstrap (:func:`dwrec.report.stats.two_level_bootstrap_means`);
a comparison is significant when its corrected p is below ``alpha`` and, when a group has two
or more seeds, the lift has the same sign in every (group seed, baseline seed) pair.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

from dwrec.report import stats
from dwrec.report.runs import CaseTable, RunGroup
from dwrec.report.tables import (
    CONFIRMATORY,
    EXPLORATORY,
    OVERALL,
    CohortTable,
    MetricCell,
    Row,
    Settings,
)


def tested_domains(
    case_table: CaseTable, cohort: str, domains: Sequence[str], settings: Settings
) -> tuple[list[str], list[str]]:
    """``(confirmatory, exploratory)`` domains of ``cohort``: the declared family, and every
    other domain of ``domains`` with at least ``settings.min_cases`` test cases (sorted)."""
    members = case_table.members.get(cohort, {})
    family = sorted(dict.fromkeys(settings.family))
    exploratory = sorted(
        d
        for d in set(domains) | set(members)
        if d not in family and d in members and int(members[d].sum()) >= settings.min_cases
    )
    return family, exploratory


def build_cohort_table(
    case_table: CaseTable,
    groups: Sequence[RunGroup],
    baseline_index: int,
    cohort: str,
    shown: Sequence[str],
    settings: Settings,
    all_domains: Sequence[str] = (),
) -> CohortTable:
    """Compare every group with the baseline in every tested domain of ``cohort`` and
    overall; rows for the ``shown`` domains and ``overall``.

    All subsets, groups and metrics share one bootstrap resample matrix and one set of
    permutation sign flips, drawn over every test case.
    """
    family, exploratory = tested_domains(case_table, cohort, all_domains, settings)
    tested = set(family) | set(exploratory) | {OVERALL}
    computed = sorted(set(family) | set(exploratory) | set(shown))
    subsets = [*computed, OVERALL]
    members = case_table.members.get(cohort, {})
    n_all = case_table.case_id.size
    masks = np.column_stack(
        [members.get(d, np.zeros(n_all, dtype=bool)) for d in computed] + [np.ones(n_all, bool)]
    )
    sizes = masks.sum(axis=0)
    g_count, metrics = len(groups), settings.metrics
    # columns metric-major, group-minor: column of (metric mi, group g) = mi * g_count + g
    values = np.column_stack([case_table.values[m][g] for m in metrics for g in range(g_count)])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (masks.T.astype(np.float64) @ values) / sizes[:, None]
    pairs = [(mi, g) for mi in range(len(metrics)) for g in range(g_count) if g != baseline_index]
    lifts = _bootstrap_lifts(case_table, masks, means, pairs, g_count, baseline_index, cohort,
                             settings)  # fmt: skip
    test_columns = [s for s, name in enumerate(subsets) if name in tested]
    tests = _tests(values, masks, test_columns, pairs, g_count, baseline_index, cohort, settings)
    seed_means = _seed_means(case_table, masks, sizes, metrics, g_count)
    multi_seed = any(len(group.runs) > 1 for group in groups)
    cells_by_subset: dict[str, list[MetricCell]] = {}
    rows = []
    for s, domain in enumerate(subsets):
        for g, group in enumerate(groups):
            cells = {}
            for mi, metric in enumerate(metrics):
                spread = seed_means[mi][g][:, s]
                std = float(spread.std(ddof=1)) if spread.size > 1 else math.nan
                cell = MetricCell(float(means[s, mi * g_count + g]), std)
                if (mi, g) in pairs and sizes[s]:
                    column = pairs.index((mi, g))
                    _fill(cell, lifts[s, column], means[s, mi * g_count + baseline_index],
                          spread, seed_means[mi][baseline_index][:, s], multi_seed)  # fmt: skip
                    if domain in tested:
                        cell.p_raw, cell.note, cell.nonzero, floor = tests[s][column]
                        # a test with no possible outcome below alpha (n = 0 is degenerate: †)
                        cell.unreachable = bool(cell.nonzero and floor >= settings.alpha)
                        cell.family = CONFIRMATORY if domain in family else EXPLORATORY
                    else:
                        cell.note = f"n < {settings.min_cases} (--min-cases): not tested"
                    cells_by_subset.setdefault(domain, []).append(cell)
                cells[metric] = cell
            if domain in shown or domain == OVERALL:
                rows.append(Row(domain, group.label, g == baseline_index, int(sizes[s]),
                                len(group.runs), cells))  # fmt: skip
    sizes_by_family = _correct(cells_by_subset, settings)
    if settings.effect is not None:
        for cell in (c for cells in cells_by_subset.values() for c in cells):
            if not (math.isnan(cell.lift_low) or math.isnan(cell.lift_high)):
                cell.undecided = not cell.significant and stats.ci_holds_both(
                    cell.lift_low, cell.lift_high, settings.effect
                )
    families = []
    if family:
        families.append((CONFIRMATORY, family, sizes_by_family.get(CONFIRMATORY, 0)))
    families.append((EXPLORATORY, [*exploratory, OVERALL], sizes_by_family.get(EXPLORATORY, 0)))
    # shown rows sorted as the caller ordered the domains, overall last
    order = {d: i for i, d in enumerate([*shown, OVERALL])}
    rows.sort(key=lambda row: order[row.domain])
    return CohortTable(cohort, rows, families=families)


def _fill(cell: MetricCell, lift: np.ndarray, base_mean: float, seed_means: np.ndarray,
          base_seed_means: np.ndarray, multi_seed: bool) -> None:  # fmt: skip
    """Lift and CI, seed-pair range and sign rule of a compared cell (``lift``: the
    ``(lift, low, high)`` of the bootstrap; ``seed_means``: ``[S_g]`` and ``[S_b]`` means)."""
    cell.lift, cell.lift_low, cell.lift_high = map(float, lift)
    if cell.mean == 0 and base_mean == 0:  # 0 over 0: no lift to speak of
        cell.lift = cell.lift_low = cell.lift_high = math.nan
    pair_lifts = stats.seed_pair_lifts(seed_means, base_seed_means)
    finite = pair_lifts[~np.isnan(pair_lifts)]
    if finite.size and not math.isnan(cell.lift):
        cell.seed_lift_min, cell.seed_lift_max = float(finite.min()), float(finite.max())
    if multi_seed:
        cell.sign_consistent = stats.sign_consistent(pair_lifts, cell.lift)


def _seed_means(case_table, masks, sizes, metrics, g_count) -> list[list[np.ndarray]]:
    """metric -> group -> ``[S_g, subsets]`` per-seed subset means (``nan`` for n = 0)."""
    result = []
    for metric in metrics:
        per_group = []
        for g in range(g_count):
            seed_values = case_table.seed_values[metric][g]
            with np.errstate(invalid="ignore", divide="ignore"):
                per_group.append((seed_values @ masks.astype(np.float64)) / sizes)
        result.append(per_group)
    return result


def _rng(settings: Settings, purpose: str, cohort: str) -> np.random.Generator:
    """A generator seeded by (seed, purpose, cohort); draws cover every test case, so a
    domain's CI and p-value do not depend on which other domains the report shows."""
    tag = zlib.crc32(f"{purpose}/{cohort}".encode())
    return np.random.default_rng([settings.seed, tag])


def _bootstrap_lifts(case_table, masks, means, pairs, g_count, baseline_index, cohort, settings):
    """``[S, P, 3]``: (lift, low, high) per subset and compared (metric, group) pair."""
    result = np.full((masks.shape[1], len(pairs), 3), np.nan)
    if masks.shape[0] == 0 or not pairs:
        return result
    per_seed = [
        np.stack([case_table.seed_values[m][g] for m in settings.metrics], axis=-1)
        for g in range(g_count)
    ]
    boot = stats.two_level_bootstrap_means(
        per_seed,
        masks,
        settings.bootstrap,
        _rng(settings, "bootstrap", cohort),
        _rng(settings, "bootstrap-seeds", cohort),
    )  # [B, S, G, k]
    group_boot = np.stack([boot[:, :, g, mi] for mi, g in pairs], axis=-1)
    base_boot = np.stack([boot[:, :, baseline_index, mi] for mi, _ in pairs], axis=-1)
    samples = stats.relative_lift(group_boot, base_boot)
    result[:, :, 1], result[:, :, 2] = stats.percentile_interval(samples, settings.level)
    group_columns = [mi * g_count + g for mi, g in pairs]
    base_columns = [mi * g_count + baseline_index for mi, _ in pairs]
    result[:, :, 0] = stats.relative_lift(means[:, group_columns], means[:, base_columns])
    return result


def _tests(values, masks, test_columns, pairs, g_count, baseline_index, cohort, settings):
    """subset -> pair -> (p, note, non-zero differences, smallest attainable p) of the
    paired test of the group against the baseline, for the subsets ``test_columns`` of
    ``masks`` (``(nan, "", None, nan)`` elsewhere)."""
    subsets = masks.shape[1]
    empty = [[(math.nan, "", None, math.nan)] * len(pairs) for _ in range(subsets)]
    if not pairs:
        return empty
    differences = np.column_stack(
        [values[:, mi * g_count + g] - values[:, mi * g_count + baseline_index] for mi, g in pairs]
    )
    tested_masks = masks[:, test_columns]
    degenerate = [
        [stats.degenerate_result(differences[tested_masks[:, t], c]) for c in range(len(pairs))]
        for t in range(len(test_columns))
    ]
    if settings.test == "permutation":
        rng = _rng(settings, "permutation", cohort)
        p_values = stats.sign_flip_subset_tests(
            differences, tested_masks, settings.permutations, rng
        )
    else:
        p_values = np.full((len(test_columns), len(pairs)), np.nan)
        for t in range(len(test_columns)):
            for c in range(len(pairs)):
                if degenerate[t][c] is None:
                    d = differences[tested_masks[:, t], c]
                    p_values[t, c] = stats.paired_test(d, settings.test).p
    for t, s in enumerate(test_columns):
        cases = int(tested_masks[:, t].sum())
        nonzero = np.count_nonzero(differences[tested_masks[:, t]], axis=0)
        floors = [stats.smallest_p(settings.test, cases, int(m), settings.permutations)
                  for m in nonzero]  # fmt: skip
        empty[s] = [
            (outcome.p if outcome else float(p_values[t, c]), outcome.note if outcome else "",
             int(nonzero[c]), floors[c])
            for c, outcome in enumerate(degenerate[t])
        ]  # fmt: skip
    return empty


def _correct(cells_by_subset: dict[str, list[MetricCell]], settings: Settings) -> dict[str, int]:
    """Correct each family on its own; mark significance (the seed-sign rule included).
    Returns each family's size (its finite p-values)."""
    sizes = {}
    for family in (CONFIRMATORY, EXPLORATORY):
        cells = [c for cs in cells_by_subset.values() for c in cs if c.family == family]
        adjusted = stats.adjust(np.array([c.p_raw for c in cells]), settings.correction)
        sizes[family] = int(np.isfinite([c.p_raw for c in cells]).sum()) if cells else 0
        for cell, p in zip(cells, adjusted, strict=True):
            cell.p = float(p)
            passed = bool(np.isfinite(p) and p < settings.alpha)
            cell.significant = passed and cell.sign_consistent is not False
    return sizes
