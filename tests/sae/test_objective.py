"""medinterp.sae objective, decoder norm, geometric median, training state, schedule: hand computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from medinterp.sae.config import SAEConfig
from medinterp.sae.decoder_norm import normalise_rows_, remove_parallel_gradient
from medinterp.sae.geometric_median import geometric_median
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.objective import auxk_loss, matryoshka_mse, sae_objective
from medinterp.sae.schedule import annealed_k, lr_multiplier
from medinterp.sae.train_config import TrainConfig
from medinterp.sae.training_state import smallest_kept, update_threshold_, update_tokens_since_fired_


def test_geometric_median_against_scipy_and_in_one_dimension():
    assert float(geometric_median(torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]]))) == pytest.approx(2.0, abs=1e-5)
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(size=(200, 3)), rng.normal(size=(10, 3)) * 50 + 300])  # 10 far outliers
    got = geometric_median(torch.tensor(pts)).numpy()
    ref = minimize(lambda m: np.linalg.norm(pts - m, axis=1).sum(), pts.mean(0), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    cost = lambda m: np.linalg.norm(pts - m, axis=1).sum()  # noqa: E731
    assert cost(got) <= cost(ref) + 1e-6
    assert np.abs(got - ref).max() < 1e-3
    assert np.linalg.norm(got) < 0.5 < np.linalg.norm(pts.mean(0))  # robust: the mean is dragged to the outliers


def test_parallel_component_removal_keeps_unit_norm_to_second_order():
    g = torch.Generator().manual_seed(0)
    W = normalise_rows_(torch.randn(64, 16, generator=g, dtype=torch.float64))
    grad = torch.randn(64, 16, generator=g, dtype=torch.float64)
    proj = remove_parallel_gradient(W, grad)
    assert (proj * W).sum(1).abs().max() < 1e-12
    lr = 1e-3
    drift_proj = ((W - lr * proj).norm(dim=1) - 1).abs()  # sqrt(1 + lr^2 |g_perp|^2) - 1: the step is tangent
    drift_raw = ((W - lr * grad).norm(dim=1) - 1).abs()  # ~ lr |g . w|: first order
    assert (drift_proj <= 0.5 * lr**2 * proj.square().sum(1) + 1e-15).all()
    assert drift_raw.max() > 50 * drift_proj.max()
    assert torch.allclose(normalise_rows_(W - lr * proj).norm(dim=1), torch.ones(64, dtype=torch.float64), atol=1e-12)


def small_sae(sizes=(2, 2, 4), activation="batchtopk", k=2, seed=0) -> SparseAutoencoder:
    return SparseAutoencoder(SAEConfig(4, 8, k, activation, sizes), seed=seed)


def test_matryoshka_mse_by_hand():
    sae = small_sae()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    f = torch.rand(5, 8, generator=torch.Generator().manual_seed(2))
    mse, x_hat = matryoshka_mse(sae, x, f)
    Wd, bd = sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy()
    X, F = x.numpy(), f.numpy()
    want = [((X - (F[:, :e] @ Wd[:e] + bd)) ** 2).sum(1).mean() for e in (2, 4, 8)]
    assert mse.detach().numpy() == pytest.approx(want, rel=1e-5)
    # the summed loss (weights 1) and dictionary_learning's 1/G^2 weighting
    pre = sae.pre_activations(x)
    dead = torch.zeros(8, dtype=torch.bool)
    assert float(sae_objective(sae, x, pre, f, dead, TrainConfig()).loss.detach()) == pytest.approx(sum(want), rel=1e-5)
    dl = TrainConfig(group_weights=[1 / 9] * 3)
    assert float(sae_objective(sae, x, pre, f, dead, dl).loss.detach()) == pytest.approx(sum(want) / 9, rel=1e-5)


def test_auxk_loss_by_hand():
    W_dec = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2 ** -0.5, 2 ** -0.5]])
    sae = SparseAutoencoder.from_tensors(SAEConfig(2, 3, 1, "topk"), "t", W_enc=torch.zeros(2, 3),
                                         b_enc=torch.zeros(3), W_dec=W_dec, b_dec=torch.zeros(2))
    err = torch.tensor([[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]])
    pre = torch.tensor([[5.0, 4.0, 0.5], [1.0, 0.0, -2.0], [0.0, 9.0, 1.5]])
    dead = torch.tensor([False, True, True])
    got = float(auxk_loss(sae, err, pre, dead, top_k_aux=1).detach())
    # each token keeps its largest ReLU(pre) among the dead latents 1, 2: 4 (latent 1), 0 (none), 9 (latent 1)
    recon = np.array([[0.0, 4.0], [0.0, 0.0], [0.0, 9.0]])
    e = err.numpy()
    want = ((e - recon) ** 2).sum(1).mean() / ((e - e.mean(0)) ** 2).sum(1).mean()
    assert got == pytest.approx(want, rel=1e-6)
    assert float(auxk_loss(sae, err, pre, torch.zeros(3, dtype=torch.bool), 1).detach()) == 0.0


def test_a_dead_latent_gets_gradient_only_through_the_aux_loss():
    sae = SparseAutoencoder(SAEConfig(8, 16, 2, "batchtopk"), seed=3)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(4))
    j = 5
    with torch.no_grad():  # latent j: positive everywhere, but far below the kept ones
        sae.W_enc[:, j] = 0.0
        sae.b_enc[j] = 1e-3
    dead = torch.zeros(16, dtype=torch.bool)
    dead[j] = True

    def grads(alpha: float) -> list[torch.Tensor]:
        sae.zero_grad()
        pre = sae.pre_activations(x)
        f = sae.select_train(pre)
        assert (f[:, j] == 0).all()
        sae_objective(sae, x, pre, f, dead, TrainConfig(auxk_alpha=alpha)).loss.backward()
        return [sae.W_enc.grad[:, j].clone(), sae.b_enc.grad[j].clone(), sae.W_dec.grad[j].clone()]

    assert all(float(g.abs().max()) == 0.0 for g in grads(0.0))
    assert all(float(g.abs().max()) > 0.0 for g in grads(1 / 32))


def test_dead_counter_threshold_ema_and_schedule():
    counter = torch.tensor([0, 5, 100])
    update_tokens_since_fired_(counter, torch.tensor([True, False, False]), 10)
    assert counter.tolist() == [0, 15, 110]
    sae = small_sae()
    f = torch.tensor([[0.0, 0.7, 0.2], [1.5, 0.0, 0.0]])
    assert float(smallest_kept(f)) == pytest.approx(0.2)
    update_threshold_(sae, smallest_kept(f), beta=0.9)
    assert torch.allclose(sae.threshold, torch.full((8,), 0.2))  # first value taken as is
    update_threshold_(sae, torch.tensor(1.2, dtype=torch.float64), beta=0.9)
    assert torch.allclose(sae.threshold, torch.full((8,), 0.9 * 0.2 + 0.1 * 1.2))
    update_threshold_(sae, smallest_kept(torch.zeros(2, 3)), beta=0.9)  # nothing kept: unchanged
    assert torch.allclose(sae.threshold, torch.full((8,), 0.3))
    assert [lr_multiplier(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_multiplier(8, 0, decay_start=6, total_steps=10) == 0.5
    assert lr_multiplier(0, 0) == 1.0
    # k annealed from d = 32 to 2 over 10 steps: int(32 (1 - s/10) + 2 s/10), then 2 (dictionary_learning's rule)
    assert [annealed_k(s, 2, 32, 10) for s in (0, 1, 5, 9, 10, 50)] == [32, 29, 17, 5, 2, 2]
    assert annealed_k(0, 2, 32, None) == annealed_k(0, 2, 32, 0) == 2
