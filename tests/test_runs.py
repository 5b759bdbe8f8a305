"""The run lifecycle (issue 17, items 1, 2, 5, 6, 9, 15, 17, 19): stale evaluations, unfinished
runs, settings checked before a run dir is claimed, resumes that end bit-identical from every
stage, quickstart reuse, progress and next-step lines, runs whose dataset moved.

Each test gives the bad input, the exact error or warning, and checks that nothing was lost
or left behind. Tiny synthetic sizes and one thread keep the file fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from dwrec.cli import main
from dwrec.errors import DwrecError, UsageError
from dwrec.rundir import RunDir, prepare_command

SYNTHETIC = ["--users", "120", "--items", "60", "--domains", "4", "--mean-length", "10"]
TINY = ["--hidden", "16", "--layers", "1", "--heads", "2", "--max-len", "20"]
TINY += ["--batch-size", "32", "--device", "cpu", "--threads", "1", "-q"]


class SimulatedKill(BaseException):
    """Stands for a SIGKILL in-process: nothing after it runs in the trainer."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs_data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWREC_HOME", str(root / "home"))
        assert main(["prepare", "synthetic", *SYNTHETIC, "--out", str(root / "data")]) == 0
    return root / "data"


def train_argv(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", str(dataset), *TINY, "--out", str(out), *extra]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(capsys, argv: list[str], message: str, code: int = 2) -> str:
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert message in err, err
    return err


# ------------------------------------------------------------------ 1. stale evaluations


def test_extending_an_evaluated_run_invalidates_its_evaluation(data, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    run = runs / "r"
    assert main(train_argv(data, run, "--epochs", "2", "--lr", "0.01")) == 0
    assert main(["evaluate", str(run), "-q"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["checkpoint"]["sha256"] == sha256(run / "model.pt")
    assert metrics["finished"] is True and metrics["checkpoint"]["epochs_run"] == 2
    assert RunDir(run).evaluation_state() == "current"
    old = {name: (run / name).read_bytes() for name in ("metrics.json", "per_user.parquet")}
    old_model = sha256(run / "model.pt")

    assert main(["train", "--resume", str(run), "--epochs", "4", "-q"]) == 0
    best_epoch = json.loads((run / "train_done.json").read_text())["best_epoch"]
    assert best_epoch > 2 and sha256(run / "model.pt") != old_model  # a new best model
    # the evaluation of the replaced model.pt is gone, so `evaluate` does not skip the run
    assert not (run / "metrics.json").exists() and not (run / "per_user.parquet").exists()
    assert RunDir(run).evaluation_state() == "missing"

    # a kill between model.pt's rename and the removal leaves the old files: caught by sha256
    for name, content in old.items():
        (run / name).write_bytes(content)
    assert RunDir(run).evaluation_state() == "stale"
    assert "earlier model.pt (best epoch 2)" in RunDir(run).stale_reason(metrics)
    one_line_error(capsys, ["report", str(run), "--out", str(tmp_path / "r.md")], "is stale")
    assert not (tmp_path / "r.md").exists()

    # `dwrec evaluate` without RUN re-evaluates the stale run and says so
    capsys.readouterr()
    assert main(["evaluate", "--runs-dir", str(runs), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"re-evaluate {run}: its metrics.json is stale" in " ".join(out.split())
    fresh = json.loads((run / "metrics.json").read_text())
    assert fresh["checkpoint"]["sha256"] == sha256(run / "model.pt")
    assert fresh["checkpoint"]["best_epoch"] == best_epoch
    assert RunDir(run).evaluation_state() == "current"


def test_an_evaluation_without_a_checkpoint_record_is_stale_when_model_pt_is_newer(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "metrics.json").write_text("{}")
    (tmp_path / "per_user.parquet").write_bytes(b"")
    (tmp_path / "model.pt").write_bytes(b"weights")
    os.utime(tmp_path / "metrics.json", (1_000_000, 1_000_000))
    assert run.stale_reason({}, tmp_path / "metrics.json") == "model.pt is newer than metrics.json"
    assert run.evaluation_state() == "stale"
    os.utime(tmp_path / "model.pt", (1_000, 1_000))
    assert run.evaluation_state() == "current"


# ------------------------------------------------------------------ 2. unfinished runs


def test_evaluating_an_unfinished_run_warns_and_marks_it(data, tmp_path, capsys, monkeypatch):
    from dwrec.report import checks
    from dwrec.report.runs import load_run
    from dwrec.train.trainer import train

    run = tmp_path / "runs" / "killed"

    def kill_after_epoch_1(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise SimulatedKill

    with pytest.raises(SimulatedKill):
        train(data, out=run, epochs=3, hidden=16, layers=1, max_len=20, device="cpu",
              quiet=True, callback=kill_after_epoch_1)  # fmt: skip
    assert (run / "model.pt").exists() and not RunDir(run).is_finished()

    capsys.readouterr()
    assert main(["evaluate", "--runs-dir", str(run.parent), "-q"]) == 0
    assert f"skip {run}: training has not finished" in " ".join(capsys.readouterr().out.split())
    assert not (run / "metrics.json").exists()

    assert main(["evaluate", str(run), "-q"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"warning: {run} has not finished training (no train_done.json)" in err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finished"] is False and metrics["checkpoint"]["epochs_run"] == 1
    assert not checks.is_finished(load_run(run))


# ------------------------------------------------------------------ 5. checks before the claim


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--heads", "3"], "error: --hidden 16 is not divisible by --heads 3"),
        (["--max-len", "0"], "error: --max-len must be >= 1, got 0"),
        (["--hidden", "0"], "error: --hidden must be >= 1, got 0"),
        (["--dropout", "1.5"], "error: --dropout must lie in [0, 1), got 1.5"),
        (["--weight-domains", ""], "error: --weight-domains '' names no domain; domains of"),
        (["--loss", "fixed", "--weight-domains", " , "], "--weight-domains ' , ' names no"),
        (["--loss", "sampled-softmax", "--negatives", "100000"],
         "error: --negatives 100000 must be below the catalogue size: dataset synthetic has "
         "60 items (at most 59)"),
        (["--loss", "fixed", "--weight-domains", "D01", "--fixed-weight", "-2"],
         "error: --fixed-weight must be > 0, got -2.0"),
        (["--ffn", "0"], "error: --ffn must be >= 1"),
    ],
    ids=["heads", "max-len", "hidden", "dropout", "empty-domains", "fixed-no-domain",
         "negatives", "fixed-weight", "ffn"],
)  # fmt: skip
def test_a_bad_setting_leaves_no_run_dir(data, tmp_path, capsys, monkeypatch, flags, message):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--dataset", str(data), *TINY, "--epochs", "1", *flags]
    err = one_line_error(capsys, argv, message)
    if flags[0] == "--max-len":  # names only the offending setting
        assert "--hidden" not in err and "--heads" not in err and "--layers" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert main(["train", "--dataset", str(data), *TINY, "--epochs", "1"]) == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["synthetic-sasrec-ce-s0"]


def test_a_failure_before_the_first_step_removes_the_new_run_dir(data, tmp_path, monkeypatch):
    from dwrec.train import loop

    def broken(*args, **kwargs):
        raise DwrecError("weighting could not be built")

    monkeypatch.setattr(loop.Trainer, "__init__", broken)
    given = tmp_path / "given"
    given.mkdir()  # an explicit empty --out stays, emptied
    for out in (tmp_path / "fresh", given):
        assert main(train_argv(data, out, "--epochs", "1")) == 1
    assert not (tmp_path / "fresh").exists()
    assert given.is_dir() and not any(given.iterdir())


# ------------------------------------------------------------------ 6. resume from every stage


def outcome(run: Path) -> dict:
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    done = json.loads((run / "train_done.json").read_text())
    state = torch.load(run / "model.pt", weights_only=True)["model_state"]
    return {
        "log": [
            (r["epoch"], r["step"], r["train_loss"], r["valid"], r["domain_weights"]) for r in log
        ],  # fmt: skip
        "best": (done["best_epoch"], done["best_valid"], done["epochs_run"]),
        "weights": {k: v.numpy().tobytes() for k, v in state.items()},
    }


RESUME_FLAGS = [*TINY, "--epochs", "3", "--seed", "11", "--loss", "dynamic"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", "--dataset", str(data), *RESUME_FLAGS, "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["threads"] == 1
    return outcome(run)


def _kill_in_step(monkeypatch, at_call: int):
    from dwrec.train.loop import Trainer

    real, calls = Trainer._step, {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise SimulatedKill
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", step)


def _kill_after_save(monkeypatch, name: str, count: int):
    from dwrec.train import loop

    real, seen = loop.checkpoint.save, {"n": 0}

    def save(path, payload):
        real(path, payload)
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] == count:
                raise SimulatedKill

    monkeypatch.setattr(loop.checkpoint, "save", save)


def _kill_after_done(monkeypatch):
    real = RunDir.write_done

    def write_done(self, summary):
        real(self, summary)
        raise SimulatedKill

    monkeypatch.setattr(RunDir, "write_done", write_done)


STAGES = {
    "after-config": lambda patch: _kill_in_step(patch, 1),  # before any step: no last.pt
    "after-first-last-pt": lambda patch: _kill_after_save(patch, "last.pt", 1),
    "mid-epoch": lambda patch: _kill_in_step(patch, 6),  # in epoch 2 (4 steps an epoch)
    "after-model-pt": lambda patch: _kill_after_save(patch, "model.pt", 2),
    "after-train-done": _kill_after_done,
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_run_killed_at_any_stage_resumes_bit_identical(
    data, reference, tmp_path, monkeypatch, capsys, stage
):
    """Killed at STAGE with --threads 1, resumed in a process whose torch uses 2 threads
    and without --threads: the resume restores the recorded thread count (float sums depend
    on it) and ends exactly like the uninterrupted run."""
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        STAGES[stage](patch)
        with pytest.raises(SimulatedKill):
            main(["train", "--dataset", str(data), *RESUME_FLAGS, "--out", str(run)])
    assert (run / "config.json").exists()
    if stage == "after-config":
        assert not (run / "last.pt").exists()
    from dwrec.train.loop import Trainer

    seen_threads = set()
    real_step = Trainer._step

    def step(self, *args, **kwargs):
        seen_threads.add(torch.get_num_threads())
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", step)
    torch.set_num_threads(2)  # torch's default on another machine, or without OMP_NUM_THREADS
    try:
        assert main(["train", "--resume", str(run), "-q"]) == 0
        assert torch.get_num_threads() == 2  # the caller's count is given back
    finally:
        torch.set_num_threads(1)
    assert seen_threads <= {1}
    assert outcome(run) == reference


def test_resume_with_other_threads_warns(data, reference, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    steps_per_epoch = reference["log"][0][1]
    _kill_in_step(monkeypatch, steps_per_epoch + 2)  # in epoch 2
    with pytest.raises(SimulatedKill):
        main(["train", "--dataset", str(data), *RESUME_FLAGS, "--out", str(run)])
    monkeypatch.undo()
    capsys.readouterr()
    first = json.loads((run / "environment.json").read_text())
    logged = (
        len((run / "log.jsonl").read_text().splitlines()) if (run / "log.jsonl").exists() else 0
    )
    try:
        assert main(["train", "--resume", str(run), "--threads", "2", "-q"]) == 0
    finally:
        torch.set_num_threads(1)
    # the resumed invocation's environment on top, the first one kept, with its last epoch
    environment = json.loads((run / "environment.json").read_text())
    assert environment["torch_threads"] == 2 and first["torch_threads"] == 1
    assert environment["earlier"] == [{**first, "until_epoch": logged}]
    assert logged == 1
    err = " ".join(capsys.readouterr().err.split())
    assert (
        "warning: --threads 2: the run used 1 thread(s) until now, so its results may differ "
        "from an uninterrupted run in the last digits" in err
    )
    assert json.loads((run / "config.json").read_text())["threads"] == 2


# ------------------------------------------------------------------ 9. quickstart reuse


def test_quickstart_refuses_runs_made_with_other_settings(tmp_path, monkeypatch):
    import dwrec
    from dwrec import quickstart as qs
    from dwrec.paths import default_dataset_dir

    prepared = dwrec.prepare("synthetic", out=default_dataset_dir("synthetic"))
    fixed = qs.sparsest_domains(prepared.meta, 2)
    out = tmp_path / "quick"
    earlier = out / "synthetic-sasrec-fixed-s0"  # from `quickstart --epochs 2`
    earlier.mkdir(parents=True)
    config: dict = {}
    for key, value in qs._requested("fixed", 0, 2, fixed, prepared.meta["fingerprint"]).items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    (earlier / "config.json").write_text(json.dumps(config))
    trained = []
    monkeypatch.setattr(dwrec, "train", lambda *a, **k: trained.append(k))
    with pytest.raises(UsageError) as error:
        qs.quickstart(out, seeds=1, epochs=3, device="cpu")
    assert str(error.value) == (
        f"{earlier} holds a run made with other settings: --epochs 2 (asked: 3). quickstart "
        f"reuses only runs of the requested settings: pass another --out, or remove {out} to "
        "start again"
    )
    assert trained == [] and sorted(p.name for p in out.iterdir()) == [earlier.name]
    assert json.loads((earlier / "config.json").read_text()) == config  # untouched
    qs.check_reusable(
        earlier, qs._requested("fixed", 0, 2, fixed, prepared.meta["fingerprint"]), out
    )  # fmt: skip  (the same settings: reused)


# ------------------------------------------------------------------ 15. progress, next steps


def test_the_train_bar_shows_a_running_mean_loss(data, tmp_path, monkeypatch):
    from dwrec.train.progress import TrainingDisplay

    losses = []
    monkeypatch.setattr(TrainingDisplay, "advance", lambda self, loss, speed: losses.append(loss))
    assert main(train_argv(data, tmp_path / "run", "--epochs", "1")) == 0
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert losses[0] is None  # the first step's loss is read one step late (no device sync)
    assert all(loss is not None for loss in losses[1:]) and len(losses) >= 3
    # the last running mean is that of every step but the last, near the epoch's mean
    assert abs(losses[-1] - record["train_loss"]) < 0.5


def test_every_command_says_what_to_run_next(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["prepare", "synthetic", *SYNTHETIC]) == 0
    assert (
        capsys.readouterr().out.strip().splitlines()[-1] == "next: dwrec train --dataset synthetic"
    )
    assert (
        main(["train", "--dataset", str(data), *TINY[:-1], "--epochs", "1", "--out", str(run)]) == 0
    )
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"next: dwrec evaluate {run}"
    assert main(["evaluate", str(run), "-q"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"next: dwrec report {tmp_path}"
    assert max(len(line) for line in out.splitlines()) <= 100


def test_evaluate_reports_progress_per_batch(data, tmp_path):
    from dwrec.eval.evaluator import evaluate_run

    run = tmp_path / "run"
    assert main(train_argv(data, run, "--epochs", "1")) == 0
    calls = []
    result = evaluate_run(run, batch_size=16, progress=lambda n, total: calls.append((n, total)))
    assert sum(n for n, _ in calls) == result["n_cases"] == calls[0][1] and len(calls) > 1


def test_ctrl_c_in_quickstart_exits_130_with_how_to_continue(tmp_path, capsys, monkeypatch):
    import dwrec.quickstart

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dwrec.quickstart, "quickstart", interrupted)
    out = tmp_path / "q"
    capsys.readouterr()
    assert main(["quickstart", "--out", str(out), "--epochs", "3", "-q"]) == 130
    err = " ".join(capsys.readouterr().err.split())
    assert err == (
        f"interrupted: finished runs in {out} are kept, the current one can resume from its "
        f"last.pt; `dwrec quickstart --out {out} --seeds 2 --epochs 3` continues"
    )


# ------------------------------------------------------------------ 17. moved datasets


def test_a_run_whose_dataset_moved_is_found_or_says_how_to_recreate_it(
    data, tmp_path, capsys, monkeypatch
):
    home = Path(os.environ["DWREC_HOME"])
    dataset = home / "datasets" / "tiny"
    argv = ["prepare", "synthetic", *SYNTHETIC, "--name", "tiny"]
    assert main(argv) == 0
    run = tmp_path / "run"
    assert main(train_argv(dataset, run, "--epochs", "1")) == 0
    config = json.loads((run / "config.json").read_text())
    assert (
        config["dataset"]["name"] == "tiny" and config["dataset"]["request"]["name"] == "synthetic"
    )
    expected = "dwrec prepare synthetic --min-user-interactions 0 --min-item-interactions 0 "
    expected += "--domains 4 --items 60 --mean-length 10 --users 120 --name tiny"
    assert prepare_command(config["dataset"]["request"], "tiny") == expected

    # recorded path gone: found by name (and fingerprint) among the prepared datasets
    config["dataset"]["path"] = str(tmp_path / "elsewhere")
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run), "--out", str(tmp_path / "e1"), "-q"]) == 0

    # the dataset itself is gone (a cache cleaner): the error gives the command re-creating it
    shutil.move(dataset, tmp_path / "moved")
    one_line_error(capsys, ["evaluate", str(run), "-q"],
                   f"dataset 'tiny' (fingerprint {config['dataset']['fingerprint']}) is missing: "
                   f"not at {tmp_path / 'elsewhere'} nor among the prepared datasets; re-create "
                   f"it with `{expected}`, or pass --dataset DIR_OR_NAME", code=1)  # fmt: skip
    assert not (run / "metrics.json").exists()
    # --dataset DIR: the moved copy, fingerprint checked; another dataset is refused
    assert main(["evaluate", str(run), "--dataset", str(tmp_path / "moved"), "-q"]) == 0
    assert json.loads((run / "metrics.json").read_text())["dataset"]["name"] == "tiny"
    other = tmp_path / "other"
    assert main(["prepare", "synthetic", *SYNTHETIC, "--seed", "7", "--out", str(other)]) == 0
    one_line_error(capsys, ["evaluate", str(run), "--dataset", str(other), "-q"],
                   f"--dataset {other}: {other} holds dataset fingerprint", code=1)  # fmt: skip
    # the printed command re-creates it (same fingerprint); resume finds it by name
    assert main(expected.split()[1:]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", "-q"]) == 0
    assert json.loads((run / "config.json").read_text())["dataset"]["path"] == str(dataset)


# ------------------------------------------------------------------ 19. wording


def test_resume_of_a_missing_run_says_it_does_not_exist(tmp_path, capsys):
    one_line_error(capsys, ["train", "--resume", str(tmp_path / "nope")],
                   f"error: --resume {tmp_path / 'nope'}: does not exist")  # fmt: skip


def test_resume_with_settings_of_a_new_run_names_them(tmp_path, capsys):
    one_line_error(capsys, ["train", "--resume", str(tmp_path), "--loss", "bce"],
                   f"--resume {tmp_path}: --loss cannot be given with --resume (a resumed run "
                   "keeps the settings it started with); to change them, start a new run")  # fmt: skip


def test_reports_of_given_runs_and_of_quickstart_do_not_cite_absent_options(tmp_path, monkeypatch):
    import dwrec
    from dwrec import quickstart as qs
    from dwrec.report.runs import discover_runs

    run = tmp_path / "evaluated"
    run.mkdir()
    (run / "per_user.parquet").write_bytes(b"")
    (run / "metrics.json").write_text('{"dataset": {}, "split_fingerprint": "s"}')
    assert discover_runs([run]).rule == "the runs given"  # not "named on the command line"

    calls = {}
    monkeypatch.setattr(dwrec, "train", lambda *a, **k: None)
    monkeypatch.setattr("dwrec.eval.evaluator.is_finished", lambda run_dir: True)
    monkeypatch.setattr("dwrec.eval.evaluator.evaluate_run", lambda *a, **k: None)

    class Stop(Exception):
        pass

    def report(paths, **options):
        calls.update(options, paths=paths)
        raise Stop

    monkeypatch.setattr("dwrec.report.report", report)
    with pytest.raises(Stop):
        qs.quickstart(tmp_path / "q", seeds=1, epochs=1, device="cpu")
    # no baseline= : the report says the generic group was chosen by its label
    assert "baseline" not in calls and len(calls["paths"]) == 3


def test_the_quickstart_bars_count_runs_and_epochs(tmp_path, capsys, monkeypatch):
    import dwrec.quickstart

    def emitting(out, *, on_event, **options):
        counts = {"users": 1, "items": 2, "interactions": 3, "domains": 4}
        on_event("dataset", {"path": tmp_path, "meta": {"counts": counts}, "fixed": ["D1"]})
        run = {"index": 2, "total": 6, "loss": "fixed", "seed": 0, "epochs": 3}
        on_event("run", dict(run, run_dir=tmp_path / "r"))
        on_event("step", {"epoch": 1, "step_in_epoch": 1, "global_step": 1})
        on_event("epoch", {"epoch": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr(dwrec.quickstart, "quickstart", emitting)
    capsys.readouterr()
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--epochs", "3"]) == 130
    out = " ".join(capsys.readouterr().out.split())
    assert "1/6 runs" in out and "epoch 1/3" in out and "None" not in out


def test_step_seconds_is_the_median_epoch_so_a_suspended_one_does_not_move_it(tmp_path):
    from dwrec.rundir import RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert run.step_seconds() != run.step_seconds()  # nan: no log
    seconds = [2.0, 2.2, 220.0, 1.8, 2.1]  # the third epoch spent suspended
    steps = [10, 10, 10, 12, 10]
    records = [{"epoch": 0, "seconds": 0.0, "step": 0}]  # a pre-training validation line
    for epoch, s in enumerate(seconds, start=1):
        records.append({"epoch": epoch, "seconds": s, "step": sum(steps[:epoch])})
    run.write_log(records)
    # by hand: 0.20, 0.22, 22.0, 0.15, 0.21 seconds per step -> median 0.21
    assert abs(run.step_seconds() - 0.21) < 1e-12


def test_step_seconds_counts_only_the_steps_a_resumed_epoch_timed(tmp_path):
    from dwrec.rundir import step_seconds

    # 10 steps of 10 sequences an epoch at 0.2 s a step; the second epoch resumed after its
    # 7th step, its last 3 steps taking 0.9 s (0.3 s a step): the median of 0.2 and 0.3
    whole = {"epoch": 1, "step": 10, "seconds": 2.0, "sequences_per_s": 100 / 2.0}
    part = {"epoch": 2, "step": 20, "seconds": 0.9, "sequences_per_s": 30 / 0.9}
    assert abs(step_seconds([whole, {**part, "steps_timed": 3}]) - 0.25) < 1e-12
    # logs from before steps_timed: the timed sequences (30 of an epoch's 100) tell
    assert abs(step_seconds([whole, part]) - 0.25) < 1e-12
    # and without throughput figures every epoch counts as whole, as before
    assert (
        abs(
            step_seconds([{**whole, "sequences_per_s": None}, {**part, "sequences_per_s": None}])
            - (0.2 + 0.09) / 2
        )
        < 1e-12
    )
