"""Time to accuracy: how long SASRec + CE takes to reach a validation NDCG@10 with dwrec's
defaults ("old") and with the recommended settings ("new"), in one invocation on the same
data.

Each configuration trains through ``dwrec.train`` in its own thread; the threads take
turns of one epoch each (validation included), so a change of the machine's load hits
every configuration alike. At each hand-over the process-wide random states (torch's, NumPy's,
Python's) are saved and restored, so each run draws exactly what it would draw alone. After
every epoch the benchmark records the validation NDCG@10, the optimiser steps so far and the
configuration's cumulative wall time (its own turns only: start-up, training and
validation). When all have stopped (early stopping on validation NDCG@10, or their epoch
cap), each best-by-validation model is evaluated on the test cases (full ranking, history
masked).

"old" is dwrec's defaults spelled out (``OLD_DEFAULTS``), "new" the recommended settings
(``NEW_SETTINGS``); ``--old KEY=VALUE`` / ``--new KEY=VALUE`` change either.

Reported: the curve (validation NDCG@10 against wall time) of every configuration; the
epochs, optimiser steps and wall time to first reach ``--target``; the best-by-validation
test HR@10 and NDCG@10; and the ratios new / old of the time to the target, of the
training time per epoch and of the training time per optimiser step.

Default data: the ML-1M ratings excerpt of ``../shared/data/ml-1m``, iterative 5-core
(2,999 users, 3,266 items), prepared once under ``--work``. Without it the benchmark says
so and exits (pass ``--dataset-dir`` for any prepared dataset).

Several invocations may share one ``--work`` (say one per seed, side by side): each warms up
and trains in folders of its own. ``--combine`` then reads their ``--json`` files and reports
every seed and the mean over seeds, with the paired new - old differences. ``FILE:old`` or
``FILE:new`` takes one configuration from a file, so a new configuration trained alone
(``--only new``) pairs with the old runs of earlier invocations, seed by seed.

Usage::

    python benchmarks/time_to_accuracy.py --threads 2 --old epochs=28 --write FILE.md
    python benchmarks/time_to_accuracy.py --new lr=5e-3 --new lr_schedule=constant
    python benchmarks/time_to_accuracy.py --seed 1 --threads 1 --json s1.json   # and s2, ...
    python benchmarks/time_to_accuracy.py --combine s0.json s1.json s2.json --write FILE.md
    python benchmarks/time_to_accuracy.py --combine s0.json:old n0.json:new s1.json:old ...
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import publish, report_header, write_output

import dwrec
from dwrec.baselines.convergence import curve, time_to_reach

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ml-1m"

OLD_DEFAULTS: dict[str, Any] = {
    "hidden": 64,
    "layers": 2,
    "heads": 2,
    "dropout": 0.2,
    "max_len": 200,
    "lr": 1e-3,
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "batch_size": 128,
    "epochs": 100,
    "patience": 5,
}
"""dwrec's SASRec-CE training defaults (spelled out, so that "old" stays old whatever the
defaults become)."""

NEW_SETTINGS: dict[str, Any] = {"lr": 3e-3, "warmup_steps": 24, "lr_schedule": "cosine"}
"""The recommended settings for a converged SASRec-CE in less time (docs/performance.md,
"Time to accuracy"): a higher peak rate after about one ML-1M epoch of warm-up, decaying
along a cosine to the end of ``epochs``. Everything else: dwrec's defaults."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="ML-1M folder")
    parser.add_argument("--dataset-dir", type=Path, help="a prepared dataset instead")
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "time-to-accuracy")
    parser.add_argument("--target", type=float, default=0.16, help="validation NDCG@10")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (both runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--epochs", type=int, help="epoch cap of every run (also the horizon of a decaying "
        "schedule); default: each configuration's own"
    )  # fmt: skip
    parser.add_argument(
        "--old", action="append", default=[], metavar="KEY=VALUE",
        help="override an option of the old configuration (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--new", action="append", default=[], metavar="KEY=VALUE",
        help="override an option of the new configuration (default: NEW_SETTINGS)",
    )  # fmt: skip
    parser.add_argument("--only", choices=("old", "new"), help="train one configuration only")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the curves and results as JSON")
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON[:ARM]",
        help="train nothing: report the runs of these --json files (one per seed) together; "
        "FILE:old or FILE:new takes only that configuration from FILE",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=3e-3", "lr_schedule=cosine"]`` -> ``{"lr": 0.003, "lr_schedule": "cosine"}``."""
    import tomllib

    values = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            sys.exit(f"expected KEY=VALUE, got {pair!r}")
        try:
            values[key.strip().replace("-", "_")] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            values[key.strip().replace("-", "_")] = text
    return values


def dataset_dir(args: argparse.Namespace) -> Path:
    if args.dataset_dir is not None:
        return args.dataset_dir
    if not args.source.is_dir():
        print(
            f"skipped: the ML-1M files are not at {args.source} "
            "(pass --source DIR, or --dataset-dir of a prepared dataset)"
        )
        sys.exit(0)
    result = dwrec.prepare(
        "movielens-1m",
        source=args.source,
        out=args.work / "ml-1m-5core",
        min_user_interactions=5,
        min_item_interactions=5,
    )
    return result.path


def warm_up(work: Path, threads: int) -> None:
    """Pay the one-off costs the first epoch of the first run would otherwise pay alone
    (dwrec's imports; torch imports its compiler stack, about 10 s, on a model's first
    initialisation): one tiny run on a tiny synthetic dataset, in a folder of this
    invocation's own under ``work``."""
    import shutil

    work.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=work, prefix="warm-up-"))
    options = {"users": 40, "items": 20, "domains": 2, "mean_length": 8}
    data = dwrec.prepare("synthetic", out=folder / "data", options=options)
    dwrec.train(
        data.path, out=folder / "run", quiet=True, epochs=1, hidden=8, layers=1, max_len=10,
        threads=threads,
    )  # fmt: skip
    dwrec.evaluate(folder / "run", device="cpu")
    shutil.rmtree(folder)


# ---------------------------------------------------------------- interleaved training


class Turns:
    """Round-robin turns between named threads; a thread that leaves is skipped."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.active = list(names)
        self.current = names[0]
        self.cond = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.current == name)

    def _advance(self, name: str) -> None:
        if self.active:
            later = self.names[self.names.index(name) + 1 :] + self.names
            self.current = next(n for n in later if n in self.active)
        self.cond.notify_all()

    def pass_on(self, name: str) -> None:
        with self.cond:
            self._advance(name)

    def leave(self, name: str) -> None:
        with self.cond:
            self.active.remove(name)
            self._advance(name)


def random_states() -> tuple:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def restore_random_states(states: tuple) -> None:
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


@dataclass
class Arm:
    name: str
    settings: dict[str, Any]
    curve: list[dict] = field(default_factory=list)
    run_dir: Path | None = None
    source: Path | None = None  # the --json file it was read from (--combine)
    test: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    error: BaseException | None = None


def train_arm(arm: Arm, turns: Turns, dataset: Path, args: argparse.Namespace) -> None:
    turns.wait(arm.name)
    wall = 0.0
    started = time.perf_counter()

    def on_epoch(event: str, info: dict) -> None:
        nonlocal wall, started
        if event != "epoch":
            return
        wall += time.perf_counter() - started
        arm.curve.append(
            {
                "epoch": info["epoch"],
                "step": info["step"],
                "valid_ndcg@10": info["valid"]["ndcg@10"],
                "train_seconds": info["seconds"],
                "wall_seconds": wall,
                "lr": info.get("lr"),
            }
        )
        point = arm.curve[-1]
        print(
            f"{arm.name} epoch {point['epoch']}: valid NDCG@10 {point['valid_ndcg@10']:.4f}, "
            f"{point['wall_seconds']:.0f} s", file=sys.stderr, flush=True,
        )  # fmt: skip
        states = random_states()
        turns.pass_on(arm.name)
        turns.wait(arm.name)
        restore_random_states(states)
        started = time.perf_counter()

    try:
        result = dwrec.train(
            dataset, model="sasrec", loss="ce", out=arm.run_dir, quiet=True,
            threads=args.threads, callback=on_epoch, seed=args.seed, **arm.settings,
        )  # fmt: skip
        arm.best_epoch = result.best_epoch
    except BaseException as exc:  # reported by the main thread
        arm.error = exc
    finally:
        turns.leave(arm.name)


# ---------------------------------------------------------------- the report


def reached(arm: Arm, target: float) -> dict | None:
    """The curve point of the first epoch at or above ``target`` (the rule compare_recbole
    uses: :func:`dwrec.baselines.convergence.time_to_reach`)."""
    points = curve([p["wall_seconds"] for p in arm.curve], [p["valid_ndcg@10"] for p in arm.curve])
    hit = time_to_reach(points, target)
    return None if hit is None else arm.curve[hit.epoch - 1]


def run_commit(arm: Arm) -> str:
    """The dwrec commit a run was trained at (its config.json), or "unknown"."""
    try:
        config = json.loads((arm.run_dir / "config.json").read_text(encoding="utf-8"))
        return str(config["git_commit"])[:7]
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def per_epoch(arm: Arm) -> float:
    return float(np.mean([p["train_seconds"] for p in arm.curve]))


def per_step(arm: Arm) -> float:
    return sum(p["train_seconds"] for p in arm.curve) / max(arm.curve[-1]["step"], 1)


def differences(arms: list[Arm]) -> list[str]:
    """The model and training options that differ between the runs (from config.json)."""
    resolved = []
    for arm in arms:
        config = json.loads((arm.run_dir / "config.json").read_text(encoding="utf-8"))
        resolved.append({**config["model"], **config["train"]})
    keys = sorted({k for options in resolved for k in options})
    lines = ["| option | " + " | ".join(a.name for a in arms) + " |"]
    lines.append("|---|" + "---|" * len(arms))
    for key in keys:
        values = [options.get(key, "") for options in resolved]
        if len({str(v) for v in values}) > 1:
            lines.append(f"| `{key}` | " + " | ".join(f"{v}" for v in values) + " |")
    return lines


def report(arms: list[Arm], args: argparse.Namespace) -> list[str]:
    lines = report_header("Time to accuracy: SASRec + CE", args.threads)
    lines += [
        f"- target: validation NDCG@10 >= {args.target}; seed {args.seed}; turns of one "
        "epoch each, in one process",
        "",
        "Options that differ (from each run's config.json):",
        "",
        *differences(arms),
        "",
        "| configuration | epochs to target | steps to target | wall time to target (s) | "
        "best epoch / epochs run | test HR@10 | test NDCG@10 | training s / epoch | "
        "training ms / step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm in arms:
        hit = reached(arm, args.target)
        best = max(p["valid_ndcg@10"] for p in arm.curve)
        to_target = (
            [str(hit["epoch"]), str(hit["step"]), f"{hit['wall_seconds']:.0f}"]
            if hit
            else [f"not reached (best {best:.4f})", "", ""]
        )
        lines.append(
            f"| {arm.name} | " + " | ".join(to_target) + f" | {arm.best_epoch} / "
            f"{len(arm.curve)} | {arm.test['recall@10']:.4f} | {arm.test['ndcg@10']:.4f} | "
            f"{per_epoch(arm):.1f} | {1000 * per_step(arm):.0f} |"
        )
    if len(arms) == 2:
        old, new = arms
        hit_old, hit_new = reached(old, args.target), reached(new, args.target)
        lines.append("")
        if hit_old and hit_new:
            lines.append(
                f"**new / old: wall time to target {hit_new['wall_seconds'] / hit_old['wall_seconds']:.2f}**"
                f", epochs to target {hit_new['epoch'] / hit_old['epoch']:.2f}, training time "
                f"per epoch {per_epoch(new) / per_epoch(old):.2f}, per optimiser step "
                f"{per_step(new) / per_step(old):.2f} (same run, interleaved)."
            )  # fmt: skip
        else:
            lines.append("new / old time to target: not defined (a run missed the target).")
    lines += ["", "Curves (validation NDCG@10 at cumulative wall time in s):", ""]
    lines.append("| epoch | " + " | ".join(f"{a.name} NDCG@10 | {a.name} s" for a in arms) + " |")
    lines.append("|---:|" + "---:|---:|" * len(arms))
    for epoch in range(1, max(len(a.curve) for a in arms) + 1):
        cells = []
        for arm in arms:
            point = arm.curve[epoch - 1] if epoch <= len(arm.curve) else None
            cells += (
                [f"{point['valid_ndcg@10']:.4f}", f"{point['wall_seconds']:.0f}"]
                if point
                else ["", ""]
            )
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------- several seeds


def combine_entry(entry: str) -> tuple[Path, str | None]:
    """``"s0.json:old"`` -> ``(Path("s0.json"), "old")``; ``"s0.json"`` -> ``(.., None)``."""
    stem, _, arm = entry.rpartition(":")
    if stem and arm in ("old", "new"):
        return Path(stem), arm
    return Path(entry), None


def load_arms(entries: list[str]) -> list[tuple[int, Arm]]:
    """``(seed, arm)`` for every configuration of every ``--json`` file (only the one named
    by a ``FILE:ARM`` entry). Files written before the JSON recorded the seed take it from
    the run's own config.json."""
    arms = []
    for path, only in map(combine_entry, entries):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if only is not None and only not in raw:
                sys.exit(f"{path}: has no '{only}' configuration (it has {', '.join(raw)})")
            for name, entry in raw.items():
                if only is not None and name != only:
                    continue
                arm = Arm(
                    name, entry["settings"], curve=entry["curve"], test=entry["test"],
                    best_epoch=entry["best_epoch"], run_dir=Path(entry["run_dir"]), source=path,
                )  # fmt: skip
                seed = entry.get("seed")
                if seed is None:
                    config = json.loads((arm.run_dir / "config.json").read_text("utf-8"))
                    seed = config["train"]["seed"]
                arms.append((int(seed), arm))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            sys.exit(f"{path}: not a time_to_accuracy --json file ({exc!r})")
    seen: dict[str, dict] = {}
    for seed, arm in arms:
        if seen.setdefault(arm.name, arm.settings) != arm.settings:
            sys.exit(
                f"the '{arm.name}' runs differ in their settings ({seen[arm.name]} against "
                f"{arm.settings} in seed {seed}); combine runs of one configuration only"
            )
    keys = [(seed, arm.name) for seed, arm in arms]
    if len(set(keys)) != len(keys):
        sys.exit("a configuration appears twice with the same seed; give each seed once")
    return sorted(arms, key=lambda pair: (pair[0], pair[1] != "old"))


def mean_sd(values: list[float], digits: int = 4) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def paired_interval(differences: list[float]) -> str:
    """Mean of the per-seed differences with its 95% t-interval over seeds."""
    from scipy import stats

    mean = float(np.mean(differences))
    if len(differences) < 2:
        return f"{mean:+.4f}"
    half = stats.t.ppf(0.975, len(differences) - 1) * stats.sem(differences)
    return f"{mean:+.4f} [{mean - half:+.4f}, {mean + half:+.4f}]"


def combined_report(arms: list[tuple[int, Arm]], args: argparse.Namespace) -> list[str]:
    names = list(dict.fromkeys(arm.name for _, arm in arms))
    seeds = sorted({seed for seed, _ in arms})
    lines = report_header("Time to accuracy over seeds: SASRec + CE", None)
    lines += [
        f"- target: validation NDCG@10 >= {args.target}; seeds {', '.join(map(str, seeds))}; "
        f"{len(args.combine)} --json files",
    ]
    for name in names:
        group = [arm for _, arm in arms if arm.name == name]
        commits = sorted({run_commit(arm) for arm in group})
        lines.append(f"- {name}: {group[0].settings}; dwrec commit {', '.join(commits)}")
    sources = {}
    for seed, arm in arms:
        sources.setdefault(seed, set()).add(arm.source)
    if any(len(files) > 1 for files in sources.values()):
        lines.append(
            "- a seed's configurations come from separate invocations: compare epochs and "
            "test figures; their wall times were measured under different loads"
        )
    lines += [
        "",
        "| seed | configuration | epochs to target | best epoch / epochs run | best valid "
        "NDCG@10 | test HR@10 | test NDCG@10 | training s / epoch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for seed, arm in arms:
        hit = reached(arm, args.target)
        best = max(p["valid_ndcg@10"] for p in arm.curve)
        lines.append(
            f"| {seed} | {arm.name} | {hit['epoch'] if hit else 'not reached'} | "
            f"{arm.best_epoch} / {len(arm.curve)} | {best:.4f} | {arm.test['recall@10']:.4f} | "
            f"{arm.test['ndcg@10']:.4f} | {per_epoch(arm):.1f} |"
        )
    lines += [
        "",
        "Mean ± standard deviation over seeds:",
        "",
        "| configuration | seeds | epochs to target | test HR@10 | test NDCG@10 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        group = [arm for _, arm in arms if arm.name == name]
        hits = [reached(arm, args.target) for arm in group]
        epochs = (
            mean_sd([h["epoch"] for h in hits], 1)
            if all(hits)
            else f"not reached in {sum(h is None for h in hits)} of {len(hits)}"
        )
        lines.append(
            f"| {name} | {len(group)} | {epochs} | "
            f"{mean_sd([a.test['recall@10'] for a in group])} | "
            f"{mean_sd([a.test['ndcg@10'] for a in group])} |"
        )
    by_seed = {(seed, arm.name): arm for seed, arm in arms}
    paired = [s for s in seeds if (s, "old") in by_seed and (s, "new") in by_seed]
    if paired:
        lines += [
            "",
            f"Paired by seed (new - old, {len(paired)} seeds; mean [95% t-interval]):",
            "",
        ]
        for metric, label in (("recall@10", "test HR@10"), ("ndcg@10", "test NDCG@10")):
            diffs = [
                by_seed[(s, "new")].test[metric] - by_seed[(s, "old")].test[metric] for s in paired
            ]
            lines.append(f"- {label}: {paired_interval(diffs)}")
        hits = [
            (reached(by_seed[(s, "new")], args.target), reached(by_seed[(s, "old")], args.target))
            for s in paired
        ]
        if all(new and old for new, old in hits):
            ratio = sum(new["epoch"] for new, _ in hits) / sum(old["epoch"] for _, old in hits)
            lines.append(f"- epochs to target, new / old (summed over seeds): {ratio:.2f}")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.combine:
        publish(combined_report(load_arms(args.combine), args), args.write)
        return
    dataset = dataset_dir(args)
    torch.set_num_threads(args.threads)
    warm_up(args.work, args.threads)

    old = dict(OLD_DEFAULTS, **overrides(args.old))
    new = dict(NEW_SETTINGS, **overrides(args.new))
    if args.epochs is not None:
        old["epochs"] = new["epochs"] = args.epochs
    arms = [Arm("old", old), Arm("new", new)]
    if args.only:
        arms = [a for a in arms if a.name == args.only]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.work / "runs").mkdir(parents=True, exist_ok=True)
    runs = Path(tempfile.mkdtemp(dir=args.work / "runs", prefix=f"{stamp}-s{args.seed}-"))
    for arm in arms:
        arm.run_dir = runs / arm.name
    turns = Turns([a.name for a in arms])
    threads = [
        threading.Thread(target=train_arm, args=(arm, turns, dataset, args), daemon=True)
        for arm in arms
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for arm in arms:
        if arm.error is not None:
            raise SystemExit(f"the {arm.name} run failed: {arm.error!r}")
        metrics = dwrec.evaluate(arm.run_dir, device="cpu")
        arm.test = {k: metrics["overall"][k] for k in ("recall@10", "ndcg@10")}
    publish(report(arms, args), args.write)
    if args.json:
        raw = {
            arm.name: {"settings": arm.settings, "seed": args.seed, "curve": arm.curve,
                       "test": arm.test, "best_epoch": arm.best_epoch,
                       "run_dir": str(arm.run_dir)}
            for arm in arms
        }  # fmt: skip
        write_output(args.json, json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
