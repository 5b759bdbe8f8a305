"""The results kept in git (benchmarks/results/): every kept run is complete, its per-case
table has one row per test case its metrics count, and each dataset's shared columns rebuild
a full per-case table. A half-copied or mismatched commit fails here, not in a reader's
`--tables-only` months later."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dwrec.export import expand_results

KEPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "reproduce-standard"
REBUILT = {"case_id", "rank", "target_domains", "recall@10", "ndcg@10"}  # what report reads


def kept_runs() -> list[Path]:
    return sorted(p for p in (KEPT / "runs").glob("*/*") if p.is_dir())


pytestmark = pytest.mark.skipif(not kept_runs(), reason="no kept results in this checkout")


def test_every_kept_run_is_complete_and_counts_its_cases():
    plan = json.loads((KEPT / "plan.json").read_text())
    for run in kept_runs():
        dataset = run.parent.name
        assert dataset in plan["datasets"], run
        metrics = json.loads((run / "metrics.json").read_text())
        assert pq.ParquetFile(run / "per_user.parquet").metadata.num_rows == metrics["n_cases"]
        assert metrics["dataset"]["fingerprint"] == plan["datasets"][dataset]["fingerprint"]
        if (run / "config.json").exists():  # a training (a prior-shift evaluation has none)
            assert (run / "train_done.json").exists() and (run / "log.jsonl").exists(), run
        assert not list(run.glob("*.pt")), run


def test_each_datasets_shared_columns_rebuild_a_full_per_case_table(tmp_path):
    for cases in sorted((KEPT / "runs").glob("*/cases.parquet")):
        run = next(p for p in sorted(cases.parent.iterdir()) if p.is_dir())
        copy = shutil.copytree(run, tmp_path / cases.parent.name)
        expand_results(copy, cases)
        table = pq.read_table(copy / "per_user.parquet")
        assert REBUILT <= set(table.column_names), table.column_names
        assert table.num_rows == json.loads((run / "metrics.json").read_text())["n_cases"]
