"""Prior-shift control: a trained run's scores plus ``tau * log w(item)``, no retraining.

A domain-weighted loss moves exposure towards sparse domains. Part of its sparse-domain lift
may be no more than that shift of the item prior, which any trained model gets by adding a
per-item constant to its scores. This module builds that control: the scores of a run
trained *without* weights (``s(u, i)``), plus ``tau * log w(i)``, where ``w(i)`` is the final
domain weight of a weighted run (an item in several domains takes the max of its domains'
weights; an item without a domain takes 1, as in training). ``tau`` comes from a small grid,
chosen on the validation cases:

- ``match`` (default): the ``tau`` whose overall validation NDCG@10 is closest to the
  weighted run's own, so that the control and the weighted run are compared at equal
  overall cost;
- ``best``: the ``tau`` with the highest overall validation NDCG@10.

Ties in the criterion go to the smaller ``tau``. The test cases are never looked at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dwrec.data.dataset import Dataset
from dwrec.errors import DwrecError, UsageError

DEFAULT_TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
CRITERIA = ("match", "best")
SELECTION_METRIC = "ndcg@10"


def item_log_weights(
    dataset: Dataset, domain_weights: Mapping[str, float], multi_domain: str = "max"
) -> np.ndarray:
    """``[n_items]`` float64 ``log w(i)``: ``w(i)`` is the max (or mean) of the weights of
    item i's domains, 1 for an item without a domain. Every domain of the dataset must have a
    positive weight."""
    if multi_domain not in ("max", "mean"):
        raise UsageError(f"multi-domain rule must be 'max' or 'mean', got {multi_domain!r}")
    missing = [name for name in dataset.domain_names if name not in domain_weights]
    if missing:
        raise DwrecError(
            f"the weighted run has no weight for domain(s) {', '.join(missing[:5])} of dataset "
            f"{dataset.name}: was it trained on another dataset?"
        )
    weights = np.array([float(domain_weights[name]) for name in dataset.domain_names])
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise DwrecError("domain weights must be finite and positive to take their log")
    membership = dataset.item_domain_matrix
    degree = membership.sum(axis=1)
    if multi_domain == "max":
        per_item = np.where(membership, weights[None, :], -np.inf).max(axis=1, initial=-np.inf)
    else:
        per_item = (membership * weights[None, :]).sum(axis=1) / np.maximum(degree, 1)
    per_item = np.where(degree > 0, per_item, 1.0)
    return np.log(per_item)


class PriorShiftedModel(nn.Module):
    """``base``'s user states; scores ``base.score(h, items) + tau * log_w[items]``.

    Exposes what the evaluator reads of a model (``n_items``, ``config``, ``user_state``,
    ``score``), so it ranks exactly like the base model when ``tau == 0``.
    """

    def __init__(self, base: nn.Module, log_weights: np.ndarray, tau: float):
        super().__init__()
        self.base = base
        self.tau = float(tau)
        self.register_buffer(
            "shift", torch.as_tensor(self.tau * np.asarray(log_weights), dtype=torch.float32)
        )

    @property
    def n_items(self) -> int:
        return int(self.base.n_items)

    @property
    def config(self):
        return self.base.config

    def user_state(self, history: torch.Tensor) -> torch.Tensor:
        return self.base.user_state(history)

    def score(self, hidden: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.base.score(hidden, items)
        if self.tau == 0.0:
            return scores
        shift = self.shift if items is None else self.shift[items]
        return scores + shift.to(scores.dtype)


@dataclass(frozen=True)
class TauChoice:
    """The chosen ``tau`` and what the grid measured on the validation cases."""

    tau: float
    criterion: str
    target: float | None
    """The weighted run's validation NDCG@10 (``match``), else ``None``."""
    grid: dict[float, float]
    """``tau -> overall validation NDCG@10`` of the shifted scores."""


def choose_tau(
    grid_scores: Mapping[float, float], criterion: str = "match", target: float | None = None
) -> TauChoice:
    """Pick ``tau`` from ``{tau: validation NDCG@10}`` (ties: the smaller ``tau``)."""
    if criterion not in CRITERIA:
        raise UsageError(
            f"--prior-criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}"
        )
    if not grid_scores:
        raise UsageError("--prior-tau needs at least one value")
    taus = sorted(grid_scores)
    if criterion == "match":
        if target is None:
            raise UsageError("criterion 'match' needs the weighted run's validation NDCG@10")
        tau = min(taus, key=lambda t: (abs(grid_scores[t] - target), t))
    else:
        tau = min(taus, key=lambda t: (-grid_scores[t], t))
    return TauChoice(float(tau), criterion, target, {float(t): grid_scores[t] for t in taus})


def check_taus(taus: Sequence[float]) -> list[float]:
    values = sorted({float(t) for t in taus})
    if not values or any(not np.isfinite(t) or t < 0 for t in values):
        raise UsageError(f"--prior-tau values must be finite and >= 0, got {list(taus)}")
    return values


def prior_label(label: str) -> str:
    """The default label of a prior-shift evaluation of a run labelled ``label``."""
    return f"{label}+prior"


def default_out_dir(run_dir: Path, weighted_run: Path) -> Path:
    """Where ``dwrec evaluate RUN --prior-from WEIGHTED`` writes by default."""
    return Path(run_dir) / f"prior-from-{Path(weighted_run).name}"


def final_domain_weights(run_dir: Path) -> dict[str, float]:
    """The weighted run's domain weights at the end of training; the run must have finished."""
    from dwrec.rundir import RunDir

    folder = RunDir(run_dir)
    if not folder.is_finished():
        raise UsageError(
            f"--prior-from {run_dir}: training has not finished (no {folder.done_path.name})"
        )
    weights = folder.final_domain_weights()
    if not weights:
        raise UsageError(
            f"--prior-from {run_dir}: the run learned no domain weights (its loss has none); "
            "name a run trained with domain weights, e.g. --loss dynamic"
        )
    return weights


def evaluate_prior_shift(
    run_dir: str | Path,
    weighted_run: str | Path,
    *,
    taus: Sequence[float] = DEFAULT_TAUS,
    criterion: str = "match",
    label: str | None = None,
    out: str | Path | None = None,
    **evaluate_options,
) -> dict:
    """Evaluate ``run_dir``'s model with the scores shifted by ``weighted_run``'s final
    domain weights (``tau`` chosen on the validation cases, see the module docstring).

    Writes ``per_user.parquet`` and ``metrics.json`` into ``out`` (default
    :func:`default_out_dir`) with the label ``label`` (default ``<run label>+prior``), so
    that ``dwrec report`` compares it like any group. Returns the metrics document, whose
    ``"prior"`` entry records the weights' source, the grid and the chosen ``tau``.
    """
    from dwrec.eval.evaluator import evaluate_model, evaluate_run, load_run_data, resolve_device
    from dwrec.models.registry import load_model

    run_dir, weighted_run = Path(run_dir), Path(weighted_run)
    taus = check_taus(taus)
    if criterion not in CRITERIA:
        raise UsageError(
            f"--prior-criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}"
        )
    config, dataset, split = load_run_data(run_dir)
    weighted_config, weighted_dataset, weighted_split = load_run_data(weighted_run)
    if (weighted_dataset.fingerprint, weighted_split.fingerprint) != (
        dataset.fingerprint,
        split.fingerprint,
    ):
        raise UsageError(
            f"--prior-from {weighted_run}: trained on another dataset or split than {run_dir}"
        )
    domain_weights = final_domain_weights(weighted_run)
    rule = str(weighted_config.get("loss", {}).get("multi_domain", "max"))
    log_weights = item_log_weights(dataset, domain_weights, rule)
    device = resolve_device(evaluate_options.get("device", "auto"))
    batch_size = evaluate_options.get("batch_size", 256)
    base = load_model(run_dir, config, dataset).to(device)
    target = None
    if criterion == "match":
        weighted = load_model(weighted_run, weighted_config, dataset).to(device)
        target = evaluate_model(weighted, dataset, split, "valid", batch_size=batch_size)[
            SELECTION_METRIC
        ]
        del weighted
    grid = {
        tau: evaluate_model(
            PriorShiftedModel(base, log_weights, tau).to(device),
            dataset,
            split,
            "valid",
            batch_size=batch_size,
        )[SELECTION_METRIC]
        for tau in taus
    }
    choice = choose_tau(grid, criterion, target)
    from dwrec.rundir import run_label as default_label

    name = label or prior_label(default_label(config))
    record = {
        "from": str(weighted_run.resolve()),
        "from_label": default_label(weighted_config),
        "multi_domain": rule,
        "tau": choice.tau,
        "criterion": choice.criterion,
        "selection_metric": f"valid {SELECTION_METRIC}",
        "weighted_valid": choice.target,
        "grid": {str(tau): value for tau, value in choice.grid.items()},
        "domain_weights": domain_weights,
    }
    return evaluate_run(
        run_dir,
        out=Path(out) if out is not None else default_out_dir(run_dir, weighted_run),
        model_wrapper=lambda model: PriorShiftedModel(model, log_weights, choice.tau),
        label=name,
        extra={"prior": record},
        **evaluate_options,
    )
