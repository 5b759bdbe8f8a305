"""Multi-process training (DDP, gloo on CPU): same result as one process, rank 0 writes.

The end-to-end test starts real worker processes, so it is the slow one here (they fork
from a server process that imports torch once per test session); the loss-scaling rule is
also checked in-process, for each weighting that may train with several processes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dwrec
from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.errors import DwrecError, UsageError
from dwrec.losses.config import LossConfig
from dwrec.losses.registry import build_weighting
from dwrec.train import distributed, launch
from dwrec.train.batches import training_windows

TINY = {"hidden": 16, "layers": 1, "heads": 2, "max_len": 12, "lr": 3e-3, "dropout": 0.0}
LOSS_RTOL = 1e-4
"""Losses of the 2-process run may differ from one process only by the order of float32
sums (each rank sums its half of the positions, DDP adds the halves): ~1e-7 relative per
step, growing slowly over the steps; 1e-4 leaves room for that and nothing else."""
PARAMETER_ATOL = 1e-4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    options = {"users": 120, "items": 50, "domains": 3, "mean_length": 10, "follow_prob": 0.9}
    dwrec.prepare("synthetic", out=out, options=options)
    return out


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _batch_size_leaving_one(data_dir) -> int:
    """A batch size whose epoch ends with a one-sequence batch: rank 1 then has no rows and
    must still take part in the step (the zero-gradient path of ``rank_rows``)."""
    dataset = load_dataset(data_dir)
    windows = len(training_windows(dataset, make_split(dataset, "loo"), TINY["max_len"]))
    return next(size for size in range(16, 60) if windows % size == 1)


def _weighted_loss_in_one_and_two_ranks(weighting, positives, losses_fn, parameter):
    """Gradient of the one-process loss, and the DDP average of the two ranks' scaled
    losses (what ``DistributedDataParallel`` computes), for the same positions."""
    parameter.grad = None
    weighting.reduce(losses_fn(parameter, slice(None)), positives).backward()
    one = parameter.grad.clone()
    average = torch.zeros_like(one)
    halves = (slice(0, 7), slice(7, None))  # unequal halves: 7 and 13 positions
    for part in halves:
        parameter.grad = None
        local = positives[part]
        scale = distributed.rank_loss_scale(weighting, local, positives, 2)
        (weighting.reduce(losses_fn(parameter, part), local) * scale).backward()
        average += parameter.grad / 2
    return one, average


@pytest.mark.parametrize(
    ("loss", "reduction"),
    [("generic", "normalized"), ("fixed", "normalized"), ("fixed", "mean"), ("dynamic", "mean")]
    + [("dynamic", "normalized")],
)
def test_scaled_rank_losses_average_to_the_one_process_gradient(loss, reduction):
    rng = np.random.default_rng(3)
    n_items, n_domains = 12, 3
    indices = rng.integers(0, n_domains, n_items)
    weighting = build_weighting(
        LossConfig.from_dict(
            {"loss": loss, "weight_domains": ["D1"], "weight_reduction": reduction}
        ),
        domain_names=["D0", "D1", "D2"],
        item_domain_indptr=np.arange(n_items + 1),
        item_domain_indices=indices,
        train_items=rng.integers(0, n_items, 40),
        train_users=rng.integers(0, 5, 40),
        n_items=n_items,
    )
    positives = torch.from_numpy(rng.integers(0, n_items, 20))
    features = torch.from_numpy(rng.normal(size=(20, 4)))
    parameter = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    def losses(weights, rows):
        return (features[rows] @ weights - 1.0) ** 2 + features[rows, 0] * weights.sum()

    one, average = _weighted_loss_in_one_and_two_ranks(weighting, positives, losses, parameter)
    torch.testing.assert_close(average, one, rtol=1e-12, atol=1e-12)
    # the naive rule (each rank's own mean, averaged by DDP) is different here
    parameter.grad = None
    for part in (slice(0, 7), slice(7, None)):
        (weighting.reduce(losses(parameter, part), positives[part]) / 2).backward()
    assert not torch.allclose(parameter.grad, one, rtol=1e-3)


def test_rank_rows_partition_the_batch_and_cover_empty_ranks():
    inputs = torch.arange(10).reshape(5, 2)
    targets = inputs + 100
    slices = [distributed.rank_rows(inputs, targets, distributed.World(r, 2)) for r in (0, 1)]
    assert torch.cat([s[0] for s in slices]).tolist() == inputs.tolist()
    assert [s[2] for s in slices] == [1.0, 1.0]
    lone = [distributed.rank_rows(inputs[:1], targets[:1], distributed.World(r, 2)) for r in (0, 1)]
    assert lone[0][0].tolist() == lone[1][0].tolist() == [[0, 1]]
    assert [s[2] for s in lone] == [1.0, 0.0]  # rank 1 repeats row 0 with a zero gradient


@pytest.mark.slow
def test_two_processes_match_one_and_resume(data_dir, tmp_path):
    options = dict(
        TINY, batch_size=_batch_size_leaving_one(data_dir), loss="dynamic", quiet=True, seed=3
    )
    dwrec.train(data_dir, out=tmp_path / "one", epochs=3, **options)
    # two processes for 2 epochs, then resumed (two processes again) up to 3
    dwrec.train(data_dir, out=tmp_path / "two", epochs=2, nproc=2, **options)
    assert len(_log(tmp_path / "two")) == 2
    dwrec.train(resume=tmp_path / "two", epochs=3, nproc=2, quiet=True)

    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["epoch"] for r in two] == [1, 2, 3]
    dataset = load_dataset(data_dir)
    one_case = 1.0 / len(make_split(dataset, "loo").valid)
    np.testing.assert_allclose(
        [r["train_loss"] for r in two], [r["train_loss"] for r in one], rtol=LOSS_RTOL
    )
    for a, b in zip(one, two, strict=True):
        assert a["step"] == b["step"]
        for name in a["valid"]:  # at most one case's metric may move (a near-tie)
            assert b["valid"][name] == pytest.approx(a["valid"][name], abs=one_case)
        np.testing.assert_allclose(
            list(b["domain_weights"].values()), list(a["domain_weights"].values()), rtol=1e-6
        )
    single = torch.load(tmp_path / "one" / "model.pt", weights_only=True)["model_state"]
    double = torch.load(tmp_path / "two" / "model.pt", weights_only=True)["model_state"]
    for name, value in single.items():
        torch.testing.assert_close(double[name], value, rtol=0, atol=PARAMETER_ATOL)

    # only rank 0 wrote: the usual files, nothing per rank, nothing left half-written
    names = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "one").iterdir())
    environment = json.loads((tmp_path / "two" / "environment.json").read_text())
    assert (environment["world_size"], environment["backend"]) == (2, "gloo")
    last = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    assert len(last["rank_rng"]) == 2


def test_a_rank_other_than_0_writes_nothing(data_dir, tmp_path, monkeypatch):
    """Rank 1 run in-process, its collectives replaced by what rank 0 would send: it must
    train through to the end without writing a single file."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"written by": "rank 0"}')  # read at the end
    monkeypatch.chdir(tmp_path)
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    rank1 = distributed.World(1, 2, 1, "gloo")
    monkeypatch.setattr(distributed, "start", lambda world, device: (rank1, torch.device("cpu")))
    monkeypatch.setattr(distributed, "stop", lambda world: None)
    monkeypatch.setattr(distributed, "on_main", lambda world, action: run_dir)
    monkeypatch.setattr(distributed, "broadcast_object", lambda world, value: value)
    monkeypatch.setattr(distributed, "gather_objects", lambda world, value: [value, value])
    monkeypatch.setattr(distributed, "any_rank", lambda world, flag, device: flag)
    monkeypatch.setattr(
        distributed,
        "reduce_step",
        lambda world, loss, vote: torch.stack([loss.detach().float(), torch.tensor(0.0)]),
    )
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", lambda m, **_: m)
    options = dict(TINY, batch_size=_batch_size_leaving_one(data_dir), loss="dynamic")
    dwrec.train(data_dir, out=run_dir, epochs=2, quiet=True, **options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert [p.name for p in run_dir.iterdir()] == ["config.json"]
    assert (run_dir / "config.json").read_text() == '{"written by": "rank 0"}'


def test_a_worker_killed_without_report_is_named_before_the_broken_collectives():
    outcomes = {
        0: ("crash", "Traceback ...\nRuntimeError: Connection reset by peer"),
        1: ("died", -9),
    }
    with pytest.raises(DwrecError) as caught:
        launch._outcome(outcomes, 2)
    message = str(caught.value)
    assert message.startswith("training rank 1 exited with code -9 without a report")
    assert "also: rank 0 failed: RuntimeError: Connection reset by peer" in message
    with pytest.raises(UsageError, match="--out x: already exists"):
        launch._outcome({1: ("usage", "--out x: already exists"), 0: ("usage", "?")}, 2)
    assert launch._outcome({1: ("ok", None), 0: ("ok", "result")}, 2) == "result"


def test_nproc_must_be_a_positive_integer(data_dir, capsys):
    code = main(["train", "--dataset", str(data_dir), "--nproc", "0", "--epochs", "1"])
    assert code == 2
    assert "--nproc must be an integer >= 1, got 0" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_nproc_on_cuda_without_cuda_is_a_usage_error(data_dir, tmp_path, capsys):
    argv = ["train", "--dataset", str(data_dir), "--nproc", "2", "--device", "cuda"]
    code = main([*argv, "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--nproc 2 --device cuda: CUDA is not available" in err
    assert not (tmp_path / "run").exists()


def test_adc_refuses_several_processes(data_dir, tmp_path, capsys):
    code = main(["train", "--dataset", str(data_dir), "--nproc", "2", "--loss", "adc"])
    assert code == 2
    assert "--loss adc cannot train with several processes" in capsys.readouterr().err


def test_nproc_inside_torchrun_is_a_usage_error(data_dir, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["train", "--dataset", str(data_dir), "--nproc", "2"])
    assert code == 2
    assert "use either torchrun or --nproc" in capsys.readouterr().err


def test_an_interrupted_train_command_exits_130(tmp_path, monkeypatch, capsys):
    """What every rank raises after an agreed Ctrl-C; the CLI must exit 130 (not 0)."""
    from dwrec.train import trainer

    def interrupted(*args, **kwargs):
        raise trainer.TrainingInterrupted(tmp_path / "run", 2, 17)

    monkeypatch.setattr(trainer, "train", interrupted)
    assert main(["train", "--dataset", "x", "--nproc", "2"]) == 130
    assert "continue with `dwrec train --resume" in capsys.readouterr().err
