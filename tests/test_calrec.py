"""calrec: the catalogue tokenizer, the two towers (causality, padding, candidate scores,
the cached item table), in-batch InfoNCE against a float64 loop, the decoder, and
end-to-end training (learns, determinism, exact resume, evaluation through bind_dataset)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from aux_model_runs import (
    check_evaluate_cli,
    check_learns_and_beats_pop,
    check_resume_equals_uninterrupted,
    check_same_seed_same_run,
    random_tokens,
)

from dwrec.data.dataset import load_dataset
from dwrec.errors import DataFormatError, UsageError
from dwrec.models import augment, text
from dwrec.models.base import ModelConfig
from dwrec.models.calrec import CALRec, CALRecConfig, last_targets
from dwrec.models.registry import build_model, load_model

N_ITEMS = 30


# --- tokenizer --------------------------------------------------------------------------


def test_item_tokens_are_words_domains_then_char_ngrams():
    tokens = text.item_token_strings("Toy Story (1995)", ["Animation", "Children's"], 3)
    assert tokens == [
        "w:toy", "w:story", "w:1995", "d:animation", "d:children's",
        "g:<to", "g:toy", "g:oy>",
        "g:<st", "g:sto", "g:tor", "g:ory", "g:ry>",
        "g:<19", "g:199", "g:995", "g:95>",
    ]  # fmt: skip
    assert text.item_token_strings("a a", [], 0) == ["w:a"]  # duplicates kept once


def test_vocabulary_ranks_by_item_count_then_text_and_caps_its_size():
    lists = [["a", "b"], ["b", "c"], ["b", "a"], ["d"]]
    assert text.build_vocabulary(lists, 100) == {"b": 2, "a": 3, "c": 4, "d": 5}
    vocabulary = text.build_vocabulary(lists, 4)
    assert vocabulary == {"b": 2, "a": 3}
    rows = text.encode_items(lists, vocabulary, 3)
    assert rows.tolist() == [[0, 3, 2], [0, 0, 2], [0, 2, 3], [0, 0, text.UNK_ID]]


def test_item_texts_use_title_and_domains_and_fall_back_to_the_raw_id():
    dataset = SimpleNamespace(
        n_items=3,
        item_titles=["A b", None, "  "],
        item_domain_indptr=np.array([0, 1, 1, 2]),
        item_domain_indices=np.array([0, 1]),
        domain_names=["Drama", "Jazz"],
        item_raw_ids=["r0", "r1", "r2"],
    )
    assert text.item_texts(dataset) == [("A b", ["Drama"]), ("r1", []), ("  ", ["Jazz"])]


def texts(n: int = N_ITEMS) -> list[tuple[str, list[str]]]:
    return [(f"item {i} {'red' if i % 2 else 'blue'}", [f"D{i % 3}"]) for i in range(n)]


def test_tokenisation_is_deterministic_and_keeps_text_len():
    first, vocabulary = text.tokenize_catalogue(texts(), 50, 6, 3)
    second, again = text.tokenize_catalogue(texts(), 50, 6, 3)
    assert torch.equal(first, second) and vocabulary == again
    assert first.shape == (N_ITEMS, 6) and (first[:, -1] != 0).all()


# --- the model --------------------------------------------------------------------------


def small(bind: bool = True, **changes) -> CALRec:
    torch.manual_seed(0)
    values = dict(hidden=16, heads=2, layers=2, ffn=32, dropout=0.1, max_len=12)
    values.update(changes)
    model = build_model("calrec", N_ITEMS, CALRecConfig(**values))
    if bind:
        model.bind_texts(texts())
    return model


def test_config_and_binding():
    model = build_model("calrec", N_ITEMS, ModelConfig(hidden=16, heads=2, max_len=12))
    assert isinstance(model.config, CALRecConfig) and model.config.text_len == 32
    assert model.config.hidden == 16 and model.config.max_len == 12
    with pytest.raises(RuntimeError, match="bind_dataset"):
        model(random_tokens(N_ITEMS, 2, 4))
    model.bind_texts(texts())
    assert model.item_tokens.shape == (N_ITEMS, 32)
    assert model.item_prefix.shape == (N_ITEMS, 8)
    with pytest.raises(UsageError, match="item texts"):
        model.bind_texts(texts(5))


def test_shapes_and_candidate_scores_are_full_score_columns():
    model = small().eval()
    tokens = random_tokens(N_ITEMS, 4, 9)
    assert model(tokens).shape == (4, 9, 16)
    state = model.user_state(tokens)
    full = model.score(state)
    assert full.shape == (4, N_ITEMS)
    shared = torch.tensor([5, 0, 29])
    per_row = torch.randint(0, N_ITEMS, (4, 6), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model.score(state, shared), full[:, shared])
    torch.testing.assert_close(model.score(state, per_row), full.gather(1, per_row))
    torch.testing.assert_close(model.embed_items(shared), model.item_table()[shared])


def test_earlier_states_ignore_later_items_and_state_is_the_last_position():
    model = small().eval()
    tokens = random_tokens(N_ITEMS, 4, 10)
    tokens[:, 4:] = tokens[:, 4:].clamp_min(1)
    changed = tokens.clone()
    changed[:, 7] = changed[:, 7] % N_ITEMS + 1
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(after[:, :7], before[:, :7], atol=1e-6, rtol=0)
    assert (after[:, 7:] - before[:, 7:]).abs().amax(dim=-1).min() > 1e-4
    torch.testing.assert_close(model.user_state(tokens), before[:, -1], atol=1e-5, rtol=0)


def test_left_padding_does_not_change_the_user_state():
    model = small().eval()
    rows = random_tokens(N_ITEMS, 3, 5).clamp_min(1)
    padded = torch.cat([torch.zeros(3, 4, dtype=torch.long), rows], dim=1)
    torch.testing.assert_close(model.user_state(padded), model.user_state(rows), atol=1e-5, rtol=0)


def test_item_vectors_come_from_text_plus_id():
    model = small().eval()
    items = torch.arange(N_ITEMS)
    expected = model.encode_text(items) + model.item_id_embedding.weight[1:]
    torch.testing.assert_close(model.item_table(), expected)
    no_id = small(id_embedding=False).eval()
    torch.testing.assert_close(no_id.item_table(), no_id.encode_text(items))


def test_item_table_is_reused_until_the_weights_change():
    model = small().eval()
    table = model.item_table()
    assert model.item_table() is table
    with torch.no_grad():
        model.text_projection.bias.add_(1.0)
    moved = model.item_table()
    torch.testing.assert_close(moved, table + 1.0, atol=1e-5, rtol=0)
    fresh = small().eval()
    model.load_state_dict(fresh.state_dict())
    torch.testing.assert_close(model.item_table(), fresh.item_table())
    model.train()  # every training forward encodes afresh (new dropout)
    model(random_tokens(N_ITEMS, 2, 4))
    first = model.item_table()
    model(random_tokens(N_ITEMS, 2, 4))
    assert model.item_table() is not first and not torch.equal(model.item_table(), first)


# --- losses -----------------------------------------------------------------------------


def test_in_batch_info_nce_matches_a_float64_loop():
    generator = torch.Generator().manual_seed(4)
    left, right = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    labels = torch.tensor([0, 1, 2, 1, 3, 4])
    temperature = 0.3

    def one_way(a, b):
        total = 0.0
        for i in range(6):
            cos = [float(a[i] @ b[j] / (a[i].norm() * b[j].norm())) for j in range(6)]
            kept = [j for j in range(6) if j == i or labels[j] != labels[i]]
            log_z = math.log(sum(math.exp(cos[j] / temperature) for j in kept))
            total += log_z - cos[i] / temperature
        return total / 6

    expected = 0.5 * (
        one_way(left.double(), right.double()) + one_way(right.double(), left.double())
    )
    got = augment.in_batch_info_nce(left, right, temperature, labels)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_last_targets_match_a_loop():
    targets = torch.tensor([[-1, 3, 4, -1], [-1, -1, -1, -1], [2, -1, 5, 7], [-1, -1, 0, -1]])
    rows, columns = last_targets(targets)
    assert rows.tolist() == [0, 2, 3] and columns.tolist() == [2, 3, 2]


def test_decoder_step_sees_only_earlier_gold_tokens():
    model = small().eval()
    states = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))
    gold = model.item_prefix[torch.tensor([0, 1, 2])].clone()
    gold[:, :] = torch.randint(2, model.token_embedding.num_embeddings, gold.shape)
    logits = model.generation_logits(states, gold)
    changed = gold.clone()
    changed[:, 4] = changed[:, 4] % (model.token_embedding.num_embeddings - 2) + 2
    other = model.generation_logits(states, changed)
    torch.testing.assert_close(other[:, :5], logits[:, :5])
    assert (other[:, 5] - logits[:, 5]).abs().amax() > 1e-5


def test_generation_loss_is_the_mean_ce_over_real_gold_tokens():
    model = small().eval()
    items = torch.tensor([3, 7, 3])
    with torch.no_grad():
        model.item_prefix[3, 2:] = 0  # an item with only two tokens
    states = torch.randn(3, 16, generator=torch.Generator().manual_seed(6))
    gold = model.item_prefix[items]
    logits = model.generation_logits(states, gold).double()
    terms = [
        torch.logsumexp(logits[n, t], 0) - logits[n, t, gold[n, t] - 1]
        for n in range(3)
        for t in range(gold.shape[1])
        if gold[n, t] != 0
    ]
    assert len(terms) == 2 + 8 - int((model.item_prefix[7] == 0).sum()) + 2
    expected = torch.stack(terms).mean().item()
    assert model.generation_loss(states, items).item() == pytest.approx(expected, rel=1e-5)


def test_auxiliary_loss_is_the_weighted_sum_at_each_rows_last_target():
    model = small(dropout=0.0).eval()
    inputs = random_tokens(N_ITEMS, 5, 8)
    targets = (inputs - 1).masked_fill(inputs == 0, -1)
    targets[1] = -1  # a row without target takes no part
    hidden = model(inputs)
    loss = model.auxiliary_loss(inputs, targets, hidden, torch.Generator())
    rows = torch.tensor([0, 2, 3, 4])
    states, items = hidden[rows, -1], targets[rows, -1]
    text_vectors = model.encode_text(items)
    expected = (
        0.1 * augment.in_batch_info_nce(states, model.item_table()[items], 0.1, items)
        + 0.1 * augment.in_batch_info_nce(text_vectors, text_vectors, 0.1, items)
        + 0.1 * model.generation_loss(states, items)
    )
    torch.testing.assert_close(loss, expected)


# --- training end to end ----------------------------------------------------------------


def test_learns_beats_pop_and_evaluates(data_dir, tmp_path):
    result = check_learns_and_beats_pop("calrec", data_dir, tmp_path)
    check_evaluate_cli(result.run_dir, result.best_valid)
    config = json.loads((result.run_dir / "config.json").read_text())
    dataset = load_dataset(data_dir)
    with pytest.raises(DataFormatError, match="does not fit"):  # no texts bound
        load_model(result.run_dir, config, dataset.fingerprint)
    model = load_model(result.run_dir, config, dataset)
    assert model.item_tokens.shape[0] == dataset.n_items


def test_same_seed_same_run(data_dir, tmp_path):
    check_same_seed_same_run("calrec", data_dir, tmp_path)


def test_resume_equals_uninterrupted(data_dir, tmp_path):
    check_resume_equals_uninterrupted("calrec", data_dir, tmp_path, stop_at_step=7)


def test_decoder_targets_are_each_items_first_text_tokens(data_dir):
    dataset = load_dataset(data_dir)
    model = CALRec(dataset.n_items, CALRecConfig(hidden=16, heads=2, text_len=6, gen_len=4))
    model.bind_dataset(dataset)
    for item in range(dataset.n_items):
        row = [t for t in model.item_tokens[item].tolist() if t]
        assert model.item_prefix[item].tolist() == (row + [0] * 4)[:4]
    assert int(model.item_tokens.max()) < model.token_embedding.num_embeddings
