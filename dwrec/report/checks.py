"""Checks before a comparison: matched settings between groups, unfinished runs, and the
domain names of ``--domains`` / ``--family``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dwrec.errors import UsageError
from dwrec.report.runs import OPERATIONAL_TRAIN_KEYS, EvaluatedRun, RunGroup
from dwrec.rundir import TRAIN_DONE, RunDir

# config.json keys a compared group may change: its loss settings, label and seed (the
# report's purpose), and where the dataset lies (its content is checked by fingerprint)
# (dataset.request: how it was prepared, recorded to re-create it; the fingerprint decides)
ALLOWED_DIFFERENCES = ("loss", "label", "train.seed", "dataset.path", "dataset.request")
TRAIN_DONE_FILE = TRAIN_DONE  # written by dwrec.train when training ends


def is_finished(run: EvaluatedRun) -> bool:
    """True when the run's training ended (:meth:`dwrec.rundir.RunDir.is_finished`, or a
    legacy ``summary.json`` with ``"finished": true``, in its run dir). Evaluation outputs
    without their run's config are finished unless their metrics.json says
    ``"finished": false`` (``dwrec evaluate`` on an unfinished run)."""
    if not run.config:
        return run.metrics.get("finished") is not False
    run_dir = run.run_dir
    if RunDir(run_dir).is_finished():
        return True
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            return bool(json.loads(summary.read_text(encoding="utf-8")).get("finished"))
        except (ValueError, AttributeError, OSError):
            return False
    return False


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _comparable_settings(config: dict) -> dict[str, object]:
    """Every config.json setting that must match between compared groups, flattened."""
    settings = {key: config.get(key) for key in ("dataset", "split", "model", "train")}
    flat = _flatten(settings)
    return {
        key: value
        for key, value in flat.items()
        if not any(key == a or key.startswith(a + ".") for a in ALLOWED_DIFFERENCES)
        and not (key.startswith("train.") and key.split(".", 2)[1] in OPERATIONAL_TRAIN_KEYS)
    }


def setting_differences(groups: Sequence[RunGroup], reference: RunGroup) -> list[str]:
    """``"group: key a vs b"`` for every setting in which a group's first run differs from
    ``reference``'s first run, beyond loss settings, label, seed and operational keys."""
    base = _comparable_settings(reference.runs[0].config)
    differences = []
    for group in groups:
        if group is reference or not group.runs[0].config or not reference.runs[0].config:
            continue
        other = _comparable_settings(group.runs[0].config)
        for key in sorted(set(base) | set(other)):
            if base.get(key, "<unset>") != other.get(key, "<unset>"):
                differences.append(
                    f"{group.label} vs {reference.label}: {key} "
                    f"{other.get(key, '<unset>')!r} vs {base.get(key, '<unset>')!r}"
                )
    return differences


def check_matched(groups: Sequence[RunGroup], reference: RunGroup, allow: bool) -> list[str]:
    """Refuse groups trained with other settings than ``reference`` (unless ``allow``);
    returns the differences (for the footnote when allowed)."""
    differences = setting_differences(groups, reference)
    if differences and not allow:
        shown = "; ".join(differences[:6])
        more = f" (and {len(differences) - 6} more)" if len(differences) > 6 else ""
        raise UsageError(
            f"groups differ in more than their loss settings, label and seed: {shown}{more}; "
            "their difference is not the loss alone. Train them alike, or pass "
            "--allow-mismatch to compare them anyway (the report then lists the differences)"
        )
    return differences


def run_name(run: EvaluatedRun, with_split: bool) -> str:
    """The run's path, with its split scheme when runs of several splits are listed."""
    if not with_split:
        return str(run.path)
    scheme = run.metrics.get("split_scheme") or run.config.get("split", {}).get("scheme", "?")
    return f"{run.path} [split {scheme}]"


def split_scheme_at(path: Path) -> str | None:
    """The split scheme of the run at ``path`` (metrics.json, else config.json), or None."""
    for name, keys in (("metrics.json", ("split_scheme",)), ("config.json", ("split", "scheme"))):
        try:
            value: object = json.loads((Path(path) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            return value
    return None
