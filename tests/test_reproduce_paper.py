"""benchmarks/reproduce_paper.py: a tiny real plan end to end, then resumption."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import shared_file

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_paper.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("reproduce_paper", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_plan_trains_evaluates_reports_then_resumes(script, tmp_path, capsys):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    argv = ["--budget", "quick", "--datasets", "ml-100k", "--models", "sasrec", "--losses",
            "generic", "fixed", "dynamic", "--epochs", "1", "--data-root", str(data_root),
            "--out", str(out), "--probe-steps", "1", "--bootstrap", "50"]  # fmt: skip
    assert script.main(argv) == 0
    printed = capsys.readouterr().out
    assert "plan: 3 runs (0 done, 0 to finish, 3 new)" in printed
    assert "estimate: at most" in printed
    runs = out / "runs" / "ml-100k"
    assert sorted(p.name for p in runs.iterdir()) == [
        "sasrec-dynamic-s0", "sasrec-fixed-s0", "sasrec-generic-s0",
    ]  # fmt: skip
    summary = (out / "summary.md").read_text()
    assert "| sasrec | dynamic | 1 |" in summary
    assert "Film-Noir" in summary  # the paper's sparse genre is always reported on MovieLens
    fixed_config = (runs / "sasrec-fixed-s0" / "config.json").read_text()
    assert '"Film-Noir"' in fixed_config

    # A second invocation finds everything done: no training, no evaluation.
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()}
    assert script.main(argv) == 0
    assert "plan: 3 runs (3 done, 0 to finish, 0 new)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in runs.glob("*/*") if p.is_file()} == stamps

    # A run stopped part way (evaluation lost, training marked unfinished) is resumed.
    (runs / "sasrec-dynamic-s0" / "metrics.json").unlink()
    (runs / "sasrec-dynamic-s0" / "train_done.json").unlink()
    assert script.main(argv) == 0
    assert "plan: 3 runs (2 done, 1 to finish, 0 new)" in capsys.readouterr().out
    assert (runs / "sasrec-dynamic-s0" / "metrics.json").exists()


def test_fixed_domain_is_film_noir_on_movielens_else_the_sparsest(script):
    movielens = {"domains": {"Drama": {"share": 0.4}, "Film-Noir": {"share": 0.02},
                             "Documentary": {"share": 0.01}}}  # fmt: skip
    tags = {"domains": {"rock": {"share": 0.5}, "jazz": {"share": 0.03},
                        "ambient": {"share": 0.03}}}  # fmt: skip
    assert script.fixed_domain("ml-1m", movielens) == "Film-Noir"
    assert script.fixed_domain("lastfm", tags) == "ambient"  # tie on share: by name
    assert script.sparse_and_dense(tags, 1) == (["ambient"], ["rock"])
