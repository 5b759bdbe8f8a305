"""Training speed against torch's thread count and OpenMP's wait policy, alone and beside
another busy process.

torch runs its CPU kernels on OpenMP threads that, by default, spin while they wait for
each other. When another job holds one of the cores, a spinning thread burns the time slice
its partner needs, and a run with as many threads as cores can slow down many times over.
dwrec's CLI therefore caps the spinning at ``GOMP_SPINCOUNT=1000`` (unless the user set a
wait policy or a spin count); this script measures OpenMP's default, that cap, a tighter
one and ``OMP_WAIT_POLICY=PASSIVE`` on an idle machine and beside a busy one.

Each arm trains the quickstart's SASRec (synthetic defaults, hidden 32, 2 blocks, length
40, batch 128) for ``--epochs`` epochs in a fresh process; the time is the ``train`` call
alone. The "busy" arms run beside a one-core busy loop started by this script. Ratios are
against the 1-thread arm of the same condition, measured in the same run.

    .venv/bin/python benchmarks/thread_policy.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _machine import cpu_name, load_average

CHILD = """
import json, sys, time, torch, dwrec
torch.set_num_threads(int(sys.argv[3]))
start = time.perf_counter()
dwrec.train(sys.argv[1], model="sasrec", loss="generic", out=sys.argv[2], quiet=True,
            epochs=int(sys.argv[4]), patience=100, max_len=40, hidden=32, heads=2, layers=2,
            batch_size=128, lr=3e-3, device="cpu")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""
BUSY = "while True:\n    pass\n"


def run_arm(dataset: Path, work: Path, threads: int, policy: str | None, epochs: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("OMP_WAIT_POLICY", None), env.pop("GOMP_SPINCOUNT", None)
    if policy:  # "NAME=VALUE"
        name, value = policy.split("=")
        env[name] = value
    out = Path(tempfile.mkdtemp(dir=work)) / "run"
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(dataset), str(out), str(threads), str(epochs)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm (best is kept)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    arms = [(1, None), (cores, None), (cores, "GOMP_SPINCOUNT=1000"),
            (cores, "GOMP_SPINCOUNT=100"), (cores, "OMP_WAIT_POLICY=PASSIVE")]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="dwrec-threads-") as tmp:
        work = Path(tmp)
        os.environ["DWREC_HOME"] = str(work / "home")
        import dwrec

        dataset = dwrec.prepare("synthetic", out=work / "synthetic").path
        load_before = load_average()
        times: dict[tuple[str, int, str | None], list[float]] = {}
        for condition in ("idle", "busy"):
            busy = subprocess.Popen([sys.executable, "-c", BUSY]) if condition == "busy" else None
            try:
                time.sleep(0.5 if busy else 0)
                for _ in range(args.repeats):
                    for threads, policy in arms:  # interleaved, so load drift hits every arm
                        seconds = run_arm(dataset, work, threads, policy, args.epochs)
                        times.setdefault((condition, threads, policy), []).append(seconds)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
    lines = [
        "| condition | torch threads | OpenMP setting | best s | median s | vs 1 thread |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for (condition, threads, policy), values in times.items():
        base = min(times[(condition, 1, None)])
        ordered = sorted(values)
        lines.append(
            f"| {condition} | {threads} | {policy or '(default)'} | {ordered[0]:.2f} | "
            f"{ordered[len(ordered) // 2]:.2f} | {ordered[0] / base:.2f}x |"
        )
    header = (
        f"Command: `python benchmarks/thread_policy.py {' '.join(sys.argv[1:])}`\n\n"
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {cpu_name()}, {cores} cores. "
        f"Load average before: {load_before}; after: {load_average()}. "
        f"{args.epochs} epoch(s) of the quickstart's SASRec per run, best of {args.repeats}; "
        "'busy': beside a one-core busy loop started by the benchmark.\n"
    )
    text = header + "\n" + "\n".join(lines) + "\n"
    print(text)
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
