"""dwrec's CPU dropout (16-bit lanes of 64-bit draws, dwrec.models.layers.keep_mask) against
torch's own (``F.dropout``, and SDPA's dropout for the attention probabilities).

Two figures, each the two variants taking turns in the same process:

- ``mask``: one dropout of a ``[128, 200, 256]`` float32 tensor (a SASRec feed-forward
  activation at batch 128, length 200), p = 0.2;
- ``step``: one SASRec + CE training step on the ML-1M excerpt (``train_speed.py``'s
  settings: hidden 64, 2 blocks, length 200, batch 128, dropout 0.2), best of ``--steps``
  per variant, with the same batches.

    python benchmarks/dropout_speed.py [--threads 2] [--steps 4] [--write FILE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from _machine import best_of, publish, report_header

from dwrec.runtime import tune_malloc


@contextmanager
def torch_dropout():
    """Route dwrec's dropout and its CPU attention-dropout path back to torch's kernels."""
    from dwrec.models import layers

    saved = layers.dropout, layers._attention_with_dropout

    def sdpa(query, key, value, mask, p):
        if isinstance(mask, str):
            return F.scaled_dot_product_attention(
                query, key, value, dropout_p=p, is_causal=mask == layers.CAUSAL
            )
        return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=p)

    layers.dropout = lambda x, p, training: F.dropout(x, p, training)
    layers._attention_with_dropout = sdpa
    try:
        yield
    finally:
        layers.dropout, layers._attention_with_dropout = saved


def mask_figures(repeats: int) -> dict:
    from dwrec.models.layers import dropout

    x = torch.randn(128, 200, 256)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(best_of(1, lambda: dropout(x, 0.2, True)))
        theirs.append(best_of(1, lambda: F.dropout(x, 0.2, True)))
    return {"dwrec": min(ours), "torch": min(theirs)}


def step_figures(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_speed

    from dwrec.train.batches import batch_slices

    speed_args = train_speed.parse_args(["--threads", str(args.threads)])
    dataset_dir = train_speed._prepare(speed_args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = train_speed._trainer(speed_args, dataset_dir, Path(tmp))
        trainer.model.train()
        generator = torch.Generator().manual_seed(0)
        slices = list(batch_slices(len(trainer.windows), speed_args.batch_size, generator))
        trainer._step(slices[0])
        ours, theirs = [], []
        for index in slices[1 : 1 + args.steps]:
            ours.append(best_of(1, lambda index=index: trainer._step(index)))
            with torch_dropout():
                theirs.append(best_of(1, lambda index=index: trainer._step(index)))
    return {"dwrec": min(ours), "torch": min(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="training steps per variant")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    args = parser.parse_args()
    if args.threads < 1 or args.steps < 1:
        parser.error("--threads and --steps must be >= 1")
    tune_malloc()  # as the dwrec command does
    torch.set_num_threads(args.threads)
    rows = [("mask of 128 x 200 x 256, p = 0.2", mask_figures(10))]
    rows.append(("SASRec + CE training step, ML-1M excerpt", step_figures(args)))
    lines = [
        *report_header("CPU dropout: dwrec's masks vs torch's", args.threads),
        "",
        "| what | torch's dropout (s) | dwrec's (s) | torch / dwrec |",
        "|---|---:|---:|---:|",
    ]
    for label, figures in rows:
        lines.append(
            f"| {label} | {figures['torch']:.4f} | {figures['dwrec']:.4f} | "
            f"**{figures['torch'] / figures['dwrec']:.2f}x** |"
        )
    publish(lines, args.write)


if __name__ == "__main__":
    main()
