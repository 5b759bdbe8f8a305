"""Finding evaluated runs, checking they are comparable, grouping them, loading their cases.

An *evaluated run* is a folder holding ``per_user.parquet`` and ``metrics.json`` (written by
``dwrec evaluate``) and the run's ``config.json`` (in the same folder, or in the run dir named
by metrics.json's ``"run"`` when evaluated with ``--out``). The report reads only these files
and the run's ``log.jsonl``; it never loads a model.

Runs are grouped by label (config.json ``"label"``, else ``model + "+" + loss label``,
overridable per run). Runs of a group must differ only by seed (and operational settings such
as the device); their per-case values are averaged over seeds before any test.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dwrec.errors import DataFormatError, UsageError
from dwrec.io import read_json, read_parquet
from dwrec.report.domains import DomainInfo, memberships, select_domains  # noqa: F401 (re-export)
from dwrec.rundir import CONFIG, DATASET_META, METRICS, PER_USER, RunDir, run_label

PER_USER_FILE = PER_USER
METRICS_FILE = METRICS
COHORTS = ("target", "power", "general")
# config.json "train" keys that change how a run was executed, not what it learned
OPERATIONAL_TRAIN_KEYS = frozenset({"seed", "device", "compile", "amp", "threads"})


@dataclass
class EvaluatedRun:
    """One evaluated run: where its files are and what its config and metrics.json say."""

    path: Path
    config: dict
    metrics: dict
    label: str = ""

    @property
    def name(self) -> str:
        return str(self.path)

    @property
    def seed(self) -> int | None:
        return self.config.get("train", {}).get("seed")

    @property
    def dataset_fingerprint(self) -> str | None:
        return self.metrics.get("dataset", {}).get("fingerprint") or self.config.get(
            "dataset", {}
        ).get("fingerprint")

    @property
    def split_fingerprint(self) -> str | None:
        return self.metrics.get("split_fingerprint") or self.config.get("split", {}).get(
            "fingerprint"
        )

    @property
    def dataset_path(self) -> Path | None:
        path = self.config.get("dataset", {}).get("path") or self.metrics.get("dataset", {}).get(
            "path"
        )
        return Path(path) if path else None

    @property
    def run_dir(self) -> Path:
        """The training run dir (holds config.json and log.jsonl)."""
        if (self.path / CONFIG).exists():
            return self.path
        return Path(self.metrics.get("run") or self.path)

    def final_domain_weights(self) -> dict[str, float] | None:
        """The weights the run ended with (:meth:`dwrec.rundir.RunDir.final_domain_weights`);
        ``None`` when the run's weighting does not declare ``learns_weights`` (e.g. ``fixed``)."""
        from dwrec.losses.config import learns_weights

        if not learns_weights(str(self.config.get("loss", {}).get("loss", ""))):
            return None
        return RunDir(self.run_dir).final_domain_weights()


def default_label(config: dict) -> str:
    """``config["label"]``, else ``f"{model}+{loss label}"`` as ``dwrec train`` names runs."""
    return run_label(config)


def load_run(path: Path) -> EvaluatedRun:
    """Read an evaluated run's metrics.json and config.json (errors name the missing file)."""
    path = Path(path)
    if not (path / PER_USER_FILE).exists() or not (path / METRICS_FILE).exists():
        hint = " (a run dir that was trained but not evaluated: run `dwrec evaluate` on it)"
        raise UsageError(
            f"{path}: no {PER_USER_FILE} and {METRICS_FILE} here"
            + (hint if (path / CONFIG).exists() else "")
        )
    metrics = read_json(path / METRICS_FILE)
    missing = [
        k
        for k in ("dataset", "split_fingerprint")
        if not isinstance(metrics, dict) or k not in metrics
    ]
    if missing:  # a hand-edited or foreign file would fail later with a bare KeyError
        raise DataFormatError(
            path / METRICS_FILE,
            f"not a metrics file of `dwrec evaluate` (no {', '.join(missing)}); "
            "evaluate the run again",
        )
    config_path = path / CONFIG
    if not config_path.exists() and metrics.get("run"):
        config_path = Path(metrics["run"]) / CONFIG
    config = (
        RunDir(config_path.parent).read_config(with_plugins=True) if config_path.exists() else {}
    )
    if metrics.get("split", "test") != "test":
        raise DataFormatError(path / METRICS_FILE, f"split is {metrics['split']!r}, not 'test'")
    _refuse_stale(path, config_path.parent, metrics)
    if metrics.get("evaluation_label"):  # an evaluation named apart from its run (prior shift)
        label = str(metrics["evaluation_label"])
    else:
        label = default_label(config) if config else str(metrics.get("label") or path.name)
    return EvaluatedRun(path=path, config=config, metrics=metrics, label=label)


def _refuse_stale(path: Path, run_dir: Path, metrics: dict) -> None:
    """A :class:`UsageError` when ``metrics`` evaluated another model.pt than the run's
    current one (the run was trained further since): its numbers are not the run's."""
    reason = RunDir(run_dir).stale_reason(metrics, path / METRICS_FILE)
    if reason is None:
        return
    if Path(path).resolve() == Path(run_dir).resolve():
        how = f"`dwrec evaluate {run_dir}` (or `dwrec evaluate` for every stale run)"
    else:  # written elsewhere (--out, --prior-from): the command that wrote it, again
        how = f"run the `dwrec evaluate {run_dir} ...` that wrote {path} again"
    raise UsageError(f"{path / METRICS_FILE} is stale: {reason}. Evaluate it again: {how}")


@dataclass
class Discovery:
    """The runs a report uses and those it skipped, each with the reason."""

    runs: list[EvaluatedRun]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    rule: str = ""


def discover_runs(paths: Sequence[str | Path] | None, root: str | Path = "runs") -> Discovery:
    """Evaluated runs named by ``paths`` (run dirs or folders holding run dirs).

    With no paths: every evaluated run under ``root`` of the most recent dataset, i.e. the
    dataset and split fingerprints of the run evaluated last (metrics.json modification time).
    """
    if paths:
        found: list[EvaluatedRun] = []
        skipped: list[tuple[Path, str]] = []
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                raise UsageError(f"RUN {raw}: no such file or directory")
            if (path / PER_USER_FILE).exists() or (path / CONFIG).exists():
                found.append(load_run(path))
                continue
            inner, inner_skipped = _scan(path)
            if not inner:
                raise UsageError(f"RUN {raw}: no evaluated run (per_user.parquet) under it")
            found += inner
            skipped += inner_skipped
        return Discovery(_unique(found), skipped, "the runs given")
    root = Path(root)
    runs, skipped = _scan(root) if root.is_dir() else ([], [])
    if not runs:
        raise UsageError(
            f"no evaluated run found under {root.resolve()}; pass RUN directories, or train "
            "and evaluate runs first (`dwrec train`, `dwrec evaluate RUN`)"
        )
    latest = max(runs, key=lambda run: (run.path / METRICS_FILE).stat().st_mtime)
    key = (latest.dataset_fingerprint, latest.split_fingerprint)
    chosen = [r for r in runs if (r.dataset_fingerprint, r.split_fingerprint) == key]
    for run in runs:
        if (run.dataset_fingerprint, run.split_fingerprint) != key:
            skipped.append((run.path, "another dataset or split than the latest evaluated run"))
    rule = (
        f"every evaluated run under {root} of the most recent dataset "
        f"({latest.metrics.get('dataset', {}).get('name', '?')}, fingerprint {key[0]}, "
        f"split {key[1]}: those of the last evaluated run, {latest.path})"
    )
    return Discovery(chosen, skipped, rule)


def _scan(folder: Path) -> tuple[list[EvaluatedRun], list[tuple[Path, str]]]:
    runs, skipped = [], []
    for config_or_metrics in sorted(
        {p.parent for p in folder.rglob(CONFIG)} | {p.parent for p in folder.rglob(METRICS_FILE)}
    ):
        if (config_or_metrics / PER_USER_FILE).exists() and (
            config_or_metrics / METRICS_FILE
        ).exists():
            runs.append(load_run(config_or_metrics))
        elif (
            not (config_or_metrics / PER_USER_FILE).exists()
            and (config_or_metrics / CONFIG).exists()
        ):
            skipped.append((config_or_metrics, "not evaluated (no per_user.parquet)"))
    return runs, skipped


def _unique(runs: Iterable[EvaluatedRun]) -> list[EvaluatedRun]:
    seen: dict[Path, EvaluatedRun] = {}
    for run in runs:
        seen.setdefault(run.path.resolve(), run)
    return list(seen.values())


def apply_labels(runs: Sequence[EvaluatedRun], overrides: Sequence[str]) -> None:
    """Apply ``--label RUN=LABEL`` overrides (RUN: the run's path or folder name)."""
    for override in overrides:
        if "=" not in override:
            raise UsageError(f"--label {override!r}: expected RUN=LABEL")
        target, label = (part.strip() for part in override.rsplit("=", 1))
        matches = [
            r for r in runs if r.path.name == target or r.path.resolve() == Path(target).resolve()
        ]
        if not matches or not label:
            names = [r.path.name for r in runs]
            close = difflib.get_close_matches(target, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"--label {override!r}: no run {target!r} among the runs{hint}")
        for run in matches:
            run.label = label


def check_comparable(runs: Sequence[EvaluatedRun]) -> None:
    """Refuse runs prepared from different datasets, splits, filters or cohort thresholds."""
    reference = runs[0]
    checks = (
        ("dataset fingerprint", lambda r: r.dataset_fingerprint),
        ("split fingerprint", lambda r: r.split_fingerprint),
        ("dataset filters", _filters),
        ("cohort thresholds", lambda r: r.metrics.get("thresholds")),
        ("sampled-negatives setting", lambda r: r.metrics.get("sampled")),
        ("history masking", lambda r: r.metrics.get("masked_history")),
    )
    for what, value_of in checks:
        expected = value_of(reference)
        for run in runs[1:]:
            if value_of(run) != expected:
                raise UsageError(
                    f"runs {reference.path} ({what} {expected}) and {run.path} ({what} "
                    f"{value_of(run)}) differ in their {what}: their test cases do not pair; "
                    "report them separately"
                )


def _filters(run: EvaluatedRun) -> object:
    filters = run.config.get("dataset", {}).get("filters")
    if filters is None and run.dataset_path is not None:
        meta_path = run.dataset_path / DATASET_META
        if meta_path.exists():
            filters = read_json(meta_path).get("filters")
    return filters


@dataclass
class RunGroup:
    """Runs sharing a label; they differ only by seed and are pooled."""

    label: str
    runs: list[EvaluatedRun]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.runs]


def group_runs(runs: Sequence[EvaluatedRun]) -> list[RunGroup]:
    """Group runs by label (in order of first appearance); runs of a group are sorted by seed.

    Refuses a group whose runs differ in more than the seed (and operational settings), or
    holds two runs with the same seed, naming the runs.
    """
    groups: dict[str, list[EvaluatedRun]] = {}
    for run in runs:
        groups.setdefault(run.label, []).append(run)
    result = []
    for label, members in groups.items():
        members.sort(key=lambda r: (r.seed is None, r.seed if r.seed is not None else 0))
        _check_seed_only(label, members)
        result.append(RunGroup(label, members))
    return result


def _check_seed_only(label: str, members: list[EvaluatedRun]) -> None:
    reference = members[0]
    for run in members[1:]:
        differing = sorted(_differing_keys(_essential(reference.config), _essential(run.config)))
        if differing:
            raise UsageError(
                f"runs {reference.path} and {run.path} share the label {label!r} but differ in "
                f"{', '.join(differing[:5])}, not only the seed; give them distinct labels with "
                f"--label RUN=LABEL"
            )
        if run.seed == reference.seed:
            raise UsageError(
                f"runs {reference.path} and {run.path} share the label {label!r} and the seed "
                f"{run.seed}: pass only one of them (pooling needs distinct seeds)"
            )


def _essential(config: dict) -> dict:
    essential = {key: config.get(key) for key in ("dataset", "split", "model", "loss")}
    dataset = essential["dataset"]
    if isinstance(dataset, dict) and dataset.get("fingerprint"):  # the data, wherever it lies
        essential["dataset"] = {k: v for k, v in dataset.items() if k != "path"}
    essential["train"] = {
        k: v for k, v in config.get("train", {}).items() if k not in OPERATIONAL_TRAIN_KEYS
    }
    return essential


def _differing_keys(left: object, right: object, prefix: str = "") -> set[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        keys: set[str] = set()
        for key in set(left) | set(right):
            keys |= _differing_keys(left.get(key), right.get(key), f"{prefix}{key}.")
        return keys
    return set() if left == right else {prefix.rstrip(".")}


def choose_baseline(groups: Sequence[RunGroup], baseline: str | None) -> tuple[RunGroup, str]:
    """The baseline group and the rule that chose it.

    ``baseline`` given: the group with that label. Otherwise the *generic* group: the one whose
    label is ``generic`` or ends in ``+generic``; failing that, the one whose label is ``ce`` or
    ends in ``+ce`` (full cross-entropy without domain weights is the same model as generic).
    Several candidates, or none, are refused: pass ``--baseline``.
    """
    labels = [g.label for g in groups]
    if baseline is not None:
        for group in groups:
            if group.label == baseline:
                return group, "--baseline"
        close = difflib.get_close_matches(baseline, labels, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(
            f"--baseline {baseline!r} is not a group label ({', '.join(labels)}){hint}"
        )
    for suffix, rule in (
        ("generic", "the generic group: its label ends in +generic"),
        ("ce", "no +generic group, so the unweighted cross-entropy group: its label ends in +ce"),
    ):
        candidates = [g for g in groups if g.label == suffix or g.label.endswith(f"+{suffix}")]
        if len(candidates) == 1:
            return candidates[0], rule
        if len(candidates) > 1:
            raise UsageError(
                f"several possible baselines ({', '.join(g.label for g in candidates)}): "
                "choose one with --baseline LABEL"
            )
    raise UsageError(
        f"no generic or ce group among {', '.join(labels)}: choose the baseline with --baseline LABEL"
    )


@dataclass
class CaseTable:
    """Per-case values of every group, aligned on ``case_id``.

    Attributes:
        case_id: ``[n]`` int64, sorted.
        values: metric -> ``[G, n]`` float64, each group's per-case value averaged over its seeds.
        seed_values: metric -> list over groups of ``[S_g, n]`` per-seed values.
        members: cohort -> domain -> ``[n]`` bool mask of the cases in that cohort of the domain.
    """

    case_id: np.ndarray
    values: dict[str, np.ndarray]
    seed_values: dict[str, list[np.ndarray]]
    members: dict[str, dict[str, np.ndarray]]


def load_cases(
    groups: Sequence[RunGroup], metrics: Sequence[str], cohorts: Sequence[str]
) -> CaseTable:
    """Read every run's per_user.parquet, check they hold the same cases, align on case_id."""
    reference_ids: np.ndarray | None = None
    reference_run: EvaluatedRun | None = None
    members: dict[str, dict[str, np.ndarray]] = {}
    seed_values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    for group in groups:
        per_seed: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
        for run in group.runs:
            table = _read_per_user(run, metrics, cohorts)
            order = np.argsort(table.column("case_id").to_numpy(), kind="stable")
            table = table.take(pa.array(order))
            case_id = table.column("case_id").to_numpy().astype(np.int64)
            if reference_ids is None:
                reference_ids, reference_run = case_id, run
                members = {c: memberships(table.column(f"{c}_domains")) for c in cohorts}
            else:
                _check_same_cases(reference_run, reference_ids, run, case_id)
            for metric in metrics:
                per_seed[metric].append(table.column(metric).to_numpy().astype(np.float64))
        for metric in metrics:
            seed_values[metric].append(np.vstack(per_seed[metric]))
    values = {m: np.vstack([s.mean(axis=0) for s in seed_values[m]]) for m in metrics}
    return CaseTable(reference_ids, values, seed_values, members)


def _read_per_user(run: EvaluatedRun, metrics: Sequence[str], cohorts: Sequence[str]) -> pa.Table:
    path = run.path / PER_USER_FILE
    try:
        available = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(path, f"not a readable Parquet file ({exc})") from None
    needed = ["case_id", *metrics, *(f"{c}_domains" for c in cohorts)]
    missing = [c for c in needed if c not in available]
    if missing:
        metric_columns = [c for c in available if "@" in c]
        hints = []
        for column in missing:
            close = difflib.get_close_matches(column, metric_columns, n=3)
            if close:
                hints.append(f"{column}: did you mean {', '.join(close)}?")
        raise DataFormatError(
            path,
            f"missing column(s) {', '.join(missing)} (metrics here: {', '.join(metric_columns)})"
            + ("; " + "; ".join(hints) if hints else ""),
        )
    table = read_parquet(path, columns=needed)
    for metric in metrics:
        column = table.column(metric)
        if column.null_count:
            raise DataFormatError(path, f"column {metric} has {column.null_count} missing values")
    return table


def _check_same_cases(
    reference: EvaluatedRun, reference_ids: np.ndarray, run: EvaluatedRun, case_id: np.ndarray
) -> None:
    if case_id.shape == reference_ids.shape and np.array_equal(case_id, reference_ids):
        return
    only_reference = np.setdiff1d(reference_ids, case_id).size
    only_run = np.setdiff1d(case_id, reference_ids).size
    raise UsageError(
        f"runs {reference.path} ({reference_ids.size} test cases) and {run.path} "
        f"({case_id.size}) were not evaluated on the same test cases ({only_reference} only in "
        f"the first, {only_run} only in the second); evaluate both on the full test split"
    )


def domain_info(runs: Sequence[EvaluatedRun], case_table: CaseTable) -> DomainInfo:
    """Items and training share per domain.

    Share: metrics.json's ``domains[d]["train_share"]`` (share of training interactions, as
    the evaluator measured it); else dataset.json's ``domains[d]["share"]`` (share of all
    interactions) via config.json's dataset path; else the share of test cases whose target
    lies in the domain (said in ``source``). Items: dataset.json's ``domains[d]["items"]``.
    """
    reference = runs[0]
    dataset_domains: dict = {}
    if reference.dataset_path is not None and (reference.dataset_path / DATASET_META).exists():
        dataset_domains = read_json(reference.dataset_path / DATASET_META).get("domains", {})
    items = {d: int(s["items"]) for d, s in dataset_domains.items() if "items" in s}
    metric_domains = reference.metrics.get("domains", {}) or {}
    train_share = {
        d: float(s["train_share"])
        for d, s in metric_domains.items()
        if isinstance(s, dict) and s.get("train_share") is not None
    }
    if train_share:
        return DomainInfo(items, train_share, "share of training interactions (metrics.json)")
    if dataset_domains:
        share = {d: float(s.get("share", math.nan)) for d, s in dataset_domains.items()}
        return DomainInfo(items, share, "share of all interactions (dataset.json)")
    target = case_table.members.get("target", {})
    n = max(case_table.case_id.size, 1)
    share = {d: float(mask.sum()) / n for d, mask in target.items()}
    return DomainInfo(
        items, share, "share of test targets (neither metrics.json nor dataset.json has shares)"
    )
