"""Scale: one training epoch on large synthetic datasets, on CPU, with bounded memory.

Measures, each point in a fresh subprocess (so one point's memory never counts against
another's):

* ``prepare``: ``dwrec.prepare("synthetic", ...)`` wall time and peak RSS (its own process);
* ``train``: loading the dataset, the split and the training windows (setup), then the
  trainer's own steps (:meth:`dwrec.train.trainer.Trainer._step`: batch slice, forward,
  loss, backward, AdamW) over one epoch: wall time and the process's peak RSS.

Two cost curves, each against its smallest point measured in the same run (ratio 1.0):

* ``interactions``: about 0.5M, 2M and 8M interactions (10K, 40K, 160K users, mean length
  42) at a fixed 100K-item catalogue;
* ``catalogue``: 10K, 100K and 500K items at a fixed 2M interactions (40K users).

Then the full size (1M users, 500K items, about 50M interactions) is projected from the
curve (steps x per-step time of the 500K-item point, plus the setup time scaled by
interactions) and, with ``--full``, measured; ``--full-max-steps N`` times only the first
``N`` steps of that epoch and extrapolates (labelled as such in the table).

The model is SASRec with ``sampled-softmax`` (256 shared uniform negatives plus the batch's
distinct positives), which never builds ``[positions x items]`` logits; hidden 32, max_len
50 and batch 128 by default.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/scale.py --curve --full --write docs/scale.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import cpu_name, write_output

REPO = Path(__file__).resolve().parents[1]
MEAN_LENGTH = 42  # log-normal lengths around 42, clipped to [5, 336]: ~50.2 per user
INTERACTION_CURVE = [(10_000, 100_000), (40_000, 100_000), (160_000, 100_000)]
CATALOGUE_CURVE = [(40_000, 10_000), (40_000, 100_000), (40_000, 500_000)]
FULL = (1_000_000, 500_000)
SOFTMAX_MODES = {
    "full": "plain full softmax (every logit materialised)",
    "chunked": "chunked, checkpointed through the model's score (models without a linear form)",
    "chunked-linear": "chunked, hand-written backward (models with linear_factors: all four)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "scale")
    parser.add_argument("--curve", action="store_true", help="measure both cost curves")
    parser.add_argument("--full", action="store_true", help="measure the full size too")
    parser.add_argument(
        "--full-max-steps",
        type=int,
        default=0,
        help="time only this many steps of the full-size epoch and extrapolate (0: all)",
    )
    parser.add_argument(
        "--max-steps", type=int, default=0, help="same, for the curve points (0: all)"
    )
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--negatives", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per point")
    parser.add_argument(
        "--shrink", type=int, default=1, help="divide every size by this (smoke runs)"
    )
    parser.add_argument("--write", type=Path, help="write the markdown report here")
    parser.add_argument(
        "--json",
        type=Path,
        help="raw figures, rewritten after every point [WORK/last-results.json]",
    )
    parser.add_argument(
        "--report-from", type=Path, help="only print/write the report of a saved --json file"
    )
    # internal: one point in this (fresh) process
    parser.add_argument(
        "--softmax",
        action="store_true",
        help="measure the ce objective's full vs chunked softmax (time, peak RSS)",
    )
    parser.add_argument("--softmax-positions", type=int, default=1024)
    parser.add_argument("--softmax-items", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--softmax-chunk", type=int, default=8192)
    parser.add_argument("--point", choices=["prepare", "train", "softmax"], help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=list(SOFTMAX_MODES), help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- points (each runs in its own process)


def point_prepare(users: int, items: int, out: Path) -> dict:
    import dwrec

    start = time.perf_counter()
    result = dwrec.prepare(
        "synthetic",
        out=out,
        min_user_interactions=0,
        min_item_interactions=0,
        options={"users": users, "items": items, "mean_length": MEAN_LENGTH},
    )
    counts = result.meta["counts"]
    return {
        "users": counts["users"],
        "items": counts["items"],
        "interactions": counts["interactions"],
        "prepare_seconds": time.perf_counter() - start,
        "prepare_peak_rss_mib": _peak_rss_mib(),
        "skipped": result.skipped,
    }


def point_train(args: argparse.Namespace) -> dict:
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.devices import resolve_device
    from dwrec.train.batches import batch_slices
    from dwrec.train.config import resolve
    from dwrec.train.progress import TrainingDisplay
    from dwrec.train.trainer import OpenRun, Trainer

    start = time.perf_counter()
    config = resolve(
        {
            "model": "sasrec",
            "loss": "sampled-softmax",
            "negatives": args.negatives,
            "hidden": args.hidden,
            "layers": args.layers,
            "heads": 2,
            "max_len": args.max_len,
            "batch_size": args.batch_size,
            "device": "cpu",
        }
    )
    dataset = load_dataset(args.dataset)
    split = make_split(dataset, "loo")
    with tempfile.TemporaryDirectory() as tmp:
        run = OpenRun(config, Path(tmp), dataset, split, resolve_device("cpu"))
        trainer = Trainer(run, TrainingDisplay(quiet=True), None)
        setup_seconds = time.perf_counter() - start
        setup_rss = _rss_mib()
        slices = list(batch_slices(len(trainer.windows), args.batch_size, trainer.data_generator))
        timed = slices if args.steps <= 0 else slices[: args.steps]
        trainer.model.train()
        positions, loss_sum = 0, 0.0
        clock = time.perf_counter()
        for index in timed:
            loss, n_positions = trainer.step(index)
            positions += n_positions
            loss_sum += float(loss) * n_positions
        seconds = time.perf_counter() - clock
        if not math.isfinite(loss_sum):
            raise SystemExit("training diverged")
    return {
        "users": dataset.n_users,
        "items": dataset.n_items,
        "interactions": len(dataset.item_ids),
        "windows": len(trainer.windows),
        "steps_per_epoch": len(slices),
        "timed_steps": len(timed),
        "timed_positions": positions,
        "setup_seconds": setup_seconds,
        "setup_rss_mib": setup_rss,
        "train_seconds": seconds,
        "step_seconds": seconds / max(len(timed), 1),
        "epoch_seconds": seconds * len(slices) / max(len(timed), 1),
        "extrapolated": len(timed) < len(slices),
        "mean_loss": loss_sum / max(positions, 1),
        "peak_rss_mib": _peak_rss_mib(),
    }


def point_softmax(args: argparse.Namespace) -> dict:
    """One forward + backward of ``ce`` over a SASRec item table, in this process:
    seconds and the peak RSS above the RSS before the loss (model and states included in
    the baseline)."""
    import torch

    torch.set_num_threads(args.threads)
    from dwrec.losses.base import ObjectiveInput
    from dwrec.losses.objectives import CrossEntropy
    from dwrec.models.base import ModelConfig
    from dwrec.models.registry import build_model
    from dwrec.train.trainer import ModelScorer

    class ScoreOnlyScorer(ModelScorer):
        """Hides the model's linear form: the chunks go through ``score`` (checkpointed)."""

        linear_factors = None

    torch.manual_seed(0)
    n_items = args.items
    model = build_model("sasrec", n_items, ModelConfig(hidden=args.hidden, layers=1))
    hidden = torch.randn(args.softmax_positions, args.hidden, requires_grad=True)
    positives = torch.randint(0, n_items, (args.softmax_positions,))
    scorer_class = ScoreOnlyScorer if args.mode == "chunked" else ModelScorer
    chunk = 0 if args.mode == "full" else args.softmax_chunk
    objective = CrossEntropy(n_items, softmax_chunk=chunk)
    batch = ObjectiveInput(
        hidden=hidden,
        positives=positives,
        scorer=scorer_class(model),
        sequence_index=torch.zeros_like(positives),
    )
    warm = ObjectiveInput(  # warm-up on 8 positions: lazy init, without raising the peak
        hidden=hidden[:8], positives=positives[:8], scorer=batch.scorer,
        sequence_index=positives[:8] * 0,
    )  # fmt: skip
    objective(warm).sum().backward()
    model.zero_grad(set_to_none=True)
    hidden.grad = None
    before = _rss_mib()
    clock = time.perf_counter()
    loss = objective(batch).sum()
    loss.backward()
    seconds = time.perf_counter() - clock
    return {
        "mode": args.mode,
        "items": n_items,
        "positions": args.softmax_positions,
        "chunk": chunk,
        "seconds": seconds,
        "loss": loss.item(),
        "grad_norm": float(hidden.grad.norm()),
        "rss_before_mib": before,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_above_before_mib": _peak_rss_mib() - before,
    }


def softmax_table(points: list[dict]) -> list[str]:
    """Full vs chunked softmax; ratios against the full softmax at the same catalogue."""
    lines = [
        "| items | positions | path | chunk | fwd+bwd | ratio | peak RSS | above the "
        "model | ratio | loss | \\|grad h\\| |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        base = next(q for q in points if q["items"] == p["items"] and q["mode"] == "full")
        lines.append(
            f"| {p['items']:,} | {p['positions']:,} | {p['mode']} | {p['chunk'] or '-'} | "
            f"{p['seconds']:.2f} s | {p['seconds'] / base['seconds']:.2f} | "
            f"{p['peak_rss_mib']:,.0f} MiB | {p['peak_above_before_mib']:,.0f} MiB | "
            f"{p['peak_above_before_mib'] / max(base['peak_above_before_mib'], 1):.2f} | "
            f"{p['loss']:.6g} | {p['grad_norm']:.6g} |"
        )
    return lines


# -- the driver


def _child(args: argparse.Namespace, extra: list[str]) -> dict:
    """Run one point in a fresh interpreter; its last stdout line is the JSON result."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--threads",
        str(args.threads),
        "--hidden",
        str(args.hidden),
        "--layers",
        str(args.layers),
        "--max-len",
        str(args.max_len),
        "--batch-size",
        str(args.batch_size),
        "--negatives",
        str(args.negatives),
        *extra,
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), DWREC_OFFLINE="1")
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"point {extra} failed with exit {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def dataset_dir(args: argparse.Namespace, users: int, items: int) -> Path:
    return args.work / f"syn-u{users}-i{items}"


def measure(args: argparse.Namespace, users: int, items: int, steps: int) -> dict:
    """Prepare (cached: the first build's figures are kept beside it) and train one point."""
    path = dataset_dir(args, users, items)
    record = path.parent / f"{path.name}.prepare.json"
    if record.exists() and (path / "dataset.json").exists():
        prepared = json.loads(record.read_text())
    else:
        prepared = _child(
            args,
            ["--point", "prepare", "--users", str(users), "--items", str(items),
             "--dataset", str(path)],
        )  # fmt: skip
        record.write_text(json.dumps(prepared))
    log(f"prepared {path.name}: {prepared['interactions']:,} interactions "
        f"in {prepared['prepare_seconds']:.0f} s, peak {prepared['prepare_peak_rss_mib']:.0f} MiB")  # fmt: skip
    trained = _child(args, ["--point", "train", "--dataset", str(path), "--steps", str(steps)])
    log(f"trained {path.name}: epoch {trained['epoch_seconds']:.0f} s"
        f"{' (extrapolated)' if trained['extrapolated'] else ''}, "
        f"peak {trained['peak_rss_mib']:.0f} MiB")  # fmt: skip
    return {**prepared, **trained, "prepare_skipped": prepared.get("skipped", False)}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def project_full(curves: dict[str, list[dict]], full: tuple[int, int] = FULL) -> dict:
    """Full-size epoch from the curves, before measuring it.

    Step time: a least-squares line through the catalogue curve's (items in the data, step
    seconds) at the same batch (a step's own work is fixed by batch x max_len; the
    catalogue adds the per-step dense updates of the item table), evaluated at the full
    size's catalogue. Steps: one window per user, ``users / batch``. Setup (load, split,
    windows): linear in interactions from the largest interactions point.
    """
    import numpy as np

    catalogue = curves["catalogue"]
    items = np.array([p["items"] for p in catalogue], dtype=float)
    step = np.array([p["step_seconds"] for p in catalogue])
    slope, intercept = np.polyfit(items, step, 1)
    largest = max(curves["interactions"], key=lambda p: p["interactions"])
    users, generated_items = full
    full_items = generated_items  # nearly every generated item is seen at full size
    interactions = users * largest["interactions"] / largest["users"]
    steps = math.ceil(users * largest["windows"] / largest["users"] / catalogue[0]["batch"])
    step_seconds = intercept + slope * full_items
    return {
        "users": users,
        "items": full_items,
        "interactions": interactions,
        "steps_per_epoch": steps,
        "step_seconds": step_seconds,
        "epoch_seconds": steps * step_seconds,
        "setup_seconds": largest["setup_seconds"] * interactions / largest["interactions"],
        "step_fit": {"intercept_s": intercept, "s_per_item": slope},
    }


def _machine() -> str:
    cpu = cpu_name()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM, Python {platform.python_version()}"
    )


def _fmt_seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 10 else f"{value:.1f} s"


def _curve_table(points: list[dict]) -> list[str]:
    """One curve; ratios against its first (smallest) point."""
    base = points[0]
    lines = [
        "| users | items generated (seen) | interactions | steps | epoch | ratio | "
        "s / M positions | setup | peak RSS (train) | ratio | prepare | peak RSS (prepare) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        epoch = _fmt_seconds(p["epoch_seconds"]) + (" (extrap.)" if p["extrapolated"] else "")
        per_million = p["train_seconds"] / max(p["timed_positions"], 1) * 1e6
        lines.append(
            f"| {p['users']:,} | {p['generated_items']:,} ({p['items']:,}) | "
            f"{p['interactions']:,} | {p['steps_per_epoch']:,} | "
            f"{epoch} | {p['epoch_seconds'] / base['epoch_seconds']:.2f} | {per_million:.1f} | "
            f"{_fmt_seconds(p['setup_seconds'])} | {p['peak_rss_mib']:,.0f} MiB | "
            f"{p['peak_rss_mib'] / base['peak_rss_mib']:.2f} | "
            f"{_fmt_seconds(p['prepare_seconds'])} | {p['prepare_peak_rss_mib']:,.0f} MiB |"
        )
    return lines


def report(args: argparse.Namespace, results: dict, argv: list[str]) -> str:
    lines = [
        f"Command: `OMP_NUM_THREADS={args.threads} .venv/bin/python benchmarks/scale.py "
        f"{' '.join(argv)}`",
        "",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Machine: {_machine()}. "
        f"Load average (1, 5, 15 min) at the start: {results['load_start']}; at the end: "
        f"{results.get('load_end', '?')}.",
        "",
        f"SASRec, sampled-softmax ({args.negatives} negatives + in-batch), hidden {args.hidden}, "
        f"{args.layers} layers, max_len {args.max_len}, batch {args.batch_size}, "
        f"{args.threads} torch thread(s), CPU; synthetic data, mean length {MEAN_LENGTH}.",
        "",
    ]
    curves = results.get("curves")
    if curves:
        fixed_items = curves["interactions"][0]["generated_items"]
        fixed_users = curves["catalogue"][0]["users"]
        lines += [f"**Against interactions** (catalogue fixed at {fixed_items:,} items):", ""]
        lines += _curve_table(curves["interactions"])
        lines += ["", f"**Against catalogue size** ({fixed_users:,} users):", ""]
        lines += _curve_table(curves["catalogue"])
        lines.append("")
    projection = results.get("projection")
    if projection:
        lines += [
            f"**Projected full size** ({projection['users']:,} users, {projection['items']:,} "
            f"items, ~{projection['interactions']:,.0f} interactions) from the curves: "
            f"{projection['steps_per_epoch']:,} steps x {projection['step_seconds']:.2f} s "
            "(the catalogue curve's step time, a line in the number of items, at "
            f"{projection['items']:,} items) = "
            f"{projection['epoch_seconds'] / 60:.1f} min per epoch, plus "
            f"{projection['setup_seconds'] / 60:.1f} min setup.",
            "",
        ]
    softmax = results.get("softmax")
    if softmax:
        lines += [
            "**Full vs chunked softmax** (`ce`, one forward + backward over a SASRec item "
            "table; each row a fresh process; RSS above the model and states):",
            "",
        ]
        lines += softmax_table(softmax)
        lines.append("")
    full = results.get("full")
    if full:
        extrapolated = (
            f" (timed {full['timed_steps']:,} of {full['steps_per_epoch']:,} steps, "
            "**extrapolated** to the epoch)"
            if full["extrapolated"]
            else ""
        )
        lines += [
            "**Full size, measured:**",
            "",
            "| users | items | interactions | prepare | peak RSS (prepare) | setup | "
            "epoch | steps | peak RSS (train) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {full['users']:,} | {full['items']:,} | {full['interactions']:,} | "
            f"{_fmt_seconds(full['prepare_seconds'])} | {full['prepare_peak_rss_mib']:,.0f} MiB | "
            f"{_fmt_seconds(full['setup_seconds'])} | "
            f"{full['epoch_seconds'] / 60:.1f} min{extrapolated} | {full['steps_per_epoch']:,} | "
            f"{full['peak_rss_mib']:,.0f} MiB |",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.point == "prepare":
        print(json.dumps(point_prepare(args.users, args.items, args.dataset)))
        return
    if args.point == "train":
        print(json.dumps(point_train(args)))
        return
    if args.point == "softmax":
        print(json.dumps(point_softmax(args)))
        return
    if args.report_from is not None:
        saved = json.loads(args.report_from.read_text())
        text = report(argparse.Namespace(**saved["args"]), saved, saved["argv"])
        print(text)
        if args.write:
            write_output(args.write, text + "\n")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    json_path = args.json or args.work / "last-results.json"
    load = os.getloadavg()
    results: dict = {
        "load_start": f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}",
        "argv": raw_argv,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }

    def save() -> None:
        load = os.getloadavg()
        results["load_end"] = f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
        write_output(json_path, json.dumps(results, indent=2))

    if args.curve:
        curves: dict[str, list[dict]] = {"interactions": [], "catalogue": []}
        results["curves"] = curves
        for name, grid in (("interactions", INTERACTION_CURVE), ("catalogue", CATALOGUE_CURVE)):
            for users, items in grid:
                users, items = users // args.shrink, items // args.shrink
                point = measure(args, users, items, args.max_steps)
                point["batch"] = args.batch_size
                point["generated_items"] = items
                curves[name].append(point)
                save()
        full = (FULL[0] // args.shrink, FULL[1] // args.shrink)
        results["projection"] = project_full(curves, full)
        save()
        log(f"projected full epoch: {results['projection']['epoch_seconds'] / 60:.0f} min")
    if args.softmax:
        results["softmax"] = []
        for items in args.softmax_items:
            for mode in SOFTMAX_MODES:
                point = _child(
                    args,
                    ["--point", "softmax", "--mode", mode, "--items", str(items),
                     "--softmax-positions", str(args.softmax_positions),
                     "--softmax-chunk", str(args.softmax_chunk)],
                )  # fmt: skip
                log(f"softmax {mode} {items:,} items: {point['seconds']:.2f} s, "
                    f"+{point['peak_above_before_mib']:.0f} MiB")  # fmt: skip
                results["softmax"].append(point)
                save()
    if args.full:
        results["full"] = measure(
            args, FULL[0] // args.shrink, FULL[1] // args.shrink, args.full_max_steps
        )
        save()
    text = report(args, results, raw_argv)
    print(text)
    if args.write:
        write_output(args.write, text + "\n")


if __name__ == "__main__":
    main()
