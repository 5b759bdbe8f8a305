"""Print the zoo table of docs/results.md from finished, evaluated run dirs.

Reads what ``dwrec train`` and ``dwrec evaluate`` wrote into each run dir (config.json,
log.jsonl, train_done.json, metrics.json), never a model, and prints one markdown row per
run: test HR@10 and NDCG@10 (full ranking, history masked: whatever ``dwrec evaluate`` was
asked for), the change against the baseline run, epochs run / best epoch, mean train
seconds per epoch (log.jsonl), the training's wall time (validation included), the settings
that differ from the baseline's (shared options by value; a model's own options only where
they differ from its defaults; an option a model ignores, such as ``heads`` of ``gru4rec``,
is listed all the same).

    python benchmarks/zoo_table.py .bench/zoo/runs/{sasrec,gru4rec,pop,sigma,calrec,sparseennet}-s0 \
        --baseline .bench/zoo/runs/sasrec-s0 --write .bench/zoo/table.md

(With one leave-one-out target per user, HR@10 equals recall@10.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_name, load_average, publish  # noqa: E402

SHARED = ("hidden", "layers", "heads", "ffn", "dropout", "max_len")
TRAIN = ("batch_size", "lr", "weight_decay", "epochs", "patience", "seed")


def read_run(run: Path) -> dict[str, Any]:
    """The parts of a run dir the table needs; a clear error if the run is not done."""
    for name in ("config.json", "train_done.json", "metrics.json"):
        if not (run / name).exists():
            raise SystemExit(f"zoo_table: {run / name} not found (train and evaluate the run)")
    config = json.loads((run / "config.json").read_text())
    done = json.loads((run / "train_done.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    epochs = []
    log = run / "log.jsonl"
    if log.exists():
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {"path": run, "config": config, "done": done, "metrics": metrics, "epochs": epochs}


def model_defaults(name: str) -> dict[str, Any]:
    from dataclasses import asdict

    from dwrec.models.registry import default_config

    try:
        return asdict(default_config(name))
    except Exception:  # a model without a config dataclass (pop)
        return {}


def differences(run: dict[str, Any], base: dict[str, Any]) -> str:
    """Settings of ``run`` that differ from the baseline's, as ``key value`` pairs."""
    model, base_model = run["config"]["model"], base["config"]["model"]
    train, base_train = run["config"]["train"], base["config"]["train"]
    name = model.get("name", "")
    out = []
    for key in SHARED:
        if key in model and key in base_model and model[key] != base_model[key]:
            out.append(f"{key} {model[key]}")
    for key in TRAIN:
        if train.get(key) != base_train.get(key):
            out.append(f"{key} {train.get(key)}")
    if run["config"]["loss"].get("loss") != base["config"]["loss"].get("loss"):
        out.append(f"loss {run['config']['loss'].get('loss')}")
    if name == "pop":
        return "no parameters, no training"
    defaults = model_defaults(name)
    own = [k for k in model if k not in SHARED and k != "name" and k not in base_model]
    changed = [k for k in own if k in defaults and defaults[k] != model[k]]
    out += [f"{key} {model[key]}" for key in changed]
    if own and not changed:
        out.append("own options at their defaults")
    return ", ".join(out) or "-"


def row(run: dict[str, Any], base: dict[str, Any]) -> str:
    overall = run["metrics"]["overall"]
    hr, ndcg = overall["recall@10"], overall["ndcg@10"]
    base_overall = base["metrics"]["overall"]
    if run is base:
        delta = "-"
    else:
        delta = (
            f"{100 * (hr / base_overall['recall@10'] - 1):+.1f}% / "
            f"{100 * (ndcg / base_overall['ndcg@10'] - 1):+.1f}%"
        )
    seconds = [e["seconds"] for e in run["epochs"]]
    done = run["done"]
    trained = bool(seconds) and run["done"].get("epochs_run", 0) > 0  # pop: epoch 0 only
    epochs = f"{done.get('epochs_run', '-')} / {done.get('best_epoch', '-')}" if trained else "-"
    per_epoch = f"{statistics.fmean(seconds):.1f}" if trained else "-"
    # wall time of the whole training (validation included): config.json is written when it
    # starts, train_done.json when it ends (a resumed run would count the pause too)
    path = run["path"]
    wall = (path / "train_done.json").stat().st_mtime - (path / "config.json").stat().st_mtime
    label = run["config"]["model"].get("name", path.name)
    return (
        f"| {label} | {hr:.4f} | {ndcg:.4f} | {delta} | {epochs} | {per_epoch} | {wall:.0f} | "
        f"{differences(run, base)} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished, evaluated run dirs")
    parser.add_argument("--baseline", type=Path, required=True, help="the run others face")
    parser.add_argument("--write", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    base = read_run(args.baseline)
    runs = [base if r.resolve() == args.baseline.resolve() else read_run(r) for r in args.runs]
    commits = sorted({r["done"].get("git_commit", "?")[:7] for r in runs})
    splits = sorted({r["metrics"].get("split_fingerprint", "?") for r in runs})
    env = json.loads((args.baseline / "environment.json").read_text())
    lines = [
        f"- runs: {', '.join(str(r['path'].name) for r in runs)}; dataset "
        f"{base['config']['dataset']['name']} (split {', '.join(splits)}); commit "
        f"{', '.join(commits)}",
        f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {env.get('torch')} "
        f"({env.get('torch_threads')} thread(s) per run); load average now {load_average()}",
        f"- command: `python benchmarks/zoo_table.py {' '.join(sys.argv[1:])}`",
        "",
        "| model | HR@10 | NDCG@10 | vs baseline (HR / NDCG) | epochs run / best | "
        "train s/epoch | wall s | settings that differ from the baseline's |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [row(r, base) for r in runs]
    publish(lines, args.write)


if __name__ == "__main__":
    main()
