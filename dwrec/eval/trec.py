"""TREC run and qrels export, so results can be checked with trec_eval-compatible tools.

Run file, one line per recommended item (top-K of each case, K = the largest ``--k``)::

    case_id Q0 item_raw_id rank score dwrec

Qrels file, one line per case::

    case_id 0 target_raw_id 1

``case_id`` is the target's row in interactions.parquet (as in per_user.parquet); ``rank`` is
1-based; ``score`` is the model's float32 score printed with 9 significant digits (exact
round trip). trec_eval re-sorts a query's documents by score and breaks score ties by
document id (descending, as strings) instead of dwrec's smaller-item-id rule, so its
figures equal dwrec's exactly when there are no score ties inside a top-K list.
Whitespace inside a raw item id would split the columns, so it is written as ``_``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from dwrec.data.dataset import Dataset
from dwrec.data.split import Cases
from dwrec.io import atomic_path

_SPACE = re.compile(r"\s")


def _raw_ids(dataset: Dataset) -> np.ndarray:
    return np.asarray([_SPACE.sub("_", raw) for raw in dataset.item_raw_ids], dtype=object)


def run_lines(
    case_ids: np.ndarray, top_items: np.ndarray, top_scores: np.ndarray, raw_ids
) -> list[str]:
    """TREC run lines for the filled slots of ``top_items [N, K]`` (-1 = empty)."""
    rows, slots = np.nonzero(top_items >= 0)
    items = top_items[rows, slots]
    return [
        f"{case} Q0 {raw} {slot + 1} {score:.9g} dwrec"
        for case, raw, slot, score in zip(
            case_ids[rows].tolist(),
            raw_ids[items],
            slots.tolist(),
            top_scores[rows, slots].tolist(),
            strict=True,
        )
    ]


def qrels_lines(case_ids: np.ndarray, targets: np.ndarray, raw_ids) -> list[str]:
    """TREC qrels lines: the single relevant item of each case, relevance 1."""
    return [
        f"{case} 0 {raw} 1" for case, raw in zip(case_ids.tolist(), raw_ids[targets], strict=True)
    ]


def write_trec(
    out_dir: Path, run_name: str, split: str, dataset: Dataset, cases: Cases, ranking
) -> tuple[Path, Path]:
    """Write ``<run_name>.<split>.run`` and ``<run_name>.<split>.qrels`` into ``out_dir``."""
    raw_ids = _raw_ids(dataset)
    run_path = out_dir / f"{run_name}.{split}.run"
    qrels_path = out_dir / f"{run_name}.{split}.qrels"
    lines = run_lines(cases.row, ranking.top_items, ranking.top_scores, raw_ids)
    with atomic_path(run_path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    lines = qrels_lines(cases.row, cases.target, raw_ids)
    with atomic_path(qrels_path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return run_path, qrels_path
