"""benchmarks/time_to_accuracy.py, driven as a subprocess: invocations side by side on one
``--work`` keep out of each other's folders, and ``--combine`` reports their seeds together
(figures checked against the JSON the runs wrote, and the interval against its closed form)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import dwrec

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "time_to_accuracy.py"
SMALL = ["hidden=8", "layers=1", "heads=1", "max_len=10", "batch_size=16"]


def command(*args: str) -> list[str]:
    return [sys.executable, str(SCRIPT), *map(str, args)]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def small_options() -> list[str]:
    return [item for option in SMALL for item in ("--old", option, "--new", option)]


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
    """Two invocations (seeds 0 and 1) started together on one --work."""
    root = tmp_path_factory.mktemp("tta")
    data = dwrec.prepare(
        "synthetic",
        out=root / "data",
        options={"users": 60, "items": 30, "domains": 3, "mean_length": 8},
    ).path
    work = root / "work"
    processes = [
        subprocess.Popen(
            command(
                "--dataset-dir",
                data,
                "--work",
                work,
                "--threads",
                1,
                "--seed",
                seed,
                "--epochs",
                2,
                "--json",
                root / f"s{seed}.json",
                *small_options(),
            ),
            cwd=REPO,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for seed in (0, 1)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    return root, work


def test_invocations_side_by_side_share_a_work_folder(two_seeds):
    root, work = two_seeds
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert len(runs) == 2 and {r.split("-")[2] for r in runs} == {"s0", "s1"}
    assert not list(work.glob("warm-up*")), "the warm-up folders are removed"
    for seed in (0, 1):
        raw = json.loads((root / f"s{seed}.json").read_text())
        assert {arm["seed"] for arm in raw.values()} == {seed}
        for arm in raw.values():
            config = json.loads((Path(arm["run_dir"]) / "config.json").read_text())
            assert config["train"]["seed"] == seed


def test_combine_reports_every_seed_and_the_paired_differences(two_seeds):
    root, _ = two_seeds
    done = subprocess.run(
        command("--combine", root / "s0.json", root / "s1.json", "--target", 0.0),
        cwd=REPO, env=env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = done.stdout
    raws = [json.loads((root / f"s{seed}.json").read_text()) for seed in (0, 1)]
    for seed, raw in enumerate(raws):
        for name, arm in raw.items():
            row = f"| {seed} | {name} | 1 | {arm['best_epoch']} / 2 |"
            assert row in out
            assert f"| {arm['test']['recall@10']:.4f} | {arm['test']['ndcg@10']:.4f} |" in out
    for name in ("old", "new"):
        values = [raw[name]["test"]["ndcg@10"] for raw in raws]
        mean = sum(values) / 2
        sd = abs(values[0] - values[1]) / 2**0.5  # sample sd of two values
        assert f"| {name} | 2 | 1.0 ± 0.0 |" in out
        assert f"{mean:.4f} ± {sd:.4f} |" in out
    # paired interval of two seeds: mean difference +- t(0.975, 1) * |d0 - d1| / 2
    diffs = [raw["new"]["test"]["ndcg@10"] - raw["old"]["test"]["ndcg@10"] for raw in raws]
    centre, half = sum(diffs) / 2, 12.706204736174698 * abs(diffs[0] - diffs[1]) / 2
    line = next(line for line in out.splitlines() if line.startswith("- test NDCG@10:"))
    shown = [float(x) for x in re.findall(r"[+-]\d+\.\d+", line)]
    assert shown == pytest.approx([centre, centre - half, centre + half], abs=6e-5)
    assert "epochs to target, new / old (summed over seeds): 1.00" in out


def test_combine_takes_one_configuration_from_a_file(two_seeds, tmp_path):
    root, _ = two_seeds
    copy = tmp_path / "copy of s0.json"
    copy.write_text((root / "s0.json").read_text())
    done = subprocess.run(
        command("--combine", f"{root / 's0.json'}:old", f"{copy}:new", root / "s1.json",
                "--target", 0.0),
        cwd=REPO, env=env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [line for line in done.stdout.splitlines() if re.match(r"\| \d \| (old|new) \|", line)]
    assert [row.split(" | ")[:2] for row in rows] == [
        ["| 0", "old"], ["| 0", "new"], ["| 1", "old"], ["| 1", "new"]
    ]  # fmt: skip
    assert "come from separate invocations" in done.stdout
    arm = json.loads((root / "s0.json").read_text())["old"]
    commit = json.loads((Path(arm["run_dir"]) / "config.json").read_text()).get("git_commit")
    assert f"- old: {arm['settings']}; dwrec commit {str(commit)[:7]}" in done.stdout
    missing = subprocess.run(
        command("--combine", f"{root / 's0.json'}:old", f"{tmp_path / 'none.json'}:new"),
        cwd=REPO, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode != 0 and "none.json: not a time_to_accuracy" in missing.stderr
    alone = subprocess.run(
        command("--combine", f"{root / 's1.json'}:old", f"{root / 's1.json'}:new"),
        cwd=REPO, env=env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "separate invocations" not in alone.stdout


def test_combine_refuses_mixed_settings_and_repeated_seeds(tmp_path):
    def write(name: str, seed: int, lr: float) -> Path:
        arm = {"settings": {"lr": lr}, "seed": seed, "curve": [], "test": {},
               "best_epoch": 1, "run_dir": "."}  # fmt: skip
        path = tmp_path / name
        path.write_text(json.dumps({"new": arm}))
        return path

    mixed = subprocess.run(
        command("--combine", write("a.json", 0, 3e-3), write("b.json", 1, 2e-3)),
        cwd=REPO, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert mixed.returncode != 0 and "differ in their settings" in mixed.stderr
    twice = subprocess.run(
        command("--combine", write("c.json", 0, 3e-3), write("d.json", 0, 3e-3)),
        cwd=REPO, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert twice.returncode != 0 and "same seed" in twice.stderr
    lacking = subprocess.run(
        command("--combine", f"{write('f.json', 0, 3e-3)}:old"),
        cwd=REPO, env=env(), capture_output=True, text=True,
    )  # fmt: skip
    assert lacking.returncode != 0 and "f.json: has no 'old' configuration" in lacking.stderr
    (tmp_path / "e.json").write_text("[1, 2]")
    broken = subprocess.run(
        command("--combine", tmp_path / "e.json"), cwd=REPO, env=env(), capture_output=True,
        text=True,
    )  # fmt: skip
    assert broken.returncode != 0 and "e.json: not a time_to_accuracy --json file" in broken.stderr
