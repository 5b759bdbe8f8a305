"""benchmarks/reproduce_paper.py, driven as a subprocess: the plan declared before training,
unknown models skipped with a note, and killing + rerunning ends with byte-identical tables."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from conftest import shared_file

from dwrec.models.registry import model_names

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "reproduce_paper.py"
COMPETITORS = ("sigma", "calrec", "sparseennet")
# a tiny plan: ML-100K, SASRec generic and dynamic and the prior-shift control, 2 epochs
TINY = ["--budget", "quick", "--datasets", "ml-100k", "--models", "sasrec", "--groups",
        "generic", "dynamic", "prior", "--epochs", "2", "--seeds", "1", "--threads", "1",
        "--no-probe", "--bootstrap", "50"]  # fmt: skip


def command(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *args]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def run(*args: str) -> str:
    done = subprocess.run(
        command(*args), cwd=REPO, env=env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_plan_declares_families_before_training_and_skips_unknown_models(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "plan"
    args = ["--budget", "quick", "--datasets", "ml-100k", "--data-root", str(data_root),
            "--out", str(out), "--dry-run", "--no-probe", "--models", "sasrec", *COMPETITORS]  # fmt: skip
    printed = run(*args)
    plan = json.loads((out / "plan.json").read_text())
    declared = plan["datasets"]["ml-100k"]["declared"]
    # the paper's genres lead, then the 3 sparsest and 3 densest with >= 20 test cases
    assert declared["family"][:2] == ["Film-Noir", "Horror"]
    assert len(declared["sparse"]) == 3 and len(declared["dense"]) == 3
    assert all(declared["test_cases"][d] >= 20 for d in declared["sparse"] + declared["dense"])
    shares = declared["share"]
    assert max(shares[d] for d in declared["sparse"]) < min(shares[d] for d in declared["dense"])
    assert declared["fixed_domain"] == "Film-Noir"
    assert "family ml-100k: Film-Noir, Horror" in printed
    assert not (out / "runs").exists()  # a dry run trains nothing
    known = set(model_names())
    for model in COMPETITORS:
        note = f"note: model {model!r} is not in this dwrec"
        assert (note in printed) == (model not in known), printed
    # sasrec: generic, fixed, dynamic, dynamic-up, prior, dsl, mml, adc; + known competitors
    expected = 8 + sum(m in known for m in COMPETITORS)
    assert f"plan: {expected} runs (0 done, 0 to finish, {expected} new)" in printed

    # A later invocation reuses the declared family from plan.json: it cannot move.
    plan["datasets"]["ml-100k"]["declared"]["family"] = ["Horror", "Drama"]
    (out / "plan.json").write_text(json.dumps(plan))
    assert "family ml-100k: Horror, Drama (" in run(*args)
    # Another budget setting in the same folder is refused.
    refused = subprocess.run(command(*args, "--epochs", "7"), cwd=REPO, env=env(),
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert refused.returncode != 0 and "was made with epochs=" in refused.stderr


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen) -> None:
    """Until ``run_dir`` has a ``last.pt`` (its first epoch is saved) or ``process`` ends."""
    deadline = time.monotonic() + 240
    while not (run_dir / "last.pt").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def tables(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "tables").iterdir())}


def test_killed_and_rerun_ends_with_byte_identical_tables(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    args = [*TINY, "--data-root", str(data_root), "--out", str(out)]
    printed = run(*args)
    assert "plan: 3 runs (0 done, 0 to finish, 3 new)" in printed
    assert "reached the epoch cap (2)" in printed  # a capped run is said so...
    uninterrupted = tables(out)
    assert set(uninterrupted) == {
        "ml-100k.json", "ml-100k.md", "verdict.json", "verdict.md", "lift-vs-share.json",
    }  # fmt: skip
    # the figure's numbers are the report's own cells: lift, CI and significance
    figure = json.loads(uninterrupted["lift-vs-share.json"])
    report = json.loads(uninterrupted["ml-100k.json"])["reports"]["sasrec"]
    cells = {
        row["domain"]: row["cells"]["ndcg@10"]
        for table in report["tables"]
        for row in table["rows"]
        if row["group"] == "sasrec+dynamic" and row["domain"] != "overall"
        and row["cells"].get("ndcg@10", {}).get("lift") is not None
    }  # fmt: skip
    shown = {p["domain"]: p for p in figure["points"].get("sasrec", [])}
    infinite = {name.split()[-1] for name in figure["not_drawn"]}
    assert cells and set(shown) | infinite == set(cells) and not set(shown) & infinite
    for domain, point in shown.items():
        cell = cells[domain]
        assert (point["lift"], point["low"], float(point["high"]), point["significant"]) == (
            float(cell["lift"]), float(cell["lift_low"]), float(cell["lift_high"]),
            cell["significant"],
        )  # fmt: skip
    assert "| sasrec+dynamic | ce | 1 |" in uninterrupted["ml-100k.md"].decode()
    assert "| **1** |" in uninterrupted["ml-100k.md"].decode()  # ...and flagged in the table
    assert str(tmp_path) not in "".join(v.decode() for v in uninterrupted.values())
    verdicts = json.loads(uninterrupted["verdict.json"])["claims"]
    assert [row["claim"][:2] for row in verdicts] == ["1.", "2.", "3.", "4.", "5."]
    timing = (out / "timing.md").read_text()
    assert "wall time" in timing  # times live apart from tables
    cpu = json.loads((out / "runs" / "ml-100k" / "sasrec-generic-s0" / "environment.json")
                     .read_text())["cpu"]  # fmt: skip
    assert f"matches another bit for bit only on the same CPU model): {cpu} (2 runs)" in timing
    # every training's row names the threads it trained on and the commit that finished it
    assert len(re.findall(r"^\| ml-100k .* \| 1 \| ([0-9a-f]{7}|\?) \|$", timing, re.M)) == 2
    # claim 6 per dynamic run's commit: its one pair's ratio, from the table's ms/step column
    per_step = {
        label: (float(ms), commit)
        for label, ms, commit in re.findall(
            r"^\| ml-100k (\S+) .*\| ([\d.]+) \| 1 \| (\S+) \|$", timing, re.M
        )
    }
    (dynamic_ms, commit), (generic_ms, _) = per_step["sasrec+dynamic"], per_step["sasrec+generic"]
    # the table rounds ms to 0.1 and the ratio to 0.1%: the quoted ratio must lie in the
    # range the rounded times allow
    low = (dynamic_ms - 0.05) / (generic_ms + 0.05) - 1 - 0.0005
    high = (dynamic_ms + 0.05) / (generic_ms - 0.05) - 1 + 0.0005
    quoted = re.search(rf"run's commit .*\): {re.escape(commit)}: median ([+-][\d.]+)% over 1 pair$",
                       timing, re.M)  # fmt: skip
    assert quoted, timing
    assert low <= float(quoted.group(1)) / 100 <= high
    plot = out / "lift-vs-share.png"
    assert plot.exists() == (importlib.util.find_spec("matplotlib") is not None)
    drawn = plot.read_bytes() if plot.exists() else None
    # benchmarks/detection_power.py reads these runs: a row per sparse domain of the plan,
    # each at the report's own confirmatory family size, or for a dataset with no tables yet
    # the same backbone's compared groups x that dataset's family domains x 2 metrics
    power_out, power_json = tmp_path / "power-out", tmp_path / "power.json"
    shutil.copytree(out, power_out)
    plan = json.loads((power_out / "plan.json").read_text())
    plan["datasets"]["pending-set"] = {"declared": {
        "family": ["a", "b", "c", "d"], "sparse": ["a"], "test_cases": {"a": 25}}}  # fmt: skip
    (power_out / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "detection_power.py"), "--out",
         str(power_out), "--dataset", "ml-100k", "--models", "sasrec", "--draws", "20",
         "--json", str(power_json)], cwd=REPO, env=env(), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    declared = plan["datasets"]["ml-100k"]["declared"]
    family = [size for f, _, size in report["tables"][0]["families"] if f == "confirmatory"]
    compared = len(report["groups"]) - 1
    power_cells = json.loads(power_json.read_text())["cells"]
    assert {(c["dataset"], c["domain"], c["family_size"]) for c in power_cells} == {
        *(("ml-100k", d, family[0]) for d in declared["sparse"]),
        ("pending-set", "a", 4 * 2 * compared),
    }  # fmt: skip
    assert all(0 <= c["power_first_holm_step"] <= c["power_uncorrected"] <= 1 for c in power_cells)
    generic = {row["domain"]: row["cells"]["recall@10"]["mean"] for row in report["tables"][0]["rows"]
               if row["group"] == "sasrec+generic"}  # fmt: skip
    assert {c["domain"]: c["baseline_recall"] for c in power_cells} == {
        **{d: generic[d] for d in declared["sparse"]}, "a": None,
    }  # fmt: skip
    # at the domain's own hit rate: given wherever the dataset's tables exist
    for c in power_cells:
        own = c.get("power_uncorrected_own_rate")
        assert (own is None) == (c["dataset"] == "pending-set") and (own is None or 0 <= own <= 1)
    # the run's own cells: non-zero paired differences, for complete datasets only
    observed = json.loads(power_json.read_text())["observed"]
    assert {(o["domain"], o["model"], o["metric"]) for o in observed} == {
        (d, "sasrec", m) for d in declared["sparse"] for m in ("recall@10", "ndcg@10")
    }  # fmt: skip
    assert all(0 <= o["nonzero_differences"] <= declared["test_cases"][o["domain"]]
               and 0 < o["smallest_p"] <= 1 for o in observed)  # fmt: skip
    assert done.stdout.count("\n| ML-100K |") == 3 * len(declared["sparse"])  # three tables

    # The same plan again, killed while the dynamic run is part way, then rerun.
    shutil.rmtree(out / "runs")
    shutil.rmtree(out / "tables")
    plot.unlink(missing_ok=True)
    process = subprocess.Popen(command(*args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    partial = out / "runs" / "ml-100k" / "sasrec-dynamic-s0"
    wait_for_checkpoint(partial, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (partial / "train_done.json").exists(), "killed too late to test resumption"
    # --tables-only trains nothing and writes no table for a dataset with runs still to do
    printed = run(*args, "--tables-only")
    assert "plan: 3 runs (1 done, 1 to finish, 1 new)" in printed
    assert not (partial / "train_done.json").exists()
    assert not (out / "tables" / "ml-100k.md").exists()
    assert "ml-100k: 1 of 3 runs done" in (out / "tables" / "verdict.md").read_text()
    printed = run(*args)
    assert "plan: 3 runs (1 done, 1 to finish, 1 new)" in printed
    assert tables(out) == uninterrupted
    run(*args, "--tables-only")  # rewriting from the run dirs alone changes nothing
    assert tables(out) == uninterrupted
    assert (plot.read_bytes() if plot.exists() else None) == drawn
    assert not list(out.glob(".*.tmp"))  # no temporary file left beside the outputs

    # A run another worker holds (its lock taken here) is skipped, the prior-shift
    # evaluation waits for it, and once released the worker trains it: same tables.
    shutil.rmtree(out / "runs")
    shutil.rmtree(out / "tables")
    lock = out / "runs" / "ml-100k" / ".sasrec-dynamic-s0.lock"
    lock.parent.mkdir(parents=True)
    log_path = tmp_path / "worker.log"
    with open(lock, "a+") as held, open(log_path, "w") as sink:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = subprocess.Popen(command(*args), cwd=REPO, env=env(), stdout=sink,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        deadline = time.monotonic() + 240
        while "waiting: 2 runs held by other workers" not in log_path.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        assert not (out / "runs" / "ml-100k" / "sasrec-dynamic-s0").exists()
    assert worker.wait(timeout=300) == 0, log_path.read_text()
    order = re.findall(r"^\[\d+/\d+\] ml-100k (.+) s0 \(", log_path.read_text(), re.M)
    assert order == ["sasrec+generic", "sasrec+dynamic", "sasrec+generic+prior"]
    assert tables(out) == uninterrupted

    # Two workers on the same --out share the plan: each run trains once, in one of them
    # (the prior-shift evaluation after both its inputs), with the same tables.
    shutil.rmtree(out / "runs")
    shutil.rmtree(out / "tables")
    workers = [subprocess.Popen(command(*args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]  # fmt: skip
    printed = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], printed
    started = [re.findall(r"^\[\d+/\d+\] (ml-100k .+ s0) \(", p, re.M) for p in printed]
    assert sorted(started[0] + started[1]) == [
        "ml-100k sasrec+dynamic s0", "ml-100k sasrec+generic s0", "ml-100k sasrec+generic+prior s0",
    ], printed  # fmt: skip
    for name in ("sasrec-generic-s0", "sasrec-dynamic-s0"):
        assert len((out / "runs" / "ml-100k" / name / "log.jsonl").read_text().splitlines()) == 2
    assert tables(out) == uninterrupted


def test_tables_keep_the_budgets_dataset_order_whatever_order_trained(tmp_path):
    """Two workers may take ``--datasets`` in different orders (to finish one set first):
    the tables, the figure's numbers and the timing's rows come out the same."""
    data_root = shared_file("ml-100k").parent
    shared_file("hetrec2011-lastfm-2k")
    out = tmp_path / "repro"
    args = [*TINY, "--data-root", str(data_root), "--out", str(out), "--groups", "generic",
            "dynamic"]  # fmt: skip
    printed = run(*args, "--datasets", "lastfm", "ml-100k")  # the budget has ml-100k first
    trained = re.findall(r"^\[\d+/\d+\] (\S+) ", printed, re.M)
    assert trained == ["lastfm", "lastfm", "ml-100k", "ml-100k"]
    first, rows = tables(out), wall_time_rows(out)
    verdict = first["verdict.md"].decode()
    assert 0 <= verdict.index("ml-100k") < verdict.index("lastfm")
    assert rows[0].startswith("| ml-100k ") and rows[-1].startswith("| lastfm ")
    run(*args, "--datasets", "ml-100k", "lastfm", "--tables-only")
    assert tables(out) == first and wall_time_rows(out) == rows


def wall_time_rows(out: Path) -> list[str]:
    """timing.md's table of every run's wall time (the rest holds this invocation's time)."""
    return re.findall(r"^\| (?:ml-100k|lastfm) .*$", (out / "timing.md").read_text(), re.M)


def test_standard_plan_on_an_s3rec_set_declares_its_sparsest_and_densest(tmp_path):
    data_root = shared_file("s3rec-lastfm").parent
    out = tmp_path / "standard"
    printed = run("--datasets", "s3rec-lastfm", "--data-root", str(data_root), "--out", str(out),
                  "--dry-run", "--no-probe", "--models", "sasrec", "pinnerformer")  # fmt: skip
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["budget"], plan["seeds"], plan["patience"]) == ("standard", 3, 10)
    entry = plan["datasets"]["s3rec-lastfm"]
    declared = entry["declared"]
    assert entry["family"] == "Last.fm" and declared["paper"] == []  # no paper genres here
    assert declared["family"] == declared["sparse"] + declared["dense"]
    assert declared["fixed_domain"] == declared["sparse"][0]  # the sparsest with >= 20 cases
    assert entry["settings"]["pinnerformer"]["max_len"] == 50
    # 3 seeds x (sasrec: 8 groups, pinnerformer: 5 groups with the prior control)
    assert "plan: 39 runs (0 done, 0 to finish, 39 new)" in printed


def test_ctrl_c_stops_with_one_line_and_exit_130(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    process = subprocess.Popen(
        command(*TINY, "--data-root", str(data_root), "--out", str(out)),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = out / "runs" / "ml-100k" / "sasrec-generic-s0"
    wait_for_checkpoint(first, process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert not (first / "train_done.json").exists(), "interrupted too late to test the stop"
    assert process.returncode == 130, stdout + stderr
    assert "interrupted during ml-100k sasrec+generic s0" in stdout + stderr
    assert "run the same command again" in stdout + stderr
    assert "Traceback" not in stderr
    assert (first / "last.pt").exists()


def test_sigint_stops_a_worker_that_inherited_it_ignored_while_it_waits(tmp_path):
    # `nohup ... &` in a script starts the worker with SIGINT ignored; kill -INT must still
    # stop it outside training (here: waiting for runs another worker holds)
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    args = [*TINY, "--data-root", str(data_root), "--out", str(out)]
    run(*args, "--dry-run")
    runs = out / "runs" / "ml-100k"
    runs.mkdir(parents=True, exist_ok=True)
    log_path = tmp_path / "worker.log"
    with contextlib.ExitStack() as held, open(log_path, "w") as sink:
        for name in ("sasrec-generic-s0", "sasrec-dynamic-s0", "sasrec-prior-s0"):
            handle = held.enter_context(open(runs / f".{name}.lock", "a+"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        worker = subprocess.Popen(
            command(*args), cwd=REPO, env=env(), stdout=sink, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
        deadline = time.monotonic() + 240
        while "waiting: 3 runs held by other workers" not in log_path.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        worker.send_signal(signal.SIGINT)
        try:
            code = worker.wait(timeout=60)
        finally:
            worker.kill()
    printed = log_path.read_text()
    assert code == 130, printed
    assert "interrupted while waiting for other workers" in printed and "Traceback" not in printed


def test_a_failing_table_between_datasets_does_not_stop_the_training(tmp_path):
    """When a dataset completes while runs of another remain, its tables are written; if
    that fails (here: a domain in the declared family that the dataset lacks), the script
    says so and trains the rest, and ``--tables-only`` writes the tables once mended."""
    data_root = shared_file("ml-100k").parent
    shared_file("s3rec-lastfm")
    out = tmp_path / "repro"
    args = ["--budget", "quick", "--datasets", "ml-100k", "s3rec-lastfm", "--models", "sasrec",
            "--groups", "generic", "dynamic", "--epochs", "1", "--seeds", "1", "--threads",
            "1", "--no-probe", "--bootstrap", "20", "--data-root", str(data_root), "--out",
            str(out)]  # fmt: skip
    run(*args, "--dry-run")
    plan_path = out / "plan.json"
    plan = json.loads(plan_path.read_text())
    family = plan["datasets"]["ml-100k"]["declared"]["family"]
    plan["datasets"]["ml-100k"]["declared"]["family"] = [*family, "No-Such-Genre"]
    plan_path.write_text(json.dumps(plan))
    done = subprocess.run(command(*args), cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    printed = done.stdout + done.stderr
    assert "dataset ml-100k complete, but its tables failed:" in printed, printed
    assert "No-Such-Genre" in printed and "rerun with --tables-only" in printed
    for name in ("sasrec-generic-s0", "sasrec-dynamic-s0"):  # the next dataset still trained
        assert (out / "runs" / "s3rec-lastfm" / name / "train_done.json").exists()
    assert done.returncode == 1  # the final tables meet the same cause: the run is not done
    final = printed[printed.rindex("error: ") :]  # said in a line, not a traceback
    assert "Traceback" not in printed and "No-Such-Genre" in final and "--tables-only" in final
    plan["datasets"]["ml-100k"]["declared"]["family"] = family
    plan_path.write_text(json.dumps(plan))
    printed = run(*args, "--tables-only")
    assert "plan: 4 runs (4 done, 0 to finish, 0 new)" in printed
    assert {"ml-100k.md", "s3rec-lastfm.md"} <= set(tables(out))


def write_log(run_dir: Path, seconds: list[float], best: list[int]) -> None:
    """A run dir's ``log.jsonl``: one record per epoch (1-based) with its training seconds."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = [{"epoch": i + 1, "seconds": s, "best": i + 1 in best, "step": 10 * (i + 1),
                "valid": {"ndcg@10": 0.1 + 0.01 * i}} for i, s in enumerate(seconds)]  # fmt: skip
    (run_dir / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_status_reads_the_progress_and_time_left_from_the_files_alone(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    done = subprocess.run(command("--status", "--out", str(out)), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0 and f"no plan under {out}" in done.stderr
    args = [*TINY, "--epochs", "20", "--data-root", str(data_root), "--out", str(out)]
    run(*args, "--dry-run")
    runs = out / "runs" / "ml-100k"
    generic, dynamic = runs / "sasrec-generic-s0", runs / "sasrec-dynamic-s0"
    # generic: finished and evaluated after 4 epochs; dynamic: 2 epochs in, best at 1
    write_log(generic, [100.0, 100.0, 100.0, 100.0], best=[1, 3])
    for name in ("train_done.json", "metrics.json"):
        (generic / name).write_text("{}")
    write_log(dynamic, [130.0, 130.0], best=[1])
    (dynamic / "last.pt").write_bytes(b"")
    before = {p.relative_to(out) for p in out.rglob("*")}
    with open(runs / ".sasrec-dynamic-s0.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a worker trains dynamic now
        printed = run("--status", "--out", str(out))
        assert ("ml-100k: 1 of 3 runs done, 1 in a worker now, 1 not started, about 3m50s of "
                "one worker's training left") in printed  # fmt: skip
        # quick budget: patience 3, so best epoch 1 stops it by epoch 4 (cap 20)
        assert ("ml-100k sasrec+dynamic s0: epoch 2, best 1, validation NDCG@10 0.1000; stops "
                "by epoch 4 unless it improves") in printed  # fmt: skip
    # median epoch seconds of (ml-100k, sasrec) 100, +15% validation, x (4 - 2) epochs left
    assert "time left: about 3m50s of one worker's training (" in printed
    printed = run("--status", "--out", str(out))  # the worker is gone
    assert "ml-100k: 1 of 3 runs done, 1 stopped part way (the next start resumes them), 1 " \
        "not started" in printed  # fmt: skip
    after = {p.relative_to(out) for p in out.rglob("*")}
    assert after == before | {Path("runs/ml-100k/.sasrec-dynamic-s0.lock")}  # status wrote none
    # dynamic past the mean of the finished runs (5 epochs against 4), best at 5: patience 3
    # keeps it to epoch 8 at least, so 3 epochs x 100 s + 15% are left, not 1
    write_log(dynamic, [100.0] * 5, best=[1, 5])
    printed = run("--status", "--out", str(out))
    assert "about 5m45s of one worker's training left" in printed


def test_status_times_runs_without_a_logged_epoch_by_the_last_probe(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    args = [*TINY, "--epochs", "20", "--data-root", str(data_root), "--out", str(out)]
    printed = run(*args, "--dry-run")
    assert "not counted: 2 runs whose dataset and model have no epoch logged" in run(
        "--status", "--out", str(out)
    )
    probing = [a for a in args if a != "--no-probe"]  # a dry run with its probe
    printed = run(*probing, "--dry-run")
    step_ms = re.search(r"probe ml-100k sasrec: (\d+) ms/step wall", printed)
    stored = json.loads((out / "probes.json").read_text())["ml-100k sasrec"]
    assert step_ms and round(stored["seconds_per_step"] * 1000) == int(step_ms.group(1))
    # a probe of 0.5 s a step and 100 steps an epoch: no run finished, so each of the two
    # trainings takes the quick budget's 8 expected epochs: 2 x 8 x 50 s x 1.15 = 920 s
    stored.update(seconds_per_step=0.5, steps_per_epoch=100)
    (out / "probes.json").write_text(json.dumps({"ml-100k sasrec": stored}))
    printed = run("--status", "--out", str(out))
    assert "about 15m20s of one worker's training left" in printed
    assert "of which 2 runs timed by the workers' last probe (probes.json)" in printed
    assert "not counted" not in printed


def test_time_limit_starts_no_run_expected_to_end_after_it(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    args = [*TINY, "--epochs", "20", "--data-root", str(data_root), "--out", str(out)]
    run(*args, "--dry-run")
    generic = out / "runs" / "ml-100k" / "sasrec-generic-s0"
    # generic finished after 4 epochs of 100 s: dynamic is expected to take 4 x 100 s + 15%
    # for validation = 460 s, so a 5-minute limit starts nothing (the prior-shift evaluation
    # fits, but waits on dynamic) and the worker stops with its tables
    write_log(generic, [100.0] * 4, best=[4])
    for name in ("train_done.json", "metrics.json"):
        (generic / name).write_text("{}")
    printed = run(*args, "--time-limit", "5m")
    assert "time limit: 2 run(s) left, none expected to end within the 5m00s limit" in printed
    assert not (out / "runs" / "ml-100k" / "sasrec-dynamic-s0").exists()
    refused = subprocess.run(command(*args, "--time-limit", "2h5x"), cwd=REPO, env=env(),
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "'2h5x' is not a duration" in refused.stderr


def test_a_time_limited_worker_says_which_runs_it_leaves_to_others(tmp_path):
    data_root = shared_file("ml-100k").parent
    out = tmp_path / "repro"
    args = [*TINY, "--seeds", "2", "--epochs", "20", "--data-root", str(data_root), "--out",
            str(out)]  # fmt: skip
    run(*args, "--dry-run")
    runs = out / "runs" / "ml-100k"
    for seed in (0, 1):  # both generic runs done after 4 epochs of 100 s: each dynamic 460 s
        generic = runs / f"sasrec-generic-s{seed}"
        write_log(generic, [100.0] * 4, best=[4])
        for name in ("train_done.json", "metrics.json"):
            (generic / name).write_text("{}")
    # dynamic s0 held by another worker (its lock taken here), dynamic s1 too long for a
    # 5-minute limit: the worker waits on s0 and its prior-shift evaluation, and says it
    # leaves dynamic s1 and its evaluation to a worker with a longer limit
    lock, log_path = runs / ".sasrec-dynamic-s0.lock", tmp_path / "worker.log"
    with open(lock, "a+") as held, open(log_path, "w") as sink:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = subprocess.Popen(command(*args, "--time-limit", "5m"), cwd=REPO, env=env(),
                                  stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
        expected = ("waiting: 2 runs held by other workers or waiting on theirs; 2 not started "
                    "here, expected to end after the 5m00s limit")  # fmt: skip
        deadline = time.monotonic() + 240
        while expected not in log_path.read_text():
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    # released without training it: nothing fits any more, so the worker stops
    assert worker.wait(timeout=300) == 0, log_path.read_text()
    assert "time limit: 4 run(s) left, none expected to end within the 5m00s limit" in (
        log_path.read_text()
    )
    assert not (runs / "sasrec-dynamic-s1").exists()


def test_archive_keeps_finished_runs_without_checkpoints_and_restores_a_lost_out(tmp_path):
    data_root = shared_file("ml-100k").parent
    out, archive = tmp_path / "repro", tmp_path / "kept"
    args = [*TINY, "--data-root", str(data_root), "--out", str(out), "--archive", str(archive)]
    run(*args, "--time-limit", "1h")  # runs nothing has timed yet count as fitting
    original = tables(out)
    names = {"sasrec-generic-s0", "sasrec-dynamic-s0", "sasrec-prior-s0"}
    kept_runs = archive / "runs" / "ml-100k"
    assert {p.name for p in kept_runs.iterdir()} == names | {"cases.parquet"}
    for name in names:  # the per-case columns every run shares are kept once, beside them
        table = pq.read_table(kept_runs / name / "per_user.parquet")
        assert "rank" in table.column_names and "target_domains" not in table.column_names
    kept = [p for p in archive.rglob("*") if p.is_file()]
    assert not [p for p in kept if p.suffix == ".pt" or p.name.startswith(".")]
    assert json.loads((archive / "plan.json").read_text()) == json.loads(
        (out / "plan.json").read_text()
    )
    for path in kept:  # no folder of this machine in what is meant to be committed
        assert str(tmp_path) not in path.read_bytes().decode("utf-8", "replace"), path
    prior = json.loads(
        (archive / "runs" / "ml-100k" / "sasrec-prior-s0" / "metrics.json").read_text()
    )
    assert prior["run"] == "runs/ml-100k/sasrec-generic-s0"  # relative to --out's root

    status = run("--status", "--out", str(out), "--archive", str(archive))
    assert "ml-100k: 3 of 3 runs done, 3 in the archive" in status
    # --out lost (a new machine): the same command trains nothing and writes the same tables
    before = {n: (out / "runs" / "ml-100k" / n / "per_user.parquet").read_bytes() for n in names}
    shutil.rmtree(out)
    printed = run(*args)
    assert "archive: 3 finished run(s) restored from" in printed
    assert "plan: 3 runs (3 done, 0 to finish, 0 new)" in printed
    assert tables(out) == original
    assert not list(out.rglob("*.pt"))
    for name in names:  # each per-case table rebuilt byte for byte
        assert (out / "runs" / "ml-100k" / name / "per_user.parquet").read_bytes() == before[name]

    # an archive inside --out would be lost with it: refused
    inside = subprocess.run(command(*TINY, "--out", str(out), "--archive", str(out / "kept")),
                            cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert inside.returncode == 2 and "--archive must lie outside --out" in inside.stderr

    # benchmarks/splice_tables.py puts those tables into a docs page, verbatim, below its prose
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nProse stays.\n\n# Verdicts (old)\n\nold tables\n")
    splice = [sys.executable, str(REPO / "benchmarks" / "splice_tables.py"), "--out", str(out),
              "--page", str(page)]  # fmt: skip
    done = subprocess.run(splice, cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    parts = [out / "tables" / "verdict.md", out / "timing.md", out / "tables" / "ml-100k.md"]
    assert page.read_text() == "# Page\n\nProse stays.\n\n" + "\n".join(
        p.read_text().rstrip("\n") + "\n" for p in parts
    )
    page.write_text("# Page without tables\n")
    done = subprocess.run(splice, cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "has no line starting '# Verdicts ('" in done.stderr
    assert page.read_text() == "# Page without tables\n"
