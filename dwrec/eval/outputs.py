"""The two files an evaluation writes: the per-case table and the metrics document
(contract in docs/evaluate.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from dwrec.data.split import Cases
from dwrec.eval import cohorts, metrics
from dwrec.eval.ranking import Ranking
from dwrec.io import provenance


def per_user_table(dataset, cases: Cases, ranking: Ranking, per_case, masks) -> pa.Table:
    columns = {
        "case_id": pa.array(cases.row.astype(np.int64)),
        "user_id": pa.array(cases.user.astype(np.int32)),
        "target_item": pa.array(cases.target.astype(np.int32)),
        "rank": pa.array(ranking.ranks.astype(np.int64)),
    }
    columns.update({name: pa.array(values.astype(np.float64)) for name, values in per_case.items()})
    for cohort in ("target", "power", "general"):
        columns[f"{cohort}_domains"] = cohorts.domain_lists(masks[cohort], dataset.domain_names)
    return pa.table(columns)


def metrics_document(
    run_dir,
    config,
    dataset,
    data_split,
    split,
    ks,
    ranking,
    per_case,
    stats,
    masks,
    *,
    sampled,
    keep_history,
    thresholds,
) -> dict:
    overall = {name: float(v.mean()) if len(v) else None for name, v in per_case.items()}
    shares = {}
    for k in ks:
        overall[f"coverage@{k}"] = metrics.coverage_at_k(ranking.top_items, dataset.n_items, k)
        popularity = metrics.mean_popularity_at_k(ranking.top_items, stats.item_popularity, k)
        overall[f"mean_popularity@{k}"] = None if np.isnan(popularity) else popularity
        share = metrics.recommendation_share_at_k(ranking.top_items, dataset.item_domain_matrix, k)
        shares[f"recommendation_share@{k}"] = dict(
            zip(dataset.domain_names, map(float, share), strict=True)
        )
    by_cohort = {
        cohort: cohorts.cohort_means(per_case, masks[cohort], dataset.domain_names)
        for cohort in ("target", "power", "general")
    }
    domains = {
        name: {
            "train_share": float(stats.domain_share[index]),
            **{cohort: by_cohort[cohort][name] for cohort in by_cohort},
        }
        for index, name in enumerate(dataset.domain_names)
    }
    return {
        "run": str(Path(run_dir).resolve()),
        "label": config.get("label") or Path(run_dir).name,
        "split": split,
        "ks": list(ks),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "path": str(dataset.path),
        },
        "split_scheme": data_split.scheme,
        "split_fingerprint": data_split.fingerprint,
        "n_cases": int(len(ranking.ranks)),
        "n_items": int(dataset.n_items),
        "masked_history": not keep_history,
        "sampled": sampled,
        "tie_break": "smaller item id first",
        "overall": overall,
        **shares,
        "domains": domains,
        "thresholds": thresholds,
        **provenance(),
    }
