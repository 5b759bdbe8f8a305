"""How long `dwrec report` takes on an ML-1M-sized comparison.

5 groups x 3 seeds x 20 domains, 6,040 test cases (one per MovieLens-1M user), synthetic
per-case values written to a temporary folder in the run-dir contract's format, 10,000
bootstrap resamples; the target is under 10 s on 2 CPU cores. Prints a markdown table with
the time, the machine and the command; ``--write FILE`` also writes it there.

    python benchmarks/report_speed.py [--bootstrap 10000] [--test wilcoxon] [--write FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from _common import write_output

from dwrec.io import write_json, write_parquet
from dwrec.report import report

N_CASES = 6040
N_DOMAINS = 20
LOSSES = ("generic", "dynamic", "fixed", "adc", "ce")
SEEDS = (0, 1, 2)
TARGET_SECONDS = 10.0


def write_runs(root: Path, rng: np.random.Generator) -> list[Path]:
    """15 evaluated run dirs sharing one synthetic test set with Zipf-like domain shares."""
    domains = [f"Domain-{i:02d}" for i in range(N_DOMAINS)]
    shares = 1.0 / np.arange(1, N_DOMAINS + 1) ** 1.2
    shares /= shares.sum()
    case_id = np.sort(rng.choice(1_000_000, N_CASES, replace=False)).astype(np.int64)
    # 1-3 domains per target, drawn by share (MovieLens items carry several genres)
    counts = rng.integers(1, 4, N_CASES)
    target = [sorted(set(rng.choice(domains, c, p=shares))) for c in counts]
    power = [[d for d in t if rng.random() < 0.3] for t in target]
    general = [[d for d in domains if d not in t] for t in target]
    dataset = {"path": str(root / "dataset"), "name": "synthetic-ml1m", "fingerprint": "bench"}
    paths = []
    for loss_index, loss in enumerate(LOSSES):
        for seed in SEEDS:
            rank = rng.geometric(0.02 * (1 + 0.05 * loss_index), N_CASES)
            run = root / f"{loss}-{seed}"
            run.mkdir(parents=True)
            config = {"dataset": dataset, "split": {"scheme": "loo", "fingerprint": "bench-split"},
                      "model": {"name": "sasrec"}, "loss": {"loss": loss, "objective": "ce"},
                      "train": {"seed": seed, "lr": 1e-3}}  # fmt: skip
            write_json(run / "config.json", config)
            write_json(run / "train_done.json", {"finished": True})  # a finished run
            columns = {"case_id": pa.array(case_id), "rank": pa.array(rank.astype(np.int64))}
            for k in (10, 20):
                hit = rank <= k
                columns[f"recall@{k}"] = pa.array(hit.astype(np.float64))
                columns[f"ndcg@{k}"] = pa.array(np.where(hit, 1 / np.log2(rank + 1.0), 0.0))
            for name, lists in (("target", target), ("power", power), ("general", general)):
                columns[f"{name}_domains"] = pa.array(lists, pa.list_(pa.string()))
            write_parquet(run / "per_user.parquet", pa.table(columns))
            metrics = {"run": str(run), "split": "test", "dataset": dataset,
                       "split_scheme": "loo", "split_fingerprint": "bench-split",
                       "n_cases": N_CASES, "masked_history": True, "sampled": None,
                       "thresholds": {"power": 0.5, "general": 0.1},
                       "domains": {d: {"train_share": float(s)}
                                   for d, s in zip(domains, shares, strict=True)}}  # fmt: skip
            write_json(run / "metrics.json", metrics)
            weights = {d: float(1 / (s * N_DOMAINS)) for d, s in zip(domains, shares, strict=True)}
            line = {"epoch": 1, "domain_weights": weights if loss == "dynamic" else None}
            (run / "log.jsonl").write_text(json.dumps(line) + "\n")
            paths.append(run)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=10_000)
    parser.add_argument("--test", default="wilcoxon", choices=("wilcoxon", "ttest", "permutation"))
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the best is kept")
    parser.add_argument("--write", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dwrec-report-bench-") as folder:
        root = Path(folder)
        write_runs(root / "runs", np.random.default_rng(0))
        domains = [f"Domain-{i:02d}" for i in range(N_DOMAINS)]
        times, cpu_times = [], []
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            result = report([root / "runs"], domains=domains, bootstrap=args.bootstrap,
                            test=args.test, metrics=["recall@10", "ndcg@10"])  # fmt: skip
            result.render("md")
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    rows = len(result.tables[0].rows)
    best = min(times)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    table = "\n".join(
        [
            "| what | value |",
            "|---|---|",
            f"| setting | 5 groups x 3 seeds x {N_DOMAINS} domains (+ overall), {N_CASES} test "
            f"cases, 2 metrics, {args.bootstrap} bootstrap resamples, test {args.test} |",
            f"| rows in the table | {rows} |",
            f"| best of {args.repeats} (s) | {best:.2f} |",
            f"| all runs, wall (s) | {', '.join(f'{t:.2f}' for t in times)} |",
            f"| all runs, CPU time of this process, all threads (s) | "
            f"{', '.join(f'{t:.2f}' for t in cpu_times)} |",
            f"| 1-minute load average before | {load_before:.1f} (other processes share the cores "
            "when it exceeds the core count) |",
            f"| target | < {TARGET_SECONDS:.0f} s on 2 cores: "
            f"{'met' if best < TARGET_SECONDS else 'NOT met'} |",
            f"| machine | {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
            f"visible, OMP_NUM_THREADS={threads}, Python {platform.python_version()}, "
            f"numpy {np.__version__} |",
            f"| command | `{command}` |",
        ]
    )
    print(table)
    if args.write:
        write_output(args.write, table + "\n")
    return 0 if best < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
