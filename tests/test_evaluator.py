"""Full-ranking evaluator: kernels against a brute-force float64 reference, cohorts against
loops, and `dwrec evaluate` end to end on a run dir built here with a test-only model."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dwrec.cli import main
from dwrec.data.dataset import load_dataset
from dwrec.data.prepare import build_tables
from dwrec.data.raw import RawData
from dwrec.data.split import make_split
from dwrec.errors import DwrecError
from dwrec.eval import cohorts
from dwrec.eval.evaluator import (
    evaluate_model,
    evaluate_run,
    history_tokens,
    keys_to_scores,
    rank_batch,
    rank_sampled,
)
from dwrec.io import write_json, write_parquet
from dwrec.models.base import ModelConfig, SequentialModel
from dwrec.models.registry import register

# ----------------------------------------------------------------- brute-force reference


def brute_force(scores, targets, masked, top_k):
    """Python loops in float64: rank and tie-broken top-K of each row."""
    ranks, tops = [], []
    for row in range(len(scores)):
        target = int(targets[row])
        excluded = set(masked[row]) - {target}
        s_t = float(scores[row][target])
        rank = 1
        for item in range(len(scores[row])):
            if item == target or item in excluded:
                continue
            s = float(scores[row][item])
            if s > s_t or (s == s_t and item < target):
                rank += 1
        ranks.append(rank)
        allowed = [i for i in range(len(scores[row])) if i not in excluded]
        allowed.sort(key=lambda i: (-float(scores[row][i]), i))
        tops.append(allowed[:top_k])
    return ranks, tops


@st.composite
def ranking_problems(draw):
    batch = draw(st.integers(1, 6))
    n_items = draw(st.integers(1, 25))
    tied = draw(st.booleans())
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    if tied:  # few distinct values: many ties, including -0.0 vs 0.0 and -inf
        pool = np.array([-np.inf, -1.5, -0.0, 0.0, 2.0, 7.25], dtype=np.float32)
        scores = pool[rng.integers(0, len(pool), size=(batch, n_items))]
    else:
        scores = rng.standard_normal((batch, n_items)).astype(np.float32)
    targets = rng.integers(0, n_items, size=batch)
    mask = rng.random((batch, n_items)) < draw(st.sampled_from([0.0, 0.3, 0.9]))
    top_k = draw(st.integers(1, n_items + 2))
    chunk = draw(st.integers(1, n_items))
    return scores, targets, mask, top_k, chunk


def run_rank_batch(scores, targets, mask, top_k, chunk):
    rows, cols = np.nonzero(mask)
    scores_t = torch.from_numpy(scores)
    return rank_batch(
        lambda a, b: scores_t[:, a:b].clone(),
        torch.from_numpy(targets),
        torch.from_numpy(rows),
        torch.from_numpy(cols),
        scores.shape[1],
        top_k=top_k,
        chunk_size=chunk,
    )


@settings(max_examples=150, deadline=None)
@given(problem=ranking_problems())
def test_ranks_and_top_k_match_brute_force(problem):
    scores, targets, mask, top_k, chunk = problem
    masked = [list(np.nonzero(row)[0]) for row in mask]
    expected_ranks, expected_tops = brute_force(scores.astype(np.float64), targets, masked, top_k)
    for chunk_size in (None, chunk):
        ranks, top_items, top_keys = run_rank_batch(scores, targets, mask, top_k, chunk_size)
        assert ranks.tolist() == expected_ranks
        for row, expected in enumerate(expected_tops):
            got = [i for i in top_items[row].tolist() if i >= 0]
            assert got == expected
            got_scores = keys_to_scores(top_keys[row, : len(got)]).numpy()
            np.testing.assert_array_equal(got_scores, scores[row, got])


def test_ties_are_broken_by_smaller_item_id():
    scores = np.full((1, 6), 3.0, dtype=np.float32)
    mask = np.zeros((1, 6), dtype=bool)
    ranks, top_items, _ = run_rank_batch(scores, np.array([4]), mask, 3, None)
    assert ranks.tolist() == [5]
    assert top_items.tolist() == [[0, 1, 2]]


def test_history_is_masked_but_target_stays_rankable():
    scores = np.array([[5.0, 4.0, 3.0, 2.0]], dtype=np.float32)
    mask = np.array([[True, False, True, False]])  # item 2 is the target: re-consumption
    ranks, top_items, _ = run_rank_batch(scores, np.array([2]), mask, 4, None)
    assert ranks.tolist() == [2]  # only item 1 (unmasked, higher) is ahead
    assert top_items.tolist() == [[1, 2, 3, -1]]  # item 0 masked: one slot stays empty


def test_nan_scores_are_an_error():
    from dwrec.errors import DwrecError

    scores = np.array([[1.0, np.nan]], dtype=np.float32)
    with pytest.raises(DwrecError, match="NaN"):
        run_rank_batch(scores, np.array([0]), np.zeros((1, 2), dtype=bool), 1, None)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), top_k=st.integers(1, 8))
def test_sampled_ranks_match_brute_force(seed, top_k):
    rng = np.random.default_rng(seed)
    candidates = np.stack([rng.permutation(30)[:7] for _ in range(4)])
    scores = rng.integers(0, 3, size=(4, 7)).astype(np.float32)
    ranks, top_items, _ = rank_sampled(
        torch.from_numpy(scores), torch.from_numpy(candidates), top_k
    )
    for row in range(4):
        target, s_t = candidates[row, 0], scores[row, 0]
        expected = 1 + sum(
            1
            for c in range(1, 7)
            if scores[row, c] > s_t or (scores[row, c] == s_t and candidates[row, c] < target)
        )
        assert ranks[row] == expected
        order = sorted(range(7), key=lambda c: (-scores[row, c], candidates[row, c]))
        assert top_items[row].tolist() == [int(candidates[row, c]) for c in order[:top_k]]


# ----------------------------------------------------------------- a tiny dataset and model


DOMAINS = ["Dense", "Mid", "Rare", "Tiny"]


def write_dataset(path, seed=0, n_users=30, n_items=40):
    """A random dataset dir written through dwrec.data.prepare.build_tables."""
    rng = np.random.default_rng(seed)
    users, items, stamps = [], [], []
    for user in range(n_users):
        length = int(rng.integers(2, 14))
        chosen = rng.choice(n_items, size=length, p=_zipf(n_items))  # repeats allowed
        users += [f"u{user}"] * length
        items += [f"i{item}" for item in chosen]
        stamps += sorted(rng.integers(0, 10_000, size=length).tolist())
    interactions = pa.table(
        {
            "user": users,
            "item": items,
            "timestamp": pa.array(stamps, pa.int64()),
            "rating": pa.nulls(len(users), pa.float32()),
        }
    )
    domains = []
    for _ in range(n_items):
        picks = rng.random(len(DOMAINS)) < [0.7, 0.4, 0.1, 0.05]
        domains.append([d for d, keep in zip(DOMAINS, picks, strict=True) if keep])
    item_table = pa.table(
        {
            "raw_id": [f"i{item}" for item in range(n_items)],
            "title": [f"item {item}" for item in range(n_items)],
            "domains": pa.array(domains, pa.list_(pa.string())),
        }
    )
    raw = RawData(interactions, item_table, [], "test domains")
    filters = {
        "min_rating": None,
        "min_user_interactions": 0,
        "min_item_interactions": 0,
        "dedupe": False,
    }
    tables, stats = build_tables(raw, filters)
    path.mkdir(parents=True)
    for name, table in tables.items():
        write_parquet(path / f"{name}.parquet", table)
    meta = {
        "name": "tiny",
        "schema_version": 1,
        "fingerprint": f"tiny{seed:012d}",
        "counts": stats["counts"],
        "domains": stats["domains"],
    }
    write_json(path / "dataset.json", meta)
    return load_dataset(path)


def _zipf(n):
    weights = 1.0 / np.arange(1, n + 1)
    return weights / weights.sum()


@register
class BagOfItemsModel(SequentialModel):
    """Test-only model: the user state is the mean embedding of the history items."""

    name = "_test_eval_bag"

    def __init__(self, n_items: int, config: ModelConfig):
        super().__init__(n_items, config)
        self.item_embedding = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)

    def forward(self, tokens):
        embedded = self.item_embedding(tokens)
        seen = (tokens > 0).cumsum(dim=1).clamp(min=1)[..., None]
        return embedded.cumsum(dim=1) / seen

    def score(self, hidden, items=None):
        weights = self.item_embedding.weight[1:]
        if items is None:
            return hidden @ weights.T
        if items.dim() == 1:
            return hidden @ weights[items].T
        return (hidden[:, None, :] * weights[items]).sum(dim=-1)


def write_run(run_dir, dataset, seed=0, label="bag+generic", finished=True):
    torch.manual_seed(seed)
    config = ModelConfig(hidden=8, max_len=5)
    model = BagOfItemsModel(dataset.n_items, config)
    split = make_split(dataset, "loo")
    run_dir.mkdir(parents=True)
    write_json(
        run_dir / "config.json",
        {
            "dataset": {
                "path": str(dataset.path.resolve()),
                "name": dataset.name,
                "fingerprint": dataset.fingerprint,
            },
            "split": {"scheme": "loo", "fingerprint": split.fingerprint},
            "model": {"name": BagOfItemsModel.name, "hidden": 8, "max_len": 5},
            "label": label,
        },
    )
    torch.save(
        {
            "model_state": model.state_dict(),
            "n_items": dataset.n_items,
            "dataset_fingerprint": dataset.fingerprint,
            "model": BagOfItemsModel.name,
            "epoch": 1,
        },
        run_dir / "model.pt",
    )
    if finished:
        write_json(run_dir / "train_done.json", {"finished": True})
    return model, split


def reference_ranks(model, dataset, cases, top_k, keep_history=False):
    """Per case, with Python loops: the model's scores, then the brute-force rank."""
    scores, masked = [], []
    with torch.no_grad():
        for user, end in zip(cases.user, cases.history_end, strict=True):
            history = dataset.item_ids[dataset.user_indptr[user] : end].tolist()
            recent = history[-5:]
            tokens = torch.tensor([[0] * (5 - len(recent)) + [i + 1 for i in recent]])
            scores.append(model.score(model.user_state(tokens))[0].numpy().astype(np.float64))
            masked.append([] if keep_history else history)
    return brute_force(np.stack(scores), cases.target, masked, top_k)


@pytest.fixture()
def tiny_run(tmp_path):
    dataset = write_dataset(tmp_path / "data")
    model, split = write_run(tmp_path / "runs" / "bag", dataset)
    return tmp_path / "runs" / "bag", dataset, model, split


# ----------------------------------------------------------------- inputs and cohorts


def test_history_tokens_are_left_padded_last_max_len_items(tiny_run):
    _, dataset, _, split = tiny_run
    cases = split.test
    starts = dataset.user_indptr[cases.user]
    tokens = history_tokens(dataset, starts, cases.history_end, 5)
    for row, (start, end) in enumerate(zip(starts, cases.history_end, strict=True)):
        recent = (dataset.item_ids[start:end][-5:] + 1).tolist()
        assert tokens[row].tolist() == [0] * (5 - len(recent)) + recent


def test_cohort_membership_and_means_match_loops(tiny_run):
    _, dataset, _, split = tiny_run
    cases = split.test
    stats = cohorts.training_stats(dataset, split)
    masks = cohorts.cohort_masks(dataset, stats, cases.user, cases.target, 0.5, 0.1)
    names = dataset.domain_names
    item_domains = {i: set() for i in range(dataset.n_items)}
    for i, row in enumerate(dataset.item_domain_matrix):
        item_domains[i] = {names[d] for d in np.nonzero(row)[0]}
    values = {"x": np.random.default_rng(1).random(len(cases))}
    means = cohorts.cohort_means(values, masks["power"], names)
    for d, domain in enumerate(names):
        members = []
        for case, (user, target) in enumerate(zip(cases.user, cases.target, strict=True)):
            train = dataset.item_ids[dataset.user_indptr[user] : split.train_end[user]]
            share = sum(domain in item_domains[int(i)] for i in train) / max(len(train), 1)
            assert masks["power"][case, d] == (share >= 0.5)
            assert masks["general"][case, d] == (share <= 0.1)
            assert masks["target"][case, d] == (domain in item_domains[int(target)])
            if share >= 0.5:
                members.append(values["x"][case])
        assert means[domain]["n"] == len(members)
        if members:
            assert means[domain]["x"] == pytest.approx(sum(members) / len(members), rel=1e-12)
        else:
            assert means[domain]["x"] is None


def test_training_popularity_counts_training_rows_only(tiny_run):
    _, dataset, _, split = tiny_run
    stats = cohorts.training_stats(dataset, split)
    expected = np.zeros(dataset.n_items, dtype=np.int64)
    for user in range(dataset.n_users):
        for item in dataset.item_ids[dataset.user_indptr[user] : split.train_end[user]]:
            expected[item] += 1
    assert stats.item_popularity.tolist() == expected.tolist()


# ----------------------------------------------------------------- library end to end


def test_evaluate_run_writes_contract_outputs(tiny_run):
    run_dir, dataset, model, split = tiny_run
    result = evaluate_run(run_dir, ks=(5, 2))
    table = pq.read_table(run_dir / "per_user.parquet")
    assert table.schema.field("case_id").type == pa.int64()
    assert table.schema.field("user_id").type == pa.int32()
    assert table.schema.field("rank").type == pa.int64()
    assert table.schema.field("power_domains").type == pa.list_(pa.string())
    assert table.column("case_id").to_pylist() == split.test.row.tolist()
    expected_ranks, expected_tops = reference_ranks(model, dataset, split.test, 5)
    assert table.column("rank").to_pylist() == expected_ranks
    for k in (2, 5):
        expected = [1.0 / math.log2(r + 1) if r <= k else 0.0 for r in expected_ranks]
        np.testing.assert_allclose(table.column(f"ndcg@{k}").to_numpy(), expected, rtol=1e-12)
        assert result["overall"][f"recall@{k}"] == pytest.approx(
            np.mean([r <= k for r in expected_ranks])
        )
        covered = {i for top in expected_tops for i in top[:k]}
        assert result["overall"][f"coverage@{k}"] == pytest.approx(len(covered) / dataset.n_items)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["ks"] == [2, 5] and saved["sampled"] is None and saved["masked_history"]
    assert saved["split_fingerprint"] == split.fingerprint
    assert set(saved["domains"]) == set(dataset.domain_names)
    assert saved["label"] == "bag+generic"


def test_target_cohort_metric_is_mean_over_cases_with_target_in_domain(tiny_run):
    run_dir, dataset, _, split = tiny_run
    result = evaluate_run(run_dir, ks=(5,))
    table = pq.read_table(run_dir / "per_user.parquet").to_pydict()
    for domain, entry in result["domains"].items():
        values = [
            v
            for v, doms in zip(table["recall@5"], table["target_domains"], strict=True)
            if domain in doms
        ]
        assert entry["target"]["n"] == len(values)
        if values:
            assert entry["target"]["recall@5"] == pytest.approx(np.mean(values))


def test_chunked_scoring_equals_unchunked(tiny_run, tmp_path):
    run_dir, *_ = tiny_run
    whole = evaluate_run(run_dir, ks=(3,), out=tmp_path / "whole")
    chunked = evaluate_run(run_dir, ks=(3,), out=tmp_path / "chunked", max_score_elements=7)
    a = pq.read_table(tmp_path / "whole" / "per_user.parquet")
    b = pq.read_table(tmp_path / "chunked" / "per_user.parquet")
    assert a.equals(b)
    assert whole["overall"] == chunked["overall"]


def test_keep_history_ranks_history_items_too(tiny_run, tmp_path):
    run_dir, dataset, model, split = tiny_run
    evaluate_run(run_dir, ks=(3,), out=tmp_path, keep_history=True)
    ranks = pq.read_table(tmp_path / "per_user.parquet").column("rank").to_pylist()
    assert ranks == reference_ranks(model, dataset, split.test, 3, keep_history=True)[0]


def test_evaluate_model_matches_valid_per_user_means(tiny_run, tmp_path):
    run_dir, dataset, model, split = tiny_run
    model.train()
    overall = evaluate_model(model, dataset, split, "valid", ks=(10,), batch_size=7)
    assert model.training  # the trainer's mode is restored
    ranks, _ = reference_ranks(model, dataset, split.valid, 10)
    assert overall["recall@10"] == pytest.approx(np.mean([r <= 10 for r in ranks]))
    assert overall["mrr@10"] == pytest.approx(np.mean([1 / r if r <= 10 else 0 for r in ranks]))


def test_changed_dataset_is_a_clear_error(tiny_run):
    run_dir, dataset, *_ = tiny_run
    meta = json.loads((dataset.path / "dataset.json").read_text())
    meta["fingerprint"] = "somethingelse"
    write_json(dataset.path / "dataset.json", meta)
    assert main(["evaluate", str(run_dir)]) == 1
    assert not (run_dir / "metrics.json").exists()


# ----------------------------------------------------------------- CLI


def test_cli_evaluates_with_several_k_and_exports_trec(tiny_run, tmp_path, capsys):
    run_dir, dataset, *_ = tiny_run
    trec = tmp_path / "trec"
    code = main(["evaluate", str(run_dir), "--k", "5", "--k", "1", "--export-trec", str(trec)])
    assert code == 0
    out = capsys.readouterr().out
    assert "recall" in out and "sparsest" in out
    result = json.loads((run_dir / "metrics.json").read_text())
    run_lines = (trec / "bag.test.run").read_text().splitlines()
    qrels = dict(
        line.split()[0::2][:2] for line in (trec / "bag.test.qrels").read_text().splitlines()
    )
    hits = {}
    for line in run_lines:
        case, q0, raw, rank, _score, tag = line.split()
        assert q0 == "Q0" and tag == "dwrec"
        if raw == qrels[case] and int(rank) <= 5:
            hits[case] = 1
    assert len(hits) / len(qrels) == pytest.approx(result["overall"]["recall@5"])
    assert len(qrels) == result["n_cases"]


def test_cli_sampled_is_marked_loudly(tiny_run, capsys):
    run_dir, *_ = tiny_run
    assert main(["evaluate", str(run_dir), "--sampled", "5", "--split", "valid"]) == 0
    assert "SAMPLED" in capsys.readouterr().out
    result = json.loads((run_dir / "metrics.valid.json").read_text())
    assert result["sampled"] == 5
    ranks = pq.read_table(run_dir / "per_user.valid.parquet").column("rank").to_numpy()
    assert ranks.max() <= 6


def test_cli_without_run_evaluates_pending_runs_only(tiny_run, tmp_path, capsys, monkeypatch):
    run_dir, dataset, *_ = tiny_run
    write_run(run_dir.parent / "unfinished", dataset, finished=False)
    write_run(run_dir.parent / "done", dataset)
    write_json(run_dir.parent / "done" / "metrics.json", {"already": True})
    monkeypatch.chdir(run_dir.parent.parent)
    assert main(["evaluate"]) == 0
    out = capsys.readouterr().out
    assert (run_dir / "metrics.json").exists()
    assert not (run_dir.parent / "unfinished" / "metrics.json").exists()
    assert json.loads((run_dir.parent / "done" / "metrics.json").read_text()) == {"already": True}
    assert "skip" in out and "unfinished" in out


def test_cli_rejects_bad_k(tiny_run, capsys):
    run_dir, *_ = tiny_run
    assert main(["evaluate", str(run_dir), "--k", "0"]) == 2
    assert "--k" in capsys.readouterr().err


def test_pop_run_ranks_by_training_count_with_id_tie_break(tiny_run, tmp_path):
    from dwrec.models.pop import Pop

    _, dataset, _, split = tiny_run
    stats = cohorts.training_stats(dataset, split)
    model = Pop(dataset.n_items, ModelConfig()).fit(stats.item_popularity)
    run_dir = tmp_path / "pop"
    write_run(run_dir, dataset)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"] = {"name": "pop"}
    write_json(run_dir / "config.json", config)
    state = torch.load(run_dir / "model.pt", weights_only=True)
    state.update(model_state=model.state_dict(), model="pop")
    torch.save(state, run_dir / "model.pt")
    result = evaluate_run(run_dir, ks=(5,))
    scores = np.log1p(stats.item_popularity.astype(np.float32)).astype(np.float64)
    masked = [
        dataset.item_ids[dataset.user_indptr[u] : end].tolist()
        for u, end in zip(split.test.user, split.test.history_end, strict=True)
    ]
    expected, _ = brute_force(np.tile(scores, (len(masked), 1)), split.test.target, masked, 5)
    ranks = pq.read_table(run_dir / "per_user.parquet").column("rank").to_pylist()
    assert ranks == expected
    assert result["overall"]["mean_popularity@5"] > float(stats.item_popularity.mean())


# ----------------------------------------------------------------- CPU worker threads


@pytest.fixture()
def threads():
    """Restore torch's thread count after a test that changes it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("n_threads", "batch_size"), [(2, 7), (5, 256)])
def test_worker_threads_and_forward_slices_rank_like_one_serial_pass(
    tmp_path, monkeypatch, threads, n_threads, batch_size
):
    """Batches ranked on 2 worker threads, each forward cut into row slices, give the ranks
    and top lists of one single-threaded pass over one batch (SASRec: a real transformer)."""
    import dwrec.eval.evaluator as evaluator
    from dwrec.eval.evaluator import rank_model
    from dwrec.models.registry import build_model

    dataset = write_dataset(tmp_path / "data", seed=3, n_users=80, n_items=60)
    torch.manual_seed(0)
    config = ModelConfig(hidden=16, heads=2, layers=2, max_len=12)
    model = build_model("sasrec", dataset.n_items, config).eval()
    cases = make_split(dataset, "loo").test
    torch.set_num_threads(1)
    serial = rank_model(model, dataset, cases, top_k=5, batch_size=1000)

    used = []
    real_map = evaluator._map_in_workers
    monkeypatch.setattr(
        evaluator,
        "_map_in_workers",
        lambda work, items, workers: used.append(workers) or real_map(work, items, workers),
    )
    monkeypatch.setattr(evaluator, "FORWARD_TOKENS", 30)  # 2-3 rows per forward
    torch.set_num_threads(n_threads)
    parallel = rank_model(model, dataset, cases, top_k=5, batch_size=batch_size)
    assert used == [n_threads]  # 80 cases: 256-case batches are cut to feed every worker
    assert torch.get_num_threads() == n_threads  # the caller's setting is restored
    np.testing.assert_array_equal(parallel.ranks, serial.ranks)
    np.testing.assert_array_equal(parallel.top_items, serial.top_items)
    np.testing.assert_allclose(parallel.top_scores, serial.top_scores, rtol=1e-5, atol=1e-6)


def test_an_error_in_a_worker_reaches_the_caller_and_restores_threads(tiny_run, threads):
    _, dataset, model, split = tiny_run
    with torch.no_grad():
        model.item_embedding.weight[3, 0] = float("nan")
    torch.set_num_threads(2)
    with pytest.raises(DwrecError, match="NaN scores"):
        evaluate_model(model, dataset, split, "test", batch_size=4)
    assert torch.get_num_threads() == 2
