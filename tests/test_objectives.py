"""Objectives against independent float64 computations (loops, closed forms, other losses)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dwrec.errors import UsageError
from dwrec.losses.base import ObjectiveInput
from dwrec.losses.config import OBJECTIVES, WEIGHTINGS, LossConfig
from dwrec.losses.objectives import (
    BinaryCrossEntropy,
    CrossEntropy,
    DualScaleSoftmax,
    GeneralisedBCE,
    MultiMarginCosine,
    SampledSoftmax,
    gbce_beta,
    uniform_items_excluding_positive,
)
from dwrec.losses.registry import (
    OBJECTIVE_CLASSES,
    WEIGHTING_CLASSES,
    build_objective,
    item_log_frequencies,
)


class TinyScorer:
    """Dot-product scorer over an embedding matrix the test owns (float64 for gradcheck)."""

    def __init__(self, embeddings: torch.Tensor):
        self.embeddings = embeddings
        self.n_items = embeddings.shape[0]

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.embeddings.T

    def score(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 1:
            return hidden @ self.embeddings[items].T
        return (hidden[:, None, :] * self.embeddings[items]).sum(-1)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        return self.embeddings[items]


def make_batch(
    n_positions: int = 10,
    n_items: int = 13,
    dim: int = 4,
    seed: int = 0,
    log_q: bool = False,
    sequences: int = 3,
) -> ObjectiveInput:
    rng = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_positions, dim, generator=rng, dtype=torch.float64)
    embeddings = torch.randn(n_items, dim, generator=rng, dtype=torch.float64)
    positives = torch.randint(0, n_items, (n_positions,), generator=rng)
    sequence_index = torch.arange(n_positions) % sequences
    item_log_q = None
    if log_q:
        counts = torch.randint(1, 20, (n_items,), generator=rng).double()
        item_log_q = torch.log(counts / counts.sum())
    return ObjectiveInput(
        hidden=hidden,
        positives=positives,
        scorer=TinyScorer(embeddings),
        sequence_index=sequence_index,
        item_log_q=item_log_q,
        generator=torch.Generator().manual_seed(seed + 1),
    )


def scores(batch: ObjectiveInput) -> np.ndarray:
    """``[N, n_items]`` float64 scores as numpy (the reference side of each test)."""
    return (batch.hidden @ batch.scorer.embeddings.T).detach().numpy()


def test_registry_names_match_config_names():
    # every built-in is registered; anything else was registered by a plugin (another test
    # may have loaded one in this process), never by a dwrec module
    for registry, builtins in ((OBJECTIVE_CLASSES, OBJECTIVES), (WEIGHTING_CLASSES, WEIGHTINGS)):
        assert set(builtins) <= set(registry)
        extra = {name: cls.__module__ for name, cls in registry.items() if name not in builtins}
        assert not [m for m in extra.values() if m.startswith("dwrec.")], extra
    assert isinstance(
        build_objective(LossConfig(loss="dynamic", objective="bce"), 5), BinaryCrossEntropy
    )
    assert isinstance(build_objective(LossConfig(loss="mml"), 5), MultiMarginCosine)


def test_ce_equals_bruteforce_log_softmax_loop():
    batch = make_batch()
    logits = scores(batch)
    expected = []
    for row, positive in enumerate(batch.positives.tolist()):
        top = max(logits[row])
        log_normaliser = top + math.log(sum(math.exp(v - top) for v in logits[row]))
        expected.append(log_normaliser - logits[row][positive])
    got = CrossEntropy(13)(batch)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)


def test_ce_returns_float32_for_half_precision_states():
    batch = make_batch()
    batch.hidden = batch.hidden.bfloat16()
    batch.scorer = TinyScorer(batch.scorer.embeddings.bfloat16())
    assert CrossEntropy(13)(batch).dtype == torch.float32


def test_bce_equals_closed_form_with_given_negatives():
    batch = make_batch()
    negatives = uniform_items_excluding_positive(batch, 1, 13)
    logits = scores(batch)
    sigmoid = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    expected = [
        -math.log(sigmoid(logits[row, p])) - math.log(1.0 - sigmoid(logits[row, n]))
        for row, (p, n) in enumerate(
            zip(batch.positives.tolist(), negatives[:, 0].tolist(), strict=True)
        )
    ]
    got = BinaryCrossEntropy(13).loss_with_negatives(batch, negatives)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)


def test_uniform_negatives_exclude_the_positive_and_cover_every_other_item():
    batch = make_batch(n_positions=4, n_items=6)
    negatives = uniform_items_excluding_positive(batch, 3000, 6)
    assert not (negatives == batch.positives[:, None]).any()
    for row, positive in enumerate(batch.positives.tolist()):
        counts = torch.bincount(negatives[row], minlength=6).double()
        others = torch.cat([counts[:positive], counts[positive + 1 :]])
        # 600 expected draws per item; 5 sigma of a binomial is about 110
        assert (others - 600).abs().max() < 110


def test_bce_draws_its_negatives_from_the_generator():
    first = BinaryCrossEntropy(13)(make_batch(seed=3))
    again = BinaryCrossEntropy(13)(make_batch(seed=3))
    torch.testing.assert_close(first, again)


def test_gbce_beta_closed_forms():
    # t = 0: beta = 1 (plain BCE); t = 1: beta = alpha = k / (|I| - 1)
    assert gbce_beta(256, 3417, 0.0) == pytest.approx(1.0, rel=1e-14)
    assert gbce_beta(256, 3417, 1.0) == pytest.approx(256 / 3416, rel=1e-14)


def test_gbce_with_t0_equals_bce_on_the_same_negative():
    # beta = alpha (0 * (1 - 1/alpha) + 1/alpha) = 1, so the transformed positive logit
    # log(1 / (sigmoid(s)^-1 - 1)) = s: gBCE with one negative is SASRec's BCE.
    batch = make_batch(n_items=40)
    negatives = uniform_items_excluding_positive(batch, 1, 40)
    gbce = GeneralisedBCE(40, negatives=1, t=0.0)
    torch.testing.assert_close(
        gbce.loss_with_negatives(batch, negatives),
        BinaryCrossEntropy(40).loss_with_negatives(batch, negatives),
        rtol=1e-12,
        atol=1e-12,
    )


def test_gbce_equals_literal_transformed_logit_formula():
    batch = make_batch(n_items=40)
    negatives = torch.tensor([3, 7, 11, 20, 39])
    beta = (5 / 39) * (0.75 * (1 - 39 / 5) + 39 / 5)
    logits = scores(batch)
    sigmoid = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    expected = []
    for row, positive in enumerate(batch.positives.tolist()):
        transformed = math.log(1.0 / (sigmoid(logits[row, positive]) ** -beta - 1.0))
        loss = -math.log(sigmoid(transformed))
        for item in negatives.tolist():
            if item != positive:
                loss -= math.log(1.0 - sigmoid(logits[row, item]))
        expected.append(loss)
    got = GeneralisedBCE(40, negatives=5, t=0.75).loss_with_negatives(batch, negatives)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-9)


def test_sampled_softmax_with_every_item_and_uniform_q_equals_ce():
    batch = make_batch()
    batch.item_log_q = torch.full((13,), -math.log(13), dtype=torch.float64)
    objective = SampledSoftmax(13, in_batch=False)
    got = objective.loss_with_negatives(batch, torch.arange(13))
    torch.testing.assert_close(got, CrossEntropy(13)(batch), rtol=1e-12, atol=1e-12)


def test_sampled_softmax_equals_bruteforce_candidate_loop():
    batch = make_batch(n_positions=12, n_items=9, log_q=True, sequences=4)
    negatives = torch.tensor([0, 4, 4, 8])
    logits = scores(batch)
    log_q = batch.item_log_q.numpy()
    positives = batch.positives.tolist()
    sequences = batch.sequence_index.tolist()
    expected = []
    for row, positive in enumerate(positives):
        own = {p for p, s in zip(positives, sequences, strict=True) if s == sequences[row]}
        candidates = [logits[row, positive] - log_q[positive]]
        candidates += [logits[row, n] + math.log(9) for n in negatives.tolist() if n != positive]
        candidates += [logits[row, i] - log_q[i] for i in sorted(set(positives)) if i not in own]
        expected.append(-candidates[0] + math.log(sum(math.exp(c) for c in candidates)))
    got = SampledSoftmax(9).loss_with_negatives(batch, negatives)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)


def test_dsl_without_branches_equals_softmax_loss():
    batch = make_batch(n_items=30)
    negatives = torch.tensor([1, 5, 9, 17, 29, 5])
    plain = DualScaleSoftmax(30, negatives=6, lh=0.0, ls=0.0, k=0.0)
    logits = scores(batch)
    expected = []
    for row, positive in enumerate(batch.positives.tolist()):
        candidates = [logits[row, positive]]
        candidates += [logits[row, n] for n in negatives.tolist() if n != positive]
        expected.append(-candidates[0] + math.log(sum(math.exp(c) for c in candidates)))
    got = plain.loss_with_negatives(batch, negatives)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "settings",
    [None, {"lh": 1.0, "ls": 1.0, "k": 0.5}, {"lh": 0.3, "ls": 2.0, "k": 1.5}],
    ids=["defaults", "lh1-ls1-k0.5", "lh0.3-ls2-k1.5"],
)
def test_dsl_equals_reference_loop(settings):
    """``None``: the defaults (lh = ls = 0.5, k = 0, from docs/methods.md's grid)."""
    batch = make_batch(n_items=30)
    negatives = torch.tensor([1, 5, 9, 17, 29, 5, 12])
    if settings is None:
        objective = DualScaleSoftmax(30, negatives=7, m=3)
        lh, ls, k = 0.5, 0.5, 0.0
        assert (objective.lh, objective.ls, objective.k) == (lh, ls, k)
        typed = LossConfig(loss="dsl").objective_config()
        assert (typed.dsl_lh, typed.dsl_ls, typed.dsl_k, typed.negatives) == (lh, ls, k, 1024)
    else:
        objective = DualScaleSoftmax(30, negatives=7, m=3, **settings)
        lh, ls, k = settings["lh"], settings["ls"], settings["k"]
    logits = scores(batch)
    embeddings = batch.scorer.embeddings.numpy()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    temperatures, per_row = [], []
    for row, positive in enumerate(batch.positives.tolist()):
        valid = [n for n in negatives.tolist() if n != positive]
        s_p = logits[row, positive]
        top = sorted((logits[row, n] for n in valid), reverse=True)[:3]
        competition = math.log(sum(math.exp(v - s_p) for v in top)) - math.log(3)
        temperatures.append(min(max(math.exp(-k * competition), 0.05), 5.0))
        preference = [lh * logits[row, n] + ls * float(unit[positive] @ unit[n]) for n in valid]
        normaliser = sum(math.exp(v) for v in preference)
        per_row.append(
            (
                s_p,
                [logits[row, n] for n in valid],
                [len(valid) * math.exp(v) / normaliser for v in preference],
            )
        )
    mean_temperature = sum(temperatures) / len(temperatures)
    expected = []
    for t, (s_p, s_neg, weights) in zip(temperatures, per_row, strict=True):
        t = t / mean_temperature
        total = math.exp(s_p / t) + sum(
            a * math.exp(s / t) for a, s in zip(weights, s_neg, strict=True)
        )
        expected.append(math.log(total) - s_p / t)
    got = objective.loss_with_negatives(batch, negatives)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-10)


def simplex_ccl(batch: ObjectiveInput, negatives: list[int], margin: float, weight: float):
    """SimpleX's cosine contrastive loss, one row at a time."""
    hidden = batch.hidden.numpy()
    embeddings = batch.scorer.embeddings.numpy()
    cosine = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))  # noqa: E731
    losses = []
    for row, positive in enumerate(batch.positives.tolist()):
        valid = [n for n in negatives if n != positive]
        hinge = sum(max(cosine(hidden[row], embeddings[n]) - margin, 0.0) for n in valid)
        losses.append(
            max(1.0 - cosine(hidden[row], embeddings[positive]), 0.0) + weight * hinge / len(valid)
        )
    return losses


def test_mml_with_one_margin_equals_simplex_cosine_contrastive_loss():
    batch = make_batch(n_items=30)
    negatives = [2, 4, 8, 16, 25, 29]
    objective = MultiMarginCosine(30, negatives=6, margins=(0.1,), weights=(0.7,))
    got = objective.loss_with_negatives(batch, torch.tensor(negatives))
    np.testing.assert_allclose(
        got.detach().numpy(), simplex_ccl(batch, negatives, 0.1, 0.7), rtol=1e-12
    )


def test_mml_margins_add_up():
    batch = make_batch(n_items=30)
    negatives = [2, 4, 8, 16, 25, 29]
    objective = MultiMarginCosine(30, negatives=6, margins=(0.1, -0.2), weights=(0.7, 0.3))
    positive_term = np.array(simplex_ccl(batch, negatives, 2.0, 0.0))
    expected = (
        np.array(simplex_ccl(batch, negatives, 0.1, 0.7))
        + np.array(simplex_ccl(batch, negatives, -0.2, 0.3))
        - positive_term
    )
    got = objective.loss_with_negatives(batch, torch.tensor(negatives))
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-12)


def test_item_log_frequencies_are_log_shares():
    log_q = item_log_frequencies(np.array([0, 0, 1, 2, 2, 2]), 4)
    np.testing.assert_allclose(log_q.exp().numpy(), [2 / 7, 1 / 7, 3 / 7, 1 / 7], rtol=1e-6)


GRADCHECK_OBJECTIVES = {
    "ce": lambda: CrossEntropy(7),
    "bce": lambda: BinaryCrossEntropy(7),
    "gbce": lambda: GeneralisedBCE(7, negatives=4, t=0.75),
    "sampled-softmax": lambda: SampledSoftmax(7, negatives=4),
    # temperature is detached by definition: k = 0 makes it a constant so gradcheck holds,
    # while both re-weighting branches (lh, ls), which carry gradient, stay on.
    "dsl": lambda: DualScaleSoftmax(7, negatives=4, m=2, k=0.0),
    "mml": lambda: MultiMarginCosine(7, negatives=4),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK_OBJECTIVES))
def test_objective_passes_float64_gradcheck(name):
    objective = GRADCHECK_OBJECTIVES[name]()
    template = make_batch(n_positions=5, n_items=7, dim=3, log_q=True, sequences=2)

    def loss(hidden, embeddings):
        batch = ObjectiveInput(
            hidden=hidden,
            positives=template.positives,
            scorer=TinyScorer(embeddings),
            sequence_index=template.sequence_index,
            item_log_q=template.item_log_q,
            generator=torch.Generator().manual_seed(5),
        )
        return objective(batch)

    hidden = template.hidden.clone().requires_grad_()
    embeddings = template.scorer.embeddings.clone().requires_grad_()
    assert torch.autograd.gradcheck(loss, (hidden, embeddings))


@pytest.mark.parametrize(
    "options, flag",
    [({"loss": "dsl", "dsl_m": 0}, "--dsl-m"), ({"loss": "gbce", "gbce_t": 1.5}, "--gbce-t")],
)
def test_bad_objective_constants_name_their_flag(options, flag):
    with pytest.raises(UsageError, match=flag):
        build_objective(LossConfig(**options), 10)


def test_dsl_has_its_own_default_of_the_shared_negatives_option():
    """``negatives``: 256 for the sampled objectives, 1024 for ``dsl`` (also under a
    weighting); a given value wins; config.json records the value used and reads back."""
    from types import SimpleNamespace

    for loss, objective, expected in [
        ("sampled-softmax", "ce", 256),
        ("gbce", "ce", 256),
        ("mml", "ce", 256),
        ("dsl", "ce", 1024),
        ("dynamic", "dsl", 1024),
        ("dynamic", "sampled-softmax", 256),
    ]:
        config = LossConfig(loss=loss, objective=objective).validate()
        assert config.objective_config().negatives == expected
        assert config.negatives == expected and not config.is_given("negatives")
        assert config.to_dict()["negatives"] == expected
        assert LossConfig.from_dict(config.to_dict()) == config
    assert LossConfig(loss="dsl", negatives=64).objective_config().negatives == 64
    assert LossConfig(loss="ce").to_dict()["negatives"] == 256  # the first format's layout
    # a default above the catalogue is capped below it; a given one is left (and refused)
    small = SimpleNamespace(n_items=300, domain_names=[])
    config = LossConfig(loss="dsl")
    config.bind_dataset(small)
    assert config.objective_config().negatives == 299 and config.to_dict()["negatives"] == 299
    given = LossConfig(loss="dsl", negatives=1024)
    given.bind_dataset(small)
    assert given.objective_config().negatives == 1024


def test_mml_default_weights_are_the_grids():
    assert LossConfig(loss="mml").objective_config().mml_weights == [16.0, 8.0, 4.0]
    assert LossConfig(loss="mml").objective_config().mml_margins == [0.9, 0.6, 0.3]
    assert MultiMarginCosine(30).weights == (16.0, 8.0, 4.0)


def test_train_help_shows_the_new_defaults(capsys, monkeypatch):
    from dwrec.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "Sampled negatives (a default is capped below the catalogue size) [256; dsl 1024]" in (
        text
    )
    assert "mml: Weights of the margins [16,8,4]" in text
    assert "dsl: Hardness scale lh [0.5]" in text and "dsl: Temperature slope k [0]" in text
    assert "1 = up-weight only" in text
