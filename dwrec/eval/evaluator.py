"""Full-ranking evaluation: every item of the catalogue is ranked for every case.

Ranking rule (identical everywhere, documented in docs/evaluate.md):

- items in the case's history (``item_ids[user_indptr[user]:history_end]``) are excluded,
  except the target itself (``keep_history=True`` excludes nothing);
- ``rank = 1 + #(unmasked items scoring strictly higher than the target)
  + #(unmasked items with an equal score and a smaller item id)``;
- the top-K list orders items by score, descending, then by item id, ascending.

Both come from one int64 sort key per (case, item): the score's order-preserving integer
image in the high 32 bits and ``2**32 - 1 - item_id`` in the low ones, so keys are unique,
a larger key means "ranked earlier", ``torch.topk`` on keys is the tie-broken top-K, and the
rank is ``1 + #(keys > the target's key)``. Masked items get the smallest int64.

Per batch: one model forward, one score matmul, one mask, one comparison and one
``topk``. Catalogues whose score block would exceed ``max_score_elements`` are scored in
item chunks: a first pass finds each target's score and merges the per-chunk top-K, a second
counts the items above the target per chunk, so memory stays bounded for any catalogue.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from dwrec import devices
from dwrec.data.dataset import Dataset, load_dataset
from dwrec.data.split import Cases, Split, make_split
from dwrec.errors import DataFormatError, DwrecError, UsageError
from dwrec.eval import cohorts, metrics
from dwrec.io import provenance, read_json, write_json, write_parquet
from dwrec.models.base import trim_leading_padding

DEFAULT_BATCH_SIZE = 256
MAX_SCORE_ELEMENTS = 1 << 24
"""Largest ``[batch, items]`` score block held at once (64 MiB of float32 scores)."""
MASKED_KEY = torch.iinfo(torch.int64).min
_LOW_MASK = (1 << 32) - 1

ScoreChunk = Callable[[int, int], torch.Tensor]
"""``score_chunk(start, end) -> [B, end - start]`` scores of items ``start..end-1``."""


@dataclass
class Ranking:
    """Ranking of every case.

    Attributes:
        ranks: ``[N]`` int64, 1-based rank of each target (see the module docstring).
        top_items: ``[N, K]`` int64 item ids in ranked order; ``-1`` marks an empty slot
            (fewer than K rankable items).
        top_scores: ``[N, K]`` float32 scores of ``top_items`` (NaN for empty slots).
    """

    ranks: np.ndarray
    top_items: np.ndarray
    top_scores: np.ndarray


# ---------------------------------------------------------------- ranking kernels (torch)


def sort_keys(scores: torch.Tensor, ids: torch.Tensor, masked: torch.Tensor | None) -> torch.Tensor:
    """Unique int64 keys ordering items by (score descending, id ascending).

    Args:
        scores: ``[B, C]`` float scores (cast to float32; must not be NaN).
        ids: item ids of the columns, ``[C]`` or ``[B, C]``, in ``[0, 2**32)``.
        masked: bool ``[B, C]`` (True = excluded) or None.
    """
    # add(0.0) folds -0.0 into +0.0 (equal as floats) and gives a tensor we may overwrite.
    bits = scores.float().add(0.0).view(torch.int32)
    # Flip the magnitude bits of negative floats: then integer order == float order.
    flip = bits >> 31
    flip &= 0x7FFFFFFF
    bits ^= flip
    keys = bits.to(torch.int64)
    keys <<= 32
    keys |= _LOW_MASK - ids.to(torch.int64)
    if masked is not None:
        keys.masked_fill_(masked, MASKED_KEY)
    return keys


def _check_finite(scores: torch.Tensor) -> None:
    if torch.isnan(scores).any():
        raise DwrecError("the model produced NaN scores; the checkpoint is unusable for ranking")


def _chunk_mask(
    batch: int, start: int, end: int, rows: torch.Tensor, cols: torch.Tensor, whole: bool
) -> torch.Tensor | None:
    """Bool ``[batch, end - start]``: history pairs ``(rows, cols)`` falling in the chunk."""
    if rows.numel() == 0:
        return None
    mask = torch.zeros(batch, end - start, dtype=torch.bool, device=rows.device)
    if whole:
        mask[rows, cols] = True
    else:
        inside = (cols >= start) & (cols < end)
        mask[rows[inside], cols[inside] - start] = True
    return mask


def _merge_top(
    keys: torch.Tensor, items: torch.Tensor, new_keys: torch.Tensor, new_items: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    keys = torch.cat([keys, new_keys], dim=1)
    items = torch.cat([items, new_items], dim=1)
    best = torch.topk(keys, min(k, keys.shape[1]), dim=1).indices
    return keys.gather(1, best), items.gather(1, best)


def rank_batch(
    score_chunk: ScoreChunk,
    targets: torch.Tensor,
    mask_rows: torch.Tensor,
    mask_cols: torch.Tensor,
    n_items: int,
    top_k: int = 0,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank every item for a batch of cases; memory ``O(B * chunk_size)``.

    Args:
        score_chunk: scores of an item range (must return identical values when called twice).
        targets: ``[B]`` int64 target item ids.
        mask_rows, mask_cols: history pairs (case row in the batch, item id) to exclude;
            pairs naming the case's own target are ignored.
        n_items: catalogue size.
        top_k: length of the top lists (0: ranks only).
        chunk_size: items scored at once (default: all).

    Returns:
        ``ranks [B]`` int64, ``top_items [B, top_k]`` int64 (-1 = empty slot), and
        ``top_keys [B, top_k]`` (:func:`sort_keys` values, ``MASKED_KEY`` = empty).
    """
    batch, device = targets.shape[0], targets.device
    chunk_size = n_items if chunk_size is None else max(1, min(chunk_size, n_items))
    bounds = [(s, min(s + chunk_size, n_items)) for s in range(0, n_items, chunk_size)]
    target_keys = torch.empty(batch, dtype=torch.int64, device=device)
    top_keys = torch.empty(batch, 0, dtype=torch.int64, device=device)
    top_items = torch.empty(batch, 0, dtype=torch.int64, device=device)
    counts = torch.zeros(batch, dtype=torch.int64, device=device)
    single = len(bounds) == 1
    for start, end in bounds:  # pass 1: target keys, top-K (and counts when unchunked)
        keys = _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items)
        local = targets - start
        here = (local >= 0) & (local < end - start)
        picked = keys.gather(1, local.clamp(0, end - start - 1)[:, None])[:, 0]
        target_keys = torch.where(here, picked, target_keys)
        if single:
            counts = _count_above(keys, target_keys)
        if top_k:
            k = min(top_k, end - start)
            chunk_best = torch.topk(keys, k, dim=1)
            new_items = chunk_best.indices + start
            top_keys, top_items = _merge_top(
                top_keys, top_items, chunk_best.values, new_items, top_k
            )
    if not single:  # pass 2: items above the target, chunk by chunk
        for start, end in bounds:
            keys = _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items)
            counts += _count_above(keys, target_keys)
    top_items = torch.where(top_keys == MASKED_KEY, -1, top_items)
    return counts + 1, top_items, top_keys


def _count_above(keys: torch.Tensor, target_keys: torch.Tensor) -> torch.Tensor:
    """``[B]`` int64: per row, the keys above the target's (summed as int32: a chunk has fewer
    than 2**31 columns, and an int32 sum avoids an int64 copy of the whole comparison)."""
    return (keys > target_keys[:, None]).sum(dim=1, dtype=torch.int32).long()


def _chunk_keys(score_chunk, start, end, targets, mask_rows, mask_cols, n_items) -> torch.Tensor:
    """Sort keys of items ``start..end-1`` for the batch; the target is never masked."""
    batch, width = targets.shape[0], end - start
    scores = score_chunk(start, end)
    if scores.shape != (batch, width):
        raise DwrecError(
            f"model.score returned shape {tuple(scores.shape)}, expected {(batch, width)}"
        )
    _check_finite(scores)
    masked = _chunk_mask(batch, start, end, mask_rows, mask_cols, start == 0 and end == n_items)
    if masked is not None:
        local = targets - start
        here = ((local >= 0) & (local < width))[:, None]
        column = local.clamp(0, width - 1)[:, None]
        masked.scatter_(1, column, masked.gather(1, column) & ~here)
    ids = torch.arange(start, end, device=targets.device)
    return sort_keys(scores, ids, masked)


def keys_to_scores(keys: torch.Tensor) -> torch.Tensor:
    """Invert :func:`sort_keys` for the score part (float32; NaN where masked)."""
    monotone = (keys >> 32).to(torch.int32)
    bits = monotone ^ ((monotone >> 31) & 0x7FFFFFFF)
    scores = bits.view(torch.float32).clone()
    return scores.masked_fill(keys == MASKED_KEY, float("nan"))


def rank_sampled(
    scores: torch.Tensor, candidates: torch.Tensor, top_k: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank a target among sampled candidates (column 0 = the target).

    Same tie rule as :func:`rank_batch`, with ids taken from ``candidates [B, C]``.
    Returns ranks ``[B]``, top items ``[B, min(top_k, C)]`` and their keys.
    """
    _check_finite(scores)
    keys = sort_keys(scores, candidates, None)
    ranks = (keys > keys[:, :1]).sum(dim=1) + 1
    k = min(top_k, keys.shape[1])
    best = torch.topk(keys, k, dim=1)
    return ranks, candidates.gather(1, best.indices), best.values


# ---------------------------------------------------------------- cases -> model inputs


def _ranges(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated ``range(starts[i], ends[i])``: (row i of each element, the element)."""
    lengths = ends - starts
    rows = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return rows, np.repeat(starts, lengths) + offsets


def history_tokens(
    dataset: Dataset, starts: np.ndarray, ends: np.ndarray, max_len: int
) -> np.ndarray:
    """``[B, max_len]`` int64: the last ``max_len`` history items as ``item_id + 1``,
    left-padded with 0 (the model input contract)."""
    clipped = np.maximum(starts, ends - max_len)
    rows, source = _ranges(clipped, ends)
    lengths = ends - clipped
    within = source - clipped[rows]
    tokens = np.zeros((len(starts), max_len), dtype=np.int64)
    tokens[rows, max_len - lengths[rows] + within] = dataset.item_ids[source] + 1
    return tokens


@dataclass
class _Options:
    top_k: int
    batch_size: int
    device: torch.device
    keep_history: bool
    sampled: int | None
    seed: int
    max_score_elements: int


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
    workers = 1 if opts.sampled else _cpu_workers(opts.device)
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
            rows, source = _ranges(starts, ends)
            cols = dataset.item_ids[source]
        rows_t = torch.from_numpy(rows).to(opts.device)
        cols_t = torch.from_numpy(cols).to(opts.device)
        state = _user_states(model, tokens)
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
        return result[0].cpu(), result[1].cpu(), result[2].cpu()

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


def _user_states(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.user_state`` of a ``[B, L]`` batch, computed in row slices of about
    :data:`FORWARD_TOKENS` positions (a row's state depends on that row alone)."""
    rows = max(1, FORWARD_TOKENS // max(1, tokens.shape[1]))
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


def resolve_device(device: str | torch.device | None, model=None) -> torch.device:
    """``auto``/None: the model's device if it has parameters or buffers, else as
    :func:`dwrec.devices.resolve_device` (which also checks explicit names)."""
    if (device is None or str(device) == "auto") and model is not None:
        tensor = next(iter(model.parameters()), None)
        tensor = tensor if tensor is not None else next(iter(model.buffers()), None)
        if tensor is not None:
            return tensor.device
    return devices.resolve_device("auto" if device is None else device)


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
) -> Ranking:
    """Rank every case with ``model`` (restores its train/eval mode afterwards)."""
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
) -> dict[str, float]:
    """Overall full-ranking metrics of ``model`` on ``split.cases(which)`` (history masked).

    Returns ``{"recall@10": mean, "ndcg@10": ..., "mrr@10": ...}`` for every K; the
    trainer's early stopping reads ``ndcg@10`` on ``which="valid"``. No top-K lists are
    built, so this is one forward, one matmul, one mask and one count per batch.
    """
    ks = _check_ks(ks)
    cases = split.cases(which)
    ranking = rank_model(model, dataset, cases, batch_size=batch_size, device=device)
    per_case = metrics.per_case_metrics(ranking.ranks, ks)
    return {name: float(values.mean()) if len(values) else 0.0 for name, values in per_case.items()}


# ---------------------------------------------------------------- run directories


def is_finished(run_dir: str | Path) -> bool:
    """True when ``dwrec train`` marked the run complete (``train_done.json``, or a
    ``summary.json`` with ``"finished": true``)."""
    run_dir = Path(run_dir)
    if (run_dir / "train_done.json").exists():
        return True
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            return bool(read_json(summary).get("finished"))
        except (DwrecError, AttributeError):
            return False
    return False


def output_names(split: str) -> tuple[str, str]:
    """File names of the per-case table and the metrics for ``split``."""
    if split == "test":
        return "per_user.parquet", "metrics.json"
    return f"per_user.{split}.parquet", f"metrics.{split}.json"


def load_run(run_dir: str | Path) -> tuple[dict, Dataset, Split]:
    """Read a run's config and load its dataset and split, checking both fingerprints."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"RUN {run_dir}: no such run directory")
    config_path = run_dir / "config.json"
    config = read_json(config_path)
    try:
        data_cfg, split_cfg = config["dataset"], config["split"]
        data_path = Path(data_cfg["path"])
        scheme = split_cfg["scheme"]
    except (KeyError, TypeError) as exc:
        raise DataFormatError(config_path, f"missing field {exc} (run-dir contract)") from None
    if not (data_path / "dataset.json").exists():
        raise DwrecError(
            f"{config_path}: dataset {data_cfg.get('name')!r} is missing at {data_path}; "
            f"prepare it again there (`dwrec prepare {data_cfg.get('name')} --out {data_path}`)"
        )
    dataset = load_dataset(data_path)
    if dataset.fingerprint != data_cfg.get("fingerprint"):
        raise DwrecError(
            f"{config_path}: dataset at {data_path} has changed since training "
            f"(fingerprint {dataset.fingerprint}, the run was trained on "
            f"{data_cfg.get('fingerprint')}); evaluate against the original data"
        )
    split = make_split(dataset, scheme)
    if split.fingerprint != split_cfg.get("fingerprint"):
        raise DwrecError(
            f"{config_path}: split {scheme!r} of the dataset now has fingerprint "
            f"{split.fingerprint}, the run used {split_cfg.get('fingerprint')}; "
            "was the split code or the dataset changed?"
        )
    return config, dataset, split


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
) -> dict:
    """Evaluate a finished run; write ``per_user.parquet`` and ``metrics.json`` (names per
    :func:`output_names`) into ``out`` (default: the run dir). Returns the metrics.json
    content (contract in docs/evaluate.md)."""
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
    config, dataset, data_split = load_run(run_dir)
    model = load_model(run_dir, config, dataset.fingerprint, dataset)
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
    )
    seconds = time.perf_counter() - started
    stats = cohorts.training_stats(dataset, data_split)
    masks = cohorts.cohort_masks(
        dataset, stats, cases.user, cases.target, power_threshold, general_threshold
    )
    per_case = metrics.per_case_metrics(ranking.ranks, ks)
    result = _metrics_document(
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
    out_dir = Path(out) if out is not None else run_dir
    table_name, metrics_name = output_names(split)
    write_parquet(out_dir / table_name, _per_user_table(dataset, cases, ranking, per_case, masks))
    write_json(out_dir / metrics_name, result)
    if export_trec is not None:
        from dwrec.eval.trec import write_trec

        write_trec(Path(export_trec), run_dir.name, split, dataset, cases, ranking)
    return result


def _per_user_table(dataset, cases: Cases, ranking: Ranking, per_case, masks) -> pa.Table:
    columns = {
        "case_id": pa.array(cases.row.astype(np.int64)),
        "user_id": pa.array(cases.user.astype(np.int32)),
        "target_item": pa.array(cases.target.astype(np.int32)),
        "rank": pa.array(ranking.ranks.astype(np.int64)),
    }
    columns.update({name: pa.array(values.astype(np.float64)) for name, values in per_case.items()})
    for cohort in ("target", "power", "general"):
        columns[f"{cohort}_domains"] = cohorts.domain_lists(masks[cohort], dataset.domain_names)
    return pa.table(columns)


def _metrics_document(
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
    *,
    sampled,
    keep_history,
    thresholds,
) -> dict:
    overall = {name: float(v.mean()) if len(v) else None for name, v in per_case.items()}
    shares = {}
    for k in ks:
        overall[f"coverage@{k}"] = metrics.coverage_at_k(ranking.top_items, dataset.n_items, k)
        popularity = metrics.mean_popularity_at_k(ranking.top_items, stats.item_popularity, k)
        overall[f"mean_popularity@{k}"] = None if np.isnan(popularity) else popularity
        share = metrics.recommendation_share_at_k(ranking.top_items, dataset.item_domain_matrix, k)
        shares[f"recommendation_share@{k}"] = dict(
            zip(dataset.domain_names, map(float, share), strict=True)
        )
    by_cohort = {
        cohort: cohorts.cohort_means(per_case, masks[cohort], dataset.domain_names)
        for cohort in ("target", "power", "general")
    }
    domains = {
        name: {
            "train_share": float(stats.domain_share[index]),
            **{cohort: by_cohort[cohort][name] for cohort in by_cohort},
        }
        for index, name in enumerate(dataset.domain_names)
    }
    return {
        "run": str(Path(run_dir).resolve()),
        "label": config.get("label") or Path(run_dir).name,
        "split": split,
        "ks": list(ks),
        "dataset": {
            "name": dataset.name,
            "fingerprint": dataset.fingerprint,
            "path": str(dataset.path),
        },
        "split_scheme": data_split.scheme,
        "split_fingerprint": data_split.fingerprint,
        "n_cases": int(len(ranking.ranks)),
        "n_items": int(dataset.n_items),
        "masked_history": not keep_history,
        "sampled": sampled,
        "tie_break": "smaller item id first",
        "overall": overall,
        **shares,
        "domains": domains,
        "thresholds": thresholds,
        **provenance(),
    }
