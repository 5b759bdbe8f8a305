"""Data renderers of a :class:`~dwrec.report.tables.Report`: JSON (unrounded, ``nan`` as
``null``) and CSV (one line per cohort, domain, group and metric)."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict

from dwrec.report.tables import RENDERERS, Report


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def report_dict(report: Report) -> dict:
    """The report as plain JSON-able data (``nan`` -> ``null``, infinities as strings)."""
    return _clean(
        {
            "baseline": report.baseline,
            "header": report.header,
            "warnings": report.warnings,
            "groups": [asdict(g) for g in report.groups],
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
    "seed_lift_min", "seed_lift_max", "sign_consistent", "family", "model", "objective",
    "unfinished", "undecided", "nonzero", "unreachable",
)  # fmt: skip


def to_csv(report: Report) -> str:
    """One line per (cohort, domain, group, metric) with the domain's statistics beside it."""
    by_domain = {d.domain: d for d in report.domain_rows}
    by_group = {g.label: g for g in report.groups}
    settings = report.settings
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for table in report.tables:
        for row in table.rows:
            domain = by_domain.get(row.domain)
            group = by_group.get(row.group)
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
                            cell.seed_lift_min, cell.seed_lift_max, cell.sign_consistent,
                            cell.family, group.model if group else None,
                            group.objective if group else None,
                            bool(group.unfinished) if group else None,
                            cell.undecided, cell.nonzero, cell.unreachable,
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


RENDERERS.update(json=to_json, csv=to_csv)
