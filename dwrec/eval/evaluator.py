"""Full-ranking evaluation of a model or of a finished run: every item of the catalogue is
ranked for every case, by the kernels of :mod:`dwrec.eval.ranking` (which states the ranking
rule, its tie-breaking and the chunking of large catalogues).

:func:`rank_model` batches the cases by history length (all-padding columns dropped), computes
the user states in row slices of about :data:`FORWARD_TOKENS` positions and, on CPU, ranks
one batch per worker thread (``sampled``: against sampled candidates instead of the whole
catalogue). :func:`evaluate_model` turns the ranks into overall metrics;
:func:`evaluate_run` loads a finished run, ranks its split and writes the metrics document
(overall and per cohort), the per-user table and, on request, a TREC run file.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dwrec.data.dataset import Dataset
from dwrec.data.split import Cases, Split
from dwrec.devices import resolve_device
from dwrec.errors import DwrecError, UsageError
from dwrec.eval import cohorts, metrics
from dwrec.eval.outputs import metrics_document, per_user_table
from dwrec.eval.ranking import (  # noqa: F401 - the kernels, re-exported
    DEFAULT_BATCH_SIZE,
    MASKED_KEY,
    MAX_SCORE_ELEMENTS,
    Ranking,
    ScoreChunk,
    history_tokens,
    keys_to_scores,
    ranges,
    rank_batch,
    rank_sampled,
    sort_keys,
)
from dwrec.io import write_json, write_parquet
from dwrec.models.base import trim_leading_padding
from dwrec.rundir import RunDir, output_names  # noqa: F401 - output_names re-exported

_ranges = ranges  # the name benchmarks used


@dataclass
class _Options:
    top_k: int
    batch_size: int
    device: torch.device
    keep_history: bool
    sampled: int | None
    seed: int
    max_score_elements: int
    workers: int | None = None
    forward_tokens: int | None = None
    progress: object = None  # progress(cases_done, cases_total), called after each batch


def _rank_cases(model, dataset: Dataset, cases: Cases, opts: _Options) -> Ranking:
    """Rank every case of ``cases`` with ``model`` (already in eval mode on the device)."""
    max_len = int(getattr(getattr(model, "config", None), "max_len", 200) or 200)
    n_items = dataset.n_items
    generator = torch.Generator().manual_seed(opts.seed)
    starts_all = dataset.user_indptr[cases.user]
    # Batches of similar history length, so all-padding columns can be dropped (models count
    # positions from the first real token: the same states on fewer columns).
    order = np.argsort(np.minimum(cases.history_end - starts_all, max_len), kind="stable")
    # Sampled candidates come from one generator in batch order, so those batches run serially.
    workers = 1 if opts.sampled else (opts.workers or _cpu_workers(opts.device))
    size = opts.batch_size
    if workers > 1:  # at least 2 batches per worker, when the cases allow
        size = max(1, min(size, -(-len(cases) // (2 * workers))))
    parts = [order[begin : begin + size] for begin in range(0, len(cases), size)]
    workers = min(workers, max(1, len(parts)))
    score_elements = max(1, opts.max_score_elements // workers)

    def rank_part(part: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        starts, ends = starts_all[part], cases.history_end[part]
        tokens = torch.from_numpy(history_tokens(dataset, starts, ends, max_len))
        tokens = trim_leading_padding(tokens).to(opts.device)
        targets = torch.from_numpy(cases.target[part]).to(opts.device)
        if opts.keep_history:
            rows = cols = np.zeros(0, dtype=np.int64)
        else:
            rows, source = ranges(starts, ends)
            cols = dataset.item_ids[source]
        rows_t = torch.from_numpy(rows).to(opts.device)
        cols_t = torch.from_numpy(cols).to(opts.device)
        state = _user_states(model, tokens, opts.forward_tokens)
        if opts.sampled:
            candidates = _sample_candidates(targets, rows_t, cols_t, n_items, opts, generator)
            result = rank_sampled(model.score(state, candidates), candidates, opts.top_k)
        else:
            chunk = max(1, score_elements // max(1, len(targets)))
            result = rank_batch(
                _score_chunk(model, state, n_items),
                targets,
                rows_t,
                cols_t,
                n_items,
                opts.top_k,
                chunk,
            )
        done = result[0].cpu(), result[1].cpu(), result[2].cpu()
        if opts.progress is not None:
            opts.progress(len(part), len(cases))
        return done

    results = _map_in_workers(rank_part, parts, workers)
    ranks, tops, top_keys = ([result[i] for result in results] for i in range(3))
    ranking = _collect(ranks, tops, top_keys, opts.top_k)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return Ranking(
        ranks=ranking.ranks[inverse],
        top_items=ranking.top_items[inverse],
        top_scores=ranking.top_scores[inverse],
    )


FORWARD_TOKENS = 4096
"""Token positions per model forward: the batch's rows are fed in slices of about this many
positions, which keeps a transformer's activations (a few MiB) in the CPU caches."""


def _user_states(model, tokens: torch.Tensor, forward_tokens: int | None = None) -> torch.Tensor:
    """``model.user_state`` of a ``[B, L]`` batch, computed in row slices of about
    :data:`FORWARD_TOKENS` positions (a row's state depends on that row alone)."""
    rows = max(1, (forward_tokens or FORWARD_TOKENS) // max(1, tokens.shape[1]))
    if tokens.device.type != "cpu" or rows >= tokens.shape[0]:
        return model.user_state(tokens)
    return torch.cat([model.user_state(trim_leading_padding(part)) for part in tokens.split(rows)])


def _cpu_workers(device: torch.device) -> int:
    """How many threads rank batches at once: on CPU, torch's thread count (each worker then
    runs its batch on one thread); elsewhere 1."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


def _map_in_workers(work, items: list, workers: int) -> list:
    """``[work(item) for item in items]`` in inference mode, on ``workers`` threads.

    On a CPU, one batch per thread with one torch thread each beats every batch on all
    threads: the operations of a batch are small (a few MiB), so splitting each across cores
    costs more in synchronisation than it gains. torch releases the GIL inside its kernels.
    The caller's torch thread count is restored afterwards.
    """
    if workers <= 1:
        return [work(item) for item in items]
    threads = torch.get_num_threads()

    def run(item):
        torch.set_num_threads(1)
        with torch.inference_mode():
            return work(item)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dwrec-rank")
    try:
        return list(pool.map(run, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)


def _score_chunk(model, state: torch.Tensor, n_items: int) -> ScoreChunk:
    def score(start: int, end: int) -> torch.Tensor:
        if start == 0 and end == n_items:
            return model.score(state)
        return model.score(state, torch.arange(start, end, device=state.device))

    return score


def _collect(ranks, tops, top_keys, top_k: int) -> Ranking:
    if not ranks:
        empty = np.zeros((0, top_k))
        return Ranking(np.zeros(0, np.int64), empty.astype(np.int64), empty.astype(np.float32))
    keys = torch.cat(top_keys)
    return Ranking(
        ranks=torch.cat(ranks).numpy().astype(np.int64),
        top_items=torch.cat(tops).numpy().astype(np.int64),
        top_scores=keys_to_scores(keys).numpy(),
    )


def _sample_candidates(targets, rows, cols, n_items, opts: _Options, generator) -> torch.Tensor:
    """``[B, 1 + N]``: the target then N distinct uniform items outside history and target."""
    batch = targets.shape[0]
    draw = torch.rand(batch, n_items, generator=generator).to(opts.device)
    draw[rows, cols] = float("inf")
    draw[torch.arange(batch, device=opts.device), targets] = float("inf")
    if opts.sampled > n_items - 1:
        raise UsageError(f"--sampled {opts.sampled}: the catalogue has only {n_items} items")
    picked = torch.topk(draw, opts.sampled, dim=1, largest=False)
    if torch.isinf(picked.values).any():
        raise UsageError(
            f"--sampled {opts.sampled}: some cases have fewer eligible negatives "
            "(items outside their history); lower N"
        )
    return torch.cat([targets[:, None], picked.indices], dim=1)


# ---------------------------------------------------------------- library entry points


def _check_ks(ks: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise UsageError(f"--k must be a positive integer, got {ks}")
    return ks


def rank_model(
    model,
    dataset: Dataset,
    cases: Cases,
    *,
    top_k: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    keep_history: bool = False,
    sampled: int | None = None,
    seed: int = 0,
    max_score_elements: int = MAX_SCORE_ELEMENTS,
    workers: int | None = None,
    forward_tokens: int | None = None,
    progress=None,
) -> Ranking:
    """Rank every case with ``model`` (restores its train/eval mode afterwards).

    ``workers``: batches ranked at once on CPU threads (default: torch's thread count on CPU,
    1 elsewhere); ``forward_tokens``: token positions per model forward (default
    :data:`FORWARD_TOKENS`). Both change speed only, never a rank. ``progress(cases, total)``
    is called after each batch of ``cases`` cases."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    if sampled is not None and sampled < 1:
        raise UsageError(f"--sampled must be >= 1, got {sampled}")
    model_items = getattr(model, "n_items", dataset.n_items)
    if model_items != dataset.n_items:
        raise DwrecError(
            f"the model scores {model_items} items but dataset {dataset.name} has {dataset.n_items}"
        )
    opts = _Options(
        top_k,
        batch_size,
        resolve_device(device, model),
        keep_history,
        sampled,
        seed,
        max_score_elements,
        workers,
        forward_tokens,
        progress,
    )
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _rank_cases(model, dataset, cases, opts)
    finally:
        model.train(was_training)


def evaluate_model(
    model,
    dataset: Dataset,
    split: Split,
    which: str = "valid",
    ks: Sequence[int] = (10,),
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | torch.device | None = None,
    **knobs,
) -> dict[str, float]:
    """Overall full-ranking metrics of ``model`` on ``split.cases(which)`` (history masked).

    Returns ``{"recall@10": mean, "ndcg@10": ..., "mrr@10": ...}`` for every K; the
    trainer's early stopping reads ``ndcg@10`` on ``which="valid"``. No top-K lists are
    built, so this is one forward, one matmul, one mask and one count per batch.
    ``knobs``: ``workers`` / ``forward_tokens`` of :func:`rank_model`.
    """
    ks = _check_ks(ks)
    cases = split.cases(which)
    ranking = rank_model(model, dataset, cases, batch_size=batch_size, device=device, **knobs)
    per_case = metrics.per_case_metrics(ranking.ranks, ks)
    return {name: float(values.mean()) if len(values) else 0.0 for name, values in per_case.items()}


# ---------------------------------------------------------------- run directories


def is_finished(run_dir: str | Path) -> bool:
    """True when ``dwrec train`` marked the run complete (``train_done.json``)."""
    return RunDir(run_dir).is_finished()


def load_run_data(
    run_dir: str | Path, dataset: str | Path | None = None
) -> tuple[dict, Dataset, Split]:
    """Read a run's config and load its dataset and split, checking both fingerprints
    (:meth:`dwrec.rundir.RunDir.load_data`; ``dataset``: ``--dataset DIR_OR_NAME``)."""
    folder = RunDir(run_dir)
    if not folder.path.is_dir():
        raise UsageError(f"RUN {folder.path}: no such run directory")
    config = folder.read_config(with_plugins=True)
    data, split = folder.load_data(config, dataset=dataset)
    return config, data, split


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    ks: Sequence[int] = (10,),
    out: str | Path | None = None,
    *,
    keep_history: bool = False,
    sampled: int | None = None,
    power_threshold: float = 0.5,
    general_threshold: float = 0.1,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str | None = "auto",
    export_trec: str | Path | None = None,
    seed: int = 0,
    max_score_elements: int = MAX_SCORE_ELEMENTS,
    model_wrapper=None,
    label: str | None = None,
    extra: dict | None = None,
    dataset: str | Path | None = None,
    progress=None,
) -> dict:
    """Evaluate a finished run; write ``per_user.parquet`` and ``metrics.json`` (names per
    :func:`output_names`) into ``out`` (default: the run dir). Returns the metrics.json
    content (contract in docs/evaluate.md).

    ``model_wrapper`` (model -> model) transforms the loaded model before ranking (the
    prior-shift control, :mod:`dwrec.eval.prior`); ``label`` then names the evaluation
    (``evaluation_label`` in metrics.json, read by ``dwrec report``) and ``extra`` is merged
    into metrics.json. ``dataset`` (``--dataset DIR_OR_NAME``) overrides where the run's
    dataset is looked for (its fingerprint is still checked); ``progress(cases, total)`` is
    called after each ranked batch.

    metrics.json records the state it evaluated (``"checkpoint"``: model.pt's sha256, best
    epoch, epochs run, ``"finished"``), so that an evaluation of a run trained further is
    known as stale (:meth:`dwrec.rundir.RunDir.stale_reason`); ``"finished": false`` marks
    the evaluation of a run whose training had not finished."""
    from dwrec.models.registry import load_model

    if split not in ("test", "valid"):
        raise UsageError(f"--split must be 'test' or 'valid', got {split!r}")
    for flag, value in (
        ("--power-threshold", power_threshold),
        ("--general-threshold", general_threshold),
    ):
        if not 0.0 <= value <= 1.0:
            raise UsageError(f"{flag} must lie in [0, 1], got {value}")
    ks = _check_ks(ks)
    run_dir = Path(run_dir)
    config, dataset_obj, data_split = load_run_data(run_dir, dataset)
    dataset = dataset_obj
    state = RunDir(run_dir).checkpoint_record()  # before loading: what model.pt was
    model = load_model(run_dir, config, dataset)
    if model_wrapper is not None:
        model = model_wrapper(model)
    model.to(resolve_device(device))
    cases = data_split.cases(split)
    started = time.perf_counter()
    ranking = rank_model(
        model,
        dataset,
        cases,
        top_k=max(ks),
        batch_size=batch_size,
        device=device,
        keep_history=keep_history,
        sampled=sampled,
        seed=seed,
        max_score_elements=max_score_elements,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    stats = cohorts.training_stats(dataset, data_split)
    masks = cohorts.cohort_masks(
        dataset, stats, cases.user, cases.target, power_threshold, general_threshold
    )
    per_case = metrics.per_case_metrics(ranking.ranks, ks)
    result = metrics_document(
        run_dir,
        config,
        dataset,
        data_split,
        split,
        ks,
        ranking,
        per_case,
        stats,
        masks,
        sampled=sampled,
        keep_history=keep_history,
        thresholds={"power": power_threshold, "general": general_threshold},
    )
    result["seconds"] = round(seconds, 3)
    result["checkpoint"] = state
    result["finished"] = state["finished"]
    if label is not None:
        result["label"] = result["evaluation_label"] = label
    result.update(extra or {})
    table_path, metrics_path = RunDir(run_dir).outputs(split, out)
    write_parquet(table_path, per_user_table(dataset, cases, ranking, per_case, masks))
    write_json(metrics_path, result)
    if export_trec is not None:
        from dwrec.eval.trec import write_trec

        write_trec(Path(export_trec), run_dir.name, split, dataset, cases, ranking)
    return result
