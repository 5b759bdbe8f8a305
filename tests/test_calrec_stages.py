"""calrec's two-stage schedule (``--stage2-epochs``, the paper's per-category fine-tuning
after training on all categories): each item's group and the grouped batches against
brute force; the trainer's stage-2 batches are single-domain; with the option off a run is
the one-stage run, and stage 1 of a two-stage run is too; the switch reloads the best
weights with a fresh optimiser; determinism; resume across the stage boundary; learning in
stage 2; the flag's help and its error."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from aux_model_runs import (
    TINY,
    check_resume_equals_uninterrupted,
    check_same_seed_same_run,
    log_records,
    stable,
    states_equal,
)

import dwrec
from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.data.split import make_split
from dwrec.models import stages as model_stages
from dwrec.models.calrec import CALRec, CALRecConfig
from dwrec.train import checkpoint
from dwrec.train import stages as train_stages
from dwrec.train.batches import n_batches, training_windows
from dwrec.train.config import TrainConfig

# --- item groups and grouped batches, against loops --------------------------------------


def rarest_by_loop(indptr, indices, n_domains: int) -> list[int]:
    sizes = [0] * n_domains
    for domain in indices:
        sizes[int(domain)] += 1
    groups = []
    for item in range(len(indptr) - 1):
        own = [int(d) for d in indices[indptr[item] : indptr[item + 1]]]
        groups.append(min(own, key=lambda d: (sizes[d], d)) if own else n_domains)
    return groups


def test_rarest_domain_by_hand_and_against_a_loop():
    # domain sizes: d0 2 items, d1 2, d2 1; item 0 ties d0/d1 -> d0; item 2 has none -> 3
    indptr, indices = np.array([0, 2, 3, 3, 5]), np.array([1, 0, 1, 2, 0])
    assert model_stages.rarest_domains(indptr, indices, 3).tolist() == [0, 1, 3, 2]
    rng = np.random.default_rng(0)
    for _ in range(20):
        per_item = [rng.choice(6, size=rng.integers(0, 4), replace=False) for _ in range(40)]
        indptr = np.concatenate([[0], np.cumsum([len(d) for d in per_item])])
        indices = np.concatenate(per_item).astype(np.int64)
        got = model_stages.rarest_domains(indptr, indices, 6).tolist()
        assert got == rarest_by_loop(indptr, indices, 6)


def test_grouped_batches_hold_one_group_each_and_every_window_once():
    groups = torch.from_numpy(np.random.default_rng(1).integers(0, 4, size=53))
    generator = torch.Generator().manual_seed(5)
    batches = model_stages.grouped_batches(groups, 7, generator)
    assert sorted(torch.cat(batches).tolist()) == list(range(53))
    for batch in batches:
        assert 1 <= len(batch) <= 7 and len(set(groups[batch].tolist())) == 1
    for group in range(4):  # a group's batches: all full but at most one
        sizes = [len(b) for b in batches if int(groups[b[0]]) == group]
        assert len(sizes) == math.ceil(int((groups == group).sum()) / 7)
    # exactly two permutations drawn; the same seed gives the same batches, another not
    check = torch.Generator().manual_seed(5)
    torch.randperm(53, generator=check), torch.randperm(len(batches), generator=check)
    assert torch.equal(generator.get_state(), check.get_state())
    again = model_stages.grouped_batches(groups, 7, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(again, batches, strict=True))
    other = model_stages.grouped_batches(groups, 7, torch.Generator().manual_seed(6))
    assert any(not torch.equal(a, b) for a, b in zip(other, batches, strict=False))
    tokens = torch.tensor([[0, 3, 1], [2, 4, 5]])
    assert model_stages.window_groups(tokens, torch.tensor([9, 8, 7, 6, 5])).tolist() == [9, 5]
    with pytest.raises(ValueError, match="padding"):
        model_stages.window_groups(torch.tensor([[1, 0]]), torch.tensor([0]))


# --- the switch between stages -----------------------------------------------------------


def small_calrec(seed: int, stage2_epochs: int = 2) -> CALRec:
    torch.manual_seed(seed)
    config = CALRecConfig(hidden=16, heads=2, layers=1, max_len=8, stage2_epochs=stage2_epochs)
    model = CALRec(12, config)
    model.bind_texts([(f"item {i}", [f"D{i % 3}"]) for i in range(12)])
    return model


def test_the_switch_reloads_the_best_weights_with_a_fresh_optimiser(tmp_path):
    best, model = small_calrec(1), small_calrec(2)
    checkpoint.save(tmp_path / "model.pt", checkpoint.best_state(best, 12, "f", 3))
    old = torch.optim.AdamW(model.parameters())
    lines = []
    trainer = SimpleNamespace(
        model=model, config=SimpleNamespace(train=TrainConfig(epochs=4, patience=3)),
        run_info=SimpleNamespace(run_dir=tmp_path), device=torch.device("cpu"),
        display=SimpleNamespace(line=lines.append), optimizer=old,
        epoch=3, patience_counter=1, best_epoch=3, stage=1, stage_start=0,
    )  # fmt: skip
    assert not train_stages.stage_over(trainer) and not train_stages.advance(trainer)
    trainer.patience_counter = 3  # stage 1 stops early: stage 2 follows
    assert train_stages.stage_over(trainer) and not train_stages.done(trainer)
    assert train_stages.advance(trainer) and lines
    assert states_equal(model.state_dict(), best.state_dict())
    assert trainer.optimizer is not old and not trainer.optimizer.state
    assert (trainer.stage, trainer.stage_start, trainer.patience_counter) == (2, 3, 0)
    assert not train_stages.advance(trainer)  # once
    assert train_stages.saved(trainer) == {"stage": 2, "stage_start": 3}
    trainer.epoch = 4
    assert not train_stages.done(trainer)
    trainer.epoch = 5  # 2 stage-2 epochs run
    assert train_stages.done(trainer) and train_stages.planned_epochs(trainer) == 5
    trainer.model = small_calrec(1, stage2_epochs=0)  # no second stage: nothing saved
    assert train_stages.saved(trainer) == {}


# --- training end to end ------------------------------------------------------------------


def steps_per_epoch(data_dir) -> int:
    dataset = load_dataset(data_dir)
    windows = training_windows(dataset, make_split(dataset, "loo"), TINY["max_len"])
    return n_batches(len(windows), TINY["batch_size"])


BASE = dict(TINY, model="calrec", epochs=2, loss="dynamic", patience=10, quiet=True)


def test_stage2_batches_are_single_domain(data_dir, tmp_path, monkeypatch):
    seen, ends = [], []
    original = CALRec.training_batch

    def recording(self, windows, generator):
        seen.append(windows.clone())
        return original(self, windows, generator)

    def callback(event, info):
        if event == "epoch":
            ends.append(len(seen))

    monkeypatch.setattr(CALRec, "training_batch", recording)
    dwrec.train(data_dir, out=tmp_path / "run", callback=callback, stage2_epochs=2, **BASE)
    dataset = load_dataset(data_dir)
    group = rarest_by_loop(
        dataset.item_domain_indptr, dataset.item_domain_indices, len(dataset.domain_names)
    )
    epochs = [seen[a:b] for a, b in zip([0, *ends], ends, strict=False)]
    assert len(epochs) == 4
    assert [r["stage"] for r in log_records(tmp_path / "run")] == [1, 1, 2, 2]

    def domains(batch):
        return {group[int(token) - 1] for token in batch[:, -1]}

    assert any(len(domains(b)) > 1 for b in epochs[0])  # stage 1 mixes domains
    windows = training_windows(dataset, make_split(dataset, "loo"), TINY["max_len"])
    every_last = sorted(windows.tokens[:, -1].tolist())
    for epoch in epochs[2:]:
        assert all(len(domains(b)) == 1 for b in epoch)
        assert sorted(t for b in epoch for t in b[:, -1].tolist()) == every_last
        assert len({min(domains(b)) for b in epoch}) == len(set(group))


def test_off_is_the_one_stage_run_and_stage_one_is_unchanged(data_dir, tmp_path):
    dwrec.train(data_dir, out=tmp_path / "plain", **BASE)
    dwrec.train(data_dir, out=tmp_path / "zero", stage2_epochs=0, **BASE)
    dwrec.train(data_dir, out=tmp_path / "two", stage2_epochs=3, **BASE)
    plain, zero, two = (log_records(tmp_path / n) for n in ("plain", "zero", "two"))
    assert stable(zero) == stable(plain) and all("stage" not in r for r in plain + zero)
    for name in ("model.pt", "last.pt"):
        a = torch.load(tmp_path / "plain" / name, weights_only=True)
        b = torch.load(tmp_path / "zero" / name, weights_only=True)
        assert a.keys() == b.keys() and states_equal(a["model_state"], b["model_state"])
    assert "stage" not in torch.load(tmp_path / "zero" / "last.pt", weights_only=True)
    assert stable(two[:2]) == stable(plain)  # the option changes nothing before stage 2
    assert [r["stage"] for r in two] == [1, 1, 2, 2, 2] and len(two) == 5
    # stage 2 learns: its training loss falls epoch after epoch
    losses = [r["train_loss"] for r in two[2:]]
    assert losses[2] < losses[1] < losses[0], losses
    done = json.loads((tmp_path / "two" / "train_done.json").read_text())
    assert done["epochs_run"] == 5
    best = max(two, key=lambda r: r["valid"]["ndcg@10"])
    assert done["best_epoch"] == best["epoch"]


def test_same_seed_same_two_stage_run(data_dir, tmp_path):
    check_same_seed_same_run("calrec", data_dir, tmp_path, stage2_epochs=1)
    a = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model_state"]
    b = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["model_state"]
    assert states_equal(a, b)
    assert [r["stage"] for r in log_records(tmp_path / "a")] == [1, 1, 2]


@pytest.mark.parametrize("after", [0, 3], ids=["at-the-boundary", "mid-stage-2"])
def test_resume_across_the_stage_boundary_equals_uninterrupted(data_dir, tmp_path, after):
    # the helper trains 3 stage-1 epochs; Ctrl-C at the end of stage 1 or inside stage 2
    stop = 3 * steps_per_epoch(data_dir) + after
    check_resume_equals_uninterrupted("calrec", data_dir, tmp_path, stop, stage2_epochs=2)
    assert [r["stage"] for r in log_records(tmp_path / "resumed")] == [1, 1, 1, 2, 2]


def test_the_flag_has_help_and_a_one_line_error(data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["train", "--help"]) == 0
    assert "--stage2-epochs" in capsys.readouterr().out
    argv = ["train", "--dataset", str(data_dir), "--model", "calrec", "--out"]
    assert main([*argv, str(tmp_path / "bad"), "--stage2-epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--stage2-epochs must be an integer >= 0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_the_switch_writes_last_pt_so_a_hard_kill_after_it_resumes_exactly(data_dir, tmp_path):
    options = dict(BASE, stage2_epochs=1)
    dwrec.train(data_dir, out=tmp_path / "straight", **options)
    first_stage2_step = 2 * steps_per_epoch(data_dir) + 1

    def kill(event, info):  # not Ctrl-C: nothing is saved on the way out
        if event == "step" and info["global_step"] == first_stage2_step:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        dwrec.train(data_dir, out=tmp_path / "killed", callback=kill, **options)
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert (saved["stage"], saved["stage_start"], saved["epoch"]) == (2, 2, 2)
    assert saved["step_in_epoch"] == 0 and not saved["optimizer_state"]["state"]
    dwrec.train(resume=tmp_path / "killed", quiet=True)
    assert stable(log_records(tmp_path / "killed")) == stable(log_records(tmp_path / "straight"))
    for name in ("model.pt", "last.pt"):
        a = torch.load(tmp_path / "straight" / name, weights_only=True)["model_state"]
        b = torch.load(tmp_path / "killed" / name, weights_only=True)["model_state"]
        assert states_equal(a, b), name


def test_a_decaying_schedule_with_a_second_stage_is_refused(data_dir, tmp_path, capsys):
    # the decay reaches 0 at --epochs: a second stage after a full first one would not train
    argv = ["train", "--dataset", str(data_dir), "--model", "calrec", "--out"]
    bad = [*argv, str(tmp_path / "bad"), "--stage2-epochs", "2", "--lr-schedule", "cosine"]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert "--lr-schedule cosine" in err and "second stage" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_runs_that_predate_the_option_pool_with_new_runs(data_dir, tmp_path):
    """A calrec run written before --stage2-epochs existed (no key in config.json) trained
    with one stage: it reads back as stage2_epochs 0, so `dwrec report` pools it with a new
    one-stage run of another seed (the reproduction's seeds span that commit), and a real
    second stage still counts as a difference."""
    from dwrec.errors import UsageError
    from dwrec.rundir import RunDir
    from dwrec.train.config import from_saved

    options = dict(BASE, loss="generic", epochs=1)
    for seed, stage2 in ((0, 0), (1, 0), (2, 1)):
        dwrec.train(data_dir, out=tmp_path / f"s{seed}", seed=seed, stage2_epochs=stage2,
                    **options)  # fmt: skip
        dwrec.evaluate(tmp_path / f"s{seed}", device="cpu")
    for seed in (0, 1):  # the group compared with
        dwrec.train(data_dir, out=tmp_path / f"d{seed}", seed=seed, **dict(options, loss="dynamic"))
        dwrec.evaluate(tmp_path / f"d{seed}", device="cpu")
    baseline = [tmp_path / "d0", tmp_path / "d1"]
    path = tmp_path / "s0" / "config.json"
    saved = json.loads(path.read_text())
    del saved["model"]["stage2_epochs"]  # as written before the option existed
    path.write_text(json.dumps(saved))
    config = RunDir(tmp_path / "s0").read_config()
    assert config["model"]["stage2_epochs"] == 0
    assert from_saved(config).model.stage2_epochs == 0  # what a resume rebuilds
    runs = [tmp_path / "s0", tmp_path / "s1", *baseline]
    assert dwrec.report(runs, bootstrap=10, permutations=10) is not None
    with pytest.raises(UsageError, match="model.stage2_epochs"):
        dwrec.report([*runs, tmp_path / "s2"], bootstrap=10, permutations=10)
