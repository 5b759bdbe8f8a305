"""SIGMA training step with the sequential reference scan against the fast (blocked,
hand-written backward) scan, in the same process with the same batches.

One step = forward, full-softmax CE over ``--items`` items at every position, backward,
Adam update; batch ``--batch``, hidden 64, 1 layer, d_state 32, expand 2 (SIGMA's
defaults), random left-padded sequences of length L (all rows full). Each variant is
timed ``--steps`` times per length, the two variants taking turns; the best time counts.

    python benchmarks/sigma_scan.py [--lengths 50 200] [--threads 1] [--steps 3] [--write FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import best_of, publish, report_header

from dwrec.models.sigma import SIGMA, SigmaConfig


def step_time(reference: bool, length: int, batch: int, items: int, steps: int) -> list[float]:
    torch.manual_seed(0)
    config = SigmaConfig(max_len=length, reference_scan=reference)
    model = SIGMA(items, config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, items + 1, (batch, length + 1), generator=generator)

    def step():
        batch_data = model.training_batch(tokens, generator)
        hidden = model(batch_data.inputs)
        loss = F.cross_entropy(model.score(hidden.flatten(0, 1)), batch_data.targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    return [best_of(1, step) for _ in range(steps)]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for length in args.lengths:
        times = {"reference": [], "fast": []}
        for _ in range(args.steps):  # take turns, so load changes hit both
            for name in times:
                times[name] += step_time(name == "reference", length, args.batch, args.items, 1)
        ref, fast = min(times["reference"]), min(times["fast"])
        rows.append(f"| {length} | {ref * 1000:.0f} | {fast * 1000:.0f} | {ref / fast:.2f}x |")
    lines = report_header("SIGMA training step: reference scan vs fast scan", args.threads)
    lines += [
        f"- batch {args.batch}, {args.items} items, hidden 64, 1 layer, d_state 32, expand 2",
        "",
        "| length | reference ms/step | fast ms/step | speed-up |",
        "|---:|---:|---:|---:|",
        *rows,
    ]
    publish(lines, args.write)


if __name__ == "__main__":
    main(sys.argv[1:])
