"""The prior-shift control (``dwrec evaluate RUN --prior-from WEIGHTED``)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from test_evaluator import DOMAINS, brute_force, write_dataset, write_run

from dwrec.cli import main
from dwrec.errors import DwrecError, UsageError
from dwrec.eval.evaluator import evaluate_model
from dwrec.eval.prior import (
    PriorShiftedModel,
    choose_tau,
    evaluate_prior_shift,
    item_log_weights,
)
from dwrec.io import read_json, write_json
from dwrec.report.runs import load_run as load_evaluated_run

WEIGHTS = {"Dense": 0.4, "Mid": 1.3, "Rare": 4.0, "Tiny": 7.5}


def loop_log_weight(dataset, item: int, weights, rule="max") -> float:
    names = [
        dataset.domain_names[d]
        for d in range(len(dataset.domain_names))
        if dataset.item_domain_matrix[item, d]
    ]
    if not names:
        return 0.0
    values = [weights[name] for name in names]
    return math.log(max(values) if rule == "max" else sum(values) / len(values))


@pytest.fixture()
def two_runs(tmp_path):
    dataset = write_dataset(tmp_path / "data")
    base, split = write_run(tmp_path / "runs" / "generic", dataset, seed=0, label="bag+generic")
    write_run(tmp_path / "runs" / "dynamic", dataset, seed=1, label="bag+dynamic")
    write_json(
        tmp_path / "runs" / "dynamic" / "train_done.json",
        {"finished": True, "domain_weights": WEIGHTS},
    )
    return tmp_path / "runs", dataset, base, split


@pytest.mark.parametrize("rule", ["max", "mean"])
def test_item_log_weights_match_a_loop_over_items(two_runs, rule):
    _, dataset, _, _ = two_runs
    got = item_log_weights(dataset, WEIGHTS, rule)
    expected = [loop_log_weight(dataset, item, WEIGHTS, rule) for item in range(dataset.n_items)]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert set(DOMAINS) == set(dataset.domain_names)


def test_missing_or_non_positive_weights_are_errors(two_runs):
    _, dataset, _, _ = two_runs
    with pytest.raises(DwrecError, match="no weight for domain"):
        item_log_weights(dataset, {"Dense": 1.0})
    with pytest.raises(DwrecError, match="positive"):
        item_log_weights(dataset, {**WEIGHTS, "Rare": 0.0})


def test_shifted_scores_are_base_plus_tau_log_w_for_all_items_and_candidates(two_runs):
    _, dataset, base, _ = two_runs
    log_w = item_log_weights(dataset, WEIGHTS)
    shifted = PriorShiftedModel(base, log_w, tau=0.7)
    tokens = torch.tensor([[0, 0, 3, 5, 7], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        state = shifted.user_state(tokens)
        full = shifted.score(state).double().numpy()
        expected = base.score(base.user_state(tokens)).double().numpy() + 0.7 * log_w[None, :]
        np.testing.assert_allclose(full, expected, atol=1e-5)
        candidates = torch.tensor([4, 0, 9])
        np.testing.assert_allclose(
            shifted.score(state, candidates).double().numpy(), expected[:, [4, 0, 9]], atol=1e-5
        )


def test_tau_zero_ranks_exactly_like_the_base_model(two_runs):
    _, dataset, base, split = two_runs
    shifted = PriorShiftedModel(base, item_log_weights(dataset, WEIGHTS), tau=0.0)
    assert evaluate_model(shifted, dataset, split, "valid") == evaluate_model(
        base, dataset, split, "valid"
    )


def test_match_picks_the_closest_validation_score_and_ties_go_to_the_smaller_tau():
    grid = {0.0: 0.30, 0.5: 0.26, 1.0: 0.22, 2.0: 0.18}
    assert choose_tau(grid, "match", target=0.23).tau == 1.0
    exact = {0.0: 1.0, 0.5: 0.75, 1.0: 0.25}  # binary fractions: the distances tie exactly
    assert choose_tau(exact, "match", target=0.5).tau == 0.5
    assert choose_tau(grid, "best").tau == 0.0
    assert choose_tau({0.0: 0.2, 1.0: 0.2}, "best").tau == 0.0
    with pytest.raises(UsageError, match="criterion"):
        choose_tau(grid, "median")


def test_prior_evaluation_ranks_like_an_independent_computation(two_runs):
    runs, dataset, base, split = two_runs
    result = evaluate_prior_shift(runs / "generic", runs / "dynamic", criterion="best")
    out = runs / "generic" / "prior-from-dynamic"
    tau = result["prior"]["tau"]
    assert result["label"] == "bag+generic+prior"
    assert result["prior"]["from_label"] == "bag+dynamic"
    assert set(result["prior"]["grid"]) >= {"0.0", "1.0"}
    # the best-by-validation tau, recomputed with the evaluator's own overall metric
    grid = {float(t): v for t, v in result["prior"]["grid"].items()}
    assert grid[tau] == max(grid.values())
    # test ranks: base scores from a per-case loop, plus tau * log w from a per-item loop
    cases = split.test
    log_w = np.array([loop_log_weight(dataset, i, WEIGHTS) for i in range(dataset.n_items)])
    scores, masked = [], []
    with torch.no_grad():
        for user, end in zip(cases.user, cases.history_end, strict=True):
            history = dataset.item_ids[dataset.user_indptr[user] : end].tolist()
            recent = history[-5:]
            tokens = torch.tensor([[0] * (5 - len(recent)) + [i + 1 for i in recent]])
            row = base.score(base.user_state(tokens))[0].numpy().astype(np.float32)
            scores.append(row + np.float32(tau) * log_w.astype(np.float32))
            masked.append(history)
    expected_ranks, _ = brute_force(np.stack(scores), cases.target, masked, 10)
    table = pq.read_table(out / "per_user.parquet")
    np.testing.assert_array_equal(table.column("rank").to_numpy(), expected_ranks)


def test_report_reads_the_prior_evaluation_as_its_own_group(two_runs):
    runs, _, _, _ = two_runs
    evaluate_prior_shift(runs / "generic", runs / "dynamic", criterion="best", label="ctrl")
    run = load_evaluated_run(runs / "generic" / "prior-from-dynamic")
    assert run.label == "ctrl"
    assert read_json(runs / "generic" / "prior-from-dynamic" / "metrics.json")["run"].endswith(
        "generic"
    )


def test_cli_prior_from_checks_its_inputs(two_runs, capsys):
    runs, _, _, _ = two_runs
    generic, dynamic = str(runs / "generic"), str(runs / "dynamic")
    assert main(["evaluate", generic, dynamic, "--prior-from", dynamic]) == 2
    assert "exactly one RUN" in capsys.readouterr().err
    assert main(["evaluate", dynamic, "--prior-from", generic]) == 2
    assert "learned no domain weights" in capsys.readouterr().err
    assert main(["evaluate", generic, "--label", "x"]) == 2
    assert "--prior-from" in capsys.readouterr().err
    args = ["evaluate", generic, "--prior-from", dynamic, "--prior-tau", "0", "--prior-tau", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prior shift from bag+dynamic" in out and "bag+generic+prior" in out


def test_final_weights_come_from_train_done_else_the_last_log_line(tmp_path):
    from dwrec.errors import DataFormatError
    from dwrec.rundir import RunDir

    run = RunDir(tmp_path)
    assert run.final_domain_weights() is None
    lines = [{"epoch": 1, "domain_weights": {"A": 2.0}}, {"epoch": 2, "domain_weights": {"A": 3}}]
    run.write_log(lines)
    assert run.final_domain_weights() == {"A": 3.0}  # unfinished: the last logged epoch
    write_json(run.done_path, {"finished": True, "domain_weights": {"A": 4}})
    assert run.final_domain_weights() == {"A": 4.0}
    write_json(run.done_path, {"finished": True})
    run.log_path.write_text('{"epoch": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="line 2|:2"):
        run.final_domain_weights()
