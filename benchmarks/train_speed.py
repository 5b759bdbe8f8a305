"""Training throughput of SASRec + full-softmax CE on MovieLens-1M, against RecBole and the
machine's peak.

Measures the trainer's own step (:meth:`dwrec.train.trainer.Trainer._step`: batch slicing,
forward, logits at target positions, loss, backward, AdamW) on the ML-1M excerpt
(5-core; SASRec 64-d, 2 blocks, 2 heads, length 200, batch 128 by default) and reports:

* target positions/s and sequences/s over the timed steps (after warm-up);
* peak memory (CUDA: ``max_memory_allocated``; CPU: this process's peak RSS; RecBole runs
  in a separate process, whose peak RSS is its own);
* the fp32 matmul peak of the same machine, timed in the same run (a large ``torch.mm``);
* the FLOP-bound epoch time: the model's forward matmul FLOPs per epoch counted
  analytically, times 3 for forward + backward, divided by that peak; and
  ratio = measured epoch time / FLOP-bound epoch time (1.0 would be perfect).

FLOPs per epoch (every window is computed at its full length ``L``, padding included, as the
kernels do): per sequence and block ``2L(3d^2 + d^2 + 2 d f) + 4 L^2 d`` (QKV, output
projection, feed-forward, ``QK^T`` and ``AV`` without exploiting causality), plus the
full-softmax output layer ``2 T d n_items`` over the epoch's ``T`` target positions.

``--recbole`` also times RecBole 1.2.1's SASRec (same sizes, CE, AdamW, batch of 128 prefix
samples) on the same interactions in the same run, through RecBole's own
``Trainer._train_epoch`` on the same number of batches, in its venv (see ``dwrec/baselines/recbole.py``),
with the same torch thread count. The two sides take turns of ``--chunk`` timed batches
(RecBole's process waits idle during dwrec's turns), so a load change on a shared machine
hits both alike. Units: RecBole's SASRec trains one sample per prefix of each training
sequence and computes the loss at its last position only, so one RecBole sequence = one
next-item training example; dwrec trains one window per user and computes
the loss at every position, so one dwrec sequence = up to ``max_len`` training examples.
The comparable unit is the training example (a next-item target with its preceding
history, at most ``max_len`` items): "loss positions/s" counts exactly that for both.

``--part time-to-ndcg`` (or ``both``) trains both libraries on MovieLens-100K (5-core,
same model and optimiser) for a fixed budget of training time each, in alternating turns (a
dwrec epoch, then ``--valid-every`` RecBole batches), validating after every turn (history
masked, dwrec's tie rule, for both; validation time not counted), and reports how long
each took to first reach a common validation NDCG@10: the lower of the two libraries' best
values within the budget.

Usage::

    python benchmarks/train_speed.py [--steps 10] [--threads 2] [--recbole] [--write FILE]
    python benchmarks/train_speed.py --part time-to-ndcg --budget 150 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import cpu_name, load_average, write_output

from dwrec.runtime import tune_malloc

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "ml-1m"
DEFAULT_SMALL_SOURCE = REPO.parent / "shared" / "data" / "ml-100k"
PARTS = ("throughput", "time-to-ndcg", "both")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="ML-1M folder")
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "ml-1m-5core")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, each side")
    parser.add_argument("--steps", type=int, default=0, help="timed steps (0: one full epoch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (default: bf16)")
    parser.add_argument(
        "--part", choices=PARTS, default="throughput", help="what to measure (default: throughput)"
    )
    parser.add_argument(
        "--recbole", action="store_true", help="time RecBole's SASRec in the same run"
    )
    parser.add_argument(
        "--chunk",
        type=int,
        default=2,
        help="with --recbole: timed steps per turn; the two sides alternate turns",
    )
    parser.add_argument("--venv", type=Path, help="RecBole venv (default .bench/recbole-venv)")
    parser.add_argument(
        "--budget", type=float, default=150.0, help="time-to-ndcg: training seconds per side"
    )
    parser.add_argument(
        "--small-source", type=Path, default=DEFAULT_SMALL_SOURCE, help="ML-100K folder"
    )
    parser.add_argument(
        "--valid-every",
        type=int,
        default=25,
        help="time-to-ndcg: RecBole batches between validations (dwrec: every epoch)",
    )
    parser.add_argument("--write", type=Path, help="write a markdown report here")
    args = parser.parse_args(argv)
    for flag in ("threads", "batch_size", "max_len", "chunk", "valid_every"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.budget <= 0:
        parser.error("--budget must be > 0")
    return args


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


def _prepare(args: argparse.Namespace, name: str = "movielens-1m") -> Path:
    """Prepare (once; ``dwrec.prepare`` reuses an identical dataset) the 5-core dataset."""
    import dwrec

    source, out = (
        (args.source, args.cache)
        if name == "movielens-1m"
        else (args.small_source, args.cache.parent / "ml-100k-5core")
    )
    if not source.exists():
        flag = "--source" if name == "movielens-1m" else "--small-source"
        sys.exit(f"{name} files not found at {source} (pass {flag})")
    result = dwrec.prepare(
        name, source=source, out=out, min_user_interactions=5, min_item_interactions=5
    )
    return result.path


def _trainer(args: argparse.Namespace, dataset_dir: Path, run_dir: Path):
    """dwrec's Trainer with the settings RecBole gets from ``dwrec.baselines.recbole.sasrec_config``."""
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
            "dropout": 0.2,
            "batch_size": args.batch_size,
            "lr": 1e-3,
            "weight_decay": 0.0,
            "seed": 0,
            "device": args.device,
            "compile": args.compile,
            "amp": not args.no_amp,
        }
    )
    dataset = load_dataset(dataset_dir)
    split = make_split(dataset, "loo")
    run = OpenRun(config, run_dir, dataset, split, resolve_device(config.train.device))
    return Trainer(run, TrainingDisplay(quiet=True), None)


def dwrec_figures(args: argparse.Namespace, between: Callable[[int], None] | None = None) -> dict:
    """Run the benchmark; return dwrec's figures as a flat dict.

    ``between(n)``, when given, is called untimed after every ``--chunk`` timed steps (``n``
    = the steps just timed): the RecBole side runs the same number of its batches there, so
    both are timed in alternation under the same machine load.
    """
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
            trainer.step(index)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        positions = sequences = 0
        seconds = 0.0
        chunk = args.chunk if between is not None else timed
        for begin in range(0, timed, chunk):
            part = slices[begin : min(begin + chunk, timed)]
            start = time.perf_counter()
            for index in part:
                _, n_positions = trainer.step(index)
                positions += n_positions
                sequences += len(index)
            _sync(device)
            seconds += time.perf_counter() - start
            if between is not None:
                between(len(part))
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


# ---------------------------------------------------------------- the same run, both libraries


def _recbole_module():
    from dwrec.baselines import recbole

    return recbole


def _recbole_atomic(dataset_dir: Path, name: str) -> Path:
    """Export ``dataset_dir`` as RecBole atomic files under .bench/recbole-atomic."""
    from dwrec.data.export import export_recbole

    return export_recbole(dataset_dir, REPO / ".bench" / "recbole-atomic", name)


def _recbole_venv(args: argparse.Namespace) -> Path:
    _recbole = _recbole_module()
    venv = args.venv or REPO / _recbole.DEFAULT_VENV
    _recbole.ensure_venv(venv)
    return venv


def sasrec_session(args: argparse.Namespace, dataset_dir: Path, name: str):
    """A RecBole process with its SASRec (the same sizes; see ``dwrec.baselines.recbole.sasrec_config``)
    built on ``dataset_dir``'s interactions, ready for timed requests."""
    _recbole = _recbole_module()
    venv = _recbole_venv(args)
    atomic = _recbole_atomic(dataset_dir, name)
    config = _recbole.sasrec_config(
        epochs=1,
        patience=1,
        batch_size=args.batch_size,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        max_len=args.max_len,
    )
    return _recbole.RecBoleSession(atomic, name, config, threads=args.threads, venv_path=venv)


def both_throughputs(args: argparse.Namespace, dataset_dir: Path) -> tuple[dict, dict]:
    """dwrec's and RecBole's training throughput, timed in alternating turns of ``--chunk``
    batches (after ``--warmup`` untimed batches each)."""
    with sasrec_session(args, dataset_dir, "dwrec_ml1m") as session:
        session.call({"op": "train", "batches": args.warmup})
        turns: list[dict] = []
        ours = dwrec_figures(
            args, between=lambda n: turns.append(session.call({"op": "train", "batches": n}))
        )
        rss = session.call({"op": "rss"})["peak_rss_bytes"]
        info = session.info
    seconds = sum(turn["seconds"] for turn in turns)
    samples = sum(turn["samples"] for turn in turns)
    per_second = samples / seconds
    theirs = {
        "tool": "RecBole",
        "threads": info["threads"],
        "versions": info["versions"],
        "sequences_per_epoch": info["train_samples"],
        "target_positions_per_epoch": info["train_samples"],
        "steps_per_epoch": info["train_batches_per_epoch"],
        "timed_steps": turns[-1]["batches_total"] - args.warmup,
        "sequences_per_s": per_second,
        "positions_per_s": per_second,
        "epoch_seconds": info["train_samples"] / per_second,
        "peak_memory_mib": rss / 2**20,
        "data_seconds": info["data_seconds"],
        "turns": len(turns),
    }
    return ours, theirs


def throughput_markdown(ours: dict, theirs: dict | None, batch_size: int) -> str:
    """The dwrec vs RecBole table (or dwrec's figures alone)."""
    if theirs is None:
        rows = "\n".join(f"| {key} | {_fmt(value)} |" for key, value in ours.items())
        return f"| figure | value |\n|---|---|\n{rows}\n"
    ms_per_k = 1000 * 1000  # milliseconds per 1,000 targets from targets/s
    lines = [
        "| | dwrec | RecBole | dwrec / RecBole |",
        "|---|---:|---:|---:|",
    ]

    def row(label: str, a: float, b: float, *, higher_better: bool = True) -> None:
        ratio = a / b if higher_better else b / a
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} | {ratio:.1f}x |")

    row(
        "loss positions (= training examples) / s",
        ours["positions_per_s"],
        theirs["positions_per_s"],
    )
    row(
        "ms per 1,000 training examples",
        ms_per_k / ours["positions_per_s"],
        ms_per_k / theirs["positions_per_s"],
        higher_better=False,
    )
    row("sequences (forward passes) / s", ours["sequences_per_s"], theirs["sequences_per_s"])
    lines.append(
        f"| sequences per epoch | {ours['users_sequences']:,} | "
        f"{theirs['sequences_per_epoch']:,} | |"
    )
    lines.append(
        f"| training examples per epoch | {ours['target_positions_per_epoch']:,} | "
        f"{theirs['target_positions_per_epoch']:,} | |"
    )
    row(
        "epoch time, extrapolated (s)",
        ours["epoch_seconds"],
        theirs["epoch_seconds"],
        higher_better=False,
    )
    lines.append(
        f"| peak RSS of the process (MiB) | {ours['peak_memory_mib']:,.0f} | "
        f"{theirs['peak_memory_mib']:,.0f} | |"
    )
    lines.append(
        f"| timed steps (batches of {batch_size}) | {ours['timed_steps']} | "
        f"{theirs['timed_steps']} | |"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- time to a validation NDCG@10


def both_time_to_ndcg(args: argparse.Namespace, dataset_dir: Path) -> tuple[dict, dict]:
    """Train both for ``--budget`` seconds of training time each, in alternating turns (a
    dwrec epoch, then ``--valid-every`` RecBole batches), validating after every turn
    (history masked, dwrec's tie rule; validation time not counted). Returns both curves."""
    from dwrec.train.batches import batch_slices

    ours: list[dict] = []
    theirs: list[dict] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        sasrec_session(args, dataset_dir, "dwrec_ml100k") as session,
    ):
        trainer = _trainer(args, dataset_dir, Path(tmp))
        n_windows = len(trainer.windows)
        n_targets = len(trainer.windows.target_items())
        valid_cases = len(trainer.run_info.split.valid)
        dwrec_seconds, recbole_seconds, epochs, sequences = 0.0, 0.0, 0, 0
        while dwrec_seconds < args.budget or recbole_seconds < args.budget:
            if dwrec_seconds < args.budget:
                slices = list(batch_slices(n_windows, args.batch_size, trainer.data_generator))
                trainer.model.train()
                started = time.perf_counter()
                for index in slices:
                    trainer.step(index)
                    sequences += len(index)
                dwrec_seconds += time.perf_counter() - started
                epochs += 1
                valid = trainer.validate()
                ours.append(
                    {
                        "train_seconds": dwrec_seconds,
                        "epochs": epochs,
                        "samples": sequences,
                        "ndcg@10": valid["ndcg@10"],
                    }
                )
            if recbole_seconds < args.budget:
                turn = session.call({"op": "train", "batches": args.valid_every})
                recbole_seconds += turn["seconds"]
                valid = session.call({"op": "eval", "split": "valid", "masked": True})
                theirs.append(
                    {
                        "train_seconds": recbole_seconds,
                        "epochs": turn["epochs_total"],
                        "samples": turn["batches_total"] * args.batch_size,
                        "ndcg@10": valid["ndcg@10"],
                    }
                )
            print(
                f"dwrec {dwrec_seconds:.0f}s NDCG@10 {ours[-1]['ndcg@10']:.4f} | RecBole "
                f"{recbole_seconds:.0f}s NDCG@10 {theirs[-1]['ndcg@10']:.4f}",
                file=sys.stderr,
            )
        info = session.info
    dwrec_side = {
        "curve": ours,
        "train_samples": n_windows,
        "train_targets": n_targets,
        "valid_cases": valid_cases,
    }
    recbole_side = {
        "curve": theirs,
        "train_samples": info["train_samples"],
        "valid_cases": info["valid_cases"],
        "valid_every": args.valid_every,
    }
    return dwrec_side, recbole_side


def first_reaching(curve: list[dict], target: float) -> dict | None:
    """The first validation point whose NDCG@10 is at least ``target``."""
    return next((point for point in curve if point["ndcg@10"] >= target), None)


def time_to_ndcg_markdown(ours: dict, theirs: dict, budget: float) -> str:
    best_ours = max(point["ndcg@10"] for point in ours["curve"])
    best_theirs = max(point["ndcg@10"] for point in theirs["curve"])
    target = min(best_ours, best_theirs)
    a, b = first_reaching(ours["curve"], target), first_reaching(theirs["curve"], target)
    lines = [
        f"Common target: validation NDCG@10 >= {target:.4f} (the lower of the two libraries' "
        f"best within {budget:.0f} s of training time each).",
        "",
        "| | dwrec | RecBole | RecBole / dwrec |",
        "|---|---:|---:|---:|",
        f"| best validation NDCG@10 within the budget | {best_ours:.4f} | {best_theirs:.4f} | |",
        f"| training time to reach the target (s) | {a['train_seconds']:.1f} | "
        f"{b['train_seconds']:.1f} | {b['train_seconds'] / a['train_seconds']:.1f}x |",
        f"| ... in epochs | {a['epochs']:.2f} | {b['epochs']:.2f} | |",
        f"| ... in sequences seen | {a['samples']:,} | {b['samples']:,} | |",
        f"| validation points in the budget | {len(ours['curve'])} (every epoch) | "
        f"{len(theirs['curve'])} (every {theirs.get('valid_every', '?')} batches) | |",
        f"| sequences per epoch | {ours['train_samples']:,} | {theirs['train_samples']:,} | |",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- report


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} CPUs visible, load average {load_average()}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_malloc()  # as the dwrec command does (dwrec/runtime.py)
    command = "python benchmarks/train_speed.py " + shlex.join(argv)
    sections = [
        "# SASRec + CE training speed: dwrec"
        + (" vs RecBole" if args.recbole or args.part != "throughput" else ""),
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {machine()} (at the start)",
        f"- torch {torch.__version__}, {args.threads} thread(s) each side, Python "
        f"{platform.python_version()}",
        f"- command: `{command.strip()}`",
        "",
    ]
    if args.part in ("throughput", "both"):
        dataset_dir = _prepare(args)
        if args.recbole:
            ours, theirs = both_throughputs(args, dataset_dir)
        else:
            ours, theirs = dwrec_figures(args), None
        for key, value in ours.items():
            print(f"{key:>28}: {_fmt(value)}", file=sys.stderr)
        sections += [
            "## Throughput on the ML-1M excerpt (5-core)",
            "",
            throughput_markdown(ours, theirs, args.batch_size),
        ]
        if theirs is not None:
            sections += [
                f"RecBole {theirs['versions']['recbole']} (torch {theirs['versions']['torch']}), "
                f"timed in {theirs['turns']} turns of {args.chunk} batches alternating with "
                f"dwrec's; its data preparation (create_dataset + data_preparation, not timed "
                f"above) took {theirs['data_seconds']:.1f} s. dwrec: FLOP-bound epoch "
                f"{ours['flop_bound_epoch_seconds']:.1f} s at the same run's fp32 matmul peak "
                f"{ours['fp32_matmul_peak_tflops']:.3f} TFLOP/s; measured / bound "
                f"{ours['ratio_measured_to_bound']:.1f}.",
                "",
            ]
    if args.part in ("time-to-ndcg", "both"):
        small_dir = _prepare(args, "movielens-100k")
        ours_curve, theirs_curve = both_time_to_ndcg(args, small_dir)
        sections += [
            "## Time to a common validation NDCG@10 on MovieLens-100K (5-core)",
            "",
            time_to_ndcg_markdown(ours_curve, theirs_curve, args.budget),
            "Curves (training seconds, validation NDCG@10): dwrec "
            + ", ".join(
                f"({p['train_seconds']:.0f}, {p['ndcg@10']:.4f})" for p in ours_curve["curve"]
            )
            + "; RecBole "
            + ", ".join(
                f"({p['train_seconds']:.0f}, {p['ndcg@10']:.4f})" for p in theirs_curve["curve"]
            )
            + ".",
            "",
        ]
    sections.append(f"Load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}.\n")
    text = "\n".join(sections)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        write_output(args.write, text)
        print(f"wrote {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
