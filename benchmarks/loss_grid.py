"""Validation grid for the related losses (MML, DSL) against generic CE on one dataset.

Every point is one ``dwrec train`` run (SASRec by default, the same seed and training
settings for all) through dwrec's public CLI; points are selected on the best VALIDATION
NDCG@10 of the run (the checkpoint ``model.pt`` keeps), never on test. The chosen point of
each loss and the CE reference are then evaluated on the test split (``dwrec evaluate``).

The grid is staged (coordinate search), so that a small number of runs covers the
constants that matter:

- MML stage 1: the negative-weight scale ``s`` (``--mml-weights`` = ``s * (1, 0.5, 0.25)``)
  at the default margins; stage 2: SimpleX's regime (one margin 0.9, weight 150, 1024
  negatives), high margins (0.9, 0.8, 0.7) at ``s = 64``, the best ``s`` with 1024
  negatives, and ``s / 2``, ``2 s``.
- DSL stage 1: the defaults, the sampled-softmax limit (``lh = ls = k = 0``), no
  temperature branch (``k = 0``); stage 2, at the best: 1024 negatives, a halved
  ``lh``/``ls``, and both.

Stage 3: a point within 10% of its loss's best whose best epoch is the epoch limit
(``--epochs``) is continued to ``--long-epochs`` (a copy of the run, resumed).

A run whose directory holds ``train_done.json`` is skipped; an unfinished one is resumed
with ``--resume``. Runs go to ``--runs-dir`` (default ``.bench/loss-grid-50``, ignored by git).
A point *collapses* when its best validation epoch is <= 3 or its best validation NDCG@10
is below half of CE's.

    nohup nice -n 10 python benchmarks/loss_grid.py --workers 2 > .bench/loss-grid.log 2>&1 &
    python benchmarks/loss_grid.py --table-only   # the table of what has finished so far
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import publish, report_header

ROOT = Path(__file__).resolve().parents[1]
MML_BASE_WEIGHTS = (1.0, 0.5, 0.25)
MML_SCALES = (1.0, 64.0, 256.0, 16.0)


@dataclass(frozen=True)
class Point:
    """One grid point: a loss and its flags (besides the shared training flags)."""

    loss: str
    stage: int
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        text = "-".join(part.lstrip("-").replace(",", "_") for part in self.flags)
        return f"{self.loss}-{text}" if text else f"{self.loss}-default"


def _fmt(value: float) -> str:
    return f"{value:g}"


def mml_point(stage: int, scale: float, margins=(0.9, 0.6, 0.3), negatives: int = 256) -> Point:
    weights = [scale * w for w in MML_BASE_WEIGHTS[: len(margins)]]
    if len(margins) == 1:
        weights = [scale * sum(MML_BASE_WEIGHTS)]
    flags = (
        "--mml-margins",
        ",".join(_fmt(m) for m in margins),
        "--mml-weights",
        ",".join(_fmt(w) for w in weights),
        "--negatives",
        str(negatives),
    )
    return Point("mml", stage, flags)


def dsl_point(stage: int, lh=1.0, ls=1.0, k=0.5, negatives: int = 256) -> Point:
    flags = (
        "--dsl-lh",
        _fmt(lh),
        "--dsl-ls",
        _fmt(ls),
        "--dsl-k",
        _fmt(k),
        "--negatives",
        str(negatives),
    )
    return Point("dsl", stage, flags)


def flag_value(point: Point, flag: str) -> str:
    return point.flags[point.flags.index(flag) + 1]


def plan(results: dict[Point, dict | None], cap: int = 40, long_epochs: int = 100) -> list[Point]:
    """Every point that can be named now: stage 2 once its stage 1 has finished; stage 3
    once stage 2 has: each point of a loss within 10% of its best whose best epoch is the
    last one allowed (``cap``), continued to ``long_epochs`` (a copy of the run, resumed
    with more epochs)."""
    mml1 = [mml_point(1, s) for s in MML_SCALES]
    dsl1 = [
        dsl_point(1),
        dsl_point(1, lh=0.0, ls=0.0, k=0.0),
        dsl_point(1, k=0.0),
    ]
    # interleaved so that each loss's stage 1 finishes early
    points = [Point("ce", 0)] + [
        p for pair in zip(mml1, dsl1 + [None], strict=True) for p in pair if p
    ]
    best = best_of(mml1, results)
    if best is not None:
        scale = float(flag_value(best, "--mml-weights").split(",")[0])
        points += [
            # SimpleX's CCL regime: one high margin, a large negative weight, many negatives
            Point(
                "mml", 2, ("--mml-margins", "0.9", "--mml-weights", "150", "--negatives", "1024")
            ),
            mml_point(2, 64.0, margins=(0.9, 0.8, 0.7)),  # high margins, strong negatives
            mml_point(2, scale, negatives=1024),
            # the negative-weight axis around the best scale, finer
            mml_point(2, scale / 2),
            mml_point(2, scale * 2),
        ]
    best = best_of(dsl1, results)
    if best is not None:
        lh, ls, k = (float(flag_value(best, f)) for f in ("--dsl-lh", "--dsl-ls", "--dsl-k"))
        points += [
            dsl_point(2, lh, ls, k, negatives=1024),
            dsl_point(2, lh / 2, ls / 2, k=max(k, 0.5)),
            dsl_point(2, lh / 2, ls / 2, k, negatives=1024),
        ]
    for loss in ("mml", "dsl"):
        mine = [p for p in points if p.loss == loss]
        best = best_of(mine, results) if any(p.stage == 2 for p in mine) else None
        if best is None:
            continue
        for point in mine:  # every capped point within 10% of the best
            result = results[point]
            if (
                result["best_epoch"] >= cap
                and result["valid_ndcg"] >= 0.9 * results[best]["valid_ndcg"]
            ):
                points.append(Point(loss, 3, (*point.flags, "--epochs", str(long_epochs))))
    return list(dict.fromkeys(points))


def best_of(points: list[Point], results: dict[Point, dict | None]) -> Point | None:
    """The point with the best validation NDCG@10, or None while any is unfinished."""
    if any(results.get(p) is None for p in points):
        return None
    return max(points, key=lambda p: results[p]["valid_ndcg"])


def run_dir(args, point: Point) -> Path:
    return args.runs_dir / point.name


def read_result(directory: Path) -> dict | None:
    done = directory / "train_done.json"
    if not done.exists():
        return None
    summary = json.loads(done.read_text())
    log = [json.loads(line) for line in (directory / "log.jsonl").read_text().splitlines()]
    return {
        "valid_ndcg": summary["best_valid"]["ndcg@10"],
        "valid_recall": summary["best_valid"]["recall@10"],
        "best_epoch": summary["best_epoch"],
        "epochs": summary["epochs_run"],
        "seconds": sum(record.get("seconds") or 0.0 for record in log),
    }


def dwrec_command() -> list[str]:
    executable = shutil.which("dwrec") or str(Path(sys.executable).with_name("dwrec"))
    return ["nice", "-n", str(os.environ.get("GRID_NICE", 10)), executable]


def train_command(args, point: Point) -> list[str]:
    directory = run_dir(args, point)
    if point.stage == 3:  # continue a copy of the capped run
        if not directory.exists():
            source = run_dir(args, Point(point.loss, 0, point.flags[:-2]))
            shutil.copytree(source, directory)
            for name in ("train_done.json", "metrics.json", "per_user.parquet"):
                (directory / name).unlink(missing_ok=True)
        epochs = point.flags[-1]
        return [*dwrec_command(), "train", "--resume", str(directory), "--epochs", epochs, "-q"]
    if (directory / "last.pt").exists():
        return [*dwrec_command(), "train", "--resume", str(directory), "-q"]
    shared = [
        "--dataset",
        args.dataset,
        "--model",
        args.model,
        "--seed",
        str(args.seed),
        "--threads",
        "1",
        "--epochs",
        str(args.epochs),
        "--max-len",
        str(args.max_len),
        "--patience",
        str(args.patience),
    ]
    loss = ["--loss", point.loss, *point.flags]
    return [*dwrec_command(), "train", *shared, *loss, "--out", str(directory), "-q"]


def public_command(args, point: Point) -> str:
    """The command of a point as a reader would type it (no paths)."""
    flags = " ".join(point.flags)
    return (
        f"dwrec train --dataset {args.dataset} --model {args.model} --loss {point.loss} "
        f"{flags} --seed {args.seed} --threads 1 --epochs {args.epochs} --max-len {args.max_len} "
        f"--patience {args.patience}"
    ).replace("  ", " ")


def in_use(directory: Path) -> bool:
    """True when some process (another driver's run) has ``directory`` on its command line."""
    target = str(directory).encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if target in cmdline.read_bytes().split(b"\0"):
                return True
        except OSError:
            continue
    return False


def run_grid(args) -> dict[Point, dict | None]:
    results: dict[Point, dict | None] = {}
    running: dict[Point, subprocess.Popen] = {}
    while True:
        points: list[Point] = []
        while True:  # later stages appear once earlier ones are read: repeat to a fixed point
            named = plan(results, args.epochs, args.long_epochs)
            for point in named:
                if results.get(point) is None:
                    results[point] = read_result(run_dir(args, point))
            if named == points:
                break
            points = named
        elsewhere = [
            p
            for p in points
            if results[p] is None and p not in running and in_use(run_dir(args, p))
        ]
        pending = [
            p for p in points if results[p] is None and p not in running and p not in elsewhere
        ]
        while pending and len(running) + len(elsewhere) < args.workers:
            point = pending.pop(0)
            args.runs_dir.mkdir(parents=True, exist_ok=True)
            log = open(args.runs_dir / f"{point.name}.log", "a")  # noqa: SIM115
            print(f"{time.strftime('%H:%M:%S')} start {point.name}", flush=True)
            running[point] = subprocess.Popen(
                train_command(args, point), stdout=log, stderr=subprocess.STDOUT
            )
        if not running and not elsewhere:
            return results
        time.sleep(10)
        for point, process in list(running.items()):
            if process.poll() is not None:
                del running[point]
                results[point] = read_result(run_dir(args, point))
                state = "failed" if results[point] is None else "done"
                print(f"{time.strftime('%H:%M:%S')} {state} {point.name} {results[point]}")
                if results[point] is None:
                    raise SystemExit(f"{point.name} failed: see its log in {args.runs_dir}")


def test_metrics(args, point: Point) -> dict:
    directory = run_dir(args, point)
    metrics = directory / "metrics.json"
    if not metrics.exists():
        subprocess.run(
            [*dwrec_command(), "evaluate", str(directory), "--threads", "1"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return json.loads(metrics.read_text())["overall"]


def table(args, results: dict[Point, dict | None]) -> list[str]:
    lines = report_header(f"Related losses on {args.dataset} ({args.model})", 1)
    lines += [
        f"- every point: `{public_command(args, Point('LOSS', 0, ('FLAGS',)))}` "
        "(selection on validation NDCG@10; test only for the chosen points)",
        "",
        "| loss | stage | flags | valid NDCG@10 | valid Recall@10 | best epoch / epochs | "
        "train s | collapsed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ce = results.get(Point("ce", 0))
    for point, result in results.items():
        if result is None:
            lines.append(
                f"| {point.loss} | {point.stage} | `{' '.join(point.flags)}` | "
                "running or pending | | | | |"
            )
            continue
        collapsed = result["best_epoch"] <= 3 or (
            ce is not None and result["valid_ndcg"] < 0.5 * ce["valid_ndcg"]
        )
        lines.append(
            f"| {point.loss} | {point.stage} | `{' '.join(point.flags) or '-'}` | "
            f"{result['valid_ndcg']:.4f} | {result['valid_recall']:.4f} | "
            f"{result['best_epoch']} / {result['epochs']} | {result['seconds']:.0f} | "
            f"{'yes' if collapsed else 'no'} |"
        )
    if ce is None or args.table_only:
        return lines
    lines += [
        "",
        "Chosen points (best validation NDCG@10 of each loss) on the test split:",
        "",
        "| loss | flags | test HR@10 | test NDCG@10 | NDCG@10 vs CE | epochs |",
        "|---|---|---|---|---|---|",
    ]
    reference = test_metrics(args, Point("ce", 0))
    for loss in ("ce", "mml", "dsl"):
        candidates = [p for p, r in results.items() if p.loss == loss and r is not None]
        if not candidates:
            continue
        chosen = max(candidates, key=lambda p: results[p]["valid_ndcg"])
        overall = test_metrics(args, chosen)
        change = overall["ndcg@10"] / reference["ndcg@10"] - 1.0
        lines.append(
            f"| {loss} | `{' '.join(chosen.flags) or '-'}` | {overall['recall@10']:.4f} | "
            f"{overall['ndcg@10']:.4f} | {change:+.1%} | {results[chosen]['epochs']} |"
        )
    return lines


def cosine_check(runs: list[Path]) -> list[str]:
    """Validation NDCG@10 of finished runs ranked by their own dot products (as dwrec ranks
    SASRec) and by the cosine of user state and item embedding (what MML trains)."""
    import torch
    import torch.nn.functional as F

    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.eval.evaluator import evaluate_model
    from dwrec.models.layers import score_items
    from dwrec.models.registry import load_model

    torch.set_num_threads(1)
    lines = [
        "| run | valid NDCG@10, dot / cosine | test NDCG@10, dot / cosine | "
        "test HR@10, dot / cosine |",
        "|---|---|---|---|",
    ]
    for run in runs:
        config = json.loads((run / "config.json").read_text())
        dataset = load_dataset(config["dataset"]["path"])
        split = make_split(dataset, config["split"]["scheme"])
        model = load_model(run, config, config["dataset"]["fingerprint"])
        dot = {which: evaluate_model(model, dataset, split, which) for which in ("valid", "test")}
        table = model.item_embedding.weight[1:]

        def cosine(hidden, items=None, table=table):
            return score_items(F.normalize(hidden, dim=-1), F.normalize(table, dim=-1), items)

        model.score = cosine
        cos = {which: evaluate_model(model, dataset, split, which) for which in ("valid", "test")}
        lines.append(
            f"| {run.name} | {dot['valid']['ndcg@10']:.4f} / {cos['valid']['ndcg@10']:.4f} | "
            f"{dot['test']['ndcg@10']:.4f} / {cos['test']['ndcg@10']:.4f} | "
            f"{dot['test']['recall@10']:.4f} / {cos['test']['recall@10']:.4f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="movielens-100k")
    parser.add_argument("--model", default="sasrec")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--max-len", type=int, default=50)
    parser.add_argument("--long-epochs", type=int, default=100, help="stage 3's epoch limit")
    parser.add_argument("--workers", type=int, default=1, help="runs at once (1 thread each)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / ".bench" / "loss-grid-50")
    parser.add_argument("--table-only", action="store_true", help="no training, no testing")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    parser.add_argument(
        "--cosine-check", type=Path, nargs="+", help="only rank these runs by dot and cosine"
    )
    args = parser.parse_args(argv)
    if args.cosine_check:
        publish(cosine_check(args.cosine_check), args.write)
        return
    if args.table_only:
        results = {}
        for _ in range(4):  # one pass per stage
            for point in plan(results, args.epochs, args.long_epochs):
                results[point] = read_result(run_dir(args, point))
    else:
        results = run_grid(args)
    publish(table(args, results), args.write)


if __name__ == "__main__":
    main()
