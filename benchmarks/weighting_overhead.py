"""What does the ``dynamic`` domain weighting cost per training step, against ``generic``?

One trainer (same model, data, seed, objective) takes real training steps
(``dwrec.train.trainer.Trainer._step``: forward, objective, reduction, backward, AdamW step,
weighting update) while its weighting is switched between ``generic`` and ``dynamic`` step
by step. Each pair of steps uses the same batch, in the order AB, BA, AB, ... so that drift
of the machine (other processes, clocks) falls on both arms alike. Reported:

- step time of each arm (median and interquartile range);
- the step-time overhead ``median_k(t_dynamic,k / t_generic,k) - 1`` over the paired
  steps, with its interquartile range and a bootstrap 95% interval of that median;
- the weighting's own cost measured alone (``reduce`` + ``update`` on each batch's real
  positives, repeated), as a share of the median ``generic`` step: the precise figure when
  the step-time noise is larger than the overhead.

Dataset: ``--dataset DIR`` (a prepared dataset dir); by default MovieLens-1M is prepared from
``../shared/data/ml-1m`` into a temporary folder (genres are the domains), or, without it,
the ``synthetic`` dataset. Nothing is kept.

Usage::

    python benchmarks/weighting_overhead.py [--pairs 30] [--device auto] [--write FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ML1M = REPO.parent / "shared" / "data" / "ml-1m"


def prepare_dataset(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    """A prepared dataset dir and a line saying what it is."""
    import dwrec

    if args.dataset is not None:
        return Path(args.dataset), f"prepared dataset {args.dataset}"
    out = scratch / "dataset"
    if DEFAULT_ML1M.is_dir():
        dwrec.prepare("movielens-1m", source=DEFAULT_ML1M, out=out)
        return out, f"MovieLens-1M from {DEFAULT_ML1M} (the excerpt in ../shared/data)"
    dwrec.prepare("synthetic", out=out)
    return out, "synthetic (defaults; ../shared/data/ml-1m not found)"


def build_trainer(args: argparse.Namespace, dataset_dir: Path, scratch: Path):
    """A real trainer whose loss is ``dynamic`` over ``args.objective``."""
    from dwrec.train.config import resolve
    from dwrec.train.progress import TrainingDisplay
    from dwrec.train.trainer import Trainer, open_new

    options = {
        "dataset": str(dataset_dir),
        "model": args.model,
        "loss": "dynamic",
        "objective": args.objective,
        "out": str(scratch / "run"),
        "device": args.device,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "hidden": args.hidden,
        "seed": args.seed,
        **({} if args.layers is None else {"layers": args.layers}),
        "epochs": 1,
    }
    display = TrainingDisplay(quiet=True)
    return Trainer(open_new(resolve(options), display), display, None)


def generic_twin(trainer):
    """A ``generic`` weighting built like the trainer's own."""
    from dwrec.losses.config import LossConfig
    from dwrec.losses.registry import build_weighting

    dataset = trainer.run_info.dataset
    return build_weighting(
        LossConfig(loss="generic"),
        domain_names=dataset.domain_names,
        item_domain_indptr=dataset.item_domain_indptr,
        item_domain_indices=dataset.item_domain_indices,
        train_items=trainer.windows.target_items(),
        train_users=trainer.windows.target_users(),
        n_items=dataset.n_items,
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(trainer, weighting, window_index: torch.Tensor) -> float:
    trainer.weighting = weighting
    synchronize(trainer.device)
    started = time.perf_counter()
    trainer.step(window_index)
    synchronize(trainer.device)
    return time.perf_counter() - started


def batch_positives(trainer, window_index: torch.Tensor) -> torch.Tensor:
    batch = trainer.model.training_batch(trainer.windows.tokens[window_index], torch.Generator())
    return batch.targets[batch.targets >= 0].to(trainer.device)


def weighting_alone(weighting, positives: torch.Tensor, repeats: int) -> float:
    """Seconds per ``reduce`` (with its backward) + ``update`` on ``positives``."""
    losses = torch.rand(positives.shape[0], device=positives.device, requires_grad=True)
    synchronize(positives.device)
    started = time.perf_counter()
    for _ in range(repeats):
        batch = positives.clone()  # a new tensor, as each step has: no cache carries over
        weighting.reduce(losses, batch).backward()
        weighting.update(batch)
    synchronize(positives.device)
    return (time.perf_counter() - started) / repeats


def bootstrap_median_interval(values: np.ndarray, seed: int = 0, draws: int = 2000):
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(draws, len(values))), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def quartiles(values) -> tuple[float, float]:
    return float(np.percentile(values, 25)), float(np.percentile(values, 75))


def measure(args: argparse.Namespace, trainer) -> dict:
    from dwrec.train.batches import batch_slices

    arms = {"generic": generic_twin(trainer), "dynamic": trainer.weighting}
    slices = list(batch_slices(len(trainer.windows), args.batch_size, torch.Generator()))
    slices = [s for s in slices if len(s) == args.batch_size] or slices
    for index in range(args.warmup):
        for weighting in arms.values():
            timed_step(trainer, weighting, slices[index % len(slices)])
    times = {name: [] for name in arms}
    for pair in range(args.pairs):
        window_index = slices[pair % len(slices)]
        order = ("generic", "dynamic") if pair % 2 == 0 else ("dynamic", "generic")
        for name in order:
            times[name].append(timed_step(trainer, arms[name], window_index))
    alone = {name: [] for name in arms}
    for pair in range(min(args.pairs, 10)):
        positives = batch_positives(trainer, slices[pair % len(slices)])
        for name, weighting in arms.items():
            alone[name].append(weighting_alone(weighting, positives, args.repeats))
    return {"times": times, "alone": alone, "positions": int(positives.shape[0])}


def summarise(result: dict) -> dict:
    generic = np.array(result["times"]["generic"])
    dynamic = np.array(result["times"]["dynamic"])
    ratios = dynamic / generic
    step = float(np.median(generic))
    alone_extra = np.median(result["alone"]["dynamic"]) - np.median(result["alone"]["generic"])
    return {
        "generic_median_s": step,
        "generic_iqr_s": quartiles(generic),
        "dynamic_median_s": float(np.median(dynamic)),
        "dynamic_iqr_s": quartiles(dynamic),
        "overhead_pct": 100 * (float(np.median(ratios)) - 1),
        "overhead_iqr_pct": tuple(100 * (q - 1) for q in quartiles(ratios)),
        "overhead_ci_pct": tuple(100 * (q - 1) for q in bootstrap_median_interval(ratios)),
        "alone_generic_ms": 1e3 * float(np.median(result["alone"]["generic"])),
        "alone_dynamic_ms": 1e3 * float(np.median(result["alone"]["dynamic"])),
        "alone_extra_pct": 100 * float(alone_extra) / step,
        "pairs": len(ratios),
    }


def machine(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return (
        f"{device.type} ({name or platform.machine()}), {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def report(args, summary: dict, dataset_line: str, trainer, positions: int) -> str:
    from dwrec.io import provenance

    s = summary
    lines = [
        "# Dynamic weighting overhead",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{' '.join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])}`",
        f"- machine: {machine(trainer.device)}",
        f"- dataset: {dataset_line}; {len(trainer.run_info.dataset.domain_names)} domains",
        f"- model: {args.model}, hidden {args.hidden}, "
        f"{getattr(trainer.model.config, 'layers', '-')} block(s), max_len {args.max_len}, batch "
        f"{args.batch_size} sequences (~{positions} target positions), objective "
        f"{args.objective}, AMP {'on' if trainer.amp else 'off'}",
        f"- {s['pairs']} paired steps per arm (order alternating AB/BA), {args.warmup} warm-up pairs",
        f"- dwrec {provenance()['dwrec_version']}, commit {provenance()['git_commit']}",
        "",
        "| arm | median step (ms) | IQR (ms) |",
        "|---|---|---|",
        f"| generic | {1e3 * s['generic_median_s']:.1f} | "
        f"{1e3 * s['generic_iqr_s'][0]:.1f} - {1e3 * s['generic_iqr_s'][1]:.1f} |",
        f"| dynamic | {1e3 * s['dynamic_median_s']:.1f} | "
        f"{1e3 * s['dynamic_iqr_s'][0]:.1f} - {1e3 * s['dynamic_iqr_s'][1]:.1f} |",
        "",
        f"Step-time overhead of `dynamic` (median of paired ratios): **{s['overhead_pct']:+.2f}%** "
        f"(IQR {s['overhead_iqr_pct'][0]:+.2f}% to {s['overhead_iqr_pct'][1]:+.2f}%, bootstrap "
        f"95% interval of the median {s['overhead_ci_pct'][0]:+.2f}% to "
        f"{s['overhead_ci_pct'][1]:+.2f}%).",
        "",
        f"The weighting alone (reduce + backward of the reduction + update, {args.repeats} "
        f"repeats per batch): generic {s['alone_generic_ms']:.3f} ms, dynamic "
        f"{s['alone_dynamic_ms']:.3f} ms per step; the difference is "
        f"**{s['alone_extra_pct']:.3f}%** of a median generic step. Target: at most 1%.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", help="a prepared dataset dir (default: ML-1M excerpt)")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--objective", default="ce")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument(
        "--layers", type=int, help="transformer blocks (default: the model's own default)"
    )
    parser.add_argument("--pairs", type=int, default=30, help="paired steps per arm")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=50, help="repeats of the weighting alone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dwrec-weighting-bench-") as scratch:
        os.environ["DWREC_HOME"] = str(Path(scratch) / "home")
        dataset_dir, dataset_line = prepare_dataset(args, Path(scratch))
        trainer = build_trainer(args, dataset_dir, Path(scratch))
        result = measure(args, trainer)
        text = report(args, summarise(result), dataset_line, trainer, result["positions"])
    print(text)
    if args.write:
        from dwrec.io import atomic_path

        with atomic_path(args.write) as tmp:
            tmp.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
