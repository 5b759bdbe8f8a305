"""What dwrec's glibc malloc tuning (dwrec/runtime.py) does to CPU training and evaluation.

Each measurement runs in a fresh process, once with the tuning (as the ``dwrec`` command
applies it) and once with ``DWREC_MALLOC_TUNING=0`` (glibc's defaults), the two arms taking
turns so that a load change on a shared machine hits both alike:

- ``train``: SASRec + full-softmax CE on the ML-1M excerpt, 5-core (``train_speed.py``'s
  settings: hidden 64, 2 blocks, length 200, batch 128), ``--steps`` timed steps after one
  warm-up step; positions per second and peak RSS;
- ``evaluate``: ``evaluate_model`` on the test cases of the same data (best of 3) and peak RSS.

The ratio is glibc default time / tuned time, per pair and over the best of each arm.

    python benchmarks/allocator.py [--pairs 3] [--threads 2] [--steps 6] [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="tuned/default pairs per part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    parser.add_argument("--child", choices=["train", "evaluate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.pairs < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--pairs, --steps and --threads must be >= 1")
    started = time.time()
    results = {part: {"tuned": [], "default": []} for part in ("train", "evaluate")}
    for part in results:
        for index in range(args.pairs):
            arms = ("tuned", "default") if index % 2 == 0 else ("default", "tuned")
            for arm in arms:
                results[part][arm].append(run_child(part, arm, args))
                print(f"{part} {arm}: {results[part][arm][-1]}", file=sys.stderr)
    text = markdown(results, args, time.time() - started)
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")


def run_child(part: str, arm: str, args) -> dict:
    env = dict(os.environ)
    env.pop("DWREC_MALLOC_TUNING", None)
    if arm == "default":
        env["DWREC_MALLOC_TUNING"] = "0"
    command = [sys.executable, __file__, "--child", part, "--threads", str(args.threads)]
    command += ["--steps", str(args.steps)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"{part}/{arm} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(args) -> dict:
    from dwrec.runtime import tune_malloc

    applied = tune_malloc()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import torch
    import train_speed

    torch.set_num_threads(args.threads)
    speed_args = train_speed.parse_args(
        ["--threads", str(args.threads), "--steps", str(args.steps), "--warmup", "1"]
    )
    if args.child == "train":
        figures = train_speed.dwrec_figures(speed_args)
        return {
            "tuned": applied,
            "seconds_per_step": figures["epoch_seconds"] / figures["steps_per_epoch"],
            "positions_per_s": figures["positions_per_s"],
            "peak_rss_mib": peak_rss_mib(),
        }
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.eval.evaluator import evaluate_model
    from dwrec.models.base import ModelConfig
    from dwrec.models.sasrec import SASRec

    dataset = load_dataset(train_speed._prepare(speed_args))
    split = make_split(dataset, "loo")
    torch.manual_seed(0)
    config = ModelConfig(hidden=64, layers=2, heads=2, max_len=200, dropout=0.2)
    model = SASRec(dataset.n_items, config).eval()
    times = []
    for _ in range(3):
        begin = time.perf_counter()
        evaluate_model(model, dataset, split, "test")
        times.append(time.perf_counter() - begin)
    return {"tuned": applied, "seconds": min(times), "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def markdown(results: dict, args, wall: float) -> str:
    from _machine import cpu_name, load_average

    lines = [
        "## glibc malloc tuning: tuned vs glibc defaults",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; wall {wall:.0f} s; "
        f"load average at the end {load_average()}",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs visible, {args.threads} torch threads",
        "- command: `python benchmarks/allocator.py "
        + shlex.join(sys.argv[1:]).replace("`", "")
        + "`",
        "",
        "| part | figure | glibc defaults (best) | tuned (best) | default / tuned | per pair: "
        "median (min-max) | peak RSS MiB default / tuned |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    keys = {"train": ("seconds_per_step", "s per step"), "evaluate": ("seconds", "s per pass")}
    for part, arms in results.items():
        key, label = keys[part]
        tuned = [r[key] for r in arms["tuned"]]
        default = [r[key] for r in arms["default"]]
        if not all(r["tuned"] for r in arms["tuned"]):
            lines.append(f"| {part} | (tuning could not be applied here) | | | | | |")
            continue
        pairs = sorted(d / t for d, t in zip(default, tuned, strict=True))
        rss = (
            f"{max(r['peak_rss_mib'] for r in arms['default']):,.0f} / "
            f"{max(r['peak_rss_mib'] for r in arms['tuned']):,.0f}"
        )
        lines.append(
            f"| {part} | {label} | {min(default):.3f} | {min(tuned):.3f} | "
            f"**{min(default) / min(tuned):.2f}x** | {statistics.median(pairs):.2f}x "
            f"({pairs[0]:.2f}-{pairs[-1]:.2f}) | {rss} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
