"""dwrec.rundir.export_results / expand_results: a run's results without its checkpoints,
with no machine's folders in them, and per-case tables split into the run's own columns and
the columns its dataset's runs share, rebuilt byte for byte."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dwrec.errors import DataFormatError, UsageError
from dwrec.export import expand_results, export_results
from dwrec.io import write_json, write_parquet
from dwrec.rundir import RunDir

CASES = 40


def per_case_table(seed: int, order: list[int] | None = None, domains_of=None) -> pa.Table:
    """A per-case table in the evaluator's layout: shared columns fixed by the case id, rank
    and metric values drawn from ``seed``."""
    draw = random.Random(seed)
    cases = order if order is not None else list(range(CASES))
    ranks = [draw.randrange(1, 500) for _ in cases]
    domains_of = domains_of or (lambda case: [f"D{case % 3}"] + (["D9"] if case % 5 == 0 else []))
    return pa.table(
        {
            "case_id": pa.array(cases, pa.int64()),
            "user_id": pa.array([c + 100 for c in cases], pa.int32()),
            "target_item": pa.array([c * 7 % 31 for c in cases], pa.int32()),
            "rank": pa.array(ranks, pa.int64()),
            "recall@10": [float(r <= 10) for r in ranks],
            "ndcg@10": [1 / (1 + r) if r <= 10 else 0.0 for r in ranks],
            "target_domains": [domains_of(c) for c in cases],
            "power_domains": [[] if c % 2 else ["D0"] for c in cases],
        }
    )


def make_run(root: Path, name: str, table: pa.Table, dataset: Path | None = None) -> Path:
    run = root / "runs" / name
    dataset = dataset if dataset is not None else root / "datasets" / "toy"
    write_json(run / "config.json", {"dataset": {"path": str(dataset), "name": "toy"}})
    write_json(run / "environment.json", {"torch_threads": 1})
    RunDir(run).write_log([{"epoch": 1, "seconds": 2.0, "step": 3}])
    (run / "model.pt").write_bytes(b"weights")
    (run / "last.pt").write_bytes(b"resume state")
    write_parquet(run / "per_user.parquet", table)
    write_json(run / "metrics.json", {"run": str(run), "dataset": {"path": str(dataset)}})
    return run


def test_export_keeps_results_not_checkpoints_and_makes_paths_relative(tmp_path):
    root = tmp_path / "out"
    run = make_run(root, "a", per_case_table(0))
    copy = export_results(run, tmp_path / "kept" / "a", root=root)
    assert sorted(p.name for p in copy.iterdir()) == [
        "config.json", "environment.json", "log.jsonl", "metrics.json", "per_user.parquet",
    ]  # fmt: skip
    assert json.loads((copy / "config.json").read_text())["dataset"]["path"] == "datasets/toy"
    metrics = json.loads((copy / "metrics.json").read_text())
    assert metrics == {"run": "runs/a", "dataset": {"path": "datasets/toy"}}
    assert (copy / "per_user.parquet").read_bytes() == (run / "per_user.parquet").read_bytes()
    assert RunDir(copy).read_log() == RunDir(run).read_log()


def test_an_absolute_path_outside_the_root_refuses_the_export_naming_the_file(tmp_path):
    root = tmp_path / "out"
    run = make_run(root, "a", per_case_table(0), dataset=tmp_path / "elsewhere")
    with pytest.raises(DataFormatError, match=r"config\.json: absolute path .*elsewhere"):
        export_results(run, tmp_path / "kept" / "a", root=root)
    assert not (tmp_path / "kept").exists()  # nothing half-written
    (run / "metrics.json").unlink()
    with pytest.raises(UsageError, match="not evaluated"):
        export_results(run, tmp_path / "kept" / "a", root=root)


def test_shared_columns_are_kept_once_and_rebuilt_byte_for_byte(tmp_path):
    root, kept = tmp_path / "out", tmp_path / "kept"
    shared = kept / "cases.parquet"
    shuffled = list(range(CASES))
    random.Random(5).shuffle(shuffled)
    runs = {
        "in-order": make_run(root, "in-order", per_case_table(1)),
        "shuffled": make_run(root, "shuffled", per_case_table(2, order=shuffled)),
        # another split's cases (other domains for the same ids): its table is kept whole
        "other": make_run(root, "other", per_case_table(3, domains_of=lambda c: ["X"])),
    }
    copies = {n: export_results(r, kept / n, root=root, shared=shared) for n, r in runs.items()}
    columns = {n: pq.read_table(c / "per_user.parquet").column_names for n, c in copies.items()}
    assert columns["in-order"] == ["rank", "recall@10", "ndcg@10"]  # ids follow the shared order
    assert columns["shuffled"] == ["case_id", "rank", "recall@10", "ndcg@10"]
    assert "target_domains" in columns["other"]
    common = pq.read_table(shared)
    assert common.column_names == ["case_id", "user_id", "target_item", "target_domains",
                                   "power_domains"]  # fmt: skip
    assert common["case_id"].to_pylist() == list(range(CASES))
    for name, copy in copies.items():
        expand_results(copy, shared)
        assert (copy / "per_user.parquet").read_bytes() == (
            runs[name] / "per_user.parquet"
        ).read_bytes(), name
