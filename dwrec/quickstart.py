"""``dwrec quickstart``: prepare -> train (generic, fixed, dynamic; several seeds) -> evaluate
-> report, on the embedded synthetic dataset.

Re-running it continues where it stopped: finished runs are kept, interrupted ones resumed,
evaluated ones not evaluated again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dwrec.errors import UsageError
from dwrec.rundir import RunDir

LOSSES = ("generic", "fixed", "dynamic")

# With the synthetic dataset's defaults (1,200 users), six runs, their evaluation and the
# report fit in under 3 minutes on 2 cores.
QUICK_TRAIN = {
    "max_len": 40,
    "hidden": 32,
    "heads": 2,
    "layers": 2,
    "batch_size": 128,
    "lr": 3e-3,
}


@dataclass
class QuickstartResult:
    dataset: Path
    runs: list[Path]
    report_path: Path
    report_markdown: str
    fixed_domains: list[str]
    notes: list[str] = field(default_factory=list)
    report: object = None  # the dwrec.report.Report behind report_markdown


def sparsest_domains(dataset_meta: dict, count: int) -> list[str]:
    """The ``count`` domains with the smallest share of interactions (ties by name)."""
    stats = dataset_meta["domains"]
    return sorted(stats, key=lambda name: (stats[name]["share"], name))[:count]


def quickstart(
    out: str | os.PathLike = "runs/quickstart",
    *,
    seeds: int = 2,
    epochs: int = 25,
    device: str = "auto",
    fixed_count: int = 2,
    console=None,
    on_event=None,
) -> QuickstartResult:
    """Run the whole pipeline on the synthetic dataset and write ``OUT/report.md``.

    Args:
        out: folder for the run dirs and the report.
        seeds: seeds per loss (0, 1, ...).
        epochs: maximum epochs per run (early stopping on validation NDCG@10 may end sooner).
        fixed_count: the ``fixed`` weighting up-weights this many of the sparsest domains.
        on_event: ``on_event(kind, info)`` for progress (``"run"``, ``"step"``, ``"evaluate"``).
    """
    import dwrec
    from dwrec.eval.evaluator import evaluate_run, is_finished
    from dwrec.report import report, write_report

    if seeds < 1 or epochs < 1:
        raise UsageError("--seeds and --epochs must be at least 1")
    notify = on_event or (lambda kind, info: None)
    out = Path(out)
    prepared = dwrec.prepare("synthetic", out=_dataset_dir())
    fixed_domains = sparsest_domains(prepared.meta, fixed_count)
    notify("dataset", {"path": prepared.path, "meta": prepared.meta, "fixed": fixed_domains})

    plan = [(loss, seed) for seed in range(seeds) for loss in LOSSES]
    fingerprint = prepared.meta["fingerprint"]
    for loss, seed in plan:  # before training anything: reuse only runs of these settings
        run_dir = out / f"synthetic-sasrec-{loss}-s{seed}"
        wanted = _requested(loss, seed, epochs, fixed_domains, fingerprint)
        check_reusable(run_dir, wanted, out)
    run_dirs = []
    for index, (loss, seed) in enumerate(plan, start=1):
        run_dir = out / f"synthetic-sasrec-{loss}-s{seed}"
        notify("run", {"index": index, "total": len(plan), "loss": loss, "seed": seed,
                       "run_dir": run_dir, "epochs": epochs})  # fmt: skip
        _train_or_resume(run_dir, prepared.path, loss, seed, epochs, device, fixed_domains,
                         lambda event, info: notify(event, info))  # fmt: skip
        if not is_finished(run_dir):
            raise UsageError(f"{run_dir}: training did not finish")
        if not RunDir(run_dir).outputs()[1].exists():
            notify("evaluate", {"run_dir": run_dir})
            evaluate_run(run_dir, device=device)
        run_dirs.append(run_dir)

    # no baseline= : the report then says the generic group was chosen by its label, not
    # "(--baseline)", an option the quickstart user never gave
    result = report(run_dirs, cohorts=("target", "power"))
    report_path = out / "report.md"
    markdown = write_report(result, "md", report_path)
    return QuickstartResult(
        prepared.path, run_dirs, report_path, markdown, fixed_domains, report=result
    )


def _requested(loss: str, seed: int, epochs: int, fixed: list[str], fingerprint: str) -> dict:
    """The config.json settings (``section.key``) a quickstart run must have to be reused."""
    wanted = {f"model.{k}": v for k, v in QUICK_TRAIN.items() if k not in ("batch_size", "lr")}
    wanted.update({"train.batch_size": QUICK_TRAIN["batch_size"], "train.lr": QUICK_TRAIN["lr"]})
    wanted.update({"train.seed": seed, "train.epochs": epochs, "loss.loss": loss})
    wanted.update({"model.name": "sasrec", "dataset.fingerprint": fingerprint})
    if loss == "fixed":
        wanted["loss.weight_domains"] = list(fixed)
    return wanted


def check_reusable(run_dir: Path, wanted: dict, out: Path) -> None:
    """Refuse (a :class:`UsageError` listing the differences) when ``run_dir`` holds a run
    made with other settings than ``wanted``: quickstart reuses or resumes a run only when
    its recorded settings equal the requested ones (docs/quickstart.md)."""
    from dwrec.rundir import RunDir

    folder = RunDir(run_dir)
    if not folder.has_config():
        return
    config = folder.read_config()
    differences = []
    for key, value in wanted.items():
        section, name = key.split(".")
        recorded = config.get(section, {}).get(name) if isinstance(config, dict) else None
        if recorded != value:
            differences.append(f"--{name.replace('_', '-')} {recorded} (asked: {value})"
                               if section != "dataset" else "another synthetic dataset")  # fmt: skip
    if differences:
        raise UsageError(
            f"{run_dir} holds a run made with other settings: {'; '.join(differences)}. "
            f"quickstart reuses only runs of the requested settings: pass another --out, "
            f"or remove {out} to start again"
        )


def _dataset_dir() -> Path:
    from dwrec.paths import default_dataset_dir

    return default_dataset_dir("synthetic")


def _train_or_resume(
    run_dir: Path,
    dataset: Path,
    loss: str,
    seed: int,
    epochs: int,
    device: str,
    fixed_domains: list[str],
    callback,
) -> None:
    import dwrec
    from dwrec.eval.evaluator import is_finished

    if is_finished(run_dir):
        return
    if RunDir(run_dir).last_checkpoint.exists():
        dwrec.train(resume=run_dir, quiet=True, callback=callback, device=device)
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(
            f"{run_dir} holds an unfinished run without last.pt; remove it and run again"
        )
    options: dict[str, Any] = dict(QUICK_TRAIN, seed=seed, epochs=epochs, device=device)
    if loss == "fixed":
        options["weight_domains"] = fixed_domains
    dwrec.train(dataset, model="sasrec", loss=loss, out=run_dir, quiet=True,
                callback=callback, **options)  # fmt: skip
