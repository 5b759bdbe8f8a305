"""Domain weightings against closed forms and brute-force float64 computations."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from dwrec.errors import DwrecError, UsageError
from dwrec.losses.config import LossConfig
from dwrec.losses.registry import build_weighting
from dwrec.losses.weighting import ADCWeighting, DomainStatistics


def csr(item_domains: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.cumsum([0] + [len(d) for d in item_domains])
    indices = np.array([d for domains in item_domains for d in domains], dtype=np.int64)
    return indptr, indices


def weighting(config: LossConfig, item_domains, train_items, train_users=None, n_domains=None):
    indptr, indices = csr(item_domains)
    n_domains = n_domains or max(indices.max(initial=-1) + 1, 1)
    train_items = np.asarray(train_items)
    if train_users is None:
        train_users = np.arange(len(train_items)) % 7
    return build_weighting(
        config,
        domain_names=[f"genre{d}" for d in range(n_domains)],
        item_domain_indptr=indptr,
        item_domain_indices=indices,
        train_items=train_items,
        train_users=np.asarray(train_users),
        n_items=len(item_domains),
    )


def skewed_training(seed: int = 0):
    """12 single-domain items over 4 domains with very uneven interaction counts."""
    rng = np.random.default_rng(seed)
    item_domains = [[i % 4] for i in range(12)]
    domain_share = np.array([0.70, 0.25, 0.045, 0.005])
    domains = rng.choice(4, size=4000, p=domain_share)
    items = domains + 4 * rng.integers(0, 3, size=4000)
    users = rng.integers(0, 50, size=4000)
    return item_domains, items, users


def test_dynamic_with_equally_frequent_domains_equals_generic():
    item_domains = [[i % 3] for i in range(9)]
    train_items = np.repeat(np.arange(9), 5)
    losses = torch.rand(20, dtype=torch.float64)
    positives = torch.randint(0, 9, (20,))
    generic = weighting(LossConfig(loss="generic"), item_domains, train_items)
    for reduction in ("normalized", "mean"):
        dynamic = weighting(
            LossConfig(loss="dynamic", weight_reduction=reduction), item_domains, train_items
        )
        torch.testing.assert_close(
            dynamic.reduce(losses, positives), generic.reduce(losses, positives), rtol=1e-14, atol=0
        )
    assert generic.domain_weights() == {}


def test_dynamic_weights_respect_bounds_and_average_one_over_training_positives():
    item_domains, items, users = skewed_training()
    config = LossConfig(loss="dynamic", w_min=0.6, w_max=4.0)
    dynamic = weighting(config, item_domains, items, users)
    weights = dynamic.position_weights(torch.from_numpy(items))
    assert weights.dtype == torch.float64
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-12)
    # independent float64 computation: the scale lambda of clip(lambda / share, 0.6, 4) with
    # mean 1 over the training positives, by bisection (single-domain items: the mean is
    # sum_d share_d w_d)
    shares = np.bincount(items % 4, minlength=4) / len(items)

    def mean_at(scale):
        return np.sum(shares * np.clip(scale / shares, 0.6, 4.0))

    low, high = 0.0, 100.0
    for _ in range(200):
        low, high = (
            (low, (low + high) / 2) if mean_at((low + high) / 2) > 1 else ((low + high) / 2, high)
        )
    expected = np.clip(low / shares, 0.6, 4.0)
    domain_weights = np.array(list(dynamic.domain_weights().values()))
    np.testing.assert_allclose(domain_weights, expected, rtol=1e-12)
    assert expected.max() == 4.0 and expected.min() == 0.6, "the example must exercise both bounds"
    # every weight within its bounds (one renormalisation after clipping left them)
    assert domain_weights.min() >= 0.6 and domain_weights.max() <= 4.0
    assert np.sum(shares * domain_weights) == pytest.approx(1.0, abs=1e-12)


def test_dynamic_sparse_domains_weigh_more():
    item_domains, items, users = skewed_training()
    weights = list(
        weighting(LossConfig(loss="dynamic"), item_domains, items, users).domain_weights().values()
    )
    assert weights == sorted(weights)  # domains 0..3 are ever sparser


def test_dynamic_log_scale_closed_form():
    item_domains, items, users = skewed_training()
    dynamic = weighting(
        LossConfig(loss="dynamic", weight_scale="log", w_min=1e-3, w_max=1e3),
        item_domains,
        items,
        users,
    )
    shares = np.bincount(items % 4, minlength=4) / len(items)
    sparsity = np.log(1 / shares)
    expected = sparsity / np.sum(shares * sparsity)
    np.testing.assert_allclose(list(dynamic.domain_weights().values()), expected, rtol=1e-12)


def test_dynamic_users_signal_matches_bruteforce_user_shares():
    item_domains, items, users = skewed_training()
    dynamic = weighting(
        LossConfig(loss="dynamic", sparsity_signal="users", w_min=1e-3, w_max=1e3),
        item_domains,
        items,
        users,
    )
    users_in = defaultdict(set)
    for item, user in zip(items.tolist(), users.tolist(), strict=True):
        users_in[item_domains[item][0]].add(user)
    user_share = np.array([len(users_in[d]) / len(set(users.tolist())) for d in range(4)])
    shares = np.bincount(items % 4, minlength=4) / len(items)
    sparsity = 1 / user_share
    expected = sparsity / np.sum(shares * sparsity)
    np.testing.assert_allclose(list(dynamic.domain_weights().values()), expected, rtol=1e-12)


def test_dynamic_entropy_signal_matches_bruteforce_entropy():
    item_domains, items, users = skewed_training()
    users = np.where(items % 4 == 2, users % 3, users)  # domain 2 is carried by 3 heavy users
    dynamic = weighting(
        LossConfig(loss="dynamic", sparsity_signal="entropy", w_min=1e-3, w_max=1e3),
        item_domains,
        items,
        users,
    )
    per_domain = defaultdict(Counter)
    for item, user in zip(items.tolist(), users.tolist(), strict=True):
        per_domain[item_domains[item][0]][user] += 1
    shares = np.bincount(items % 4, minlength=4) / len(items)
    scores = []
    for d in range(4):
        counts = np.array(list(per_domain[d].values()), dtype=float)
        p = counts / counts.sum()
        entropy = -np.sum(p * np.log(p))
        scores.append((1 / shares[d]) * (1 + (1 - entropy / math.log(len(counts)))))
    scores = np.array(scores)
    expected = scores / np.sum(shares * scores)
    np.testing.assert_allclose(list(dynamic.domain_weights().values()), expected, rtol=1e-12)


def test_dynamic_ema_step_matches_formula():
    item_domains, items, users = skewed_training()
    dynamic = weighting(LossConfig(loss="dynamic", ema_beta=0.8), item_domains, items, users)
    before = dynamic.frequencies.clone()
    batch = torch.tensor([3, 3, 7, 1, 0, 11])  # domains 3, 3, 3, 1, 0, 3
    dynamic.update(batch)
    share = torch.tensor([1, 1, 0, 4], dtype=torch.float64) / 6
    torch.testing.assert_close(dynamic.frequencies, 0.8 * before + 0.2 * share, rtol=1e-14, atol=0)


def test_dynamic_ema_converges_to_true_domain_shares():
    item_domains, items, users = skewed_training()
    dynamic = weighting(LossConfig(loss="dynamic", ema_beta=0.9), item_domains, items, users)
    true_share = np.array([0.1, 0.2, 0.3, 0.4])
    rng = np.random.default_rng(1)
    for _ in range(400):
        domains = rng.choice(4, size=512, p=true_share)
        dynamic.update(torch.from_numpy(domains + 4 * rng.integers(0, 3, size=512)))
    np.testing.assert_allclose(dynamic.frequencies.numpy(), true_share, atol=0.02)
    # the weights follow the new shares
    expected = (1 / dynamic.frequencies) / len(true_share)
    torch.testing.assert_close(
        torch.tensor(list(dynamic.domain_weights().values()), dtype=torch.float64), expected
    )


def test_dynamic_batch_without_domains_leaves_state_unchanged():
    item_domains = [[0], [1], [], [0, 1]]
    dynamic = weighting(LossConfig(loss="dynamic"), item_domains, [0, 0, 1, 2, 3])
    before = dynamic.frequencies.clone()
    dynamic.update(torch.tensor([2, 2]))
    torch.testing.assert_close(dynamic.frequencies, before, rtol=0, atol=0)


def test_multi_domain_items_take_max_or_mean_and_domainless_items_weigh_one():
    item_domains = [[0], [1], [], [0, 1]]
    train_items = [0, 0, 0, 0, 0, 0, 1, 1, 2, 3]  # n_0 = 7, n_1 = 3
    positives = torch.tensor([0, 1, 2, 3])
    bounds = {"w_min": 0.01, "w_max": 100.0}
    scores = 10 / np.array([7, 3])  # 1 / (n_d / sum_e n_e)
    labelled = [0, 0, 0, 0, 0, 0, 1, 1, 3]  # the training positives with a domain
    for mode in ("max", "mean"):
        combine = np.max if mode == "max" else np.mean
        # mean weight 1 over the labelled training positives: lambda in closed form
        per_position = [combine(scores[item_domains[item]]) for item in labelled]
        scale = len(labelled) / np.sum(per_position)
        per_domain = scale * scores
        dynamic = weighting(
            LossConfig(loss="dynamic", multi_domain=mode, **bounds), item_domains, train_items
        )
        np.testing.assert_allclose(
            dynamic.position_weights(positives).numpy(),
            [per_domain[0], per_domain[1], 1.0, combine(per_domain)],
            rtol=1e-12,
        )
        assert dynamic.position_weights(torch.tensor(labelled)).mean().item() == pytest.approx(
            1.0, abs=1e-12
        )


@pytest.mark.parametrize("mode", ["max", "mean"])
def test_position_weights_match_a_loop_over_each_items_domains_after_updates(mode):
    """Many multi-domain items (as in the S3-Rec sets): each position's weight is the max or
    mean of its item's current domain weights, computed item by item, 1 without a domain."""
    rng = np.random.default_rng(3)
    item_domains = [
        sorted(rng.choice(30, size=rng.integers(0, 7), replace=False).tolist()) for _ in range(400)
    ]
    train_items = rng.integers(0, 400, size=6000)
    dynamic = weighting(
        LossConfig(loss="dynamic", multi_domain=mode), item_domains, train_items, n_domains=30
    )
    for _ in range(5):
        positives = torch.from_numpy(rng.integers(0, 400, size=700))
        dynamic.update(positives)
        domain_weights = dynamic.weights.numpy()
        expected = [
            1.0
            if not item_domains[item]
            else (max if mode == "max" else np.mean)(domain_weights[item_domains[item]].tolist())
            for item in positives.tolist()
        ]
        got = dynamic.position_weights(positives).numpy()
        if mode == "max":  # a max of the same values: exact
            assert got.tolist() == expected
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_dynamic_state_roundtrips_through_weights_only_checkpoint(tmp_path):
    item_domains, items, users = skewed_training()
    config = LossConfig(loss="dynamic")
    trained = weighting(config, item_domains, items, users)
    for seed in range(5):
        trained.update(torch.randint(0, 12, (64,), generator=torch.Generator().manual_seed(seed)))
    torch.save(trained.state_dict(), tmp_path / "state.pt")
    restored = weighting(config, item_domains, items, users)
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.domain_weights() == trained.domain_weights()
    assert restored.updates == 5


def test_state_of_another_dataset_is_refused():
    item_domains, items, users = skewed_training()
    dynamic = weighting(LossConfig(loss="dynamic"), item_domains, items, users)
    with pytest.raises(DwrecError, match="domains"):
        dynamic.load_state_dict({"frequencies": torch.ones(3) / 3, "updates": 0})


def test_fixed_reproduces_closed_form():
    item_domains = [[0], [1], [2], [1, 2], []]
    config = LossConfig(loss="fixed", weight_domains=["genre1"], fixed_weight=2.7)
    fixed = weighting(config, item_domains, [0, 1, 2, 3, 4])
    positives = torch.tensor([0, 1, 2, 3, 4, 1])
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64)
    w = [1.0, 2.7, 1.0, 2.7, 1.0, 2.7]
    normalized = sum(wi * li for wi, li in zip(w, losses.tolist(), strict=True)) / sum(w)
    assert fixed.reduce(losses, positives).item() == pytest.approx(normalized, rel=1e-14)
    config.weight_reduction = "mean"
    fixed = weighting(config, item_domains, [0, 1, 2, 3, 4])
    mean = sum(wi * li for wi, li in zip(w, losses.tolist(), strict=True)) / 6
    assert fixed.reduce(losses, positives).item() == pytest.approx(mean, rel=1e-14)
    assert fixed.domain_weights() == {"genre0": 1.0, "genre1": 2.7, "genre2": 1.0}


def test_fixed_unknown_domain_suggests_close_names():
    with pytest.raises(UsageError, match="Did you mean: genre1"):
        weighting(LossConfig(loss="fixed", weight_domains=["genre_1"]), [[0], [1]], [0, 1])


def test_reduce_keeps_gradient_and_treats_weights_as_constants():
    item_domains, items, users = skewed_training()
    dynamic = weighting(LossConfig(loss="dynamic"), item_domains, items, users)
    positives = torch.tensor([0, 3, 5])
    losses = torch.rand(3, dtype=torch.float64, requires_grad=True)
    dynamic.reduce(losses, positives).backward()
    weights = dynamic.position_weights(positives)
    torch.testing.assert_close(losses.grad, weights / weights.sum())


def toy_regression(seed: int):
    """Domain 0 (75% of positions) is fitted exactly by a shared linear map; domain 1 needs
    another map, so its loss lags behind."""
    rng = torch.Generator().manual_seed(seed)
    features = torch.randn(64, 4, generator=rng, dtype=torch.float64)
    positives = torch.cat([torch.zeros(48, dtype=torch.long), torch.ones(16, dtype=torch.long)])
    map_a = torch.tensor([1.0, -2.0, 0.5, 1.0], dtype=torch.float64)
    map_b = torch.tensor([-1.0, 1.0, 2.0, -0.5], dtype=torch.float64)
    targets = torch.where(
        positives[:, None] == 0, features @ map_a[:, None], features @ map_b[:, None]
    )
    return features, targets[:, 0], positives


@pytest.mark.parametrize("seed", [0, 1])
def test_adc_raises_the_weight_of_the_domain_whose_loss_lags(seed):
    features, targets, positives = toy_regression(seed)
    adc = weighting(LossConfig(loss="adc", adc_lr=0.05), [[0], [1]], [0, 0, 0, 1])
    shared = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.SGD([shared], lr=0.05)
    for _ in range(60):
        losses = (features @ shared - targets) ** 2
        total = adc.reduce(losses, positives, shared)
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
    weights = adc.domain_weights()
    assert weights["genre1"] > 1.2 > 0.8 > weights["genre0"]
    assert sum(weights.values()) == pytest.approx(2.0, rel=1e-12)


def test_adc_user_state_gradient_norms_equal_autograd_on_a_shared_shift():
    item_domains = [[0], [1], [0, 2], []]
    indptr, indices = csr(item_domains)
    statistics = DomainStatistics(
        ["a", "b", "c"], indptr, indices, np.array([0, 1, 2]), np.array([0, 0, 1]), 4
    )
    adc = ADCWeighting(statistics)
    weight = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    inputs = torch.randn(7, 3, dtype=torch.float64)
    hidden = torch.tanh(inputs @ weight) + shift  # non-leaf [N, d]: row i feeds only loss i
    losses = (hidden**2).sum(dim=1) + hidden[:, 0]
    positives = torch.tensor([0, 1, 2, 2, 3, 0, 1])
    membership = adc.membership(positives)
    fast = adc.gradient_norms(losses, membership, hidden)
    for domain in range(3):
        rows = membership[:, domain].bool()
        (grad,) = torch.autograd.grad(losses[rows].mean(), shift, retain_graph=True)
        assert fast[domain].item() == pytest.approx(grad.norm().item(), rel=1e-12)


def test_adc_state_roundtrips(tmp_path):
    features, targets, positives = toy_regression(0)
    config = LossConfig(loss="adc")
    adc = weighting(config, [[0], [1]], [0, 1])
    shared = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    adc.reduce((features @ shared - targets) ** 2, positives, shared)
    torch.save(adc.state_dict(), tmp_path / "adc.pt")
    restored = weighting(config, [[0], [1]], [0, 1])
    restored.load_state_dict(torch.load(tmp_path / "adc.pt", weights_only=True))
    assert restored.domain_weights() == adc.domain_weights()
    torch.testing.assert_close(restored.initial_losses, adc.initial_losses)


def test_adc_domain_absent_from_the_batch_keeps_a_finite_weight():
    features, targets, positives = toy_regression(0)
    adc = weighting(LossConfig(loss="adc"), [[0], [1], [2]], [0, 1, 2])
    shared = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        adc.reduce((features @ shared - targets) ** 2, positives, shared).backward()
    weights = adc.domain_weights()
    assert all(math.isfinite(w) for w in weights.values())
    assert sum(weights.values()) == pytest.approx(3.0, rel=1e-12)
    assert weights["genre0"] != weights["genre1"]


def test_position_weights_follow_an_in_place_change_of_the_positives():
    item_domains, items, users = skewed_training()
    dynamic = weighting(LossConfig(loss="dynamic"), item_domains, items, users)
    positives = torch.tensor([0, 1, 2, 3])
    before = dynamic.position_weights(positives)
    positives[:] = torch.tensor([3, 2, 1, 0])
    torch.testing.assert_close(dynamic.position_weights(positives), before.flip(0))


def test_dynamic_log_scale_with_one_domain_holding_every_positive_weighs_one():
    """``r = log(1 / 1) = 0`` for the only domain in use: no domain is sparser, so every
    weight is 1 (``generic``), also after updates."""
    item_domains = [[0], [0], []]
    dynamic = weighting(LossConfig(loss="dynamic", weight_scale="log"), item_domains, [0, 1, 2, 0])
    positives = torch.tensor([0, 1, 2])
    assert dynamic.position_weights(positives).tolist() == [1.0, 1.0, 1.0]
    dynamic.update(positives)
    assert dynamic.domain_weights() == {"genre0": 1.0}
