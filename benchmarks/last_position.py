"""Ranking with the last block at the last position only, against the full forward pass.

The transformers' ``user_state`` runs every block but the last over all positions and the
last block at the last position only (keys and values folded into the query:
``MultiHeadSelfAttention.last_query``). This times ``evaluate_model`` on the test cases of
the ML-1M excerpt (5-core) with each model's ``user_state`` and with the state read from its
full ``forward`` (the previous way), the two alternating, best of ``--repeats``; the metrics
of both must agree. Models at random initialisation (the cost does not depend on the
weights): SASRec and BERT4Rec at hidden 64, 2 blocks, 2 heads, length 200; PinnerFormer at
its defaults (d 256, 4 blocks, 8 heads, FFN 1024, length 100).

    python benchmarks/last_position.py [--threads 2] [--repeats 3] [--write FILE]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _machine import best_of, publish, report_header

from dwrec.runtime import tune_malloc

ROOT = Path(__file__).resolve().parents[1]
ML1M = ROOT.parent / "shared" / "data" / "ml-1m"
MODELS = ("sasrec", "bert4rec", "pinnerformer")


def full_forward_state(model, history: torch.Tensor) -> torch.Tensor:
    """The user state read from ``model.forward`` over the whole input, as before."""
    if model.name == "bert4rec":
        history = history[:, -(model.config.max_len - 1) :]
        mask = torch.full_like(history[:, :1], model.mask_token)
        return model(torch.cat([history, mask], dim=1))[:, -1]
    return model(history[:, -model.config.max_len :])[:, -1]


def build(name: str, n_items: int):
    from dwrec.models.base import ModelConfig
    from dwrec.models.registry import build_model, default_config

    torch.manual_seed(0)
    config = (
        default_config(name)
        if name == "pinnerformer"
        else ModelConfig(hidden=64, layers=2, heads=2, max_len=200, dropout=0.2)
    )
    return build_model(name, n_items, config).eval()


def measure(name: str, dataset, split, repeats: int) -> dict:
    from dwrec.eval.evaluator import evaluate_model

    model = build(name, dataset.n_items)
    last_position = type(model).user_state
    times = {"last position": [], "full forward": []}
    metrics = {}
    try:
        for _ in range(repeats):
            for label, method in (
                ("last position", last_position),
                ("full forward", full_forward_state),
            ):
                type(model).user_state = method
                times[label].append(
                    best_of(
                        1,
                        lambda label=label: metrics.__setitem__(
                            label, evaluate_model(model, dataset, split, "test")
                        ),
                    )
                )
    finally:
        type(model).user_state = last_position
    ndcg = {label: values["ndcg@10"] for label, values in metrics.items()}
    return {
        "model": name,
        "last": min(times["last position"]),
        "full": min(times["full forward"]),
        "ndcg_last": ndcg["last position"],
        "ndcg_full": ndcg["full forward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="best of N timings")
    parser.add_argument("--source", type=Path, default=ML1M, help="the ML-1M files")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    tune_malloc()  # as the dwrec command does
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_speed

    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split

    # the same 5-core preparation and cache as train_speed.py (exits if the files are absent)
    prepared = train_speed._prepare(train_speed.parse_args(["--source", str(args.source)]))
    dataset = load_dataset(prepared)
    split = make_split(dataset, "loo")
    rows = [measure(name, dataset, split, args.repeats) for name in MODELS]
    lines = [
        *report_header(
            "Ranking: last block at the last position vs the full forward pass", args.threads
        ),
        f"- data: ML-1M excerpt, 5-core, {len(split.test):,} test cases x "
        f"{dataset.n_items:,} items; `evaluate_model`, best of {args.repeats}",
        "",
        "| model | full forward (s) | last position (s) | full / last | NDCG@10 full / last |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['full']:.3f} | {row['last']:.3f} | "
            f"**{row['full'] / row['last']:.2f}x** | {row['ndcg_full']:.6f} / "
            f"{row['ndcg_last']:.6f} |"
        )
    publish(lines, args.write)


if __name__ == "__main__":
    main()
