"""SIGMA (dwrec/models/sigma.py) and the selective scan (dwrec/models/selective_scan.py):
the fast scan against the sequential reference in float64 (values and gradients), the flip
branch against an explicitly built flipped sequence, no look-ahead, padding invariance,
prefix consistency, configuration, and training through ``dwrec.train`` (learns, beats
``pop``, deterministic, resume equals an uninterrupted run)."""

from __future__ import annotations

import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from aux_model_runs import log_records, random_tokens, stable

import dwrec
from dwrec.errors import UsageError
from dwrec.models.base import ModelConfig
from dwrec.models.registry import build_model, default_config
from dwrec.models.selective_scan import selective_scan, selective_scan_ref
from dwrec.models.sigma import SIGMA, SigmaConfig
from dwrec.train.trainer import TrainingInterrupted

N_ITEMS = 30


def small_sigma(dtype=torch.float32, **changes) -> SIGMA:
    values = dict(hidden=16, max_len=12, d_state=4, dropout=0.1, flip_len=7)
    values.update(changes)
    torch.manual_seed(0)
    model = SIGMA(N_ITEMS, SigmaConfig(**values)).to(dtype)
    with torch.no_grad():  # move the mixing weights off their initial values: all branches count
        model.layers[0].mix.copy_(torch.tensor([0.5, 0.8, 0.3]))
    return model


# --- the selective scan -----------------------------------------------------------------


def scan_inputs(length: int, seed: int, batch: int = 3, inner: int = 5, state: int = 4):
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    u = normal(batch, length, inner)
    delta = F.softplus(normal(batch, length, inner))
    A = -torch.rand(inner, state, generator=generator, dtype=torch.float64) * 3 - 0.1
    return [u, delta, A, normal(batch, length, state), normal(batch, length, state), normal(inner)]


def brute_force_scan(u, delta, A, B, C, D):
    """The recurrence element by element (no vectorisation), float64."""
    batch, length, inner = u.shape
    y = torch.zeros_like(u)
    states = torch.zeros(batch, length, inner, A.shape[1], dtype=u.dtype)
    for b in range(batch):
        for d in range(inner):
            for n in range(A.shape[1]):
                h = 0.0
                for t in range(length):
                    a = math.exp(float(delta[b, t, d] * A[d, n]))
                    h = a * h + float(delta[b, t, d] * u[b, t, d] * B[b, t, n])
                    states[b, t, d, n] = h
                    y[b, t, d] += h * float(C[b, t, n])
            y[b, :, d] += u[b, :, d] * D[d]
    return y, states


def test_reference_scan_is_the_recurrence():
    inputs = scan_inputs(7, seed=0, batch=2, inner=3, state=2)
    y, states = selective_scan_ref(*inputs, return_states=True)
    y_bf, states_bf = brute_force_scan(*inputs)
    torch.testing.assert_close(y, y_bf, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(states, states_bf, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length,block", [(1, 4), (5, 4), (8, 4), (13, 4), (37, 8), (16, 16)])
def test_fast_scan_equals_reference_in_float64_with_gradients(length, block):
    inputs = [x.requires_grad_() for x in scan_inputs(length, seed=length)]
    weights = scan_inputs(length, seed=100 + length)  # random linear functionals of y and h
    weight_states = torch.randn(3, length, 5, 4, dtype=torch.float64)
    results = []
    for scan in (selective_scan_ref, lambda *a, **k: selective_scan(*a, block=block, **k)):
        y, states = scan(*inputs, return_states=True)
        objective = (y * weights[0]).sum() + (states * weight_states).sum()
        results.append([y, states, *torch.autograd.grad(objective, inputs)])
    names = ["y", "states", "du", "ddelta", "dA", "dB", "dC", "dD"]
    for name, ref, fast in zip(names, *results, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-10, msg=name)


def test_fast_scan_without_D_and_without_states():
    u, delta, A, B, C, _ = scan_inputs(11, seed=3)
    torch.testing.assert_close(
        selective_scan(u, delta, A, B, C, block=4), selective_scan_ref(u, delta, A, B, C)
    )


def test_model_with_reference_scan_equals_model_with_fast_scan_in_float64():
    tokens = random_tokens(N_ITEMS, 3, 12, seed=9)
    outputs, grads = [], []
    for reference in (True, False):
        model = small_sigma(torch.float64, layers=2, reference_scan=reference).eval()
        hidden = model(tokens)
        hidden.square().sum().backward()
        outputs.append(hidden)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-10, atol=1e-12)
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-9, atol=1e-12, msg=name)


# --- the flip branch against an explicit flipped sequence -------------------------------


def explicit_flip_output(mamba, x: torch.Tensor, keep: int) -> torch.Tensor:
    """The flipped run of one unpadded sequence ``x [n, d]`` built by hand: order
    ``m, m-1, ..., 1, m+1, ..., n`` (``m = n - keep``); a reversed item's convolution reads
    the item and the next ones, an item kept in order the item and the previous ones; the
    reference scan over that order, read at the end."""
    n = x.shape[0]
    m = max(n - keep, 0)
    inner_x, z = mamba.in_proj(x).chunk(2, dim=-1)
    width = mamba.conv.kernel_size[0]
    weight, bias = mamba.conv.weight[:, 0, :], mamba.conv.bias  # [Dn, width]
    features = []
    for i in list(range(m - 1, -1, -1)) + list(range(m, n)):
        total = bias.clone()
        for k in range(width):  # tap width-1 is the item itself
            j = i + (width - 1 - k) if i < m else i - (width - 1 - k)
            if 0 <= j < n:
                total = total + weight[:, k] * inner_x[j]
        features.append(F.silu(total))
    u = torch.stack(features)[None]
    dt, B, C = mamba.x_proj(u).split([mamba.dt_rank, mamba.n_state, mamba.n_state], dim=-1)
    delta = F.softplus(mamba.dt_proj(dt))
    y = selective_scan_ref(u, delta, -torch.exp(mamba.A_log), B, C, mamba.D)
    return mamba.out_proj(y[0, -1] * F.silu(z[-1]))


@pytest.mark.parametrize("keep", [3, 5])
def test_flip_branch_equals_an_explicitly_flipped_sequence(keep):
    model = small_sigma(torch.float64, flip_len=12 - keep).eval()
    mamba = model.layers[0].mamba
    with torch.no_grad():  # O(1) random weights: at N(0, 0.02^2) every item looks alike
        for linear in (mamba.in_proj, mamba.x_proj, mamba.dt_proj, mamba.out_proj):
            linear.weight.normal_(0.0, 0.5)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    x[1, :4] = 0  # row 1: 8 items after 4 padding columns
    real = torch.ones(2, 12, 1, dtype=torch.float64)
    real[1, :4] = 0
    forward_out, flip_out = mamba(x, real)
    for row, first in ((0, 0), (1, 4)):
        for t in range(first, 12):
            expected = explicit_flip_output(mamba, x[row, first : t + 1], keep)
            torch.testing.assert_close(flip_out[row, t], expected, rtol=1e-9, atol=1e-10)
            unflipped = explicit_flip_output(mamba, x[row, first : t + 1], keep=12)
            torch.testing.assert_close(forward_out[row, t], unflipped, rtol=1e-9, atol=1e-10)
    assert (flip_out[0, -1] - forward_out[0, -1]).abs().max() > 1e-3  # the flip matters


# --- causality, padding, prefixes ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["eval", "train-no-dropout"])
def test_no_state_sees_a_later_item(mode):
    model = small_sigma(dropout=0.0, gate_dropout=0.0, layers=2)
    model.train(mode != "eval")
    tokens = random_tokens(N_ITEMS, 4, 12).clamp_min(1)
    base = model(tokens)
    for t in range(11):  # change every item after t: states up to t must not move
        changed = tokens.clone()
        changed[:, t + 1 :] = changed[:, t + 1 :] % N_ITEMS + 1
        after = model(changed)
        torch.testing.assert_close(after[:, : t + 1], base[:, : t + 1], atol=1e-6, rtol=0)
        assert (after[:, t + 1] - base[:, t + 1]).abs().amax(dim=-1).min() > 1e-5


def test_every_trained_position_is_its_prefix_state():
    """The state that predicts item t+1 in training equals ``user_state`` of the prefix
    ending at t, for every position that has a target."""
    model = small_sigma(layers=2).eval()
    windows = random_tokens(N_ITEMS, 3, 13, seed=5)
    batch = model.training_batch(windows, torch.Generator().manual_seed(0))
    hidden = model(batch.inputs)
    checked = 0
    for row in range(3):
        for t in range(12):
            if batch.targets[row, t] < 0:
                continue
            prefix = batch.inputs[row : row + 1, : t + 1]
            torch.testing.assert_close(
                hidden[row, t], model.user_state(prefix)[0], atol=1e-5, rtol=0
            )
            assert batch.targets[row, t] == windows[row, t + 1] - 1
            checked += 1
    assert checked >= 12


def test_left_padding_does_not_change_states():
    model = small_sigma(layers=2).eval()
    rows = [[4], [9, 2, 2, 17], list(range(1, 12))]
    padded = torch.tensor([[0] * (12 - len(r)) + r for r in rows])
    states = model.user_state(padded)
    for b, row in enumerate(rows):
        alone = model.user_state(torch.tensor([row]))[0]
        torch.testing.assert_close(states[b], alone, atol=1e-5, rtol=0)
    assert torch.all(model(padded)[1, :8] == 0)  # padding positions are zero


def test_history_longer_than_max_len_uses_its_last_items():
    model = small_sigma().eval()
    long_history = random_tokens(N_ITEMS, 3, 17).clamp_min(1)
    torch.testing.assert_close(
        model.user_state(long_history), model.user_state(long_history[:, -12:])
    )


# --- interface and configuration --------------------------------------------------------


def test_scores_interface_and_gradients():
    model = small_sigma()
    state = model.user_state(random_tokens(N_ITEMS, 4, 9))
    full = model.score(state)
    assert state.shape == (4, 16) and full.shape == (4, N_ITEMS)
    items = torch.tensor([5, 0, 29])
    torch.testing.assert_close(model.score(state, items), full[:, items])
    query, table, bias = model.linear_factors(state)
    torch.testing.assert_close(query @ table.T, full)
    assert bias is None and model.embed_items(torch.tensor([0])).shape == (1, 16)
    F.cross_entropy(full, torch.arange(4)).backward()
    assert model.output_layer().grad.abs().sum() > 0
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_bf16_autocast_gives_finite_scores():
    model = small_sigma().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score(model.user_state(random_tokens(N_ITEMS, 3, 8)))
    assert torch.isfinite(scores.float()).all()


def test_flat_model_config_becomes_sigma_config_with_defaults():
    model = build_model("sigma", N_ITEMS, ModelConfig(hidden=8, layers=2, dropout=0.1, max_len=20))
    config = model.config
    assert isinstance(config, SigmaConfig)
    assert (config.hidden, config.layers, config.dropout, config.max_len) == (8, 2, 0.1, 20)
    assert (config.d_state, config.d_conv, config.expand, config.keep) == (32, 4, 2, 5)
    assert SIGMA.config_class is SigmaConfig
    defaults = default_config("sigma")
    assert (defaults.hidden, defaults.layers, defaults.dropout, defaults.max_len) == (
        64,
        1,
        0.2,
        50,
    )


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"flip_len": 10}, "flip_len"),  # keeps 2 < d_conv - 1 = 3
        ({"flip_len": -1}, "flip_len"),
        ({"d_state": 0}, "d_state"),
        ({"gate_dropout": 1.0}, "gate_dropout"),
    ],
)
def test_bad_settings_are_usage_errors(changes, needle):
    with pytest.raises(UsageError, match=needle):
        SIGMA(N_ITEMS, SigmaConfig(hidden=8, max_len=12, **changes))


def test_official_second_gate_takes_the_sigmoid_of_the_first_gate():
    model = small_sigma(gate_dropout=0.0, official_second_gate=True).eval()
    layer = model.layers[0]
    x = torch.randn(2, 5, 16)
    g1 = layer.gate(x + layer.dense_forward(x))
    h2 = x + layer.dense_flip(x)
    expected = layer.gate.silu_linear(F.silu(h2)) + layer.gate.sigmoid_linear(torch.sigmoid(g1))
    torch.testing.assert_close(layer.gate(h2, g1), expected)
    paper = layer.gate.silu_linear(F.silu(h2)) + layer.gate.sigmoid_linear(torch.sigmoid(h2))
    torch.testing.assert_close(layer.gate(h2), paper)


# --- training through dwrec.train -------------------------------------------------------

TINY = {"hidden": 16, "layers": 1, "max_len": 20, "batch_size": 32, "lr": 3e-3}


def test_sigma_loss_falls_and_beats_pop(data_dir, tmp_path):
    pop = dwrec.train(data_dir, model="pop", out=tmp_path / "pop", quiet=True)
    result = dwrec.train(
        data_dir, model="sigma", out=tmp_path / "sigma", quiet=True, epochs=4, dropout=0.1, **TINY
    )
    losses = [record["train_loss"] for record in log_records(tmp_path / "sigma")]
    assert losses[-1] < losses[0] - 0.2, losses
    assert result.best_valid["ndcg@10"] > pop.best_valid["ndcg@10"] + 0.05


def test_same_seed_same_numbers(data_dir, tmp_path):
    options = dict(TINY, model="sigma", epochs=2, quiet=True)
    dwrec.train(data_dir, out=tmp_path / "a", seed=7, **options)
    dwrec.train(data_dir, out=tmp_path / "b", seed=7, **options)
    assert stable(log_records(tmp_path / "a")) == stable(log_records(tmp_path / "b"))
    first = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["model_state"]
    second = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["model_state"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_interrupt_then_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
    options = dict(TINY, model="sigma", epochs=3, dropout=0.3, patience=5, quiet=True)
    dwrec.train(data_dir, out=tmp_path / "straight", **options)

    def ctrl_c(event, info):
        if event == "step" and info["global_step"] == 7:  # mid-epoch 2 (5 steps an epoch)
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        dwrec.train(data_dir, out=tmp_path / "resumed", callback=ctrl_c, **options)
    dwrec.train(resume=tmp_path / "resumed", quiet=True)
    assert stable(log_records(tmp_path / "straight")) == stable(log_records(tmp_path / "resumed"))
    for name in ("model.pt", "last.pt"):
        straight = torch.load(tmp_path / "straight" / name, weights_only=True)["model_state"]
        resumed = torch.load(tmp_path / "resumed" / name, weights_only=True)["model_state"]
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name
