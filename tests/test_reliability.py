"""Reliability: results stay right through kill -9, crashes mid-write and bad input.

- ``dwrec train`` killed with SIGKILL at points drawn by a seeded RNG (after a step, in the
  middle of writing a checkpoint, just before or just after a file is renamed into place),
  then ``dwrec train --resume RUN``: the finished run equals an uninterrupted one exactly
  (log, best valid metrics, best model, test metrics). Also a SIGKILL at a random time of a
  real ``python -m dwrec train`` process, and a kill before the first checkpoint.
- ``dwrec prepare``, ``evaluate`` and ``report`` crashing at every write: each final path is
  absent or complete and valid, and a re-run gives what a clean run gives.
- Corrupt or foreign inputs (Parquet, checkpoints, TOML, raw files): exit code 1 or 2, one
  line naming the file (and line), never a traceback.

The kill tests run the CLI in a child process (``python -c DRIVER``) that wraps the write
primitives to SIGKILL itself at the chosen point: a real kill -9, but at a known moment.
See docs/reliability.md for the table of faults and the tests that cover them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.eval.evaluator import evaluate_run
from dwrec.io import read_parquet
from dwrec.paths import most_recent_dataset

REPO = Path(__file__).resolve().parents[1]
TRAIN_FLAGS = ["--epochs", "4", "--hidden", "16", "--layers", "1", "--heads", "2"]
TRAIN_FLAGS += ["--max-len", "20", "--batch-size", "32", "--loss", "dynamic", "--dropout", "0.3"]
TRAIN_FLAGS += ["--patience", "5", "--device", "cpu", "-q"]
SYNTHETIC = ["--users", "120", "--items", "60", "--domains", "4", "--mean-length", "10"]

# --------------------------------------------------------------------------- the kill driver

DRIVER = r"""
import json, os, signal, sys

spec = json.loads(sys.argv[1])
kind, count, watch = spec["kind"], spec["count"], spec["watch"]
step, name = spec.get("step"), spec.get("file")
seen = [0]
done = [0]  # training steps done so far in this run (restored ones included)


def hit(path):
    if name is not None and os.path.basename(str(path)) != name:
        return False
    if step is not None and done[0] < step:
        return False  # not armed yet
    seen[0] += 1
    return seen[0] == count


def die():
    os.kill(os.getpid(), signal.SIGKILL)


real_replace = os.replace


def replace(src, dst, *args, **kwargs):
    inside = os.path.abspath(dst).startswith(watch)
    if inside and kind == "before_rename" and hit(dst):
        die()  # the temporary file is complete but not yet renamed
    real_replace(src, dst, *args, **kwargs)
    if inside and kind == "after_rename" and hit(dst):
        die()  # between two files of one update (e.g. model.pt renamed, last.pt not)


os.replace = replace

if kind == "mid_write":
    import pyarrow.parquet as pq
    import torch

    def half_written(real, final_name):
        def write(obj, target, *args, **kwargs):
            real(obj, target, *args, **kwargs)
            if os.path.abspath(str(target)).startswith(watch) and hit(final_name(target)):
                os.truncate(target, os.path.getsize(target) // 2)
                die()  # killed while the temporary file was half written

        return write

    def final_name(target):  # ".model.pt.abc123.tmp" -> "model.pt"
        return os.path.basename(str(target)).lstrip(".").rsplit(".", 2)[0]

    torch.save = half_written(torch.save, final_name)
    pq.write_table = half_written(pq.write_table, final_name)

if spec["argv"][0] == "train":
    from dwrec.train.trainer import Trainer

    real_step = Trainer._step

    def counted_step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        done[0] = self.global_step + 1
        if kind == "after_step" and done[0] == step:
            die()  # mid-epoch, nothing being written
        return result

    Trainer._step = counted_step

from dwrec.cli import main

sys.exit(main(spec["argv"]))
"""


def _child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("COLUMNS", None)
    return env


def run_killed(argv: list[str], watch: Path, kind: str, count: int = 1, **when) -> int:
    """Run ``dwrec ARGV`` in a child that SIGKILLs itself at the ``count``-th ``kind`` event
    under ``watch`` (``when``: ``step=N`` arms it after training step N, ``file=NAME`` only
    counts that file); returns the child's exit status (-9 when it was killed)."""
    spec = {"argv": argv, "kind": kind, "count": count, "watch": str(watch.resolve()), **when}
    child = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(spec)],
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in child.stderr, child.stderr
    return child.returncode


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A tiny synthetic dataset, a second one (another fingerprint, same catalogue size), an
    uninterrupted reference run with its test metrics, and a CE run for reports."""
    root = tmp_path_factory.mktemp("lab")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DWREC_HOME", str(root / "home"))
        data, other = root / "data", root / "other"
        assert main(["prepare", "synthetic", *SYNTHETIC, "--out", str(data)]) == 0
        assert main(["prepare", "synthetic", *SYNTHETIC, "--seed", "7", "--out", str(other)]) == 0
        straight = root / "straight"
        assert main(["train", "--dataset", str(data), *TRAIN_FLAGS, "--out", str(straight)]) == 0
        reference = outcome(straight, root / "straight-eval")
        ce = root / "runs" / "ce"
        flags = ["--epochs", "1", "--hidden", "16", "--layers", "1", "--max-len", "20", "-q"]
        assert main(["train", "--dataset", str(data), *flags, "--out", str(ce)]) == 0
        foreign = root / "foreign"
        assert main(["train", "--dataset", str(other), *flags, "--out", str(foreign)]) == 0
        evaluated = root / "runs" / "dynamic"
        shutil.copytree(straight, evaluated)
        assert main(["evaluate", str(ce), str(evaluated)]) == 0
    return {
        "root": root,
        "data": data,
        "other": other,
        "straight": straight,
        "reference": reference,
        "foreign": foreign,
        "runs": root / "runs",
    }


def outcome(run_dir: Path, eval_dir: Path) -> dict:
    """Everything a finished run must reproduce exactly: the epoch log without timings, the
    best epoch and valid metrics, the best model's weights, and the full test evaluation."""
    done = json.loads((run_dir / "train_done.json").read_text())
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    test = evaluate_run(run_dir, out=eval_dir)
    state = torch.load(run_dir / "model.pt", weights_only=True)["model_state"]
    return {
        "log": [(r["epoch"], r["train_loss"], r["valid"], r["domain_weights"]) for r in log],
        "best": (done["best_epoch"], done["best_valid"], done["epochs_run"]),
        "weights": {k: v.numpy().tobytes() for k, v in state.items()},
        "test": (test["overall"], test["domains"], test["n_cases"]),
    }


def assert_same_outcome(run_dir: Path, tmp_path: Path, reference: dict) -> None:
    got = outcome(run_dir, tmp_path / "eval")
    assert got["log"] == reference["log"]
    assert got["best"] == reference["best"]
    assert got["weights"] == reference["weights"]
    assert got["test"] == reference["test"]


# --------------------------------------------------------------------------- kill -9 in train

KILL_POINTS = [
    ("after_step", None),  # mid-epoch, nothing being written
    ("mid_write", "last.pt"),  # last.pt half written under its temporary name
    ("mid_write", "model.pt"),
    ("before_rename", "model.pt"),  # complete temporary file, not yet renamed
    ("before_rename", "last.pt"),
    ("after_rename", "model.pt"),  # model.pt renamed, log.jsonl and last.pt not yet
    ("after_rename", "log.jsonl"),  # log.jsonl renamed, last.pt not yet
    ("after_rename", "last.pt"),
]


@pytest.mark.slow
def test_kill_9_three_times_then_resume_equals_an_uninterrupted_run(lab, tmp_path):
    """Three SIGKILLs at training steps s1 < s2 < s3 drawn by a seeded RNG, each at a kind of
    moment drawn too (after the step itself, or at the next write of a run file), each
    followed by `dwrec train --resume`; the run ends exactly like the uninterrupted one."""
    rng = random.Random(20251123)
    total_steps = json.loads((lab["straight"] / "log.jsonl").read_text().splitlines()[-1])["step"]
    steps = sorted(rng.sample(range(2, total_steps), 3))
    # Seed 20251123 (4 steps an epoch, 16 in all): after step 5, before last.pt's rename
    # (model.pt and log.jsonl of epoch 2 already renamed); after step 6, model.pt half
    # written; after step 15, before model.pt's rename at the end of epoch 4.
    points = rng.sample(KILL_POINTS, 3)
    run = tmp_path / "run"
    first = ["train", "--dataset", str(lab["data"]), *TRAIN_FLAGS, "--out", str(run)]
    for number, (step, (kind, name)) in enumerate(zip(steps, points, strict=True)):
        argv = first if number == 0 else ["train", "--resume", str(run), "-q"]
        status = run_killed(argv, run, kind, step=step, file=name)
        assert status == -signal.SIGKILL, f"kill point {kind} {name} after step {step} not reached"
        assert not (run / "train_done.json").exists()
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_outcome(run, tmp_path, lab["reference"])


@pytest.mark.slow
def test_kill_9_of_a_real_train_process_at_a_random_time(lab, tmp_path):
    rng = random.Random(7)
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "dwrec", "train", "--dataset", str(lab["data"])]
    child = subprocess.Popen(
        [*argv, *TRAIN_FLAGS, "--out", str(run)],
        env=_child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not (run / "config.json").exists() and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 1.0))  # somewhere in the training (or after it, also fine)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert b"Traceback" not in child.stderr.read()
    child.stderr.close()
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_outcome(run, tmp_path, lab["reference"])


class SimulatedKill(BaseException):
    """Stands for a SIGKILL in-process: nothing after it runs in the trainer."""


def test_kill_before_the_first_checkpoint_resumes_from_epoch_1(lab, tmp_path, monkeypatch):
    from dwrec.train.trainer import Trainer

    real_step = Trainer._step
    calls = {"n": 0}

    def step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise SimulatedKill
        return real_step(self, *args, **kwargs)

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_step", step)
        with pytest.raises(SimulatedKill):
            main(["train", "--dataset", str(lab["data"]), *TRAIN_FLAGS, "--out", str(run)])
    assert not (run / "last.pt").exists() and (run / "config.json").exists()
    assert main(["train", "--resume", str(run), "-q"]) == 0
    assert_same_outcome(run, tmp_path, lab["reference"])


# --------------------------------------------------------------------------- crashes in prepare


def _prepare_argv(out: Path) -> list[str]:
    return ["prepare", "synthetic", *SYNTHETIC, "--seed", "3", "--out", str(out)]


def _dataset_files(folder: Path) -> dict[str, bytes]:
    names = ("interactions.parquet", "items.parquet", "users.parquet")
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.slow
def test_kill_9_in_prepare_leaves_no_dataset_and_a_rerun_succeeds(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DWREC_HOME", str(home))
    clean = tmp_path / "clean"
    assert main(_prepare_argv(clean)) == 0
    datasets = home / "datasets"
    final = datasets / "synthetic"
    # items.parquet half written inside the temporary dir; then the temporary dir complete
    # (dataset.json included) but not yet renamed: the 5th rename, after the four files'.
    for kind, count in (("mid_write", 2), ("before_rename", 5)):
        assert run_killed(_prepare_argv(final), datasets, kind, count) == -signal.SIGKILL
        assert not final.exists()
        assert [p.name.startswith(".synthetic.") for p in datasets.iterdir()] == [True]
        assert most_recent_dataset() is None  # the leftover temporary dir is never picked
        shutil.rmtree(next(datasets.iterdir()))
    assert main(_prepare_argv(final)) == 0
    assert _dataset_files(final) == _dataset_files(clean)


def _crash_at_write(monkeypatch, number: int, mode: str) -> dict:
    """Make the ``number``-th atomic rename (``mode='rename'``) or Parquet/JSON write
    (``mode='write'``, which leaves the temporary file half written) raise SimulatedKill."""
    import dwrec.io as dio

    state = {"n": 0, "fired": False}

    def fire() -> bool:
        state["n"] += 1
        if state["n"] == number:
            state["fired"] = True
            return True
        return False

    if mode == "rename":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if fire():
                raise SimulatedKill
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(dio.os, "replace", replace)
    else:
        real_write_table = pq.write_table

        def write_table(table, where, *args, **kwargs):
            real_write_table(table, where, *args, **kwargs)
            if fire():
                os.truncate(where, os.path.getsize(where) // 2)
                raise SimulatedKill

        monkeypatch.setattr(dio.pq, "write_table", write_table)
        real_write_text = Path.write_text

        def write_text(self, data, *args, **kwargs):
            real_write_text(self, data, *args, **kwargs)
            if self.name.endswith(".tmp") and fire():
                os.truncate(self, len(data) // 2)
                raise SimulatedKill

        monkeypatch.setattr(Path, "write_text", write_text)
    return state


@pytest.mark.parametrize(("mode", "writes"), [("rename", 5), ("write", 4)])
def test_crash_at_every_write_of_prepare(tmp_path, monkeypatch, mode, writes):
    """``writes``: three Parquet files and dataset.json, then (renames) the folder itself."""
    clean = tmp_path / "clean"
    assert main(_prepare_argv(clean)) == 0
    for number in range(1, writes + 2):
        out = tmp_path / f"crash{number}"
        with monkeypatch.context() as patch:
            state = _crash_at_write(patch, number, mode)
            try:
                main(_prepare_argv(out))
            except SimulatedKill:
                pass
        if not state["fired"]:
            assert number == writes + 1  # every write was visited
            break
        assert not out.exists()
        assert main(_prepare_argv(out)) == 0
        assert _dataset_files(out) == _dataset_files(clean)
    else:
        pytest.fail("prepare wrote more files than expected")


# --------------------------------------------------------------------------- crashes in evaluate


def _valid_or_absent_evaluation(out: Path, clean: Path) -> None:
    """per_user.parquet and metrics.json are each absent or equal to a clean evaluation's."""
    for name in ("per_user.parquet", "metrics.json"):
        path = out / name
        if not path.exists():
            continue
        if name.endswith(".parquet"):
            assert read_parquet(path).equals(read_parquet(clean / name))
        else:
            got, want = json.loads(path.read_text()), json.loads((clean / name).read_text())
            got.pop("seconds"), want.pop("seconds")
            assert got == want


@pytest.mark.parametrize("mode", ["rename", "write"])
def test_crash_at_every_write_of_evaluate(lab, tmp_path, monkeypatch, mode):
    """Four writes: per_user.parquet, metrics.json and the TREC run and qrels files."""
    run = lab["straight"]
    clean = tmp_path / "clean"
    assert main(["evaluate", str(run), "--out", str(clean), "--export-trec", str(clean)]) == 0
    for number in range(1, 8):
        out = tmp_path / f"crash{number}"
        argv = ["evaluate", str(run), "--out", str(out), "--export-trec", str(out)]
        with monkeypatch.context() as patch:
            state = _crash_at_write(patch, number, mode)
            try:
                main(argv)
            except SimulatedKill:
                pass
        if not state["fired"]:
            assert number == 5  # every write was visited
            break
        _valid_or_absent_evaluation(out, clean)
        for trec in [*clean.glob("*.run"), *clean.glob("*.qrels")]:
            assert not (out / trec.name).exists() or (out / trec.name).read_bytes() == (
                trec.read_bytes()
            )
        assert not [p.name for p in out.glob(".*")]  # in-process, temporary files are removed
        assert main(argv) == 0
        _valid_or_absent_evaluation(out, clean)
        assert (out / "metrics.json").exists() and (out / "per_user.parquet").exists()
    else:
        pytest.fail("evaluate wrote more files than expected")


# --------------------------------------------------------------------------- crashes in report


@pytest.mark.parametrize("mode", ["rename", "write"])
def test_crash_while_writing_a_report(lab, tmp_path, monkeypatch, mode):
    runs = [str(lab["runs"] / "ce"), str(lab["runs"] / "dynamic")]
    argv = ["report", *runs, "--bootstrap", "20", "--permutations", "50", "--allow-mismatch"]
    clean = tmp_path / "clean.md"
    assert main([*argv, "--out", str(clean)]) == 0
    out = tmp_path / "report.md"
    out.write_text("an older report\n")
    with monkeypatch.context() as patch:
        state = _crash_at_write(patch, 1, mode)
        with pytest.raises(SimulatedKill):
            main([*argv, "--out", str(out)])
    assert state["fired"]
    assert out.read_text() == "an older report\n"  # never half replaced
    assert main([*argv, "--out", str(out)]) == 0
    assert out.read_text() == clean.read_text()


# --------------------------------------------------------------------------- corrupt inputs


def cli_error(capsys, argv: list[str], *needles: str, code: tuple[int, ...] = (1, 2)) -> str:
    """Run the CLI; it must fail with ``code``, one line on stderr naming ``needles``."""
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status in code, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _train_argv(dataset: Path, out: Path) -> list[str]:
    return ["train", "--dataset", str(dataset), *TRAIN_FLAGS, "--out", str(out)]


def _break_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _break_garbage(path: Path) -> None:
    path.write_bytes(b"PAR1" + os.urandom(200))


def _break_missing_column(path: Path) -> None:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns([table.column_names[-1]]), path)


def _break_wrong_type(path: Path) -> None:
    table = pq.read_table(path)
    name = table.column_names[0]
    values = pa.array([f"x{v}" for v in table.column(name).to_pylist()])
    pq.write_table(table.set_column(0, name, values), path)


@pytest.mark.parametrize("name", ["interactions.parquet", "items.parquet"])
@pytest.mark.parametrize(
    "damage", [_break_truncate, _break_garbage, _break_missing_column, _break_wrong_type]
)
def test_corrupt_dataset_parquet_is_one_clear_error(lab, tmp_path, capsys, name, damage):
    data = tmp_path / "data"
    shutil.copytree(lab["data"], data)
    damage(data / name)
    cli_error(capsys, _train_argv(data, tmp_path / "run"), name)
    assert not (tmp_path / "run" / "model.pt").exists()


NAMED = '"schema_version": 1, "name": "synthetic", "fingerprint": "0123"'


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "line 1"),
        ("[1, 2]", "JSON object"),
        ('{"schema_version": 1, "name": "synthetic"}', "fingerprint"),
        ("{" + NAMED + "}", "counts.users"),
        ("{" + NAMED + ', "counts": {"users": "many"}}', "counts.users"),
        ('{"schema_version": 0}', "schema_version"),
    ],
    ids=["bad-json", "not-object", "no-fingerprint", "no-counts", "bad-users", "old-schema"],
)
def test_corrupt_dataset_json_is_one_clear_error(lab, tmp_path, capsys, text, needle):
    data = tmp_path / "data"
    shutil.copytree(lab["data"], data)
    (data / "dataset.json").write_text(text)
    cli_error(capsys, _train_argv(data, tmp_path / "run"), "dataset.json", needle)


def _evaluable_copy(lab, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(lab["straight"], run)
    return run


def _pickle_that_weights_only_refuses(path: Path) -> None:
    torch.save({"model_state": {}, "note": Fraction(1, 3)}, path)


@pytest.mark.parametrize("file", ["model.pt", "last.pt"])
@pytest.mark.parametrize("damage", ["truncated", "unsafe-pickle", "foreign", "empty", "not-dict"])
def test_corrupt_or_foreign_checkpoint_is_one_clear_error(lab, tmp_path, capsys, file, damage):
    run = _evaluable_copy(lab, tmp_path)
    path = run / file
    if damage == "truncated":
        _break_truncate(path)
    elif damage == "unsafe-pickle":
        _pickle_that_weights_only_refuses(path)
    elif damage == "foreign":  # saved by a run on another dataset (same catalogue size)
        shutil.copy(lab["foreign"] / file, path)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save([torch.zeros(2)], path)
    if file == "model.pt":
        argv = ["evaluate", str(run), "--out", str(tmp_path / "eval")]
    else:
        (run / "train_done.json").unlink()
        argv = ["train", "--resume", str(run), "--epochs", "5", "-q"]
    err = cli_error(capsys, argv, file)
    if damage == "foreign":
        assert "dataset" in err and "fingerprint" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


@pytest.mark.parametrize(
    ("text", "needles", "code"),
    [
        ("epochs = 3\nhidden = = 4\n", ("bad.toml", "not valid TOML", "line 2"), 1),
        ("epochs = 3\n[model]\nhiden = 4\n", ("bad.toml", "hiden"), 2),
        ('epochs = "three"\n', ("bad.toml", "epochs"), 2),
        ("[train]\nlr = [1, 2]\n", ("bad.toml", "lr"), 2),
    ],
    ids=["syntax", "unknown-key", "wrong-type", "wrong-type-list"],
)
def test_bad_config_file_is_one_clear_error(lab, tmp_path, capsys, text, needles, code):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    argv = [*_train_argv(lab["data"], tmp_path / "run"), "--config", str(config)]
    cli_error(capsys, argv, *needles, code=(code,))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


ML1M_RATINGS = "1::10::4::978300760\n1::20::3::978302109\n2::10::5::978301968\n"
ML1M_MOVIES = "10::Toy Story (1995)::Animation|Comedy\n20::Heat (1995)::Action\n"


@pytest.mark.parametrize(
    ("ratings", "needles"),
    [
        (ML1M_RATINGS[:-14], ("ratings.dat", "line 3")),  # truncated mid-line
        (ML1M_RATINGS.replace("::", "\t"), ("ratings.dat", "line 1")),  # wrong separator
        (ML1M_RATINGS.replace("::3::", "::three::"), ("ratings.dat", "line 2", "rating")),
        (ML1M_RATINGS.replace("2::10", "2::1x0"), ("ratings.dat", "line 3", "item")),
        (b"\x1f\x8b\x08\x00garbage", ("ratings.dat",)),  # a gzip header, then garbage
    ],
    ids=["truncated", "separator", "non-numeric-rating", "non-numeric-id", "bad-gzip"],
)
def test_bad_raw_ratings_file_is_one_clear_error(tmp_path, capsys, ratings, needles):
    source = tmp_path / "ml-1m"
    source.mkdir()
    data = ratings if isinstance(ratings, bytes) else ratings.encode()
    (source / "ratings.dat").write_bytes(data)
    (source / "movies.dat").write_text(ML1M_MOVIES)
    out = tmp_path / "out"
    argv = ["prepare", "movielens-1m", "--source", str(source), "--out", str(out)]
    cli_error(capsys, argv, *needles, code=(1,))
    assert not out.exists()


def test_valid_raw_ratings_prepare(tmp_path):
    """The fixture above is valid before damage (so the errors come from the damage)."""
    source = tmp_path / "ml-1m"
    source.mkdir()
    (source / "ratings.dat").write_text(ML1M_RATINGS)
    (source / "movies.dat").write_text(ML1M_MOVIES)
    out = tmp_path / "out"
    assert main(["prepare", "movielens-1m", "--source", str(source), "--out", str(out)]) == 0
    assert load_dataset(out).meta["counts"]["interactions"] == 3


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_run_whose_dataset_changed_is_one_clear_error(lab, tmp_path, capsys, command):
    """config.json records the dataset fingerprint; a dataset rebuilt differently is refused."""
    run = _evaluable_copy(lab, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["fingerprint"] = "0000000000000000"
    (run / "config.json").write_text(json.dumps(config))
    if command == "evaluate":
        argv = ["evaluate", str(run), "--out", str(tmp_path / "eval")]
    else:
        argv = ["train", "--resume", str(run), "--epochs", "5", "-q"]
    cli_error(capsys, argv, "config.json", "0000000000000000", code=(1,))


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("per_user.parquet", None),  # truncated
        ("per_user.parquet", b"garbage"),
        ("metrics.json", b'{\n  "run": '),
        ("metrics.json", b"[]"),
        ("metrics.json", b"{}"),
    ],
    ids=["parquet-truncated", "parquet-garbage", "json-truncated", "json-list", "json-empty"],
)
def test_corrupt_evaluation_output_is_one_clear_error_in_report(
    lab, tmp_path, capsys, file, content
):
    runs = tmp_path / "runs"
    shutil.copytree(lab["runs"], runs)
    path = runs / "dynamic" / file
    if content is None:
        _break_truncate(path)
    else:
        path.write_bytes(content)
    argv = ["report", str(runs / "ce"), str(runs / "dynamic"), "--bootstrap", "20",
            "--allow-mismatch"]  # fmt: skip
    cli_error(capsys, [*argv, "--out", str(tmp_path / "r.md")], file)
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize(
    "text", ["{oops", "[]", '{"model": {}}'], ids=["bad-json", "list", "no-dataset"]
)
def test_corrupt_run_config_is_one_clear_error(lab, tmp_path, capsys, command, text):
    run = _evaluable_copy(lab, tmp_path)
    (run / "config.json").write_text(text)
    if command == "evaluate":
        argv = ["evaluate", str(run), "--out", str(tmp_path / "eval")]
    else:
        argv = ["train", "--resume", str(run), "--epochs", "5", "-q"]
    cli_error(capsys, argv, "config.json")
