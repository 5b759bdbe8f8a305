"""Training throughput of SASRec + full-softmax CE on MovieLens-1M, against the machine's peak.

Measures the trainer's own step (:meth:`dwrec.train.trainer.Trainer._step`: batch slicing,
forward, logits at target positions, loss, backward, AdamW) on the ML-1M excerpt
(5-core; SASRec 64-d, 2 blocks, 2 heads, length 200, batch 128 by default) and reports:

* target positions/s and sequences/s over the timed steps (after warm-up);
* peak memory (CUDA: ``max_memory_allocated``; CPU: the process's peak RSS);
* the fp32 matmul peak of the same machine, timed in the same run (a large ``torch.mm``);
* the FLOP-bound epoch time: the model's forward matmul FLOPs per epoch counted
  analytically, times 3 for forward + backward, divided by that peak; and
  ratio = measured epoch time / FLOP-bound epoch time (1.0 would be perfect).

FLOPs per epoch (every window is computed at its full length ``L``, padding included, as the
kernels do): per sequence and block ``2L(3d^2 + d^2 + 2 d f) + 4 L^2 d`` (QKV, output
projection, feed-forward, ``QK^T`` and ``AV`` without exploiting causality), plus the
full-softmax output layer ``2 T d n_items`` over the epoch's ``T`` target positions.

The RecBole baseline is added by a separate script: import :func:`dwrec_figures` and put its
dict beside RecBole's.

Usage::

    python benchmarks/train_speed.py [--device auto] [--steps 20] [--write docs/bench.md]
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ml-1m"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="ML-1M folder")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "ml-1m-5core")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: one full epoch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (default: bf16)")
    parser.add_argument("--write", type=Path, help="write a markdown report here")
    return parser.parse_args(argv)


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a large square ``torch.mm`` on ``device`` (TF32 off for float32)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for _ in range(2):
            torch.mm(a, b)
        _sync(device)
        reps = 20 if device.type == "cuda" else 5
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        _sync(device)
        seconds = time.perf_counter() - start
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * n**3 * reps / seconds


def epoch_forward_flops(
    n_sequences: int, n_targets: int, length: int, hidden: int, ffn: int, layers: int, n_items: int
) -> float:
    """Forward matmul FLOPs of one epoch (see the module docstring)."""
    per_block = 2 * length * (4 * hidden**2 + 2 * hidden * ffn) + 4 * length**2 * hidden
    return n_sequences * layers * per_block + 2 * n_targets * hidden * n_items


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(args: argparse.Namespace):
    import dwrec

    if not args.source.exists():
        sys.exit(f"ML-1M not found at {args.source} (pass --source)")
    result = dwrec.prepare(
        "movielens-1m",
        source=args.source,
        out=args.cache,
        min_user_interactions=5,
        min_item_interactions=5,
    )
    return result.path


def _trainer(args: argparse.Namespace, dataset_dir: Path, run_dir: Path):
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.devices import resolve_device
    from dwrec.train.config import resolve
    from dwrec.train.progress import TrainingDisplay
    from dwrec.train.trainer import OpenRun, Trainer

    config = resolve(
        {
            "model": "sasrec",
            "loss": "ce",
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": args.heads,
            "max_len": args.max_len,
            "batch_size": args.batch_size,
            "device": args.device,
            "compile": args.compile,
            "amp": not args.no_amp,
        }
    )
    dataset = load_dataset(dataset_dir)
    split = make_split(dataset, "loo")
    run = OpenRun(config, run_dir, dataset, split, resolve_device(config.train.device))
    return Trainer(run, TrainingDisplay(quiet=True), None)


def dwrec_figures(args: argparse.Namespace) -> dict:
    """Run the benchmark; return dwrec's figures as a flat dict (the RecBole script's hook)."""
    from dwrec.train.batches import batch_slices, n_batches

    dataset_dir = _prepare(args)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(args, dataset_dir, Path(tmp))
        device, model = trainer.device, trainer.model
        windows = trainer.windows
        n_sequences = len(windows)
        n_targets = len(windows.target_items())
        steps_per_epoch = n_batches(n_sequences, args.batch_size)
        slices = list(batch_slices(n_sequences, args.batch_size, torch.Generator().manual_seed(0)))
        timed = steps_per_epoch if args.steps <= 0 else min(args.steps, steps_per_epoch)
        model.train()
        for index in slices[: args.warmup]:
            trainer._step(index)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        positions = sequences = 0
        start = time.perf_counter()
        for index in slices[:timed]:
            _, n_positions = trainer._step(index)
            positions += n_positions
            sequences += len(index)
        _sync(device)
        seconds = time.perf_counter() - start
        peak_memory = (
            torch.cuda.max_memory_allocated(device)
            if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        n_items = model.n_items
        ffn = model.config.ffn or 4 * model.config.hidden
    peak = matmul_peak(device)
    forward = epoch_forward_flops(
        n_sequences, n_targets, args.max_len, args.hidden, ffn, args.layers, n_items
    )
    epoch_seconds = seconds * steps_per_epoch / timed if timed < steps_per_epoch else seconds
    bound_seconds = 3 * forward / peak
    return {
        "tool": "dwrec",
        "device": _device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "amp_bf16": trainer.amp,
        "compile": args.compile,
        "users_sequences": n_sequences,
        "items": n_items,
        "target_positions_per_epoch": n_targets,
        "steps_per_epoch": steps_per_epoch,
        "timed_steps": timed,
        "positions_per_s": positions / seconds,
        "sequences_per_s": sequences / seconds,
        "epoch_seconds": epoch_seconds,
        "epoch_extrapolated": timed < steps_per_epoch,
        "peak_memory_mib": peak_memory / 2**20,
        "fp32_matmul_peak_tflops": peak / 1e12,
        "epoch_train_tflop": 3 * forward / 1e12,
        "flop_bound_epoch_seconds": bound_seconds,
        "ratio_measured_to_bound": epoch_seconds / bound_seconds,
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def markdown(figures: dict, command: str) -> str:
    rows = "\n".join(f"| {key} | {_fmt(value)} |" for key, value in figures.items())
    return (
        "# dwrec training speed: SASRec + CE on MovieLens-1M\n\n"
        f"Machine: {figures['device']}, torch {figures['torch']}, {platform.platform()}\n\n"
        f"Command: `{command}`\n\n| figure | value |\n|---|---|\n{rows}\n"
    )


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = dwrec_figures(args)
    for key, value in figures.items():
        print(f"{key:>28}: {_fmt(value)}")
    if args.write:
        command = "python benchmarks/train_speed.py " + " ".join(argv or sys.argv[1:])
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(markdown(figures, command.strip()), encoding="utf-8")
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
