"""Validation curves and time-to-target (dwrec/baselines/convergence.py), and the two pieces of
the RecBole driver that the convergence comparison relies on: the per-epoch wall clock and
the reload of RecBole's best checkpoint under torch's ``weights_only`` default. None of it
needs RecBole: the driver's functions are taken out of its source and run on stand-ins."""

from __future__ import annotations

import ast
import math
import time
import types

import pytest
import torch

from dwrec.baselines import convergence
from dwrec.baselines.recbole_drivers import DRIVER
from dwrec.errors import DwrecError

# A hand-made run: (cumulative wall s, valid NDCG@10) after epochs 1..5.
WALLS = [12.0, 30.0, 41.5, 63.0, 80.0]
NDCGS = [0.010, 0.031, 0.052, 0.052, 0.047]


def test_time_to_reach_on_a_hand_computed_curve():
    points = convergence.curve(WALLS, NDCGS)
    assert [p.epoch for p in points] == [1, 2, 3, 4, 5]
    # best: the first of the two epochs at 0.052
    assert convergence.best(points) == convergence.Point(3, 41.5, 0.052)
    hit = convergence.time_to_reach(points, 0.052)
    assert (hit.epoch, hit.wall_seconds, hit.wall_seconds_before) == (3, 41.5, 30.0)
    # a target met with equality counts; the one before is the previous validation's time
    hit = convergence.time_to_reach(points, 0.031)
    assert (hit.epoch, hit.wall_seconds, hit.wall_seconds_before) == (2, 30.0, 12.0)
    # reached at the first validation: crossed somewhere after the start
    hit = convergence.time_to_reach(points, 0.005)
    assert (hit.epoch, hit.wall_seconds_before) == (1, 0.0)
    assert convergence.time_to_reach(points, 0.0521) is None


def test_time_to_reach_agrees_with_a_brute_force_scan():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        n = int(torch.randint(1, 12, (1,), generator=generator))
        walls = torch.cumsum(torch.rand(n, generator=generator, dtype=torch.float64), 0).tolist()
        ndcgs = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
        target = float(torch.rand(1, generator=generator, dtype=torch.float64))
        hit = convergence.time_to_reach(convergence.curve(walls, ndcgs), target)
        expected = [i for i in range(n) if ndcgs[i] >= target]
        if not expected:
            assert hit is None
        else:
            assert hit.wall_seconds == walls[expected[0]]
            assert hit.epoch == expected[0] + 1


def test_bad_curves_are_errors():
    with pytest.raises(DwrecError, match="2 wall times but 3"):
        convergence.curve([1.0, 2.0], [0.1, 0.2, 0.3])
    with pytest.raises(DwrecError, match="epoch 2 has a non-finite"):
        convergence.curve([1.0, 2.0], [0.1, math.nan])
    with pytest.raises(DwrecError, match="goes back at epoch 3"):
        convergence.curve([1.0, 5.0, 4.0], [0.1, 0.2, 0.3])
    with pytest.raises(DwrecError, match="no epochs"):
        convergence.best([])


# ---------------------------------------------------------------- the driver's pieces


def driver_function(name: str, namespace: dict) -> types.FunctionType:
    """A function (or HarnessTrainer method) of the driver source, compiled on its own."""
    tree = ast.parse(DRIVER)
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    assert len(nodes) == 1, name
    exec(compile(ast.Module(body=nodes, type_ignores=[]), "driver.py", "exec"), namespace)
    return namespace[name]


class ConfigStandIn:
    """Something a checkpoint pickles that torch's weights_only loader refuses (as
    RecBole's Config)."""

    def __init__(self, seed: int):
        self.seed = seed


def test_best_checkpoint_loads_despite_the_weights_only_default(tmp_path):
    trained = torch.nn.Linear(3, 2)
    path = tmp_path / "SASRec.pth"
    # RecBole's _save_checkpoint layout (epoch counted from 0)
    torch.save(
        {
            "config": ConfigStandIn(7),
            "epoch": 4,
            "state_dict": trained.state_dict(),
            "other_parameter": None,
        },
        path,
    )
    with pytest.raises(Exception, match="(?i)weights.only"):
        torch.load(path)  # what RecBole 1.2.1's evaluate(load_best_model=True) does
    loaded = []
    model = torch.nn.Linear(3, 2)
    model.load_other_parameter = loaded.append
    trainer = types.SimpleNamespace(saved_model_file=str(path), device="cpu", model=model)
    load_best = driver_function("load_best", {"torch": torch})
    assert load_best(trainer) == 5
    assert torch.equal(model.weight, trained.weight) and torch.equal(model.bias, trained.bias)
    assert loaded == [None]


def test_the_driver_never_asks_recbole_to_reload_its_checkpoint():
    calls = [n for n in ast.walk(ast.parse(DRIVER)) if isinstance(n, ast.Call)]

    def named(call: ast.Call, name: str) -> bool:
        return isinstance(call.func, ast.Attribute) and call.func.attr == name

    def keyword(call: ast.Call, name: str):
        values = [k.value for k in call.keywords if k.arg == name]
        return values[0].value if values and isinstance(values[0], ast.Constant) else "absent"

    evaluates = [c for c in calls if named(c, "evaluate")]
    loads = [c for c in calls if named(c, "load") and ast.unparse(c.func) == "torch.load"]
    fits = [c for c in calls if named(c, "fit")]
    assert evaluates and all(keyword(c, "load_best_model") is False for c in evaluates)
    assert len(loads) == 1 and keyword(loads[0], "weights_only") is False
    assert len(fits) == 1 and any(k.arg == "callback_fn" for k in fits[0].keywords)


def test_end_of_epoch_records_the_cumulative_wall_time():
    end_of_epoch = driver_function("end_of_epoch", {"time": time})
    trainer = types.SimpleNamespace(fit_started=time.perf_counter() - 5.0, valid_log=[])
    walls = []
    for epoch in range(3):
        trainer.valid_log.append({"ndcg@10": 0.1})
        end_of_epoch(trainer, epoch, 0.1)
        walls.append(trainer.valid_log[-1]["wall_seconds"])
    assert walls == sorted(walls) and 5.0 <= walls[0] < 60.0


def test_training_units_against_a_per_user_count(tmp_path):
    import dwrec
    from dwrec.data.dataset import load_dataset

    out = tmp_path / "d"
    dwrec.prepare(
        "synthetic", out=out, options={"users": 90, "items": 50, "domains": 3, "mean_length": 7}
    )
    dataset = load_dataset(out)
    for max_len in (1, 3, 200):
        windows = positions = prefixes = 0
        for user in range(dataset.n_users):
            n = int(dataset.user_indptr[user + 1] - dataset.user_indptr[user])
            train = n - 2 if n >= 3 else n  # loo: the last two go to validation and test
            if train < 2:
                continue
            windows += 1
            positions += min(train - 1, max_len)  # targets: items 2..train of the window
            prefixes += train - 1  # RecBole: (items[:k], items[k]) for k = 1 .. train-1
        got = convergence.training_units(dataset, max_len)
        assert got == {"windows": windows, "positions": positions, "prefixes": prefixes}
    assert positions == prefixes  # max_len 200 covers every synthetic sequence


def test_matched_patience_is_the_fewest_epochs_covering_recboles_targets():
    # ML-100K 5-core at length 50: RecBole 96,458 prefix samples, dwrec 38,719 positions
    assert convergence.matched_patience(5, 96_458, 38_719) == 13
    for patience in range(1, 7):
        for recbole in (1, 7, 30, 96_458):
            for ours in (1, 3, 30, 38_719):
                epochs = 1
                while epochs * ours < patience * recbole:
                    epochs += 1
                assert convergence.matched_patience(patience, recbole, ours) == epochs
    with pytest.raises(DwrecError, match="no training target"):
        convergence.matched_patience(5, 10, 0)
    with pytest.raises(DwrecError, match="patience"):
        convergence.matched_patience(0, 10, 5)
