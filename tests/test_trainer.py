"""The trainer and `dwrec train`: learning, determinism, exact resume, the run-dir contract."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from aux_model_runs import (
    TINY,
    check_same_seed_same_run,
    log_records,
    stable,
    states_equal,
)

import dwrec
from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.errors import UsageError
from dwrec.train.batches import training_item_counts, training_windows
from dwrec.train.trainer import TrainingDiverged, TrainingInterrupted


def test_training_windows_match_a_per_user_loop(data_dir):
    dataset = load_dataset(data_dir)
    split = make_split(dataset, "loo")
    windows = training_windows(dataset, split, max_len=6)
    expected_rows, expected_users = [], []
    for user in range(dataset.n_users):
        prefix = dataset.item_ids[dataset.user_indptr[user] : split.train_end[user]]
        if len(prefix) < 2:
            continue
        tail = list(prefix[-7:] + 1)
        expected_rows.append([0] * (7 - len(tail)) + tail)
        expected_users.append(user)
    assert windows.tokens.tolist() == expected_rows
    assert windows.users.tolist() == expected_users
    targets = [
        t - 1 for row in expected_rows for prev, t in zip(row[:-1], row[1:], strict=True) if prev
    ]
    assert windows.target_items().tolist() == targets
    counts = np.zeros(dataset.n_items, dtype=np.int64)
    for user in range(dataset.n_users):
        for item in dataset.item_ids[dataset.user_indptr[user] : split.train_end[user]]:
            counts[item] += 1
    assert training_item_counts(dataset, split).tolist() == counts.tolist()


def test_sasrec_loss_falls_and_beats_pop(data_dir, tmp_path):
    pop = dwrec.train(data_dir, model="pop", out=tmp_path / "pop", quiet=True)
    result = dwrec.train(data_dir, out=tmp_path / "sas", quiet=True, epochs=6, dropout=0.1, **TINY)
    losses = [r["train_loss"] for r in log_records(tmp_path / "sas")]
    assert losses[-1] < losses[0] - 0.2
    assert result.best_valid["ndcg@10"] > pop.best_valid["ndcg@10"] + 0.05


def test_same_seed_same_metrics_and_another_seed_differs(data_dir, tmp_path):
    check_same_seed_same_run("sasrec", data_dir, tmp_path)


@pytest.mark.parametrize("stop_at_step", [7, 5])  # mid-epoch 2; the end of epoch 1 (5 steps)
def test_interrupt_then_resume_ends_exactly_like_an_uninterrupted_run(
    data_dir, tmp_path, stop_at_step
):
    options = dict(TINY, epochs=3, loss="dynamic", dropout=0.3, patience=5, quiet=True)
    dwrec.train(data_dir, out=tmp_path / "straight", **options)

    def ctrl_c(event, info):
        if event == "step" and info["global_step"] == stop_at_step:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    with pytest.raises(TrainingInterrupted):
        dwrec.train(data_dir, out=tmp_path / "resumed", callback=ctrl_c, **options)
    assert not (tmp_path / "resumed" / "train_done.json").exists()
    assert (
        torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["global_step"]
        == stop_at_step
    )
    dwrec.train(resume=tmp_path / "resumed", quiet=True)

    assert stable(log_records(tmp_path / "straight")) == stable(log_records(tmp_path / "resumed"))
    # the throughput of the epoch resumed part way counts only the steps it timed
    straight, resumed = log_records(tmp_path / "straight"), log_records(tmp_path / "resumed")
    timed = 3 if stop_at_step == 7 else 5  # 5 steps an epoch: epoch 2 resumed after its 2nd
    assert [r["steps_timed"] for r in resumed] == [5, timed, 5]
    assert [r["steps_timed"] for r in straight] == [5, 5, 5]

    def work(record, rate):  # what the epoch's figures say it processed
        return round(record[rate] * record["seconds"])

    skipped = 0 if timed == 5 else 2 * TINY["batch_size"]  # the 2 steps run before the stop
    assert work(resumed[1], "sequences_per_s") == work(straight[1], "sequences_per_s") - skipped
    assert (work(resumed[1], "positions_per_s") < work(straight[1], "positions_per_s")) == bool(
        skipped
    )
    for name in ("model.pt", "last.pt"):
        straight = torch.load(tmp_path / "straight" / name, weights_only=True)
        resumed = torch.load(tmp_path / "resumed" / name, weights_only=True)
        assert states_equal(straight["model_state"], resumed["model_state"]), name
    assert (tmp_path / "resumed" / "train_done.json").exists()


def test_run_dir_follows_the_contract(data_dir, tmp_path):
    from dwrec.models.registry import load_model

    run = tmp_path / "run"
    dwrec.train(
        data_dir, out=run, loss="fixed", weight_domains=["D03,D04"], epochs=2, quiet=True, **TINY
    )
    assert {
        "config.json",
        "model.pt",
        "last.pt",
        "log.jsonl",
        "environment.json",
        "train_done.json",
    } <= {p.name for p in run.iterdir()}
    config = json.loads((run / "config.json").read_text())
    dataset = load_dataset(data_dir)
    assert config["dataset"] == {
        "path": str(data_dir.resolve()),
        "name": "synthetic",
        "fingerprint": dataset.fingerprint,
        "request": dataset.meta["request"],  # to re-create it (RunDir.recreate_hint)
    }
    assert config["threads"] == torch.get_num_threads()  # restored on resume
    assert config["split"] == {
        "scheme": "loo",
        "fingerprint": make_split(dataset, "loo").fingerprint,
    }
    assert config["model"]["name"] == "sasrec" and config["model"]["hidden"] == 16
    assert config["loss"]["loss"] == "fixed" and config["loss"]["weight_domains"] == ["D03", "D04"]
    assert {
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "seed",
        "patience",
        "device",
        "compile",
        "amp",
    } <= set(config["train"])
    assert (
        config["label"] == "sasrec+fixed" and "dwrec_version" in config and "git_commit" in config
    )
    records = log_records(run)
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {
            "train_loss",
            "valid",
            "domain_weights",
            "seconds",
            "sequences_per_s",
            "positions_per_s",
        } <= set(record)
        assert set(record["domain_weights"]) == {"D01", "D02", "D03", "D04"}
        assert record["domain_weights"]["D03"] > record["domain_weights"]["D01"]
    environment = json.loads((run / "environment.json").read_text())
    assert {
        "python",
        "torch",
        "numpy",
        "device",
        "cpu_count",
        "dwrec_version",
        "git_commit",
    } <= set(environment)
    # the CPU model, read here independently of dwrec (float results depend on it)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        assert names and environment["cpu"] == names[0]
    assert environment["cpu"]
    model = load_model(run, config, dataset.fingerprint)
    best = max(records, key=lambda r: r["valid"]["ndcg@10"])
    assert torch.load(run / "model.pt", weights_only=True)["epoch"] == best["epoch"]
    assert model.user_state(torch.tensor([[0, 1, 2]])).shape == (1, 16)


def test_pop_run_holds_training_counts(data_dir, tmp_path):
    from dwrec.models.registry import load_model

    dwrec.train(data_dir, model="pop", out=tmp_path / "pop", quiet=True)
    config = json.loads((tmp_path / "pop" / "config.json").read_text())
    dataset = load_dataset(data_dir)
    model = load_model(tmp_path / "pop", config, dataset.fingerprint)
    split = make_split(dataset, "loo")
    in_train = [
        item
        for user in range(dataset.n_users)
        for item in dataset.item_ids[dataset.user_indptr[user] : split.train_end[user]]
    ]
    expected = np.log1p(np.bincount(in_train, minlength=dataset.n_items))
    np.testing.assert_allclose(model.counts.log1p().numpy(), expected, rtol=1e-6)
    assert config["label"] == "pop" and (tmp_path / "pop" / "train_done.json").exists()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    data_dir, tmp_path, monkeypatch
):
    import dwrec.losses.registry as registry

    real_build = registry.build_objective
    calls = {"n": 0}

    def poisoned(config, n_items):
        objective = real_build(config, n_items)

        def call(batch):
            calls["n"] += 1
            losses = objective(batch)
            return losses * float("nan") if calls["n"] == 8 else losses

        return call

    monkeypatch.setattr(registry, "build_objective", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 8 .*epoch 2.*domain weights"):
        dwrec.train(data_dir, out=tmp_path / "run", epochs=3, quiet=True, **TINY)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 5
    assert all(
        torch.isfinite(v).all() for v in last["model_state"].values() if v.is_floating_point()
    )
    assert not (tmp_path / "run" / "train_done.json").exists()


def test_resume_refuses_to_change_the_model(data_dir, tmp_path):
    dwrec.train(data_dir, out=tmp_path / "run", epochs=1, quiet=True, **TINY)
    with pytest.raises(UsageError, match="--hidden"):
        dwrec.train(resume=tmp_path / "run", hidden=32, quiet=True)
    result = dwrec.train(resume=tmp_path / "run", epochs=2, quiet=True)  # extending is allowed
    assert result.epochs_run == 2 and [r["epoch"] for r in log_records(tmp_path / "run")] == [1, 2]


# ---------------------------------------------------------------- CLI


def _cli_flags(data_dir) -> list[str]:
    return [
        "train",
        "--dataset",
        str(data_dir),
        "--epochs",
        "1",
        "--max-len",
        "20",
        "--layers",
        "1",
        "-q",
    ]


def test_cli_flags_override_the_config_file(data_dir, tmp_path):
    config = tmp_path / "exp.toml"
    config.write_text(
        'loss = "dynamic"\nepochs = 1\n[model]\nhidden = 8\nheads = 2\n[train]\nbatch_size = 64\n'
    )
    run = tmp_path / "run"
    code = main(["train", "--dataset", str(data_dir), "--config", str(config), "--hidden", "16",
                 "--max-len", "20", "--out", str(run), "-q"])  # fmt: skip
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["hidden"] == 16  # flag beats file
    assert (
        saved["train"]["batch_size"] == 64 and saved["loss"]["loss"] == "dynamic"
    )  # file beats default
    assert saved["train"]["lr"] == 1e-3  # default


def test_cli_unknown_config_key_is_an_error_naming_it(data_dir, tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 1\nlearning_rate = 0.1\n")
    assert main([*_cli_flags(data_dir), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "learning_rate" in err and "bad.toml" in err and "Traceback" not in err
    config.write_text("[model]\nhiden = 3\n")
    assert main([*_cli_flags(data_dir), "--config", str(config)]) == 2
    assert "hiden" in capsys.readouterr().err
    config.write_text('epochs = "ten"\n')
    assert main([*_cli_flags(data_dir), "--config", str(config)]) == 2
    assert "epochs" in capsys.readouterr().err


def test_cli_never_overwrites_a_run(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(_cli_flags(data_dir)) == 0
    assert main(_cli_flags(data_dir)) == 0
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["synthetic-sasrec-ce-s0", "synthetic-sasrec-ce-s0-2"]
    taken = tmp_path / "runs" / "synthetic-sasrec-ce-s0"
    before = (taken / "model.pt").read_bytes()
    assert main([*_cli_flags(data_dir), "--out", str(taken)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (taken / "model.pt").read_bytes() == before


def test_cli_defaults_to_the_latest_prepared_dataset_and_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dwrec.prepare("synthetic", options={"users": 40, "items": 30, "domains": 3, "mean_length": 8})
    assert (
        main(["train", "--epochs", "1", "--max-len", "10", "--hidden", "8", "--model", "pop"]) == 0
    )
    first_line = capsys.readouterr().out.splitlines()[0]
    assert first_line.startswith("dataset: synthetic")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_device_cuda_without_cuda_exits_2_and_suggests_cpu(data_dir, tmp_path, capsys):
    assert main([*_cli_flags(data_dir), "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "--device cpu" in err
    assert not (tmp_path / "r").exists()


def test_cli_threads_flag_sets_torch_threads_and_is_recorded(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # restored after the test
    run = tmp_path / "threads"
    try:
        code = main(["train", "--dataset", str(data_dir), "--epochs", "1", "--hidden", "8",
                     "--heads", "1", "--max-len", "10", "--threads", "2", "--out", str(run),
                     "-q"])  # fmt: skip
        assert code == 0
        assert json.loads((run / "environment.json").read_text())["torch_threads"] == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"  # what a --nproc worker would inherit
    finally:
        torch.set_num_threads(1)


def test_cli_threads_below_one_is_a_usage_error(data_dir, tmp_path, capsys):
    code = main(["train", "--dataset", str(data_dir), "--threads", "0", "--out",
                 str(tmp_path / "r"), "-q"])  # fmt: skip
    assert code == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
