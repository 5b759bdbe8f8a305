"""The learning-rate schedule (``--lr-schedule``, ``--warmup-steps``): its values against the
closed form, the rates a run actually used, exact resume, and the option's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from aux_model_runs import (
    TINY,
    check_resume_equals_uninterrupted,
    log_records,
    stable,
)

import dwrec
from dwrec.errors import UsageError
from dwrec.train.config import TrainConfig, from_saved
from dwrec.train.steps import learning_rate

STEPS_PER_EPOCH = 5  # 160 synthetic users, batch 32


def closed_form(schedule: str, peak: float, warmup: int, total: int) -> np.ndarray:
    """Every step's rate at once, in float64, from the textbook formulas."""
    steps = np.arange(total + 3, dtype=np.float64)  # a few steps past the horizon too
    ramp = peak * (steps + 1) / max(warmup, 1)
    progress = np.clip((steps - warmup) / (total - warmup), 0.0, 1.0)
    after = {
        "constant": np.full_like(steps, peak),
        "linear": peak * (1 - progress),
        "cosine": peak * (np.cos(np.pi * progress) + 1) / 2,
    }[schedule]
    return np.where(steps < warmup, ramp, after)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_rates_follow_the_closed_form(schedule, warmup):
    expected = closed_form(schedule, 2e-3, warmup, 40)
    got = [learning_rate(step, 2e-3, schedule, warmup, 40) for step in range(len(expected))]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_hand_checked_rates():
    assert learning_rate(0, 1e-3, "cosine", 4, 14) == pytest.approx(2.5e-4)
    assert learning_rate(3, 1e-3, "cosine", 4, 14) == pytest.approx(1e-3)
    assert learning_rate(4, 1e-3, "cosine", 4, 14) == pytest.approx(1e-3)  # decay starts
    assert learning_rate(9, 1e-3, "linear", 4, 14) == pytest.approx(5e-4)  # half way
    assert learning_rate(9, 1e-3, "cosine", 4, 14) == pytest.approx(5e-4)
    assert learning_rate(6, 1e-3, "cosine", 4, 14) == pytest.approx(1e-3 * 0.904508497, 1e-8)
    assert learning_rate(13, 1e-3, "linear", 4, 14) == pytest.approx(1e-4)  # last step > 0
    assert learning_rate(14, 1e-3, "linear", 4, 14) == 0.0


def test_a_run_uses_the_scheduled_rates(data_dir, tmp_path):
    """The rate of each epoch's last step, as logged, is the closed form's (the horizon is
    --epochs x steps per epoch), and a schedule changes what the run learns."""
    options = dict(TINY, epochs=3, patience=5, quiet=True)
    dwrec.train(data_dir, out=tmp_path / "cos", lr_schedule="cosine", warmup_steps=3, **options)
    dwrec.train(data_dir, out=tmp_path / "flat", **options)
    total = 3 * STEPS_PER_EPOCH
    expected = closed_form("cosine", TINY["lr"], 3, total)
    records = log_records(tmp_path / "cos")
    for record in records:
        assert record["step"] == record["epoch"] * STEPS_PER_EPOCH
        assert record["lr"] == pytest.approx(expected[record["step"] - 1], rel=1e-12)
    assert [r["lr"] for r in log_records(tmp_path / "flat")] == [TINY["lr"]] * 3
    assert stable(records) != stable(log_records(tmp_path / "flat"))
    config = json.loads((tmp_path / "cos" / "config.json").read_text())
    assert config["train"]["lr_schedule"] == "cosine" and config["train"]["warmup_steps"] == 3


@pytest.mark.parametrize("stop_at_step", [7, 10])  # mid-epoch 2; the end of epoch 2
def test_interrupt_then_resume_follows_the_same_schedule(data_dir, tmp_path, stop_at_step):
    schedule = dict(loss="ce", lr_schedule="linear", warmup_steps=4, lr=5e-3)
    check_resume_equals_uninterrupted("sasrec", data_dir, tmp_path, stop_at_step, **schedule)
    straight, resumed = log_records(tmp_path / "straight"), log_records(tmp_path / "resumed")
    assert [r["lr"] for r in straight] == [r["lr"] for r in resumed]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["schedule_steps"] == b["schedule_steps"] == 3 * STEPS_PER_EPOCH
    assert a["optimizer_state"]["param_groups"] == b["optimizer_state"]["param_groups"]


def test_a_resume_with_more_epochs_keeps_the_horizon(data_dir, tmp_path):
    options = dict(TINY, epochs=2, patience=5, quiet=True, lr_schedule="linear")
    dwrec.train(data_dir, out=tmp_path / "run", **options)
    dwrec.train(resume=tmp_path / "run", epochs=3, quiet=True)
    rates = [r["lr"] for r in log_records(tmp_path / "run")]
    horizon = 2 * STEPS_PER_EPOCH
    assert rates[:2] == pytest.approx([TINY["lr"] * (1 - (s - 1) / horizon) for s in (5, 10)])
    assert rates[2] == 0.0  # past the horizon fixed at the start


def test_bad_values_are_one_line_errors():
    with pytest.raises(UsageError, match="--lr-schedule must be one of constant, linear, cosine"):
        TrainConfig(lr_schedule="step").validate()
    with pytest.raises(UsageError, match="--warmup-steps must be >= 0"):
        TrainConfig(warmup_steps=-1).validate()
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        learning_rate(0, 1e-3, "step", 0, 10)


def test_a_run_saved_before_the_options_existed_resumes_without_a_schedule(data_dir, tmp_path):
    dwrec.train(data_dir, out=tmp_path / "run", epochs=1, quiet=True, **TINY)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for key in ("lr_schedule", "warmup_steps"):
        del saved["train"][key]
    config = from_saved(saved)
    assert config.train.lr_schedule == "constant" and config.train.warmup_steps == 0


def test_help_lists_the_options(capsys):
    from dwrec.cli import main

    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--lr-schedule" in text and "--warmup-steps" in text


def test_runs_that_predate_the_options_match_new_runs_in_a_report(data_dir, tmp_path):
    """A run whose config.json lacks lr_schedule / warmup_steps (written before they existed)
    reads back with the values it trained with, so `dwrec report` pools it with a new run
    of the same settings (a seed of a reproduction trained before the upgrade)."""
    from dwrec.rundir import RunDir

    options = dict(TINY, epochs=1, quiet=True, loss="generic")
    for seed in (0, 1):
        dwrec.train(data_dir, out=tmp_path / f"s{seed}", seed=seed, **options)
        dwrec.train(data_dir, out=tmp_path / f"d{seed}", seed=seed, **dict(options, loss="dynamic"))
    for run in ("s0", "d0"):  # as written before the options existed
        path = tmp_path / run / "config.json"
        saved = json.loads(path.read_text())
        for key in ("lr_schedule", "warmup_steps"):
            del saved["train"][key]
        path.write_text(json.dumps(saved))
        assert RunDir(tmp_path / run).read_config()["train"]["lr_schedule"] == "constant"
    runs = [tmp_path / name for name in ("s0", "s1", "d0", "d1")]
    for run in runs:
        dwrec.evaluate(run, device="cpu")
    result = dwrec.report(runs, bootstrap=10, permutations=10)
    assert result is not None
    dwrec.train(data_dir, out=tmp_path / "w", seed=2, warmup_steps=2, **options)
    dwrec.evaluate(tmp_path / "w", device="cpu")
    with pytest.raises(UsageError, match="warmup_steps"):  # a real difference still counts
        dwrec.report([*runs, tmp_path / "w"], bootstrap=10, permutations=10)
