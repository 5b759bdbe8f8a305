"""Shared end-to-end checks for the models with dataset-bound parts and auxiliary losses
(tests/test_calrec.py, tests/test_sparseennet.py): learning on the synthetic data, the
same seed giving the same run, an interrupted run resumed ending like an uninterrupted one,
``dwrec evaluate`` on the finished run. Mirrors tests/test_trainer.py's checks for sasrec.
Also :func:`random_tokens`, the random input batches of the model tests."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

import dwrec
from dwrec.cli import main
from dwrec.train.trainer import TrainingInterrupted

TINY = {"hidden": 16, "layers": 1, "heads": 2, "max_len": 20, "batch_size": 32, "lr": 3e-3}
SYNTHETIC = {"users": 160, "items": 60, "domains": 4, "mean_length": 14, "follow_prob": 0.9}


def random_tokens(n_items: int, batch: int, length: int, seed: int = 1) -> torch.Tensor:
    """Left-padded random tokens of items ``1..n_items``, row lengths 1..length (row 0 full)."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, n_items + 1, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length
    return tokens.masked_fill(torch.arange(length) < (length - lengths)[:, None], 0)


def prepare_synthetic(folder: Path) -> Path:
    out = folder / "synthetic"
    dwrec.prepare("synthetic", out=out, options=SYNTHETIC)
    return out


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def stable(records: list[dict]) -> list[tuple]:
    """The parts of log lines that must repeat exactly (not the timings)."""
    return [(r["epoch"], r["train_loss"], r["valid"], r["domain_weights"]) for r in records]


def states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def check_learns_and_beats_pop(model: str, data_dir: Path, tmp_path: Path, epochs: int = 6):
    pop = dwrec.train(data_dir, model="pop", out=tmp_path / "pop", quiet=True)
    result = dwrec.train(
        data_dir, model=model, out=tmp_path / model, quiet=True, epochs=epochs, dropout=0.1, **TINY
    )
    losses = [r["train_loss"] for r in log_records(tmp_path / model)]
    assert losses[-1] < losses[0] - 0.2, losses
    assert result.best_valid["ndcg@10"] > pop.best_valid["ndcg@10"] + 0.05, (
        result.best_valid,
        pop.best_valid,
    )
    return result


def check_same_seed_same_run(model: str, data_dir: Path, tmp_path: Path, **extra) -> None:
    """``extra``: more options, over the defaults here."""
    options = dict(TINY, model=model, epochs=2, loss="dynamic", quiet=True)
    options.update(extra)
    dwrec.train(data_dir, out=tmp_path / "a", seed=7, **options)
    dwrec.train(data_dir, out=tmp_path / "b", seed=7, **options)
    dwrec.train(data_dir, out=tmp_path / "c", seed=8, **options)
    assert stable(log_records(tmp_path / "a")) == stable(log_records(tmp_path / "b"))
    assert stable(log_records(tmp_path / "a")) != stable(log_records(tmp_path / "c"))


def check_resume_equals_uninterrupted(
    model: str, data_dir: Path, tmp_path: Path, stop_at_step: int, **extra
) -> None:
    """``extra``: more options, over the defaults here."""
    options = dict(TINY, model=model, epochs=3, loss="dynamic", dropout=0.3, patience=5)
    options.update(extra)
    dwrec.train(data_dir, out=tmp_path / "straight", quiet=True, **options)

    def ctrl_c(event, info):
        if event == "step" and info["global_step"] == stop_at_step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    with pytest.raises(TrainingInterrupted):
        dwrec.train(data_dir, out=tmp_path / "resumed", callback=ctrl_c, quiet=True, **options)
    dwrec.train(resume=tmp_path / "resumed", quiet=True)
    assert stable(log_records(tmp_path / "straight")) == stable(log_records(tmp_path / "resumed"))
    for name in ("model.pt", "last.pt"):
        straight = torch.load(tmp_path / "straight" / name, weights_only=True)
        resumed = torch.load(tmp_path / "resumed" / name, weights_only=True)
        assert states_equal(straight["model_state"], resumed["model_state"]), name


def check_evaluate_cli(run_dir: Path, best_valid: dict) -> dict:
    """``dwrec evaluate --split valid`` on a finished run reproduces the trainer's best
    validation NDCG@10 (the model is rebuilt through ``load_model`` and ``bind_dataset``)."""
    assert main(["evaluate", str(run_dir), "--split", "valid", "--device", "cpu"]) == 0
    metrics = json.loads(next(run_dir.glob("metrics*.json")).read_text())
    assert metrics["overall"]["ndcg@10"] == pytest.approx(best_valid["ndcg@10"], abs=1e-6)
    return metrics
