"""Mean weight per training positive and largest weight: today's dynamic weighting against
``dwrec.losses.normalise`` (mean 1 under the multi-domain rule, clipped to a fixed point).

No model is trained: dynamic weights depend only on the positives of the batches, so one
epoch of SASRec's batch stream is replayed (leave-one-out split, windows of ``--max-len``,
batches of ``--batch-size`` sequences drawn with the trainer's seeded permutation) and
each batch's position weights are read *before* the EMA update, as the trainer applies
them. For each dataset, rule (``max``, ``mean``) and weighting the table gives:

- ``mean at start``: exact mean weight over every training positive with the initial state;
- ``realised mean``: mean of the weights applied to the positions of one epoch;
- ``largest weight``: the largest domain weight over the epoch's states, against ``w_max``.

Weightings: ``today`` (``dynamic`` before issue 14 item 5, re-implemented here:
``r_d = 1 / f_d``, ``w = r / sum f r``, clipped, divided once by ``sum f w``);
``normalised`` (``DynamicWeighting``, the built-in ``dynamic``: the same ``r_d``, normalised
by :func:`normalise_weights` for the EMA ``pi`` of the signature shares, ``[w_min,
w_max]``); ``up-weight only`` (the same with ``w_min = 1``).

    python benchmarks/weight_normalisation.py [--data ../shared/data] [--write FILE]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import publish, report_header

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {  # name, folder under --data, prepare options
    "ML-100K": ("movielens-100k", "ml-100k", {}),
    "ML-1M excerpt, 5-core": (
        "movielens-1m",
        "ml-1m",
        {"min_user_interactions": 5, "min_item_interactions": 5},
    ),
}


def load(name: str, source: Path, options: dict, home: Path):
    import dwrec
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split

    out = home / name
    dwrec.prepare(name, source=source, out=out, **options)
    dataset = load_dataset(out)
    return dataset, make_split(dataset, "loo")


def batches(dataset, split, max_len: int, batch_size: int, seed: int):
    """The positives of each batch of one epoch, in the trainer's order."""
    from dwrec.train.batches import batch_slices, training_windows

    windows = training_windows(dataset, split, max_len)
    generator = torch.Generator().manual_seed(seed)
    tokens = windows.tokens
    for index in batch_slices(len(windows), batch_size, generator):
        rows = tokens[index]
        targets = rows[:, 1:][rows[:, :-1] > 0] - 1
        yield targets
    return windows


def measure(dataset, split, rule: str, args) -> list[tuple[str, float, float, float]]:
    from dwrec.losses.config import LossConfig
    from dwrec.losses.normalise import RealisedMean
    from dwrec.losses.weighting import DomainStatistics, DynamicWeighting

    class OneRenormalisation(DynamicWeighting):
        """``dynamic`` before the exact normalisation (kept here only to measure it):
        ``r / sum f r``, clipped, divided once by ``sum f w``."""

        def compute_weights(self, frequencies):
            scores = self.sparsity_scores(frequencies)
            weights = scores / (frequencies * scores).sum().clamp_min(1e-12)
            weights = weights.clamp(self.config.w_min, self.config.w_max)
            return weights / (frequencies * weights).sum().clamp_min(1e-12)

    from dwrec.train.batches import training_windows

    windows = training_windows(dataset, split, args.max_len)
    items = windows.target_items()
    statistics = DomainStatistics(
        domain_names=dataset.domain_names,
        item_domain_indptr=dataset.item_domain_indptr,
        item_domain_indices=dataset.item_domain_indices,
        train_items=items,
        train_users=windows.target_users(),
        n_items=dataset.n_items,
    )
    has_domain = torch.from_numpy(np.diff(dataset.item_domain_indptr) > 0)
    all_items = torch.from_numpy(items)
    rows = []
    for label, cls, w_min in (
        ("today", OneRenormalisation, args.w_min),
        ("normalised", DynamicWeighting, args.w_min),
        ("up-weight only", DynamicWeighting, 1.0),
    ):
        config = LossConfig(loss="dynamic", multi_domain=rule, w_min=w_min, w_max=args.w_max)
        weighting = cls.from_config(config.weighting_config(), statistics)
        start = float(weighting.position_weights(all_items[has_domain[all_items]]).mean())
        realised, largest = RealisedMean(), float(weighting.weights.max())
        for positives in batches(dataset, split, args.max_len, args.batch_size, args.seed):
            realised.add(weighting.position_weights(positives[has_domain[positives]]))
            weighting.update(positives)
            largest = max(largest, float(weighting.weights.max()))
        rows.append((label, start, realised.value, largest))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--w-min", type=float, default=0.25)
    parser.add_argument("--w-max", type=float, default=10.0)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lines = report_header("Dynamic weights: mean weight per training positive and bounds", 1)
    lines += [
        f"- bounds [{args.w_min:g}, {args.w_max:g}] (up-weight only: [1, {args.w_max:g}]); "
        "r_d = 1 / f_d; EMA beta 0.9; one epoch of SASRec batches "
        f"(length {args.max_len}, {args.batch_size} sequences, seed {args.seed}); means over "
        "the positives whose item has a domain",
        "",
        "| data | rule | weighting | mean at start | realised mean, one epoch | "
        f"largest weight (w_max {args.w_max:g}) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as home:
        for label, (name, folder, options) in DATASETS.items():
            source = args.data / folder
            if not source.exists():
                lines.append(f"| {label} | | {source} not found | | | |")
                continue
            dataset, split = load(name, source, options, Path(home))
            share = multi_domain_share(dataset, split, args.max_len)
            for rule in ("max", "mean"):
                for weighting, start, realised, largest in measure(dataset, split, rule, args):
                    lines.append(
                        f"| {label} ({share:.0%} multi-domain) | {rule} | {weighting} | "
                        f"{start:.4f} | {realised:.4f} | {largest:.2f} |"
                    )
    publish(lines, args.write)


def multi_domain_share(dataset, split, max_len: int) -> float:
    from dwrec.train.batches import training_windows

    items = training_windows(dataset, split, max_len).target_items()
    degree = np.diff(dataset.item_domain_indptr)[items]
    return float((degree >= 2).sum() / max((degree >= 1).sum(), 1))


if __name__ == "__main__":
    main()
