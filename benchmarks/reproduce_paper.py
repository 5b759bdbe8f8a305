"""Reproduce the Dynamic Weighted Loss comparison end to end on real data.

For each dataset (the MovieLens-1M ratings excerpt, MovieLens-100K and HetRec Last.fm 2K, read
from ``../shared/data`` or ``--data-root``) it prepares the data, trains SASRec and
PinnerFormer with ``generic``, ``fixed`` (Film-Noir on MovieLens, the sparsest tag on
Last.fm), ``dynamic``, and ``dsl``, ``mml``, ``adc`` as extra rows, several seeds each, then
evaluates every run and writes one significance-tested report per dataset and model
(``target`` and ``power`` cohorts of the sparsest and densest domains) plus a summary.

Resumable: run dirs live under ``--out``; a finished run is skipped, an interrupted one is
resumed from its ``last.pt``, an evaluated one is not evaluated again. Before training it
times a few real steps of every (dataset, model) pair and prints how long the remaining
runs will take at most (every run to its epoch cap; early stopping usually ends sooner).

    .venv/bin/python benchmarks/reproduce_paper.py --budget quick      # < 30 min, 2 cores
    .venv/bin/python benchmarks/reproduce_paper.py                     # the full protocol
    .venv/bin/python benchmarks/reproduce_paper.py --datasets ml-1m --models sasrec --dry-run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dwrec.runtime import tune_malloc

if "OMP_WAIT_POLICY" not in os.environ:  # short OpenMP spin waits, as the CLI (dwrec/cli.py)
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"

# dataset key -> (dwrec source name, folder under the data root, prepare filters)
DATASETS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ml-1m": ("movielens-1m", "ml-1m", {"min_user_interactions": 5, "min_item_interactions": 5}),
    "ml-100k": (
        "movielens-100k",
        "ml-100k",
        {"min_user_interactions": 5, "min_item_interactions": 5},
    ),
    "lastfm": ("lastfm", "hetrec2011-lastfm-2k", {}),
}
MODELS = ("sasrec", "pinnerformer")  # the paper's comparison
ZOO = ("bert4rec", "gru4rec", "pop")  # accepted by --models for an all-model table
LOSSES = ("generic", "fixed", "dynamic", "dsl", "mml", "adc")
PAPER_DOMAIN = "Film-Noir"  # the paper's sparse MovieLens genre

# Training settings per budget and model. ``full`` follows the protocol of docs/results.md
# (SASRec as RecBole's ML-1M setting; PinnerFormer at its published defaults); ``quick``
# shrinks models, sequence length and epochs so that the default plan fits in 30 minutes
# on 2 CPU cores (see BUDGETS below for what else it drops).
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "sasrec": {
            "hidden": 64, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 200,
            "batch_size": 64, "lr": 2e-3, "patience": 5,
        },
        "pinnerformer": {"batch_size": 64, "lr": 1e-3, "patience": 5},
        "bert4rec": {
            "hidden": 64, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 200,
            "batch_size": 64, "lr": 1e-3, "patience": 10,
        },
        "gru4rec": {
            "hidden": 64, "layers": 1, "dropout": 0.2, "max_len": 200,
            "batch_size": 64, "lr": 2e-3, "patience": 5,
        },
        "pop": {"batch_size": 64},
    },
    "quick": {
        "sasrec": {
            "hidden": 32, "layers": 1, "heads": 1, "dropout": 0.2, "max_len": 50,
            "batch_size": 32, "lr": 2e-3, "patience": 3,
        },
        "pinnerformer": {
            "hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.1, "max_len": 50,
            "batch_size": 32, "lr": 2e-3, "patience": 3,
        },
        "bert4rec": {
            "hidden": 32, "layers": 1, "heads": 1, "dropout": 0.2, "max_len": 50,
            "batch_size": 32, "lr": 2e-3, "patience": 5,
        },
        "gru4rec": {
            "hidden": 32, "layers": 1, "dropout": 0.2, "max_len": 50,
            "batch_size": 32, "lr": 2e-3, "patience": 3,
        },
        "pop": {"batch_size": 32},
    },
}  # fmt: skip
# Epoch caps per dataset (early stopping on validation NDCG@10 usually ends runs sooner).
BUDGETS: dict[str, dict[str, Any]] = {
    "full": {
        "datasets": ("ml-1m", "ml-100k", "lastfm"),
        "seeds": 3,
        "epochs": {"ml-1m": 100, "ml-100k": 100, "lastfm": 100},
    },
    "quick": {
        "datasets": ("ml-1m", "ml-100k", "lastfm"),
        "seeds": 1,
        "epochs": {"ml-1m": 8, "ml-100k": 15, "lastfm": 15},
    },
}


@dataclass
class Run:
    dataset: str
    model: str
    loss: str
    seed: int
    path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.model}+{self.loss} s{self.seed}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full",
                        help="full: the whole protocol (3 seeds, models at full size, up to "
                        "100 epochs); quick: 1 seed, small models, length 50, 5 epochs on "
                        "ML-1M and 20 on the others (< 30 min on 2 CPU cores)")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS),
                        help="default: the budget's datasets")  # fmt: skip
    parser.add_argument("--models", nargs="+", choices=MODELS + ZOO, default=list(MODELS),
                        help="default: sasrec pinnerformer; bert4rec, gru4rec and pop too "
                        "for an all-model table (e.g. with --losses generic)")  # fmt: skip
    parser.add_argument("--losses", nargs="+", choices=LOSSES, help="default: all six")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the budget's)")
    parser.add_argument("--epochs", type=int, help="override the budget's epoch cap")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help=f"folder of the raw datasets (default {DEFAULT_DATA_ROOT})")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default .bench/reproduce-BUDGET")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--probe-steps", type=int, default=3,
                        help="timed training steps per (dataset, model) for the estimate")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, default=1000, help="report bootstrap resamples")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the time estimate, train nothing")  # fmt: skip
    parser.add_argument("--write", type=Path, help="also copy the summary markdown here")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    args.datasets = args.datasets or list(budget["datasets"])
    args.losses = args.losses or list(LOSSES)
    args.seeds = args.seeds if args.seeds is not None else budget["seeds"]
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if "generic" not in args.losses:
        parser.error("--losses must include generic: it is every comparison's baseline")
    args.out = args.out or REPO / ".bench" / f"reproduce-{args.budget}"
    return args


def prepare_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare (or reuse) each dataset under ``OUT/datasets``; returns key -> PrepareResult."""
    import dwrec

    prepared = {}
    for key in args.datasets:
        name, folder, filters = DATASETS[key]
        source = args.data_root / folder
        if not source.exists():
            raise SystemExit(f"reproduce_paper: {source} not found (pass --data-root)")
        prepared[key] = dwrec.prepare(name, source=source, out=args.out / "datasets" / key,
                                      **filters)  # fmt: skip
        counts = prepared[key].meta["counts"]
        print(f"dataset {key}: {counts['interactions']:,} interactions, "
              f"{counts['users']:,} users, {counts['items']:,} items, "
              f"{len(prepared[key].meta['domains'])} domains")  # fmt: skip
    return prepared


def sparse_and_dense(meta: dict, count: int = 2) -> tuple[list[str], list[str]]:
    """The ``count`` sparsest and densest domains by share of interactions (ties by name)."""
    stats = meta["domains"]
    ordered = sorted(stats, key=lambda name: (stats[name]["share"], name))
    return ordered[:count], ordered[-count:][::-1]


def fixed_domain(key: str, meta: dict) -> str:
    if PAPER_DOMAIN in meta["domains"]:
        return PAPER_DOMAIN
    return sparse_and_dense(meta, 1)[0][0]


def plan_runs(args: argparse.Namespace, prepared: dict[str, Any]) -> list[Run]:
    runs = []
    for key in args.datasets:
        meta = prepared[key].meta
        for model in args.models:
            base = dict(SETTINGS[args.budget][model])
            base["epochs"] = args.epochs or BUDGETS[args.budget]["epochs"][key]
            for seed in range(args.seeds):
                for loss in args.losses if model != "pop" else ["generic"]:
                    options = dict(base, seed=seed, device=args.device)
                    if loss == "fixed":
                        options["weight_domains"] = [fixed_domain(key, meta)]
                        options["fixed_weight"] = 2.0
                    path = args.out / "runs" / key / f"{model}-{loss}-s{seed}"
                    runs.append(Run(key, model, loss, seed, path, options))
    return runs


def run_state(run: Run) -> str:
    from dwrec.eval.evaluator import is_finished

    if (run.path / "metrics.json").exists():
        return "evaluated"
    if is_finished(run.path):
        return "trained"
    if (run.path / "last.pt").exists():
        return "partial"
    return "new"


class _Probe(Exception):
    """Raised from the training callback to end a timing probe."""


def probe_step_seconds(args: argparse.Namespace, prepared: dict[str, Any], runs: list[Run]):
    """Seconds per training step and steps per epoch of each (dataset, model), measured.

    Trains ``--probe-steps`` + 1 steps of the ``generic`` run's settings in a scratch run
    dir (the first step, which pays one-off set-up costs, is not counted) and times a
    validation pass. Returns ``{(dataset, model): (step_s, steps_per_epoch, valid_s)}``.
    """
    import shutil
    import tempfile

    import dwrec
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.train.config import resolve

    timings = {}
    pairs = sorted({(r.dataset, r.model) for r in runs if run_state(r) != "evaluated"})
    for key, model in pairs:
        options = dict(next(r for r in runs if (r.dataset, r.model) == (key, model)).options)
        options.update(epochs=1, seed=0, weight_domains=None, fixed_weight=None)
        config = resolve(dict(options, model=model))  # the settings dwrec.train will use
        stamps: list[float] = []

        def callback(event, info, stamps=stamps):
            if event == "step":
                stamps.append(time.perf_counter())
                if len(stamps) > args.probe_steps:
                    raise _Probe

        scratch = Path(tempfile.mkdtemp(prefix="dwrec-probe-"))
        try:
            dwrec.train(prepared[key].path, model=model, loss="generic", out=scratch / "run",
                        quiet=True, callback=callback, **options)  # fmt: skip
        except _Probe:
            pass  # otherwise a whole epoch ran in fewer steps than the probe asked for
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 0.0
        dataset = load_dataset(prepared[key].path)
        split = make_split(dataset)
        timings[(key, model)] = (
            step_s,
            _steps_per_epoch(dataset, split, config),
            _time_validation(dataset, split, model, config),
        )
    return timings


def _steps_per_epoch(dataset, split, config) -> int:
    from dwrec.train.batches import n_batches, training_windows

    windows = training_windows(dataset, split, config.model.max_len)
    return n_batches(len(windows), config.train.batch_size)


def _time_validation(dataset, split, model: str, config) -> float:
    """Wall seconds of one validation pass of an untrained model of these settings."""
    from dwrec.eval.evaluator import evaluate_model
    from dwrec.models.registry import build_model

    net = build_model(model, dataset.n_items, config.model).eval()
    start = time.perf_counter()
    evaluate_model(net, dataset, split, which="valid", ks=(10,))
    return time.perf_counter() - start


def estimate(runs: list[Run], timings) -> float:
    """Upper bound in seconds: every unfinished run trains to its epoch cap."""
    seconds = 0.0
    for run in runs:
        state = run_state(run)
        if state == "evaluated":
            continue
        step_s, steps, valid_s = timings[(run.dataset, run.model)]
        epochs = run.options["epochs"]
        if state == "partial":
            epochs = max(epochs - _epochs_done(run.path), 0)
        if state in ("new", "partial"):
            seconds += epochs * (steps * step_s + valid_s)
        seconds += 2 * valid_s  # the test evaluation (all cohorts, two metrics)
    return seconds


def _epochs_done(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if line.strip())


def train_and_evaluate(run: Run) -> None:
    import dwrec
    from dwrec.eval.evaluator import evaluate_run

    state = run_state(run)
    if state == "partial":
        dwrec.train(resume=run.path, quiet=True, device=run.options["device"])
    elif state == "new":
        if run.path.exists() and any(run.path.iterdir()):
            raise SystemExit(f"reproduce_paper: {run.path} holds an unfinished run without "
                             "last.pt; remove it and run again")  # fmt: skip
        # The dataset dir is passed by path so that runs never pick "the most recent".
        dataset = run.path.parents[2] / "datasets" / run.dataset
        dwrec.train(dataset, model=run.model, loss=run.loss, out=run.path, quiet=True,
                    **run.options)  # fmt: skip
    if run_state(run) != "evaluated":
        evaluate_run(run.path, device=run.options["device"])


def write_reports(args, prepared, runs) -> str:
    """One report per (dataset, model) with baseline ``MODEL+generic``; returns the summary."""
    from dwrec.report import report, write_report

    sections = []
    for key in args.datasets:
        dataset_runs = [r for r in runs if r.dataset == key]
        sections.append(f"## {key}: overall test metrics\n\n{overall_table(dataset_runs)}")
        if len(args.losses) < 2:
            continue  # nothing to compare with the baseline
        meta = prepared[key].meta
        sparse, dense = sparse_and_dense(meta)
        focus = sparse + [d for d in dense if d not in sparse]
        if PAPER_DOMAIN in meta["domains"] and PAPER_DOMAIN not in focus:
            focus.insert(0, PAPER_DOMAIN)
        for model in args.models:
            dirs = [r.path for r in dataset_runs if r.model == model]
            if model == "pop":
                continue  # pop ignores the loss: every row would equal the baseline
            result = report(dirs, domains=focus, baseline=f"{model}+generic",
                            cohorts=("target", "power"), bootstrap=args.bootstrap)  # fmt: skip
            path = args.out / f"report-{key}-{model}.md"
            markdown = write_report(result, "md", path)
            body = markdown.split("\n", 1)[1].replace("\n## ", "\n#### ")  # under our headings
            sections.append(f"## {key}: {model}, sparse vs dense domains\n{body}")
    return "\n\n".join(sections)


def overall_table(runs: list[Run]) -> str:
    """Mean test HR@10 / NDCG@10 per model and loss over seeds, with epochs and train time."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        metrics = json.loads((run.path / "metrics.json").read_text())
        log_path = run.path / "log.jsonl"
        log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        rows.setdefault((run.model, run.loss), []).append(
            {"metrics": metrics["overall"], "log": log}
        )
    lines = [
        "| model | loss | seeds | HR@10 | NDCG@10 | epochs (mean) | train s (mean) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (model, loss), items in rows.items():
        n = len(items)
        hr = sum(i["metrics"]["recall@10"] for i in items) / n
        ndcg = sum(i["metrics"]["ndcg@10"] for i in items) / n
        epochs = sum(sum(1 for rec in i["log"] if rec["epoch"] > 0) for i in items) / n
        secs = sum(sum(rec["seconds"] for rec in i["log"]) for i in items) / n
        lines.append(
            f"| {model} | {loss} | {n} | {hr:.4f} | {ndcg:.4f} | {epochs:.1f} | {secs:.0f} |"
        )
    return "\n".join(lines)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu}), {device}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), Python {platform.python_version()}")  # fmt: skip


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    tune_malloc()  # as the dwrec command does (dwrec/runtime.py)

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DWREC_HOME", str(args.out / "home"))
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/reproduce_paper.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = time.perf_counter()
    prepared = prepare_datasets(args)
    runs = plan_runs(args, prepared)
    states = [run_state(r) for r in runs]
    print(f"plan: {len(runs)} runs ({states.count('evaluated')} done, "
          f"{states.count('trained') + states.count('partial')} to finish, "
          f"{states.count('new')} new) under {args.out}")  # fmt: skip
    timings = probe_step_seconds(args, prepared, runs)
    for (key, model), (step_s, steps, valid_s) in sorted(timings.items()):
        print(f"  {key} {model}: {step_s * 1000:.0f} ms/step x {steps} steps/epoch "
              f"+ {valid_s:.1f} s validation")  # fmt: skip
    bound = estimate(runs, timings)
    print(f"estimate: at most {_clock(bound)} (every run to its epoch cap; early stopping "
          "usually ends sooner)", flush=True)  # fmt: skip
    if args.dry_run:
        return 0

    todo = [r for r in runs if run_state(r) != "evaluated"]
    for index, run in enumerate(todo, start=1):
        elapsed = time.perf_counter() - started
        print(f"[{index}/{len(todo)}] {run.label} ({_clock(elapsed)} elapsed)", flush=True)
        train_and_evaluate(run)

    summary = write_reports(args, prepared, runs)
    wall = time.perf_counter() - started
    header = (
        f"# Reproduction ({args.budget} budget)\n\n"
        f"- command: `{command}`\n"
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {machine()}\n"
        f"- load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
        f"- wall time of this invocation: {_clock(wall)} ({len(todo)} runs trained or "
        f"evaluated; the estimate printed before was at most {_clock(bound)})\n"
        f"- settings: {json.dumps(SETTINGS[args.budget])}; epoch caps "
        f"{json.dumps(BUDGETS[args.budget]['epochs'])}\n"
    )
    text = header + "\n" + summary + "\n"
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    print(f"summary: {args.out / 'summary.md'} ({_clock(wall)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
