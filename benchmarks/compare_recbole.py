"""dwrec's SASRec against RecBole's SASRec, both with full cross-entropy, in one run.

Both train on the same interactions, the same leave-one-out split and the same
hyperparameters until early stopping on validation NDCG@10 (dwrec's patience matched to
RecBole's in training targets, ``--dwrec-patience``), and are
evaluated with full ranking, the user's history masked and ties broken by the smaller item
id (RecBole's scores are re-ranked by the harness, see ``dwrec/baselines/recbole.py``);
the test metrics are those of each side's best validation epoch. An epoch is one pass over
each side's own training samples (dwrec: one window per user; RecBole: every prefix of
every training sequence), followed by one full validation pass. Prints a markdown report:
HR@10 and NDCG@10 of each, their ratio, a paired test over the test cases, epochs, training
time per epoch and in all, one full-sort evaluation pass, each side's validation curve
(cumulative wall time, NDCG@10), the wall time each takes to first reach RecBole's best
validation NDCG@10 (``dwrec/baselines/convergence.py``), the machine and the command.

    .venv/bin/python benchmarks/compare_recbole.py --dataset ml-100k --max-len 50
    .venv/bin/python benchmarks/compare_recbole.py                 # ML-1M excerpt, 5-core
    .venv/bin/python benchmarks/compare_recbole.py --dataset-dir DIR --epochs 2 --threads 1

RecBole runs in its own venv (``.bench/recbole-venv``, built on first use).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dwrec.baselines import convergence
from dwrec.baselines import recbole as harness
from dwrec.baselines.convergence import matched_patience, training_units
from dwrec.data.dataset import Dataset, load_dataset
from dwrec.data.export import export_recbole
from dwrec.devices import cpu_name
from dwrec.errors import DwrecError
from dwrec.io import atomic_path, provenance, read_parquet, write_json

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# --dataset NAME: the folder under ../shared/data and dwrec's dataset name; both are 5-core.
DATASETS = {"ml-1m": "movielens-1m", "ml-100k": "movielens-100k"}
DEFAULT_WORK = REPO / ".bench" / "recbole-compare"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        default="ml-1m",
        help="the files in ../shared/data/NAME, prepared iterative 5-core (default: ml-1m, "
        "the ML-1M excerpt)",
    )
    which.add_argument("--dataset-dir", type=Path, help="a prepared dwrec dataset instead")
    parser.add_argument("--epochs", type=int, default=100, help="at most this many epochs")
    parser.add_argument(
        "--patience", type=int, default=5, help="stop after this many epochs without gain"
    )
    parser.add_argument(
        "--dwrec-patience",
        default="targets",
        help="dwrec's patience in its own epochs: a number, or 'targets' (default): the fewest "
        "epochs that train on at least as many targets as RecBole's --patience epochs. dwrec's "
        "epoch trains each user's window once (all its positions), RecBole's every prefix "
        "sample once, so an equal count of epochs would give dwrec far less training without "
        "gain before it stops",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="torch threads, each side"
    )
    parser.add_argument("--batch-size", type=int, default=128, help="dwrec: sequences")
    parser.add_argument(
        "--recbole-batch-size",
        type=int,
        help="RecBole: prefix samples per batch (default: --batch-size)",
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--eval-batch-size", type=int, default=512)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="scratch folder")
    parser.add_argument("--venv", type=Path, default=REPO / harness.DEFAULT_VENV)
    parser.add_argument("--write", type=Path, help="also write the markdown to this file")
    args = parser.parse_args(argv)
    for flag in ("epochs", "patience", "threads", "batch_size", "max_len"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    args.recbole_batch_size = args.recbole_batch_size or args.batch_size
    if args.dwrec_patience != "targets":
        try:
            args.dwrec_patience = int(args.dwrec_patience)
        except ValueError:
            parser.error(f"--dwrec-patience: {args.dwrec_patience!r} is neither a number nor "
                         "'targets'")  # fmt: skip
        if args.dwrec_patience < 1:
            parser.error("--dwrec-patience must be >= 1")
    return args


def shared_dataset(work: Path, folder: str) -> Path:
    """``../shared/data/<folder>``, iterative 5-core (prepared once, then reused)."""
    import dwrec

    source = SHARED_DATA / folder
    if not source.is_dir():
        raise DwrecError(f"{source} not found: pass --dataset-dir of a prepared dataset")
    result = dwrec.prepare(
        DATASETS[folder],
        source=source,
        out=work / "datasets" / f"{DATASETS[folder]}-5core",
        min_user_interactions=5,
        min_item_interactions=5,
    )
    return result.path


# ---------------------------------------------------------------- the two sides


def run_dwrec(args: argparse.Namespace, dataset_dir: Path) -> dict[str, Any]:
    """Train and evaluate dwrec's SASRec (CE) through the library; timings from log.jsonl."""
    import torch

    import dwrec
    from dwrec.eval.evaluator import evaluate_run

    torch.set_num_threads(args.threads)
    run_dir = args.work / "runs" / f"dwrec-sasrec-ce-s{args.seed}-{time.strftime('%Y%m%d%H%M%S')}"
    epoch_walls: list[float] = []

    def at_event(event: str, info: dict) -> None:
        if event == "epoch":  # after validation and the checkpoints of that epoch
            epoch_walls.append(time.perf_counter() - started)

    started = time.perf_counter()
    trained = dwrec.train(
        str(dataset_dir),
        model="sasrec",
        loss="ce",
        out=run_dir,
        quiet=True,
        callback=at_event,
        epochs=args.epochs,
        patience=args.dwrec_patience,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=0.0,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        dropout=args.dropout,
        max_len=args.max_len,
        eval_batch_size=args.eval_batch_size,
        device="cpu",
    )
    train_wall = time.perf_counter() - started
    evaluated = evaluate_run(trained.run_dir, split="test", ks=(10,), device="cpu")
    log = _read_jsonl(trained.run_dir / "log.jsonl")
    per_user = read_parquet(trained.run_dir / "per_user.parquet").to_pydict()
    return {
        "test": {k: evaluated["overall"][k] for k in ("recall@10", "ndcg@10", "mrr@10")},
        "valid": trained.best_valid,
        "epochs_run": trained.epochs_run,
        "best_epoch": trained.best_epoch,
        "train_wall_seconds": train_wall,
        "epoch_train_seconds": [record["seconds"] for record in log],
        "curve": {
            "wall_seconds": epoch_walls,
            "ndcg@10": [record["valid"]["ndcg@10"] for record in log],
        },
        "test_eval_seconds": evaluated["seconds"],
        "per_case": {
            "user": per_user["user_id"],
            "target": per_user["target_item"],
            "rank": per_user["rank"],
        },
        "run_dir": str(trained.run_dir),
    }


def run_recbole_side(args: argparse.Namespace, dataset_dir: Path) -> dict[str, Any]:
    harness.ensure_venv(args.venv)
    fingerprint = load_dataset(dataset_dir).fingerprint
    atomic_dir = export_recbole(dataset_dir, args.work / "atomic" / fingerprint, "dwrec_export")
    config = harness.sasrec_config(
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.recbole_batch_size,
        lr=args.lr,
        weight_decay=0.0,
        seed=args.seed,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        dropout=args.dropout,
        max_len=args.max_len,
        eval_batch_size=args.eval_batch_size,
    )
    result = harness.run_recbole(
        atomic_dir, "dwrec_export", config, threads=args.threads, venv_path=args.venv
    )
    if not result["split_check"]["test_equal"]:
        raise DwrecError("RecBole's test cases differ from dwrec's loo split: export is wrong")
    return result


def _read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- comparison


def paired_ndcg(dwrec_cases: dict, recbole_cases: dict) -> dict[str, Any]:
    """Pair the two runs' test cases by user (one test case per user in ``loo``)."""
    from dwrec.eval.metrics import ndcg_at_k
    from dwrec.report.stats import paired_test

    recbole_by_user = {
        user: (target, rank)
        for user, target, rank in zip(
            recbole_cases["user"], recbole_cases["target"], recbole_cases["rank"], strict=True
        )
    }
    ours, theirs = [], []
    for user, target, rank in zip(
        dwrec_cases["user"], dwrec_cases["target"], dwrec_cases["rank"], strict=True
    ):
        other_target, other_rank = recbole_by_user[user]
        if other_target != target:
            raise DwrecError(f"user {user}: test target {target} (dwrec) vs {other_target}")
        ours.append(rank)
        theirs.append(other_rank)
    differences = ndcg_at_k(np.array(ours), 10) - ndcg_at_k(np.array(theirs), 10)
    test = paired_test(differences, "wilcoxon")
    return {"n": len(differences), "mean_difference": float(differences.mean()), "p": test.p}


def curves(ours: dict, theirs: dict) -> dict[str, list[convergence.Point]]:
    """Each side's validation curve: cumulative wall time and NDCG@10 after every epoch."""
    log = theirs["valid_log"]
    return {
        "dwrec": convergence.curve(ours["curve"]["wall_seconds"], ours["curve"]["ndcg@10"]),
        "RecBole": convergence.curve(
            [entry["wall_seconds"] for entry in log], [entry["ndcg@10"] for entry in log]
        ),
    }


def time_to_target(points: dict[str, list[convergence.Point]], data_seconds: float) -> list[str]:
    """Markdown: the wall time each side takes to first reach RecBole's best valid NDCG@10
    (and, when dwrec's best is lower, the lower of the two bests, which both reach)."""
    bests = {side: convergence.best(curve).ndcg for side, curve in points.items()}
    targets = [("RecBole's best", bests["RecBole"])]
    if bests["dwrec"] < bests["RecBole"]:
        targets.append(("the lower best (dwrec's)", bests["dwrec"]))
    lines = [
        "Wall time to first reach a validation NDCG@10, counted from the start of training "
        "(dwrec: the `dwrec.train` call, its data loading and model building included; "
        f"RecBole: `Trainer.fit`, its data preparation, {data_seconds:.1f} s, excluded), "
        "validation and checkpoints included. Validation runs once per epoch, so the target "
        "was crossed between the previous validation and this one:",
        "",
        "| target valid NDCG@10 | side | epoch | wall time (s) | previous validation (s) "
        "| RecBole / dwrec at these validations |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for label, target in targets:
        reached = {side: convergence.time_to_reach(c, target) for side, c in points.items()}
        ratio = "n/a"
        ours, theirs = reached["dwrec"], reached["RecBole"]
        if ours is not None and theirs is not None:
            # each crossed the target between two validations: the ratio's possible range
            low = theirs.wall_seconds_before / ours.wall_seconds
            high = (
                f"{theirs.wall_seconds / ours.wall_seconds_before:.1f}x"
                if ours.wall_seconds_before > 0
                else "unbounded"
            )
            ratio = (
                f"**{theirs.wall_seconds / ours.wall_seconds:.1f}x** (crossed between "
                f"validations: {low:.1f}x to {high})"
            )
        for side, hit in reached.items():
            head = f"| {label}: {target:.4f} | {side} |"
            if hit is None:
                lines.append(
                    f"{head} not reached in {len(points[side])} epochs (best "
                    f"{bests[side]:.4f}) | | | {ratio if side == 'dwrec' else ''} |"
                )
            else:
                lines.append(
                    f"{head} {hit.epoch} | {hit.wall_seconds:.1f} | "
                    f"{hit.wall_seconds_before:.1f} | {ratio if side == 'dwrec' else ''} |"
                )
    lines += ["", "Curves (epoch: cumulative wall s, valid NDCG@10):", ""]
    for side, curve in points.items():
        pairs = "; ".join(f"{p.epoch}: {p.wall_seconds:.0f}, {p.ndcg:.4f}" for p in curve)
        lines.append(f"- {side}: {pairs}")
    return lines


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "n/a"
    return f"{a / b:.3f}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(
    args, dataset: Dataset, units: dict[str, int], ours: dict, theirs: dict, command: str
) -> str:
    """The markdown report."""
    import torch

    pair = paired_ndcg(ours["per_case"], theirs["per_case"])
    rows = [
        ("test HR@10 (= Recall@10)", ours["test"]["recall@10"], theirs["test"]["recall@10"], 4),
        ("test NDCG@10", ours["test"]["ndcg@10"], theirs["test"]["ndcg@10"], 4),
        ("valid NDCG@10, best epoch", ours["valid"]["ndcg@10"], theirs["valid"]["ndcg@10"], 4),
        ("epochs run", ours["epochs_run"], theirs["epochs_run"], 0),
        ("best epoch", ours["best_epoch"], theirs["best_epoch"], 0),
        ("training samples per epoch", units["windows"], theirs["train_samples"], 0),
        ("training targets per epoch", units["positions"], theirs["train_samples"], 0),
        ("patience (epochs)", args.dwrec_patience, args.patience, 0),
        (
            "patience (training targets)",
            args.dwrec_patience * units["positions"],
            args.patience * theirs["train_samples"],
            0,
        ),
        (
            "training time per epoch, median (s)",
            _median(ours["epoch_train_seconds"]),
            _median(theirs["epoch_train_seconds"]),
            2,
        ),
        (
            "training wall time incl. validation (s)",
            ours["train_wall_seconds"],
            theirs["train_wall_seconds"],
            1,
        ),
        ("one full-sort test pass (s)", ours["test_eval_seconds"], theirs["test_eval_seconds"], 2),
    ]
    table = [
        "| | dwrec | RecBole | dwrec / RecBole |",
        "|---|---:|---:|---:|",
    ]
    for label, a, b, digits in rows:
        table.append(f"| {label} | {a:.{digits}f} | {b:.{digits}f} | {_ratio(a, b)} |")
    counts = dataset.meta["counts"]
    unmasked = theirs["test_recbole_unmasked"]
    versions = theirs["versions"]
    lines = [
        "## dwrec SASRec vs RecBole SASRec (full cross-entropy)",
        "",
        f"Dataset `{dataset.name}` (fingerprint {dataset.fingerprint}): "
        f"{counts['users']:,} users, {counts['items']:,} items, "
        f"{counts['interactions']:,} interactions; split `loo`, {pair['n']:,} test cases.",
        "",
        f"Both: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, FFN "
        f"{4 * args.hidden}, dropout {args.dropout}, max_len {args.max_len}, AdamW lr {args.lr}, "
        f"weight decay 0, batch {args.batch_size} (RecBole: {args.recbole_batch_size} prefix "
        f"samples), at most {args.epochs} epochs, early stopping on valid NDCG@10 (patience: "
        f"RecBole {args.patience} epochs, dwrec {args.dwrec_patience} of its epochs, "
        f"{args.patience_rule}), seed {args.seed}, {args.threads} thread(s), CPU. Full ranking over "
        "all items, the user's history masked, ties broken by the smaller item id.",
        "",
        *table,
        "",
        "Stopped by patience (else by the epoch cap, i.e. not converged): "
        + ", ".join(
            f"{side} {'yes' if run['epochs_run'] - run['best_epoch'] >= wait else 'NO'}"
            for side, run, wait in (
                ("dwrec", ours, args.dwrec_patience),
                ("RecBole", theirs, args.patience),
            )
        )
        + ".",
        "",
        f"Paired over the {pair['n']:,} test cases: mean NDCG@10 difference (dwrec - RecBole) "
        f"{pair['mean_difference']:+.4f}, Wilcoxon signed-rank p = {pair['p']:.3g}.",
        "",
        f"RecBole's own protocol (no history masking) on the same model: HR@10 "
        f"{unmasked['recall@10']:.4f}, NDCG@10 {unmasked['ndcg@10']:.4f}.",
        "",
        *time_to_target(curves(ours, theirs), theirs["data_seconds"]),
        "",
        "Differences that remain: RecBole trains one sample per prefix of each training "
        "sequence (loss at its last position), dwrec one window per user (loss at every "
        "position); RecBole's SASRec is post-LayerNorm (BERT style), includes the padding item "
        "in its softmax, and pads every sample to max_len; RecBole keeps the later epoch on a "
        "validation tie (dwrec the earlier); users with exactly 3 interactions train on their "
        "2nd in RecBole but validate on it in dwrec "
        f"({int(np.sum(np.diff(dataset.user_indptr) == 3))} such users here).",
        "",
        f"Machine: {machine()}; Python {platform.python_version()}, torch {torch.__version__} "
        f"(dwrec), RecBole {versions['recbole']} with torch {versions['torch']}, numpy "
        f"{versions['numpy']} (its venv). dwrec {provenance()['dwrec_version']}, commit "
        f"{provenance()['git_commit']}.",
        "",
        f"Command: `{command}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + shlex.join([str(Path(sys.argv[0])), *(argv or sys.argv[1:])])
    try:
        args.work.mkdir(parents=True, exist_ok=True)
        dataset_dir = args.dataset_dir or shared_dataset(args.work, args.dataset)
        dataset = load_dataset(dataset_dir)
        print(f"dataset {dataset.name} at {dataset_dir}", file=sys.stderr)
        units = training_units(dataset, args.max_len)
        args.patience_rule = "as given"
        if args.dwrec_patience == "targets":
            args.patience_rule = "the fewest epochs with at least RecBole's training targets"
            args.dwrec_patience = matched_patience(
                args.patience, units["prefixes"], units["positions"]
            )
        print(f"patience: RecBole {args.patience} epochs, dwrec {args.dwrec_patience} epochs "
              f"({args.patience_rule})", file=sys.stderr)  # fmt: skip
        print("RecBole SASRec ...", file=sys.stderr)
        theirs = run_recbole_side(args, Path(dataset_dir))
        if theirs["train_samples"] != units["prefixes"]:  # before dwrec trains, not after
            raise DwrecError(f"RecBole trained on {theirs['train_samples']} prefix samples per "
                             f"epoch, {units['prefixes']} expected: the export is wrong")  # fmt: skip
        print("dwrec SASRec ...", file=sys.stderr)
        ours = run_dwrec(args, Path(dataset_dir))
        report = render(args, dataset, units, ours, theirs, command)
        write_json(args.work / "last-comparison.json", {"dwrec": ours, "recbole": theirs})
    except DwrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    print(report)
    if args.write is not None:
        with atomic_path(args.write) as tmp:
            tmp.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
