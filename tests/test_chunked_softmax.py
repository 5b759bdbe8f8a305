"""Chunked full softmax (``ce`` with ``softmax_chunk``) against the plain full softmax.

Both chunked paths (the hand-written backward for linear scorers, and activation
checkpointing through any model's ``score``) must give the full softmax's loss and
gradients, for chunk sizes that divide the catalogue and that do not.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dwrec
from dwrec.errors import UsageError
from dwrec.losses.base import ObjectiveInput
from dwrec.losses.config import LossConfig
from dwrec.losses.objectives import (
    AUTO_CHUNK_LOGITS,
    AUTO_FULL_LOGITS,
    ChunkedLinearCrossEntropy,
    CrossEntropy,
    chunked_cross_entropy,
    softmax_chunk_size,
)
from dwrec.losses.registry import build_objective
from dwrec.models.base import ModelConfig
from dwrec.models.registry import build_model
from dwrec.train.trainer import ModelScorer

N_ITEMS = 30
CHUNKS = [1, 7, 10, 30, 64]  # 7 does not divide 30; 64 is larger than the catalogue


class LinearScorer:
    """``score_all = h @ V.T + b``, with ``linear_factors`` (the hand-written path)."""

    def __init__(self, vectors: torch.Tensor, bias: torch.Tensor | None):
        self.vectors, self.bias = vectors, bias
        self.n_items = vectors.shape[0]

    def _bias(self, items: torch.Tensor | None) -> torch.Tensor | float:
        if self.bias is None:
            return 0.0
        return self.bias if items is None else self.bias[items]

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.vectors.T + self._bias(None)

    def score(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if items.dim() == 1:
            return hidden @ self.vectors[items].T + self._bias(items)
        return (hidden[:, None, :] * self.vectors[items]).sum(-1) + self._bias(items)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        return self.vectors[items]

    def linear_factors(self, hidden: torch.Tensor):
        return hidden, self.vectors, self.bias


class OpaqueScorer(LinearScorer):
    """The same scores without ``linear_factors``: the checkpointed path."""

    linear_factors = None


def _leaves(dtype: torch.dtype, seed: int = 0, n: int = 12, dim: int = 5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, dim, generator=g, dtype=dtype).requires_grad_()
    vectors = torch.randn(N_ITEMS, dim, generator=g, dtype=dtype).requires_grad_()
    bias = torch.randn(N_ITEMS, generator=g, dtype=dtype).requires_grad_()
    positives = torch.randint(0, N_ITEMS, (n,), generator=g)
    positives[:3] = torch.tensor([0, N_ITEMS - 1, 7])  # first, last, and a chunk edge
    # a non-uniform upstream gradient (like a domain weighting's per-position weights)
    weights = torch.rand(n, generator=g, dtype=dtype) + 0.5
    return hidden, vectors, bias, positives, weights


def _loss_and_grads(loss: torch.Tensor, weights: torch.Tensor, leaves):
    grads = torch.autograd.grad((loss * weights).sum(), leaves)
    return loss.detach(), grads


def _reference(hidden, vectors, bias, positives):
    """The plain full softmax: every logit materialised."""
    logits = hidden @ vectors.T + (bias if bias is not None else 0.0)
    return F.cross_entropy(logits, positives, reduction="none")


@pytest.mark.parametrize("scorer_class", [LinearScorer, OpaqueScorer])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("chunk", CHUNKS)
def test_chunked_matches_full_softmax_in_float32(scorer_class, with_bias, chunk):
    hidden, vectors, bias, positives, weights = _leaves(torch.float32)
    bias = bias if with_bias else None
    leaves = [t for t in (hidden, vectors, bias) if t is not None]
    expected, expected_grads = _loss_and_grads(
        _reference(hidden, vectors, bias, positives), weights, leaves
    )
    scorer = scorer_class(vectors, bias)
    loss, grads = _loss_and_grads(
        chunked_cross_entropy(hidden, positives, scorer, chunk), weights, leaves
    )
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scorer_class", [LinearScorer, OpaqueScorer])
@pytest.mark.parametrize("chunk", [4, 7, 30])
def test_chunked_matches_full_softmax_in_float64(scorer_class, chunk):
    hidden, vectors, bias, positives, weights = _leaves(torch.float64, seed=3)
    # large logits: a chunk's log-sum-exp must not overflow where the full one does not
    with torch.no_grad():
        hidden *= 20.0
    leaves = [hidden, vectors, bias]
    expected, expected_grads = _loss_and_grads(
        _reference(hidden, vectors, bias, positives), weights, leaves
    )
    loss, grads = _loss_and_grads(
        chunked_cross_entropy(hidden, positives, scorer_class(vectors, bias), chunk),
        weights,
        leaves,
    )
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-11)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-11)


def test_hand_written_backward_passes_gradcheck():
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    vectors = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(9, generator=g, dtype=torch.float64, requires_grad=True)
    positives = torch.tensor([0, 8, 4, 4])
    assert torch.autograd.gradcheck(
        lambda h, v, b: ChunkedLinearCrossEntropy.apply(h, v, b, positives, 4),
        (hidden, vectors, bias),
    )


def test_half_precision_inputs_are_computed_in_float32():
    hidden, vectors, _, positives, _ = _leaves(torch.float32)
    expected = _reference(hidden, vectors, None, positives).detach()
    loss = chunked_cross_entropy(
        hidden.bfloat16(), positives, LinearScorer(vectors.bfloat16(), None), 7
    )
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.detach(), expected, rtol=0.05, atol=0.05)


MODELS = ["sasrec", "bert4rec", "gru4rec", "pinnerformer"]


class ScoreOnlyModelScorer(ModelScorer):
    """A model's scorer without its linear form: forces the checkpointed path."""

    linear_factors = None


def _model(name: str):
    torch.manual_seed(0)
    config = ModelConfig(hidden=8, layers=1, heads=2, dropout=0.0, max_len=6)
    return build_model(name, N_ITEMS, config).double()


@pytest.mark.parametrize("model_name", MODELS)
def test_linear_factors_reproduce_the_model_scores(model_name):
    model = _model(model_name)
    with torch.no_grad():  # a non-zero output bias, so bert4rec's bias term is checked
        for name, parameter in model.named_parameters():
            if name == "output_bias":
                parameter.normal_()
    hidden = torch.randn(5, 8, dtype=torch.float64)
    query, vectors, bias = model.linear_factors(hidden)
    expected = model.score(hidden)
    torch.testing.assert_close(query @ vectors.T + (0.0 if bias is None else bias), expected)


@pytest.mark.parametrize("scorer_class", [ModelScorer, ScoreOnlyModelScorer])
@pytest.mark.parametrize("model_name", MODELS)
def test_every_model_trains_the_same_loss_and_gradients_chunked(model_name, scorer_class):
    """Real models: pinnerformer scores cosines over a learned temperature, bert4rec adds
    an output bias; both chunked paths must match the full softmax, and the gradients must
    reach every parameter (embeddings, bias, temperature) the same way."""
    model = _model(model_name)
    model.train()
    tokens = torch.randint(1, N_ITEMS + 1, (4, 6))
    tokens[0, :2] = 0

    def run(chunk: int):
        model.zero_grad(set_to_none=True)
        states = model(tokens)[tokens > 0]
        positives = torch.randint(0, N_ITEMS, (states.shape[0],), generator=torch.Generator())
        batch = ObjectiveInput(
            hidden=states,
            positives=positives,
            scorer=scorer_class(model),
            sequence_index=torch.zeros_like(positives),
        )
        loss = CrossEntropy(N_ITEMS, softmax_chunk=chunk)(batch)
        (loss * torch.linspace(0.5, 2.0, loss.shape[0], dtype=loss.dtype)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads

    full_loss, full_grads = run(0)
    chunk_loss, chunk_grads = run(7)
    torch.testing.assert_close(chunk_loss, full_loss, rtol=1e-12, atol=1e-12)
    assert chunk_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunk_grads[name], grad, rtol=1e-10, atol=1e-12, msg=name)


def test_autograd_grad_twice_like_adc():
    """ADC takes ``autograd.grad`` of the losses w.r.t. the states with ``retain_graph``
    before the trainer's ``backward``: the chunked graph must allow both."""
    hidden, vectors, bias, positives, _ = _leaves(torch.float64)
    for scorer in (LinearScorer(vectors, bias), OpaqueScorer(vectors, bias)):
        loss = chunked_cross_entropy(hidden, positives, scorer, 7)
        (first,) = torch.autograd.grad(loss.sum(), hidden, retain_graph=True)
        (second,) = torch.autograd.grad(loss.sum(), hidden)
        torch.testing.assert_close(first, second)


def test_automatic_chunk_size_rule():
    assert softmax_chunk_size(None, 100, 1000) == 0  # small: full logits
    assert softmax_chunk_size(0, 10**6, 10**6) == 0  # 0: never chunk
    assert softmax_chunk_size(13, 2, 5) == 13  # explicit size, even when small
    positions = 25_600
    items = AUTO_FULL_LOGITS // positions + 1  # just over the budget
    chunk = softmax_chunk_size(None, positions, items)
    assert chunk == AUTO_CHUNK_LOGITS // positions
    assert 0 < chunk < items


def test_negative_chunk_is_a_usage_error_and_the_config_reaches_the_objective():
    with pytest.raises(UsageError, match="--softmax-chunk"):
        LossConfig(softmax_chunk=-1).validate()
    objective = build_objective(LossConfig(softmax_chunk=64).validate(), N_ITEMS)
    assert isinstance(objective, CrossEntropy) and objective.softmax_chunk == 64
    assert LossConfig.from_dict({"softmax_chunk": 5}).softmax_chunk == 5


def test_training_with_chunks_logs_the_same_first_epoch_loss(tmp_path):
    out = tmp_path / "data"
    dwrec.prepare(
        "synthetic", out=out, options={"users": 80, "items": 40, "domains": 4, "mean_length": 8}
    )
    options = {"hidden": 16, "layers": 1, "heads": 2, "max_len": 10, "batch_size": 32}
    dwrec.train(out, out=tmp_path / "full", epochs=1, quiet=True, softmax_chunk=0, **options)
    dwrec.train(out, out=tmp_path / "chunked", epochs=1, quiet=True, softmax_chunk=9, **options)
    logs = [
        (tmp_path / name / "log.jsonl").read_text().splitlines()[0] for name in ("full", "chunked")
    ]
    import json

    full, chunked = (json.loads(line) for line in logs)
    assert chunked["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5)
    config = json.loads((tmp_path / "chunked" / "config.json").read_text())
    assert config["loss"]["softmax_chunk"] == 9
