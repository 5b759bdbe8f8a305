"""Reproduce the Dynamic Weighted Loss paper's comparison and give a verdict per claim.

Budgets (``--budget``):

- ``quick``: a smoke test (ML-1M, MovieLens-100K and HetRec Last.fm, one seed, small
  models: hidden 32, one block, length 50, batch 32; an epoch cap of 8 on ML-1M and 15
  elsewhere that runs do reach: they are flagged; patience 3). Minutes on 2 CPU cores.
- ``standard`` (default): the paper's four dataset families on 2 CPU cores: the ML-1M
  ratings in ``../shared/data/ml-1m`` (the excerpt there; the full ML-1M when the folder
  holds it), HetRec Last.fm 2K and the S3-Rec Last.fm files, S3-Rec Beauty (Amazon) and
  S3-Rec Yelp; three seeds per group. Models are sized for the CPU: SASRec and the
  competitors at hidden 32, one block (two on ML-1M), sequence length 50 on ML-1M and Last.fm
  and 20 on the S3-Rec Amazon and Yelp sets (their median user has about 6 interactions),
  PinnerFormer at hidden 32, one block, 256 sampled negatives. The total is printed before
  anything trains: measured steps x 60 expected epochs per run (the first ML-1M runs
  stopped early after 59-70 epochs: SASRec generic and fixed 59 and 60, SIGMA 59, CALRec
  70, each with patience 10). On a 2-core EPYC with ``--threads 2``, the 210 trainings take
  about 22 h of an idle machine (the dry run's CPU time per step: ML-1M 2h30m, HetRec
  Last.fm 45 min, S3-Rec Last.fm 40 min, Beauty 5h55m, Yelp 12h20m; Yelp's full-softmax
  models over 20,033 items and the competitors dominate), so it runs over several sessions:
  stop it at any time and run it again.
- ``full``: for a GPU: the paper's model sizes (hidden 64, two blocks, length 200 on ML-1M
  and Last.fm, 50 on S3-Rec) and S3-Rec Sports and Toys as well.

Groups, per dataset and seed: SASRec and PinnerFormer (PinnerFormer trained with the sampled
softmax with log-Q correction, ``--objective sampled-softmax``, as in the paper) each with
``generic``, ``fixed`` (the target domain x2: Film-Noir on MovieLens, else the sparsest
domain with enough test cases), ``dynamic``, ``dynamic-up`` (``--w-min 1``: dense domains keep
weight 1) and the prior-shift control ``generic+prior`` (``dwrec evaluate GENERIC --prior-from
DYNAMIC``, no retraining); SASRec with ``dsl``, ``mml`` and ``adc``; the competitors
``sigma``, ``calrec`` and ``sparseennet`` with the generic loss. A model that the installed
dwrec does not know is skipped with a printed note (and named in the tables).

Training: early stopping on validation NDCG@10 with patience 10 and an epoch cap no run
should reach (200); a run stopped by the cap is flagged in the log and the tables.

The confirmatory family of each dataset (MovieLens: Film-Noir and Horror, the paper's; on
every dataset the three sparsest domains with at least 20 test cases and the three densest,
by training share) is computed from the prepared data and its split before anything
trains and written to ``OUT/plan.json``; later invocations read it from there, so the family
cannot move. It is passed to ``dwrec report --family``.

Resumable: a finished run is skipped, an interrupted one resumed from its ``last.pt``; the
tables under ``OUT/tables/`` are rewritten from the run dirs alone, so stopping the script
at any moment and running it again ends with byte-identical tables. A dataset's tables are
written as soon as its last run finishes (a dataset with runs still to do gets none and is
named as pending in the verdicts); ``--tables-only`` rewrites them from the finished runs
without training anything, e.g. while another invocation is still running. Wall times live apart,
in ``OUT/timing.md`` (every run's wall time and the overhead claim, which is measured from
the runs' per-step times), and ``OUT/summary.md`` assembles both for docs/results.md.

Keeping the results (``--archive DIR``): every finished run is copied to DIR without its
checkpoints (config, log, training summary, evaluation; the per-case columns that all runs
of a dataset share stored once; machine paths made relative; about 200 KB a run on S3-Rec
Beauty), with the plan, as soon as no run still to do needs its checkpoint. A later
invocation with the same ``--archive`` restores into ``--out`` every archived run it lacks,
so a lost ``--out`` (a new machine) costs only the runs under way; committed to git, DIR
lets anyone rebuild the tables from the results alone:
``--tables-only --archive DIR --out NEW_OUT``. Leave ``--archive`` out, or point it at an
empty folder, for a reproduction of your own.

Time limits (``--time-limit 2h50m``): a worker starts no run expected to end after the
limit (the run's rest at the median epoch time logged for its dataset and model, else the
probe's, times the mean epochs of finished runs, or for a run part way at least the epochs
until patience could end it); when nothing fits it writes the tables and
stops, so a job or session with a wall-clock limit does not end part way through a long run.

Workers: the same command started several times on one ``--out`` (for instance two
``--threads 1`` workers on a 2-core machine, which train faster together than one with two
threads) shares the plan. Each run is claimed by one worker (``fcntl.flock`` on a lock file
beside its run dir, which the kernel releases when the worker's process ends, however it
ends); a prior-shift evaluation waits until its generic and dynamic runs are done; a worker
with nothing left to claim waits for the others' runs, then writes the tables. Preparing
the datasets and writing the tables are serialised the same way. The lock files need a
local file system with ``flock`` (Linux, macOS); elsewhere, run one worker per ``--out``.

    python benchmarks/reproduce_paper.py --budget quick --threads 2       # smoke test
    python benchmarks/reproduce_paper.py --dry-run --threads 2            # plan + estimate
    nohup python benchmarks/reproduce_paper.py --threads 2 > repro.log 2>&1 &
    for i in 1 2; do nohup python benchmarks/reproduce_paper.py --threads 1 > w$i.log 2>&1 & done
    python benchmarks/reproduce_paper.py --tables-only                   # tables so far
    python benchmarks/reproduce_paper.py --status                        # how far, time left
    python benchmarks/reproduce_paper.py --tables-only --archive benchmarks/results/reproduce-standard \
        --out .bench/from-archive        # this repository's tables, from its committed results
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if "OMP_WAIT_POLICY" not in os.environ:  # short OpenMP spin waits, as the CLI (dwrec/cli.py)
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
PLAN_VERSION = 1


@dataclass(frozen=True)
class Source:
    name: str  # dwrec prepare source
    folder: str  # under --data-root
    family: str  # the paper's dataset family
    filters: tuple[tuple[str, Any], ...] = ()


MOVIELENS_CORE = (("min_user_interactions", 5), ("min_item_interactions", 5))
DATASETS: dict[str, Source] = {
    "ml-1m": Source("movielens-1m", "ml-1m", "MovieLens", MOVIELENS_CORE),
    "ml-100k": Source("movielens-100k", "ml-100k", "MovieLens", MOVIELENS_CORE),
    "lastfm": Source("lastfm", "hetrec2011-lastfm-2k", "Last.fm"),
    "s3rec-lastfm": Source("s3rec-lastfm", "s3rec-lastfm", "Last.fm"),
    "s3rec-beauty": Source("s3rec-beauty", "s3rec-beauty", "Amazon"),
    "s3rec-sports": Source("s3rec-sports", "s3rec-sports", "Amazon"),
    "s3rec-toys": Source("s3rec-toys", "s3rec-toys", "Amazon"),
    "s3rec-yelp": Source("s3rec-yelp", "s3rec-yelp", "Yelp"),
}
FAMILIES = ("MovieLens", "Last.fm", "Amazon", "Yelp")
PAPER_DOMAINS = {"MovieLens": ("Film-Noir", "Horror")}  # the paper's sparse and dense genre
PAPER_SPARSE = "Film-Noir"
PAPER_FILM_NOIR = {"recall@10": 0.524, "ndcg@10": 0.745}  # claim 1: dynamic over generic
FAMILY_SIZE = 3  # sparsest and densest domains in each dataset's confirmatory family
MIN_CASES = 20  # test cases a family domain needs (dwrec report --min-cases)
METRICS = ("recall@10", "ndcg@10")

MODELS = ("sasrec", "pinnerformer")  # the paper's two backbones
COMPETITORS = ("sigma", "calrec", "sparseennet")  # the paper's baselines, generic loss
ZOO = ("bert4rec", "gru4rec", "pop")  # on request (--models), generic loss, for a zoo table


@dataclass(frozen=True)
class Group:
    model: str
    name: str  # generic, fixed, dynamic, dynamic-up, dsl, mml, adc, prior
    loss: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return (
            f"{self.model}+generic+prior" if self.name == "prior" else f"{self.model}+{self.name}"
        )


def all_groups() -> list[Group]:
    groups = []
    for model in MODELS:
        # the paper trains PinnerFormer with its sampled softmax and log-Q correction
        objective = (("objective", "sampled-softmax"),) if model == "pinnerformer" else ()
        groups += [
            Group(model, "generic", "generic", objective),
            Group(model, "fixed", "fixed", objective),  # weight_domains set per dataset
            Group(model, "dynamic", "dynamic", objective),
            Group(model, "dynamic-up", "dynamic", objective + (("w_min", 1.0),)),
            Group(model, "prior", "generic", objective),  # evaluation only, no training
        ]
        if model == "sasrec":
            groups += [Group(model, loss, loss) for loss in ("dsl", "mml", "adc")]
    groups += [Group(model, "generic", "generic") for model in COMPETITORS + ZOO]
    return groups


GROUP_NAMES = ("generic", "fixed", "dynamic", "dynamic-up", "prior", "dsl", "mml", "adc")

# Model settings per budget: (dataset -> model -> options); "*" is every other dataset and
# every model not named (the competitors take the SASRec sizes they share).
SMALL = {"hidden": 32, "layers": 1, "heads": 2, "dropout": 0.2, "batch_size": 128, "lr": 2e-3}
SETTINGS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "quick": {  # the smoke test's (and docs/results.md's zoo table's) settings
        "*": {
            "*": {"hidden": 32, "layers": 1, "heads": 1, "dropout": 0.2, "max_len": 50,
                  "batch_size": 32, "lr": 2e-3},
            "pinnerformer": {"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "dropout": 0.1,
                             "max_len": 50, "batch_size": 32, "lr": 2e-3, "negatives": 128},
            "bert4rec": {"hidden": 32, "layers": 1, "heads": 1, "dropout": 0.2, "max_len": 50,
                         "batch_size": 32, "lr": 2e-3, "patience": 5},
            "gru4rec": {"hidden": 32, "layers": 1, "dropout": 0.2, "max_len": 50,
                        "batch_size": 32, "lr": 2e-3},
            "pop": {"batch_size": 32},
        },
    },
    "standard": {
        "ml-1m": {"*": dict(SMALL, layers=2, max_len=50),
                  "pinnerformer": dict(SMALL, max_len=50, ffn=64, negatives=256)},
        "lastfm": {"*": dict(SMALL, max_len=50),
                   "pinnerformer": dict(SMALL, max_len=50, ffn=64, negatives=256)},
        "s3rec-lastfm": {"*": dict(SMALL, max_len=50),
                         "pinnerformer": dict(SMALL, max_len=50, ffn=64, negatives=256)},
        "*": {"*": dict(SMALL, max_len=20, batch_size=256),
              "pinnerformer": dict(SMALL, max_len=20, ffn=64, negatives=256,
                                   batch_size=256)},
    },
    "full": {
        "ml-1m": {"*": {"hidden": 64, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 200,
                        "batch_size": 128, "lr": 1e-3},
                  "pinnerformer": {"batch_size": 128, "lr": 1e-3, "max_len": 200}},
        "lastfm": {"*": {"hidden": 64, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 200,
                         "batch_size": 128, "lr": 1e-3},
                   "pinnerformer": {"batch_size": 128, "lr": 1e-3, "max_len": 200}},
        "*": {"*": {"hidden": 64, "layers": 2, "heads": 2, "dropout": 0.2, "max_len": 50,
                    "batch_size": 256, "lr": 1e-3},
              "pinnerformer": {"batch_size": 256, "lr": 1e-3, "max_len": 50}},
    },
}  # fmt: skip
# Options the competitors do not take (their own files define their architecture).
COMPETITOR_KEYS = ("hidden", "dropout", "max_len", "batch_size", "lr")
BUDGETS: dict[str, dict[str, Any]] = {
    "quick": {"datasets": ("ml-1m", "ml-100k", "lastfm"), "seeds": 1, "patience": 3,
              "epochs": {"ml-1m": 8, "*": 15}, "expected_epochs": 8},
    "standard": {"datasets": ("ml-1m", "lastfm", "s3rec-lastfm", "s3rec-beauty", "s3rec-yelp"),
                 "seeds": 3, "epochs": {"*": 200}, "patience": 10, "expected_epochs": 60},
    "full": {"datasets": ("ml-1m", "lastfm", "s3rec-lastfm", "s3rec-beauty", "s3rec-sports",
                          "s3rec-toys", "s3rec-yelp"),
             "seeds": 3, "epochs": {"*": 400}, "patience": 10, "expected_epochs": 40},
}  # fmt: skip


def settings_for(budget: str, dataset: str, model: str) -> dict[str, Any]:
    table = SETTINGS[budget]
    per_dataset = table.get(dataset, table["*"])
    if model == "pop":
        return {"batch_size": per_dataset["*"]["batch_size"]}
    options = dict(per_dataset.get(model, per_dataset["*"]))
    if model in COMPETITORS:
        options = {k: v for k, v in options.items() if k in COMPETITOR_KEYS}
    if model == "gru4rec":
        options.pop("heads", None)
    return options


@dataclass
class Run:
    dataset: str
    group: Group
    seed: int
    path: Path
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.group.label} s{self.seed}"

    @property
    def trains(self) -> bool:
        return self.group.name != "prior"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="standard",
                        help="quick: smoke test; standard: 2-core CPU (default); full: GPU")  # fmt: skip
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS),
                        help="default: the budget's datasets")  # fmt: skip
    parser.add_argument("--models", nargs="+", choices=MODELS + COMPETITORS + ZOO,
                        help="default: sasrec, pinnerformer and the competitors (a model this "
                        "dwrec lacks is skipped with a note); bert4rec, gru4rec and pop on "
                        "request (generic loss)")  # fmt: skip
    parser.add_argument("--groups", "--losses", nargs="+", choices=GROUP_NAMES,
                        help="loss groups of sasrec/pinnerformer (default: all)")  # fmt: skip
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the budget's)")
    parser.add_argument("--epochs", type=int, help="override the budget's epoch cap")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder of the raw datasets (default ../shared/data)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="default .bench/reproduce-BUDGET")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--probe-steps", type=int, default=3,
                        help="timed training steps per (dataset, model) for the estimate")  # fmt: skip
    parser.add_argument("--bootstrap", type=int, default=1000, help="report bootstrap resamples")
    parser.add_argument("--dry-run", action="store_true",
                        help="prepare, write the plan, print the estimate; train nothing")  # fmt: skip
    parser.add_argument("--no-probe", action="store_true",
                        help="skip the timing probe (no estimate)")  # fmt: skip
    parser.add_argument("--tables-only", action="store_true",
                        help="train nothing: rewrite the tables, timing and summary from the "
                        "finished runs (the datasets whose runs are all done)")  # fmt: skip
    parser.add_argument("--time-limit", type=duration, metavar="DURATION",
                        help="e.g. 2h50m: start no run expected to end after this long from "
                        "now (a job's or session's wall-clock limit); the worker stops, "
                        "tables written, once none fits. Expected: the run's own logged "
                        "epochs, else the probe's")  # fmt: skip
    parser.add_argument("--archive", type=Path, metavar="DIR",
                        help="keep every finished run's results, without checkpoints, in DIR "
                        "(a folder to commit: a few hundred KB a run) and restore from it the "
                        "runs --out lacks, so a lost --out costs no finished run")  # fmt: skip
    parser.add_argument("--status", action="store_true",
                        help="prepare and train nothing: print how far the plan under --out "
                        "got (runs done, training now, paused, new; with --archive, how many "
                        "are kept there) and an estimate of the time left, from its files "
                        "alone")  # fmt: skip
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    args.datasets = args.datasets or list(budget["datasets"])
    args.models = args.models or list(MODELS + COMPETITORS)
    args.groups = args.groups or list(GROUP_NAMES)
    args.seeds = args.seeds if args.seeds is not None else budget["seeds"]
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if "generic" not in args.groups:
        parser.error("--groups must include generic: it is every comparison's baseline")
    if "prior" in args.groups and "dynamic" not in args.groups:
        parser.error("--groups prior needs dynamic (the prior comes from the dynamic run)")
    args.patience = budget["patience"]
    args.out = (args.out or REPO / ".bench" / f"reproduce-{args.budget}").absolute()
    if args.archive is not None:
        args.archive = args.archive.absolute()
        if args.archive == args.out or args.out in args.archive.parents:
            parser.error("--archive must lie outside --out (it is the copy kept when OUT is lost)")
    return args


def duration(text: str) -> float:
    """Seconds in ``2h50m``, ``90m``, ``45s``, ``1h`` or a plain number of seconds."""
    import re

    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*"
                         r"(?:(\d+(?:\.\d+)?)s?)?\s*", text)  # fmt: skip
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 2h50m, 90m or 45s")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def log(message: str) -> None:
    print(message, flush=True)


# -- data and the declared families ---------------------------------------------------------


def prepare_datasets(args: argparse.Namespace) -> dict[str, Path]:
    """Prepare (or reuse) each dataset under ``OUT/datasets``; returns key -> dataset dir."""
    import dwrec

    paths = {}
    for key in args.datasets:
        source = DATASETS[key]
        folder = args.data_root / source.folder
        if not folder.exists():
            raise SystemExit(f"reproduce_paper: {folder} not found (pass --data-root)")
        result = dwrec.prepare(source.name, source=folder, out=args.out / "datasets" / key,
                               **dict(source.filters))  # fmt: skip
        counts = result.meta["counts"]
        log(f"dataset {key} ({source.family}): {counts['interactions']:,} interactions, "
            f"{counts['users']:,} users, {counts['items']:,} items, "
            f"{len(result.meta['domains'])} domains")  # fmt: skip
        paths[key] = Path(result.path)
    return paths


def test_cases_per_domain(dataset_dir: Path) -> dict[str, int]:
    """Test cases (held-out targets of the leave-one-out split) per domain of their item."""
    import numpy as np

    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split

    dataset = load_dataset(dataset_dir)
    targets = make_split(dataset).cases("test").target
    counts = np.zeros(len(dataset.domain_names), dtype=np.int64)
    indptr, indices = dataset.item_domain_indptr, dataset.item_domain_indices
    for item in targets:
        counts[indices[indptr[item] : indptr[item + 1]]] += 1
    return {name: int(n) for name, n in zip(dataset.domain_names, counts, strict=True)}


def declare_family(key: str, meta: dict, cases: dict[str, int]) -> dict[str, Any]:
    """The confirmatory family of one dataset, from its domains' shares and test cases.

    The three sparsest and three densest domains (by the prepared data's interaction share,
    ties by name) among those with at least ``MIN_CASES`` test cases; on MovieLens the
    paper's Film-Noir and Horror lead. The ``fixed`` group's target is Film-Noir on MovieLens,
    else the sparsest domain of the family.
    """
    shares = meta["domains"]
    eligible = sorted(
        (d for d in shares if cases.get(d, 0) >= MIN_CASES), key=lambda d: (shares[d]["share"], d)
    )
    sparse = eligible[:FAMILY_SIZE]
    dense = [d for d in eligible[::-1][:FAMILY_SIZE] if d not in sparse]
    paper = [d for d in PAPER_DOMAINS.get(DATASETS[key].family, ()) if d in shares]
    family = list(dict.fromkeys(paper + sparse + dense))
    fixed = PAPER_SPARSE if PAPER_SPARSE in paper else (sparse[0] if sparse else None)
    return {
        "family": family,
        "paper": paper,
        "sparse": sparse,
        "dense": dense,
        "fixed_domain": fixed,
        "test_cases": {d: cases.get(d, 0) for d in family},
        "share": {d: shares[d]["share"] for d in family},
    }


def make_plan(args: argparse.Namespace, dataset_dirs: dict[str, Path]) -> dict[str, Any]:
    """The plan of this invocation; its families come from ``OUT/plan.json`` when it exists."""
    from dwrec.data.dataset import load_dataset

    plan_path = args.out / "plan.json"
    stored = json.loads(plan_path.read_text()) if plan_path.exists() else None
    plan: dict[str, Any] = {
        "version": PLAN_VERSION,
        "budget": args.budget,
        "seeds": args.seeds,
        "epochs": args.epochs or BUDGETS[args.budget]["epochs"],
        "patience": args.patience,
        "models": args.models,
        "groups": args.groups,
        "datasets": {},
    }
    for key, path in dataset_dirs.items():
        dataset = load_dataset(path)
        old = (stored or {}).get("datasets", {}).get(key)
        if old is not None and old["fingerprint"] == dataset.fingerprint:
            declared = old["declared"]  # declared once, never recomputed
        elif old is not None:
            raise SystemExit(
                f"reproduce_paper: {plan_path} declared {key}'s family on another dataset "
                f"(fingerprint {old['fingerprint']}, now {dataset.fingerprint}); use another "
                "--out"
            )
        else:
            declared = declare_family(key, dataset.meta, test_cases_per_domain(path))
        plan["datasets"][key] = {
            "family": DATASETS[key].family,
            "fingerprint": dataset.fingerprint,
            "declared": declared,
            "settings": {m: settings_for(args.budget, key, m) for m in args.models},
        }
    if stored is not None:
        check_stored_plan(args)
        merged = dict(stored["datasets"], **plan["datasets"])
        plan["datasets"] = merged
    write_text(plan_path, json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return plan


def check_stored_plan(args: argparse.Namespace) -> None:
    """Refuse (before any work) an ``--out`` whose plan.json has other budget settings."""
    plan_path = args.out / "plan.json"
    if not plan_path.exists():
        return
    stored = json.loads(plan_path.read_text())
    asked = {
        "budget": args.budget,
        "seeds": args.seeds,
        "epochs": args.epochs or BUDGETS[args.budget]["epochs"],
        "patience": args.patience,
    }
    for name, value in asked.items():
        if stored.get(name) != value:
            raise SystemExit(
                f"reproduce_paper: {plan_path} was made with {name}={stored.get(name)!r}, "
                f"this invocation asks {value!r}; use another --out"
            )


def write_text(path: Path, text: str) -> None:
    from dwrec.io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def known_models(wanted: list[str]) -> list[str]:
    """``wanted`` less the models the installed dwrec lacks (each named in a note)."""
    from dwrec.models.registry import model_names

    names = set(model_names())
    missing = [m for m in wanted if m not in names]
    for model in missing:
        log(f"note: model {model!r} is not in this dwrec (models: {', '.join(sorted(names))}); "
            "its runs are skipped and its claims are 'not testable here'")  # fmt: skip
    return [m for m in wanted if m in names]


def plan_runs(args: argparse.Namespace, plan: dict[str, Any], models: list[str]) -> list[Run]:
    """Every run of the plan, in order: dataset, seed, then group (a prior after its inputs)."""
    runs = []
    for key in args.datasets:
        declared = plan["datasets"][key]["declared"]
        for seed in range(args.seeds):
            for group in all_groups():
                if group.model not in models:
                    continue
                if group.model in MODELS and group.name not in args.groups:
                    continue
                options = dict(settings_for(args.budget, key, group.model))
                options.update(dict(group.options))
                caps = BUDGETS[args.budget]["epochs"]
                options.setdefault("patience", args.patience)  # quick: per model
                options.update(epochs=args.epochs or caps.get(key, caps["*"]), seed=seed,
                               device=args.device, label=group.label)  # fmt: skip
                if group.name == "fixed":
                    if declared["fixed_domain"] is None:
                        continue
                    options.update(weight_domains=[declared["fixed_domain"]], fixed_weight=2.0)
                name = f"{group.model}-{group.name}-s{seed}"
                runs.append(Run(key, group, seed, args.out / "runs" / key / name, options))
    return runs


def find_run(runs: list[Run], run: Run, name: str) -> Run:
    return next(
        r
        for r in runs
        if (r.dataset, r.group.model, r.group.name, r.seed)
        == (run.dataset, run.group.model, name, run.seed)
    )


def run_state(run: Run) -> str:
    from dwrec.eval.evaluator import is_finished

    if (run.path / "metrics.json").exists():
        return "evaluated"
    if not run.trains:
        return "new"
    if is_finished(run.path):
        return "trained"
    if (run.path / "last.pt").exists():
        return "partial"
    return "new"


# -- the estimate ---------------------------------------------------------------------------


class _Probe(Exception):
    """Raised from the training callback to end a timing probe."""


def probe(args: argparse.Namespace, dataset_dirs: dict[str, Path], runs: list[Run]):
    """Seconds per step, steps per epoch and seconds per validation of each (dataset,
    model), measured on ``--probe-steps`` real steps of the generic run's settings (the first
    step, which pays one-off costs, is not counted)."""
    import tempfile

    import torch

    import dwrec

    threads = max(torch.get_num_threads(), 1)
    timings = {}
    pairs = sorted(
        {(r.dataset, r.group.model) for r in runs if r.trains and run_state(r) != "evaluated"}
    )
    for key, model in pairs:
        generic = next(
            r for r in runs if (r.dataset, r.group.model, r.group.name) == (key, model, "generic")
        )
        options = dict(generic.options, epochs=1)
        stamps: list[float] = []
        cpu: list[float] = []
        info: dict[str, Any] = {}

        def callback(event, data, stamps=stamps, cpu=cpu, info=info):
            if event == "step":
                stamps.append(time.perf_counter())
                cpu.append(time.process_time())
                info.update(data)
                if len(stamps) > args.probe_steps:
                    raise _Probe
            elif event == "epoch":
                info["epoch_record"] = data

        scratch = Path(tempfile.mkdtemp(prefix="dwrec-probe-"))
        started = time.perf_counter()
        try:
            dwrec.train(dataset_dirs[key], model=model, loss="generic", out=scratch / "run",
                        quiet=True, callback=callback, **options)  # fmt: skip
        except _Probe:
            pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        wall = time.perf_counter() - started
        step_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
        # CPU seconds per step over the threads in use: the step time of an idle machine
        cpu_s = (cpu[-1] - cpu[0]) / (len(cpu) - 1) / threads if len(cpu) > 1 else step_s
        steps = steps_per_epoch(dataset_dirs[key], model, options)
        timings[(key, model)] = (step_s, steps, cpu_s)
        log(f"  probe {key} {model}: {step_s * 1000:.0f} ms/step wall, {cpu_s * 1000:.0f} ms "
            f"CPU/{threads} thread(s), x {steps} steps/epoch")  # fmt: skip
    return timings


PROBES = "probes.json"  # under --out: the last probe of each (dataset, model), for --status


def save_probes(out: Path, timings: dict) -> None:
    """Merge ``timings`` (:func:`probe`'s) into ``OUT/probes.json``, so that ``--status`` can
    time the runs of a (dataset, model) before any of them has logged an epoch."""
    path = out / PROBES
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for (key, model), (step_s, steps, cpu_s) in timings.items():
        stored[f"{key} {model}"] = {"seconds_per_step": step_s, "steps_per_epoch": steps,
                                    "cpu_seconds_per_step": cpu_s, "measured": when}  # fmt: skip
    write_text(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")


def load_probes(out: Path) -> dict[tuple[str, str], tuple[float, int, float]]:
    """``OUT/probes.json`` as :func:`probe` returns it; empty when there is none."""
    path = out / PROBES
    if not path.exists():
        return {}
    stored = json.loads(path.read_text(encoding="utf-8"))
    return {
        tuple(name.split(" ", 1)): (
            float(t["seconds_per_step"]), int(t["steps_per_epoch"]),
            float(t["cpu_seconds_per_step"]),
        )
        for name, t in stored.items()
    }  # fmt: skip


def steps_per_epoch(dataset_dir: Path, model: str, options: dict[str, Any]) -> int:
    from dwrec.data.dataset import load_dataset
    from dwrec.data.split import make_split
    from dwrec.train.batches import n_batches, training_windows
    from dwrec.train.config import resolve

    config = resolve(dict(options, model=model))
    dataset = load_dataset(dataset_dir)
    windows = training_windows(dataset, make_split(dataset), config.model.max_len)
    return n_batches(len(windows), config.train.batch_size)


VALIDATION_SHARE = 0.15  # validation + evaluation time as a share of an epoch's training


def estimate(runs: list[Run], timings, epochs: int, column: int = 0) -> tuple[float, float]:
    """(expected, upper bound) seconds of the unfinished runs: ``epochs`` epochs per run as
    expected (early stopping), the run's epoch cap as the bound; a validation pass is counted
    as ``VALIDATION_SHARE`` of an epoch. ``column`` 0: measured wall time per step; 2: CPU
    time per step and thread (what an idle machine would take)."""
    expected = bound = 0.0
    for run in runs:
        if not run.trains or run_state(run) in ("evaluated", "trained"):
            continue
        timing = timings.get((run.dataset, run.group.model), (0.0, 0, 0.0))
        step_s, steps = timing[column], timing[1]
        epoch_s = steps * step_s * (1 + VALIDATION_SHARE)
        done, cap = epochs_done(run.path), run.options["epochs"]
        expected += max(min(epochs, cap) - done, 1) * epoch_s
        bound += max(cap - done, 0) * epoch_s
    return expected, bound


def epochs_done(run_dir: Path) -> int:
    return len(read_log(run_dir))


def read_log(run_dir: Path) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# -- running --------------------------------------------------------------------------------


def execute(run: Run, runs: list[Run], dataset_dirs: dict[str, Path]) -> None:
    import dwrec
    from dwrec.eval.prior import evaluate_prior_shift

    device, cap = run.options["device"], run.options["epochs"]
    if not run.trains:
        generic, dynamic = find_run(runs, run, "generic"), find_run(runs, run, "dynamic")
        evaluate_prior_shift(generic.path, dynamic.path, label=run.group.label, out=run.path,
                             device=device)  # fmt: skip
        return
    state = run_state(run)
    if state == "partial":
        dwrec.train(resume=run.path, quiet=True, device=device)
    elif state == "new":
        if run.path.exists() and any(run.path.iterdir()):
            shutil.rmtree(run.path)  # stopped before its first checkpoint: start again
        run.path.parent.mkdir(parents=True, exist_ok=True)
        options = {k: v for k, v in run.options.items()}
        dwrec.train(dataset_dirs[run.dataset], model=run.group.model, loss=run.group.loss,
                    out=run.path, quiet=True, **options)  # fmt: skip
    if stopped_by_cap(run.path, cap):
        log(f"  WARNING: {run.label} reached the epoch cap ({cap}) without stopping early: "
            "flagged in the tables")  # fmt: skip
    elif json.loads((run.path / "train_done.json").read_text())["epochs_run"]:
        summary = json.loads((run.path / "train_done.json").read_text())
        log(f"  {run.label}: stopped early after {summary['epochs_run']} epochs (best "
            f"{summary['best_epoch']}; cap {cap} not reached)")  # fmt: skip
    dwrec.evaluate(run.path, device=device)


def stopped_by_cap(run_dir: Path, cap: int) -> bool:
    done = run_dir / "train_done.json"
    if not done.exists():
        return False
    summary = json.loads(done.read_text())
    return not summary.get("stopped_early") and summary.get("epochs_run", 0) >= cap


# -- tables ---------------------------------------------------------------------------------


def report_json(paths: list[Path], baseline: str, declared: dict, args, **extra) -> dict:
    """``dwrec report`` of ``paths`` as parsed JSON (the family declared, its rows shown)."""
    from dwrec.report import report, write_report

    # paths relative to OUT (the caller's working directory): no machine paths in the tables
    result = report([str(p.relative_to(args.out)) for p in paths], baseline=baseline, domains=declared["family"],
                    family=declared["family"], bootstrap=args.bootstrap, min_cases=MIN_CASES,
                    metrics=list(METRICS), **extra)  # fmt: skip
    return json.loads(write_report(result, "json")), write_report(result, "md")


def done(runs: list[Run]) -> list[Run]:
    return [r for r in runs if run_state(r) == "evaluated"]


def dataset_reports(args, key: str, plan: dict, runs: list[Run]) -> dict[str, Any]:
    """Every report of one dataset: per backbone (groups vs generic), dynamic vs the prior
    shift, and dynamic vs each competitor. Returns name -> (json, markdown)."""
    declared = plan["datasets"][key]["declared"]
    mine = [r for r in done(runs) if r.dataset == key]
    reports: dict[str, Any] = {}

    def paths(model: str, names: tuple[str, ...] | None = None) -> list[Path]:
        return [
            r.path
            for r in mine
            if r.group.model == model and (names is None or r.group.name in names)
        ]

    for model in MODELS:
        groups = {r.group.name for r in mine if r.group.model == model}
        if "generic" in groups and len(groups) > 1:
            reports[f"{model}"] = report_json(paths(model), f"{model}+generic", declared, args)
        if {"prior", "dynamic"} <= groups:
            reports[f"{model}-vs-prior"] = report_json(
                paths(model, ("prior", "dynamic")), f"{model}+generic+prior", declared, args
            )
    for competitor in COMPETITORS:
        theirs = paths(competitor)
        dynamic = paths("sasrec", ("dynamic",))
        if theirs and dynamic:
            reports[f"sasrec-dynamic-vs-{competitor}"] = report_json(
                theirs + dynamic, f"{competitor}+generic", declared, args, allow_mismatch=True
            )
    return reports


def overall_table(runs: list[Run]) -> str:
    """Mean (sd) test Recall@10 / NDCG@10 over seeds, epochs and the cap flag (no times)."""
    rows: dict[str, list[Run]] = {}
    for run in runs:
        rows.setdefault(run.group.label, []).append(run)
    lines = [
        "| group | objective | seeds | Recall@10 | NDCG@10 | epochs (best) | capped |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, members in rows.items():
        metrics = [json.loads((r.path / "metrics.json").read_text()) for r in members]
        objective = dict(members[0].group.options).get("objective", "ce")
        if members[0].group.name in ("dsl", "mml"):
            objective = members[0].group.name
        cells = []
        for metric in METRICS:
            values = [m["overall"][metric] for m in metrics]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4f} ({sd:.4f})")
        if members[0].trains:
            summaries = [json.loads((r.path / "train_done.json").read_text()) for r in members]
            epochs = "/".join(f"{s['epochs_run']} ({s['best_epoch']})" for s in summaries)
            capped = sum(stopped_by_cap(r.path, r.options["epochs"]) for r in members)
            capped_cell = f"**{capped}**" if capped else "0"
        else:
            taus = [m.get("prior", {}).get("tau") for m in metrics]
            epochs = "tau " + "/".join(f"{t:g}" for t in taus if t is not None)
            capped_cell = "-"
        lines.append(f"| {label} | {objective} | {len(members)} | {cells[0]} | {cells[1]} | "
                     f"{epochs} | {capped_cell} |")  # fmt: skip
    return "\n".join(lines)


def pct(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:+.1%}" if math.isfinite(value) else ("+inf" if value > 0 else "-inf")


def figure(cells: list) -> str:
    """``where: lift [low, high] p=...`` per cell, for the verdict table."""
    return "; ".join(
        f"{c.where}: {pct(c.lift)} [{pct(c.lift_low)}, {pct(c.lift_high)}] p={c.p:.3g}"
        + ("*" if c.significant else "")
        for c in cells
    )


def verdict_rows(args, plan, reports: dict[str, dict], models: list[str]) -> list[dict]:
    """Claims 1-5 from the reports' JSON (claim 6 needs wall times: see :func:`overhead`)."""
    from dwrec.report import verdict as rule

    def cells(dataset, name, group, domains):
        data = reports.get(dataset, {}).get(name)
        if data is None:
            return []
        versus = f" vs {name.split('-vs-')[1]}" if "-vs-" in name else ""
        return rule.cells_from_report(data[0], group, domains, METRICS,
                                      where=f"{dataset} {group}{versus}")  # fmt: skip

    movielens = [k for k in args.datasets if DATASETS[k].family == "MovieLens"]
    rows = []
    film = [
        c for k in movielens for m in MODELS for c in cells(k, m, f"{m}+dynamic", ["Film-Noir"])
    ]
    v = rule.improvement(film, "no MovieLens dataset with Film-Noir in this plan")
    inside = rule.paper_inside(film, PAPER_FILM_NOIR)
    v = rule.Verdict(v.verdict, v.reason + (f"; {inside}" if inside else ""))
    rows.append({"claim": "1. Film-Noir: dynamic vs generic", "paper": "Recall@10 +52.4%, NDCG@10 +74.5%",
                 "dwrec": figure(film), **vars(v)})  # fmt: skip
    horror = [c for k in movielens for m in MODELS for c in cells(k, m, f"{m}+dynamic", ["Horror"])]
    v = rule.non_inferiority(horror, untestable="no MovieLens dataset with Horror in this plan")
    rows.append({"claim": "2. Horror maintained or slightly improved", "paper": "maintained or slightly improved",
                 "dwrec": figure(horror), **vars(v)})  # fmt: skip
    dense = [
        c
        for k in args.datasets
        for m in MODELS
        for c in cells(k, m, f"{m}+dynamic", plan["datasets"][k]["declared"]["dense"])
    ]
    v = rule.non_inferiority(dense)
    rows.append({"claim": "3. dense domains not harmed", "paper": "not harmed",
                 "dwrec": figure(dense), **vars(v)})  # fmt: skip
    competitor_cells = [
        c
        for k in args.datasets
        for comp in COMPETITORS
        for c in cells(k, f"sasrec-dynamic-vs-{comp}", "sasrec+dynamic",
                       plan["datasets"][k]["declared"]["sparse"])
    ]  # fmt: skip
    missing = [c for c in COMPETITORS if c not in models]
    v = rule.improvement(
        competitor_cells, "competitor models not in this dwrec: " + ", ".join(missing)
    )
    if missing and v.verdict == "reproduced":
        v = rule.Verdict("partly", v.reason + "; not run: " + ", ".join(missing))
    # the paper gives no margin over the competitors: its Film-Noir lift is the yardstick
    v = v.noted(rule.paper_note(competitor_cells, PAPER_FILM_NOIR, "Film-Noir lift"))
    v = v.noted(rule.unreachable_note(competitor_cells))
    rows.append({"claim": "4. dynamic beats SIGMA, CALRec, SparseEnNet on sparse domains",
                 "paper": "better on sparse domains", "dwrec": figure(competitor_cells),
                 **vars(v)})  # fmt: skip
    per_family = {}
    for family in FAMILIES:
        fam_cells = [
            c
            for k in args.datasets
            if DATASETS[k].family == family
            for m in MODELS
            for c in cells(k, m, f"{m}+dynamic", plan["datasets"][k]["declared"]["sparse"])
        ]
        if fam_cells:
            per_family[family] = (
                rule.improvement(fam_cells)
                .noted(rule.paper_note(fam_cells, PAPER_FILM_NOIR, "Film-Noir lift"))
                .noted(rule.unreachable_note(fam_cells))
            )
    v = rule.across_families(per_family, FAMILIES)
    rows.append({"claim": "5. same pattern on all four dataset families",
                 "paper": "MovieLens, Last.fm, Amazon, Yelp",
                 "dwrec": "; ".join(f"{f}: {x.reason}" for f, x in per_family.items()),
                 **vars(v)})  # fmt: skip
    return rows


def verdict_markdown(rows: list[dict]) -> str:
    lines = [
        "| claim | paper | dwrec: lift [95% CI over seeds and cases] corrected p (* significant) "
        "| verdict | reason |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row["claim"], row["paper"], row["dwrec"] or "-", f"**{row['verdict']}**",
                 row["reason"]]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def prior_answer(args, reports) -> tuple[str, list[dict]]:
    """Does dynamic beat generic+prior on the sparse domains (at equal overall cost: tau
    matched on validation)? One improvement verdict per dataset and backbone."""
    from dwrec.report import verdict as rule

    lines = ["| dataset | model | dynamic vs generic+prior, sparse domains | answer |",
             "|---|---|---|---|"]  # fmt: skip
    rows = []
    for key in args.datasets:
        for model in MODELS:
            data = reports.get(key, {}).get(f"{model}-vs-prior")
            if data is None:
                continue
            sparse = args.plan["datasets"][key]["declared"]["sparse"]
            found = rule.cells_from_report(data[0], f"{model}+dynamic", sparse, METRICS)
            # dynamic's own lift over generic, cell by cell: a prior that explained none of
            # it would leave dynamic that far above generic+prior
            own = {c.where: c.lift for c in rule.cells_from_report(
                reports[key][model][0], f"{model}+dynamic", sparse, METRICS)}  # fmt: skip
            v = rule.improvement(found).noted(rule.undecided_note(
                found, lambda c, own=own: own.get(c.where), "dynamic's own lift over generic"))  # fmt: skip
            v = v.noted(rule.unreachable_note(found))
            answer = {"reproduced": "yes", "partly": "in part", "not reproduced": "no"}.get(
                v.verdict, "not testable"
            )
            rows.append({"dataset": key, "model": model, "answer": answer, "reason": v.reason})
            lines.append(f"| {key} | {model} | {figure(found) or '-'} | **{answer}** "
                         f"({v.reason}) |")  # fmt: skip
    return "\n".join(lines), rows


def write_tables(
    args, plan, runs: list[Run], models: list[str], skipped: list[str], pending: list[str] = ()
) -> dict:
    """Rewrite ``OUT/tables`` from the run dirs (deterministic: no times, no dates)."""
    tables = args.out / "tables"
    reports = {}
    for key in args.datasets:
        mine = [r for r in runs if r.dataset == key]
        with contextlib.chdir(args.out):
            reports[key] = dataset_reports(args, key, plan, runs)
        declared = plan["datasets"][key]["declared"]
        parts = [
            f"# {key} ({DATASETS[key].family})",
            "",
            f"Confirmatory family (declared in plan.json before training): "
            f"{', '.join(declared['family'])}; sparse: {', '.join(declared['sparse'])}; dense: "
            f"{', '.join(declared['dense'])}; fixed target: {declared['fixed_domain']}.",
            "",
            "## Overall test metrics (mean (sd) over seeds)",
            "",
            overall_table(mine),
        ]
        for name, (_, markdown) in reports[key].items():
            body = markdown.split("\n", 1)[1].replace("\n## ", "\n### ")
            parts += ["", f"## {name}", body.rstrip()]
        write_text(tables / f"{key}.md", "\n".join(parts) + "\n")
        data = {
            "dataset": key,
            "family": DATASETS[key].family,
            "declared": declared,
            "reports": {name: value[0] for name, value in reports[key].items()},
        }
        write_text(tables / f"{key}.json", json.dumps(data, indent=2, sort_keys=True) + "\n")
    args.plan = plan
    rows = verdict_rows(args, plan, reports, models)
    prior_md, prior_rows = prior_answer(args, reports)
    notes = [f"- model `{m}` is not in this dwrec: its runs were skipped." for m in skipped]
    notes += list(pending)
    text = "\n".join(
        [
            f"# Verdicts ({args.budget} budget)",
            "",
            verdict_markdown(rows),
            "",
            "Claim 6 (overhead) is measured from wall times: see timing.md.",
            *([""] + notes if notes else []),
            "",
            "## Prior-shift control: does dynamic beat generic+prior on sparse domains?",
            "",
            "generic+prior: the generic run's scores plus tau * log w(item), w the dynamic "
            "run's final domain weights, tau matched on validation to dynamic's overall "
            "NDCG@10 (equal overall cost).",
            "",
            prior_md,
        ]
    )
    write_text(tables / "verdict.md", text + "\n")
    write_text(tables / "verdict.json",
               json.dumps({"claims": rows, "prior_shift": prior_rows, "skipped_models": skipped},
                          indent=2, sort_keys=True) + "\n")  # fmt: skip
    return reports


def timing(args, runs: list[Run], started: float, estimate_s: float) -> tuple[str, dict]:
    """The runs table (wall times) and claim 6 (overhead of dynamic over generic per step)."""
    from dwrec.report import verdict as rule
    from dwrec.rundir import RunDir, step_seconds

    lines = ["| run | epochs | stopped | train s | ms/step | threads | commit |",
             "|---|---:|---|---:|---:|---:|---|"]  # fmt: skip
    commits: dict[str, int] = {}
    cpus: dict[str, int] = {}
    steps: dict[str, float] = {}  # run label -> seconds per step, from the log read here
    for run in done(runs):
        if not run.trains:
            continue
        made = run_environment(run.path)
        commits[made["commit"]] = commits.get(made["commit"], 0) + 1
        cpus[made["cpu"]] = cpus.get(made["cpu"], 0) + 1
        records = read_log(run.path)
        seconds = sum(r["seconds"] for r in records)
        stop = "cap" if stopped_by_cap(run.path, run.options["epochs"]) else "early"
        per_step = steps[run.label] = step_seconds(records)
        if not math.isfinite(per_step):  # pop: fitted, no steps
            stop, step_cell = "fitted", "-"
        else:
            step_cell = f"{per_step * 1000:.1f}"
        lines.append(f"| {run.label} | {len(records)} | {stop} | {seconds:.0f} | {step_cell} "
                     f"| {made['threads']} | {made['commit']} |")  # fmt: skip
    ratios = []
    by_commit: dict[str, list[float]] = {}  # the dynamic run's commit -> its pairs' ratios
    for run in done(runs):
        if run.group.name == "dynamic" and run.group.model in MODELS:
            generic = find_run(runs, run, "generic")
            if run_state(generic) == "evaluated":
                step, generic_step = (
                    steps[r.label] if r.label in steps else RunDir(r.path).step_seconds()
                    for r in (run, generic)
                )
                ratios.append(step / generic_step - 1)
                commit = run_environment(run.path)["commit"]
                by_commit.setdefault(commit, []).append(ratios[-1])
    v = rule.overhead(ratios)
    claim = {"claim": "6. overhead under 1% of training time", "paper": "< 1%",
             "dwrec": ", ".join(pct(r) for r in ratios) or "-", **vars(v)}  # fmt: skip
    text = "\n".join(
        [
            f"# Timing ({args.budget} budget)",
            "",
            f"- machine: {machine()}",
            "- wall time: every run's own, below (this invocation only rewrote the tables)"
            if args.tables_only
            else f"- wall time of this invocation: {clock(time.perf_counter() - started)} "
            f"(estimate printed before: {clock(estimate_s)})",
            "",
            "## Claim 6: per-step time of dynamic vs generic (paired by dataset, model, seed)",
            "",
            "Per-step time: each run's median over its epochs of training seconds per step "
            "(the `ms/step` column below), so an epoch slowed by a suspension or another job "
            "does not stand for the whole run.",
            "",
            verdict_markdown([claim]),
            "",
            "By the `dynamic` run's commit (the weighting's code is the dynamic run's; "
            "`generic` runs no weighting code): " + overhead_per_commit(by_commit),
            "",
            "## Every run's wall time",
            "",
            "Threads and commits: each run's own `config.json` and `environment.json` (a run "
            "keeps its thread count when resumed; `a+b`: trained at commit a, resumed at b; "
            "runs written before dwrec kept earlier invocations name only the last). Commits: "
            + runs_per(commits),
            "",
            "CPUs (environment.json `cpu`; float results depend on the processor, so a run "
            "matches another bit for bit only on the same CPU model): " + runs_per(cpus),
            "",
            *lines,
        ]
    )
    return text, claim


def overhead_per_commit(by_commit: dict[str, list[float]]) -> str:
    """``"a: median +3.3% over 18 pairs; b: ..."`` in commit order, ``"-"`` when empty."""
    parts = []
    for commit, values in sorted(by_commit.items()):
        finite = [v for v in values if math.isfinite(v)]
        median = pct(statistics.median(finite)) if finite else "-"
        parts.append(f"{commit}: median {median} over {len(values)} "
                     f"pair{'' if len(values) == 1 else 's'}")  # fmt: skip
    return "; ".join(parts) or "-"


def runs_per(counts: dict[str, int]) -> str:
    """``"a (2 runs), b (1 run)"`` in key order, ``"-"`` when empty."""
    return (
        ", ".join(f"{k} ({n} run{'' if n == 1 else 's'})" for k, n in sorted(counts.items())) or "-"
    )


def run_environment(path: Path) -> dict[str, str]:
    """The torch threads a run trained on (config.json ``threads``, which a resumed run keeps;
    environment.json ``torch_threads`` for runs that predate it), and the short git commits
    and the CPUs of the invocations that trained it, oldest first, each joined by ``+``
    (environment.json and its ``earlier`` list; runs written before that list record only
    the last; ``?`` for a commit outside a git checkout, ``unrecorded`` for a CPU before
    environment.json named it)."""
    from dwrec.io import read_json
    from dwrec.rundir import RunDir

    folder = RunDir(path)
    config, made = read_json(folder.config_path), read_json(folder.environment_path)
    threads = config.get("threads") or made.get("torch_threads") or "?"
    commits: list[str] = []
    cpus: list[str] = []
    for invocation in [*made.get("earlier", []), made]:
        commit = (invocation.get("git_commit") or "?")[:7]
        cpu = invocation.get("cpu") or "unrecorded"
        commits += [commit] if commit not in commits else []
        cpus += [cpu] if cpu not in cpus else []
    return {"threads": str(threads), "commit": "+".join(commits), "cpu": "+".join(cpus)}


def machine() -> str:
    import torch

    from dwrec.devices import cpu_name

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({cpu_name()}), "
            f"{device}, torch {torch.__version__} ({torch.get_num_threads()} thread(s)), "
            f"Python {platform.python_version()}")  # fmt: skip


PLOT_MODELS = ("sasrec", "pinnerformer")
"""The backbones of the lift-vs-share figure, one panel each."""


def _lift_value(value) -> float | None:
    """A lift from the report JSON, which writes an infinite one as the string "inf"."""
    return None if value is None else float(value)


def _finite_json(value):
    """``value`` with every non-finite float written as a string ("inf"), as the report
    JSON writes it, so the file stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def lift_points(args, reports: dict) -> dict:
    """What the lift-vs-share figure shows: per backbone, every declared-family domain's
    NDCG@10 lift of dynamic over generic (target cohort) with its CI over seeds and cases and
    whether it is significant (Holm within the family, same sign in every seed), from the
    same report cells as the tables. A lift that is infinite (generic scored 0) has no point:
    it is listed in ``not_drawn``."""
    points: dict[str, list[dict]] = {}
    not_drawn: list[str] = []
    for model in PLOT_MODELS:
        for key in args.datasets:
            data = reports.get(key, {}).get(model)
            if data is None:
                continue
            shares = {d["domain"]: d["share"] for d in data[0]["domains"]}
            for table in data[0]["tables"]:
                if table.get("cohort", "target") != "target":
                    continue
                for row in table["rows"]:
                    cell = row["cells"].get("ndcg@10", {})
                    lift = _lift_value(cell.get("lift"))
                    if row["group"] != f"{model}+dynamic" or lift is None:
                        continue
                    if not math.isfinite(lift):
                        not_drawn.append(f"{model} {key} {row['domain']}")
                    elif shares.get(row["domain"]):
                        points.setdefault(model, []).append({
                            "dataset": key, "domain": row["domain"], "n": row["n"],
                            "share": shares[row["domain"]], "lift": lift,
                            "low": _lift_value(cell.get("lift_low")),
                            "high": _lift_value(cell.get("lift_high")),
                            "significant": bool(cell.get("significant")),
                        })  # fmt: skip
    return {"metric": "ndcg@10", "cohort": "target", "points": points, "not_drawn": not_drawn}


def plot(args, reports: dict) -> str:
    """The lift of dynamic over generic (NDCG@10) against domain share, every complete
    dataset, one panel per backbone, with CIs; the plotted numbers also go to
    ``OUT/tables/lift-vs-share.json`` (written with or without matplotlib)."""
    data = lift_points(args, reports)
    write_text(args.out / "tables" / "lift-vs-share.json",
               json.dumps(_finite_json(data), indent=2, sort_keys=True) + "\n")  # fmt: skip
    if not data["points"]:
        return "lift-vs-share plot skipped: no dynamic vs generic report yet"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "lift-vs-share plot skipped: matplotlib is not installed (pip install matplotlib)"
    models = [m for m in PLOT_MODELS if m in data["points"]]
    figure_, panels = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5),
                                   sharey=True, squeeze=False)  # fmt: skip
    every = [p for model in models for p in data["points"][model]]
    top = max(100.0, 1.3 * max(100 * p["lift"] for p in every))
    colours = {key: f"C{i}" for i, key in enumerate(args.datasets)}
    for axes, model in zip(panels[0], models, strict=True):
        for key in args.datasets:
            mine = [p for p in data["points"][model] if p["dataset"] == key]
            if not mine:
                continue
            for significant in (True, False):
                chosen = [p for p in mine if p["significant"] == significant]
                if not chosen:
                    continue
                xs = [p["share"] for p in chosen]
                ys = [100 * p["lift"] for p in chosen]
                below = [100 * (p["lift"] - p["low"]) if p["low"] is not None else 0.0
                         for p in chosen]  # fmt: skip
                above = [100 * (min(p["high"], 1e6) - p["lift"]) if p["high"] is not None
                         else 0.0 for p in chosen]  # fmt: skip
                axes.errorbar(
                    xs, ys, yerr=[below, above], fmt="o", color=colours[key],
                    markerfacecolor=colours[key] if significant else "white",
                    elinewidth=0.8, capsize=2,
                    label=key if significant or not any(p["significant"] for p in mine)
                    else None,
                )  # fmt: skip
        axes.set_xscale("log")
        # linear from -100% to +100%, logarithmic above: a lift of several hundred percent
        # on a sparse domain with a few dozen test cases must not flatten the others
        axes.set_yscale("symlog", linthresh=100, linscale=2)
        axes.set_ylim(-100, top)
        ticks = [t for t in (-100, -50, 0, 50, 100, 300, 1000, 3000, 10000) if t <= top]
        axes.set_yticks(ticks)
        axes.set_yticklabels([f"{t:+d}" if t else "0" for t in ticks])
        axes.axhline(0, color="grey", linewidth=0.8)
        axes.set_xlabel("domain share of training interactions")
        axes.set_title(f"{model}: dynamic vs generic")
        axes.legend(fontsize=8)
    panels[0][0].set_ylabel("NDCG@10 lift, target cohort (%)")
    caption = ("filled: significant (Holm within the declared family, same sign in every "
               "seed); bars: 95% CI over seeds and cases, cut at the top edge; y axis linear "
               "up to +100%, logarithmic above")  # fmt: skip
    if data["not_drawn"]:
        caption += "\nnot drawn (generic at 0, infinite lift): " + ", ".join(data["not_drawn"])
    figure_.text(0.01, 0.01, caption, fontsize=7, va="bottom")
    figure_.tight_layout(rect=(0, 0.06 + 0.03 * bool(data["not_drawn"]), 1, 1))
    path = args.out / "lift-vs-share.png"
    from dwrec.io import atomic_path

    with atomic_path(path) as tmp:  # a killed run leaves the old plot or none, never half of one
        figure_.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(figure_)
    missing = (
        f" (infinite lifts not drawn: {', '.join(data['not_drawn'])})" if data["not_drawn"] else ""
    )
    return f"plot: {path.name}{missing}"


def stop_on_sigint() -> None:
    """Make SIGINT stop this worker in every phase. A worker started in the background by a
    non-interactive shell (``nohup ... &`` in a script) inherits SIGINT ignored, and Python
    then keeps it ignored: ``kill -INT`` stopped such a worker only while it trained (the
    trainer sets its own handler) and was lost while it evaluated, archived or waited."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.status:
        return status(args)
    stop_on_sigint()
    import torch

    from dwrec.runtime import tune_malloc

    tune_malloc()  # as the dwrec command does
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("DWREC_HOME", str(args.out / "home"))
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/reproduce_paper.py " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    started = time.perf_counter()
    log(f"reproduce_paper ({args.budget}): {command}")
    with claim(args.out / "setup", wait=True):  # one worker at a time prepares and plans
        if args.archive is not None:
            restore_plan(args)
        check_stored_plan(args)
        dataset_dirs = prepare_datasets(args)
        plan = make_plan(args, dataset_dirs)
        models = known_models(args.models)
        if args.archive is not None:
            restore_runs(args, plan_runs(args, plan, models))
    for key in args.datasets:
        declared = plan["datasets"][key]["declared"]
        log(f"family {key}: {', '.join(declared['family'])} (fixed target "
            f"{declared['fixed_domain']}; test cases {declared['test_cases']})")  # fmt: skip
    skipped = [m for m in args.models if m not in models]
    runs = plan_runs(args, plan, models)
    states = [run_state(r) for r in runs]
    log(f"plan: {len(runs)} runs ({states.count('evaluated')} done, "
        f"{states.count('trained') + states.count('partial')} to finish, "
        f"{states.count('new')} new) under {args.out}; plan in plan.json")  # fmt: skip
    expected, timings = 0.0, {}
    if not (args.no_probe or args.tables_only):
        timings = probe(args, dataset_dirs, runs)
        save_probes(args.out, timings)
        epochs = BUDGETS[args.budget]["expected_epochs"]
        expected, bound = estimate(runs, timings, epochs)
        idle, _ = estimate(runs, timings, epochs, column=2)
        per_dataset = {
            key: estimate([r for r in runs if r.dataset == key], timings, epochs, column=2)[0]
            for key in args.datasets
        }
        if skipped:
            untimed = len(args.datasets) * args.seeds * len(skipped)
            log(f"  not in the estimate: {untimed} runs of {', '.join(skipped)} (not installed)")
        log("estimate on an idle machine (CPU time per step / threads): about "
            f"{clock(idle)}; per dataset: "
            + ", ".join(f"{k} {clock(v)}" for k, v in per_dataset.items()))  # fmt: skip
        log(f"estimate at the measured wall time per step (load average "
            f"{os.getloadavg()[0]:.1f}): about {clock(expected)} (assuming "
            f"{BUDGETS[args.budget]['expected_epochs']} epochs per run with early stopping, "
            f"patience {args.patience}); at most {clock(bound)} if every run reached its epoch "
            f"cap ({args.epochs or BUDGETS[args.budget]['epochs']})")  # fmt: skip
    if args.dry_run:
        return 0
    todo = [] if args.tables_only else [r for r in runs if run_state(r) != "evaluated"]
    index, waiting = 0, False
    deadline = None if args.time_limit is None else started + args.time_limit
    while todo:
        candidates = todo if deadline is None else fitting(todo, runs, args, timings, deadline)
        if not candidates:
            log(out_of_time(todo, args))
            break
        with contextlib.ExitStack() as claims:
            run = claim_next(candidates, runs, claims)
            if run is None:  # every run left is held by another worker, or waits on one
                if deadline is not None and not any(held_elsewhere(r.path) for r in todo):
                    log(out_of_time(todo, args))  # what fits waits on runs that do not
                    break
                if not waiting:
                    log(waiting_line(todo, candidates, runs, args))
                waiting = True
                try:
                    time.sleep(POLL_SECONDS)
                except KeyboardInterrupt:
                    log("interrupted while waiting for other workers; run the same command "
                        "again to continue")  # fmt: skip
                    return 130
                continue
            waiting = False
            ran = run_state(run) != "evaluated"  # else another worker finished it meanwhile
            if ran:
                index += 1
                elapsed = time.perf_counter() - started
                left = f", about {clock(max(expected - elapsed, 0))} left" if expected else ""
                log(f"[{index}/{len(todo) + index - 1}] {run.label} ({clock(elapsed)} "
                    f"elapsed{left})")  # fmt: skip
                try:
                    execute(run, runs, dataset_dirs)
                except KeyboardInterrupt as stop:  # Ctrl-C / SIGINT: last.pt saved first
                    log(f"interrupted during {run.label}: {stop or 'no checkpoint yet'}. "
                        "Finished runs are kept; run the same command again to continue "
                        "from here.")  # fmt: skip
                    return 130
        todo.remove(run)
        if ran and args.archive is not None:
            archive_runs(args, runs)
        ours = [r for r in runs if r.dataset == run.dataset]
        if ran and todo and all(run_state(r) == "evaluated" for r in ours):
            with claim(args.out / "publish", wait=True):
                publish_between(run.dataset, args, plan, runs, models, skipped, command,
                                started, expected)  # fmt: skip
    if args.archive is not None:
        archive_runs(args, runs)
    with claim(args.out / "publish", wait=True):
        publish(args, plan, runs, models, skipped, command, started, expected)
    return 0


# -- the archive: finished runs kept outside --out -------------------------------------------


def archive_path(args: argparse.Namespace, run: Run) -> Path:
    """Where ``run``'s results lie in ``--archive`` (the layout of ``--out``)."""
    return args.archive / run.path.relative_to(args.out)


def shared_cases(args: argparse.Namespace, run: Run) -> Path:
    """The archive's per-case columns common to ``run``'s dataset (users, targets, domains)."""
    return args.archive / "runs" / run.dataset / "cases.parquet"


def archivable(run: Run, runs: list[Run]) -> bool:
    """Evaluated, and no run still to do needs its checkpoint: a generic or dynamic run waits
    for its prior-shift evaluation, which scores with both models."""
    if run_state(run) != "evaluated":
        return False
    if run.trains and run.group.name in ("generic", "dynamic"):
        return all(
            run_state(r) == "evaluated"
            for r in runs
            if not r.trains
            and (r.dataset, r.group.model, r.seed) == (run.dataset, run.group.model, run.seed)
        )
    return True


def archive_runs(args: argparse.Namespace, runs: list[Run]) -> int:
    """Copy the plan and every archivable run not yet in ``--archive`` there (results only,
    the per-case columns its dataset's runs share kept once: :func:`dwrec.export.
    export_results`); returns how many runs were copied."""
    from dwrec.errors import DwrecError
    from dwrec.export import export_results
    from dwrec.rundir import METRICS

    copied = 0
    with claim(args.out / "archive", wait=True):
        write_text(args.archive / "plan.json", (args.out / "plan.json").read_text())
        for run in runs:
            if not (archive_path(args, run) / METRICS).exists() and archivable(run, runs):
                try:
                    export_results(run.path, archive_path(args, run), root=args.out,
                                   shared=shared_cases(args, run))  # fmt: skip
                except (DwrecError, OSError) as error:  # the training goes on regardless
                    log(f"archive: {run.label} not kept: {error}")
                    continue
                copied += 1
    if copied:
        log(f"archive: {copied} finished run(s) copied to {args.archive}")
    return copied


def restore_plan(args: argparse.Namespace) -> None:
    """Start a new ``--out`` from the archived plan, so the declared families stay put."""
    stored, ours = args.archive / "plan.json", args.out / "plan.json"
    if stored.exists() and not ours.exists():
        write_text(ours, stored.read_text())
        log(f"archive: plan.json restored from {args.archive}")


def restore_runs(args: argparse.Namespace, runs: list[Run]) -> int:
    """Copy into ``--out`` every archived run that ``--out`` lacks (or holds unfinished);
    returns how many. A restored run is evaluated: nothing trains it again."""
    from dwrec.export import expand_results
    from dwrec.io import atomic_dir
    from dwrec.rundir import METRICS

    restored = 0
    for run in runs:
        source = archive_path(args, run)
        if run_state(run) == "evaluated" or not (source / METRICS).exists():
            continue
        with claim(run.path) as mine:
            if not mine:  # a worker trains it now: it finishes it
                continue
            with atomic_dir(run.path) as tmp:  # replaced whole, or not at all
                shutil.copytree(source, tmp, dirs_exist_ok=True)
                expand_results(tmp, shared_cases(args, run))  # its per-case table, whole
        restored += 1
    if restored:
        log(f"archive: {restored} finished run(s) restored from {args.archive}")
    return restored


POLL_SECONDS = 5
"""How often a worker with nothing to claim looks again (its last runs held by others)."""


def claim_next(todo: list[Run], runs: list[Run], claims: contextlib.ExitStack) -> Run | None:
    """The first run of ``todo`` (plan order) whose inputs are done (a prior-shift evaluation
    needs its generic and dynamic runs evaluated) and that this worker could claim; the
    claim is held until ``claims`` closes. None when every such run is held elsewhere."""
    for run in todo:
        if not run.trains and any(
            run_state(find_run(runs, run, name)) != "evaluated" for name in ("generic", "dynamic")
        ):
            continue
        if claims.enter_context(claim(run.path)):
            return run
    return None


@contextlib.contextmanager
def claim(path: Path, wait: bool = False):
    """Hold an exclusive claim on ``path`` (a run dir, or the tables) among the processes
    sharing ``--out``: ``fcntl.flock`` on ``.<name>.lock`` beside it. Yields whether it is
    held; ``wait``: block until it is. The kernel drops the claim when its process ends,
    however it ends (a killed worker leaves nothing to clean). Without ``fcntl`` (Windows)
    every claim is granted: run one worker per ``--out`` there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield True
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock, "a+")  # noqa: SIM115 - closed below, after the claim is released
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


def lock_path(path: Path) -> Path:
    """The lock file of ``path``'s claim (:func:`claim`)."""
    return path.parent / f".{path.name}.lock"


def held_elsewhere(path: Path) -> bool:
    """Whether a process holds the claim on ``path`` now (a worker training it). Asks for a
    shared lock without waiting and gives it straight back; False without ``fcntl``."""
    lock = lock_path(path)
    if not lock.exists():
        return False
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    with open(lock) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def plan_from_out(args: argparse.Namespace) -> dict[str, Any]:
    """``OUT/plan.json``, with ``args`` set to its budget, seeds, epoch cap, models, groups
    and datasets (in the budget's order), as the invocation that wrote it had them."""
    plan_path = args.out / "plan.json"
    if not plan_path.exists():
        raise SystemExit(
            f"reproduce_paper: no plan under {args.out} (plan.json is missing): start the run "
            "first, or pass the --out it runs under"
        )
    plan = json.loads(plan_path.read_text())
    args.budget, args.seeds, args.patience = plan["budget"], plan["seeds"], plan["patience"]
    args.epochs = plan["epochs"] if isinstance(plan["epochs"], int) else None
    args.models, args.groups = plan["models"], plan["groups"]
    args.datasets = budget_order(args.budget, plan["datasets"])
    return plan


def budget_order(budget: str, keys) -> list[str]:
    """``keys`` in the budget's dataset order, any others after them sorted: the order of
    every table, whatever order ``--datasets`` trained them in."""
    order = [k for k in BUDGETS[budget]["datasets"] if k in keys]
    return order + sorted(k for k in keys if k not in order)


def earliest_stop(run: Run, records: list[dict]) -> int:
    """The epoch by which patience ends a run part way if it improves no more (its best
    epoch so far plus the patience, at most the cap); 0 before a best epoch is logged."""
    best = max((r["epoch"] for r in records if r.get("best")), default=None)
    if best is None:
        return 0
    return min(best + run.options["patience"], run.options["epochs"])


def run_progress(run: Run) -> str:
    """A training run's epoch, its best epoch so far and the epoch by which patience ends it."""
    records = read_log(run.path)
    if not records:
        return f"{run.label}: no epoch finished yet"
    best = max((r for r in records if r.get("best")), key=lambda r: r["epoch"], default=None)
    if best is None:
        return f"{run.label}: epoch {records[-1]['epoch']}"
    last_stop = earliest_stop(run, records)
    ndcg = best.get("valid", {}).get("ndcg@10")
    score = f", validation NDCG@10 {ndcg:.4f}" if ndcg is not None else ""
    return (f"{run.label}: epoch {records[-1]['epoch']}, best {best['epoch']}{score}; stops "
            f"by epoch {last_stop} unless it improves")  # fmt: skip


def remaining_seconds(
    runs: list[Run], expected: int, timings=None
) -> tuple[dict[str, float], list[Run]]:
    """Seconds one worker needs for the unfinished trainings of ``runs``, per dataset
    (:func:`seconds_left` of each, ``timings`` the probes'), and the unfinished runs it
    cannot time yet."""
    per_dataset: dict[str, float] = {}
    untimed = []
    costs = seconds_left(runs, expected, timings)
    for run in (r for r in runs if r.label in costs):
        cost = costs[run.label]
        if cost is None:
            untimed.append(run)
        else:
            per_dataset[run.dataset] = per_dataset.get(run.dataset, 0.0) + cost
    return per_dataset, untimed


def seconds_left(runs: list[Run], expected: int, timings=None) -> dict[str, float | None]:
    """Seconds one worker needs to finish each unfinished training of ``runs``, by run label
    (an estimate from the runs' own logs); ``None`` for a run it cannot time.

    Per (dataset, model): seconds per epoch, the median over every epoch logged so far, else
    the probe's (``timings``: steps x wall seconds per step), plus ``VALIDATION_SHARE`` for
    the validation; epochs per run, the mean of the finished trainings of the same dataset
    and model, else of the same model on any dataset, else ``expected``. A run part way
    needs the rest of those epochs, and at least the epochs until patience could end it
    (:func:`earliest_stop`), and at least one."""
    logs = {r.label: read_log(r.path) for r in runs if r.trains}  # each log read once
    finished = {r.label for r in runs if r.trains and run_state(r) in ("trained", "evaluated")}
    seconds: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        if run.trains:
            pair = (run.dataset, run.group.model)
            epochs = [rec["seconds"] for rec in logs[run.label] if rec.get("epoch", 0) > 0]
            seconds.setdefault(pair, []).extend(epochs)

    def mean_epochs(pick) -> float | None:
        counts = [len(logs[r.label]) for r in runs if r.label in finished and pick(r)]
        return statistics.fmean(counts) if counts else None

    costs: dict[str, float | None] = {}
    for run in runs:
        if not run.trains or run.label in finished:
            continue
        pair = (run.dataset, run.group.model)
        if seconds[pair]:
            epoch_s = statistics.median(seconds[pair])
        elif timings and pair in timings:
            step_s, steps = timings[pair][0], timings[pair][1]
            epoch_s = step_s * steps
        else:
            costs[run.label] = None
            continue
        epochs = (mean_epochs(lambda r, pair=pair: (r.dataset, r.group.model) == pair)
                  or mean_epochs(lambda r, run=run: r.group.model == run.group.model)
                  or expected)  # fmt: skip
        done = len(logs[run.label])  # a run past the mean runs at least to its patience
        left = max(epochs - done, earliest_stop(run, logs[run.label]) - done, 1.0)
        costs[run.label] = left * epoch_s * (1 + VALIDATION_SHARE)
    return costs


def out_of_time(todo: list[Run], args) -> str:
    return (f"time limit: {len(todo)} run(s) left, none expected to end within the "
            f"{clock(args.time_limit)} limit; stopping here (run the same command again to "
            "continue)")  # fmt: skip


def waiting_line(todo: list[Run], candidates: list[Run], runs: list[Run], args) -> str:
    """What a worker with nothing it could claim waits on, and which runs it leaves to
    others because they would end after its time limit (``candidates``: the runs that fit),
    with the prior-shift evaluations that need one of those."""
    unfit = [r for r in todo if r not in candidates and not held_elsewhere(r.path)]
    unfit += [r for r in todo if not r.trains and r not in unfit and any(
        find_run(runs, r, name) in unfit for name in ("generic", "dynamic"))]  # fmt: skip
    line = f"waiting: {len(todo) - len(unfit)} runs held by other workers or waiting on theirs"
    if unfit:
        line += (f"; {len(unfit)} not started here, expected to end after the "
                 f"{clock(args.time_limit)} limit (a worker with a longer --time-limit, or "
                 "none, starts them)")  # fmt: skip
    return line


def fitting(todo: list[Run], runs: list[Run], args, timings, deadline: float) -> list[Run]:
    """The runs of ``todo`` expected to finish before ``deadline`` (``time.perf_counter()``
    seconds): a training by :func:`seconds_left`, one it cannot time as fitting; a
    prior-shift evaluation (minutes) whenever any time is left."""
    left = deadline - time.perf_counter()
    if left <= 0:
        return []
    costs = seconds_left(runs, BUDGETS[args.budget]["expected_epochs"], timings)
    return [r for r in todo if not r.trains or (costs.get(r.label) or 0.0) <= left]


def status(args: argparse.Namespace) -> int:
    """``--status``: how far the plan under ``--out`` got and about how long the rest takes,
    from its files alone (nothing is prepared, trained or written)."""
    plan = plan_from_out(args)
    runs = plan_runs(args, plan, known_models(args.models))
    log(f"plan under {args.out}: {len(runs)} runs ({args.budget} budget, {args.seeds} "
        f"seed(s), patience {args.patience})")  # fmt: skip
    expected = BUDGETS[args.budget]["expected_epochs"]
    probes = load_probes(args.out)
    per_dataset, untimed = remaining_seconds(runs, expected, probes)
    probed = [r for r in remaining_seconds(runs, expected)[1] if r not in untimed]
    workers = 0
    for key in args.datasets:
        mine = [r for r in runs if r.dataset == key]
        states = {r.label: run_state(r) for r in mine}
        held = [r for r in mine if held_elsewhere(r.path)]
        finished = sum(state == "evaluated" for state in states.values())
        paused = sum(states[r.label] in ("partial", "trained") for r in mine if r not in held)
        new = sum(states[r.label] == "new" for r in mine if r not in held)
        parts = [f"{finished} of {len(mine)} runs done"]
        if held:
            parts.append(f"{len(held)} in a worker now")
        if paused:
            parts.append(f"{paused} stopped part way (the next start resumes them)")
        if new:
            parts.append(f"{new} not started")
        if key in per_dataset:
            parts.append(f"about {clock(per_dataset[key])} of one worker's training left")
        if args.archive is not None:
            from dwrec.rundir import METRICS

            kept = sum((archive_path(args, r) / METRICS).exists() for r in mine)
            parts.append(f"{kept} in the archive")
        log(f"{key}: " + ", ".join(parts))
        for run in held:
            log("  " + (run_progress(run) if run.trains else f"{run.label}: being evaluated"))
        workers += len(held)
    seconds = sum(per_dataset.values())
    if not seconds and not untimed:
        log("nothing left to train")
        return 0
    shared = ""
    if workers > 1:
        shared = f"; with the {workers} workers now running, about {clock(seconds / workers)}"
    log(f"time left: about {clock(seconds)} of one worker's training"
        + shared
        + " (per dataset and model: the median seconds per epoch logged so far, +"
        f"{VALIDATION_SHARE:.0%} for validation, times the mean epochs of its finished runs)")  # fmt: skip
    if probed:
        pairs = sorted({f"{r.dataset} {r.group.model}" for r in probed})
        log(f"  of which {len(probed)} runs timed by the workers' last probe ({PROBES}), no "
            f"epoch of theirs logged yet: {', '.join(pairs)}; epochs as the mean of the same "
            f"model's finished runs, else {expected}")  # fmt: skip
    if untimed:
        pairs = sorted({f"{r.dataset} {r.group.model}" for r in untimed})
        log(f"  not counted: {len(untimed)} runs whose dataset and model have no epoch logged "
            f"yet ({', '.join(pairs)}); `--dry-run` times them with a short probe")  # fmt: skip
    return 0


def publish_between(dataset: str, *publish_args) -> bool:
    """Publish the tables after ``dataset`` completes while other runs remain. A failure is
    logged, not raised: the runs still to do go on (hours of training are not lost to a
    table), and ``--tables-only`` writes the tables once the cause is mended."""
    try:
        publish(*publish_args)
    except Exception as error:  # noqa: BLE001 - any failure of the tables, reported below
        log(f"dataset {dataset} complete, but its tables failed: {type(error).__name__}: "
            f"{error}. Training goes on; after mending the cause, rerun with --tables-only.")  # fmt: skip
        return False
    log(f"dataset {dataset} complete: tables written")
    return True


def complete_datasets(args, runs: list[Run]) -> list[str]:
    """The datasets of this invocation whose every run is evaluated (in plan order)."""
    return [
        key
        for key in args.datasets
        if all(run_state(r) == "evaluated" for r in runs if r.dataset == key)
    ]


def publish(args, plan, runs, models, skipped, command: str, started: float, expected: float):
    """Tables, plot, timing and summary of the datasets whose runs are all done.

    A dataset with runs still to do gets no table (half its seeds would be a different
    experiment): the verdicts name it as pending. Rerunning after more runs finish rewrites
    everything from the run dirs alone.
    """
    order = budget_order(args.budget, args.datasets)  # not the order they trained in
    done = complete_datasets(args, runs)
    ready = [key for key in order if key in done]
    pending = {}
    for key in order:
        if key not in ready:
            mine = [r for r in runs if r.dataset == key]
            pending[key] = (sum(run_state(r) == "evaluated" for r in mine), len(mine))
    view = argparse.Namespace(**vars(args))
    view.datasets = ready
    mine = [r for key in ready for r in runs if r.dataset == key]
    notes = [f"- {key}: {n} of {m} runs done; not in these verdicts yet (rerun the script "
             "to continue it)" for key, (n, m) in pending.items()]  # fmt: skip
    reports = write_tables(view, plan, mine, models, skipped, notes)
    figure_note = plot(view, reports)
    log(figure_note)
    timing_md, claim6 = timing(view, mine, started, expected)
    write_text(args.out / "timing.md", timing_md + "\n")
    verdict = (args.out / "tables" / "verdict.md").read_text()
    summary = "\n".join(
        [
            f"# Reproduction ({args.budget} budget)",
            "",
            f"- command: `{command}`",
            f"- machine: {machine()}",
            f"- datasets in these tables: {', '.join(ready) or 'none yet'}",
            f"- {figure_note}",
            "",
            verdict.split("\n", 2)[2].rstrip(),
            "",
            verdict_markdown([claim6]),
            "",
            timing_md.split("\n", 2)[2].rstrip(),
        ]
    )
    write_text(args.out / "summary.md", summary + "\n")
    log(f"tables: {args.out / 'tables'}; summary: {args.out / 'summary.md'} "
        f"({clock(time.perf_counter() - started)})")  # fmt: skip


if __name__ == "__main__":
    from dwrec.errors import DwrecError

    try:
        sys.exit(main())
    except KeyboardInterrupt:  # between runs (archiving, tables): what is written is whole
        log("interrupted; finished runs are kept: run the same command again to continue")
        sys.exit(130)
    except DwrecError as error:  # e.g. the final tables refused: a message, not a traceback
        log(f"error: {error}")
        log("finished runs are kept: mend the cause and run the same command again "
            "(--tables-only writes the tables without training)")  # fmt: skip
        sys.exit(1)
