"""medinterp.sae.config / sparsity / model: the three sparsity rules, Matryoshka prefixes, exact cases."""
from __future__ import annotations

import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.sae.config import SAEConfig, group_sizes_from_fractions
from medinterp.sae.metrics import fvu
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.sparsity import batch_topk, jumprelu, topk_per_token


def test_group_sizes_from_fractions():
    assert group_sizes_from_fractions(64, [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2]) == (4, 4, 8, 16, 32)
    assert group_sizes_from_fractions(100, [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2]) == (6, 6, 12, 25, 51)
    with pytest.raises(MedinterpError, match="summing to 1"):
        group_sizes_from_fractions(64, [0.5, 0.4])
    with pytest.raises(MedinterpError, match="empty group"):
        group_sizes_from_fractions(8, [0.1, 0.9])


def test_config_checks_are_one_line():
    with pytest.raises(MedinterpError, match=r"\[1, 64\]; got 65") as err:
        SAEConfig(32, 64, 65)
    assert "\n" not in str(err.value)
    with pytest.raises(MedinterpError, match="valid: batchtopk, jumprelu, topk"):
        SAEConfig(32, 64, 4, "relu")
    with pytest.raises(MedinterpError, match="sum to n_latents = 64"):
        SAEConfig(32, 64, 4, "batchtopk", (4, 4))
    c = SAEConfig(32, 64, 4, "batchtopk", (4, 4, 8, 16, 32))
    assert c.group_ends == (4, 8, 16, 32, 64) and c.is_matryoshka
    assert SAEConfig(32, 64, 4).group_sizes == (64,) and SAEConfig(8, 4, None, "jumprelu").k is None


def test_sparsity_rules():
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(50, 40, generator=g) + 3.0  # all positive: every rule can keep its full count
    assert ((topk_per_token(pre, 5) > 0).sum(1) == 5).all()
    f = batch_topk(pre, 5)
    assert int((f > 0).sum()) == 5 * 50  # k * B across the batch, per-token counts free
    assert (f > 0).sum(1).min() != (f > 0).sum(1).max()
    kept = f[f > 0]
    assert kept.min() >= pre.flatten().sort(descending=True).values[5 * 50 - 1] - 1e-6  # the largest n*k
    mixed = torch.randn(20, 10, generator=g)
    assert torch.equal(jumprelu(mixed, torch.zeros(10)), mixed.relu())  # theta = 0 equals ReLU
    assert torch.equal(jumprelu(mixed, torch.full((10,), -1.0)), mixed.relu())  # unset threshold: ReLU
    th = torch.linspace(0, 1, 10)
    assert torch.equal(jumprelu(mixed, th), mixed.relu() * (mixed > th))


def test_identity_dictionary_reconstructs_exactly():
    """methods.md 5: F = d, W = I, huge k -> FVU ~ 0 (with +-I so that negative coordinates survive the ReLU)."""
    d = 6
    eye = torch.eye(d)
    sae = SparseAutoencoder.from_tensors(SAEConfig(d, 2 * d, d, "topk"), "test", W_enc=torch.cat([eye, -eye], 1),
                                         b_enc=torch.zeros(2 * d), W_dec=torch.cat([eye, -eye], 0),
                                         b_dec=torch.zeros(d))
    x = torch.randn(200, d, generator=torch.Generator().manual_seed(1))
    assert fvu(x, sae(x)) < 1e-12
    assert ((sae.encode(x) > 0).sum(1) == d).all()


def test_training_rule_keeps_k_times_batch_and_inference_uses_the_threshold():
    sae = SparseAutoencoder(SAEConfig(16, 64, 3, "batchtopk"), seed=2)
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(3))
    pre = sae.pre_activations(x)
    assert int((sae.select_train(pre) > 0).sum()) == 3 * 40
    assert torch.equal(sae.encode(x), pre.relu())  # threshold unset (-1): ReLU, as dictionary_learning
    sae.threshold.fill_(0.3)
    assert torch.equal(sae.encode(x), pre.relu() * (pre > 0.3))
    # inference is batch-free: the same codes for a row in any batch (to GEMM rounding: a 7-row and a 40-row
    # product may use different kernels), the same active latents
    part, whole = sae.encode(x[:7]), sae.encode(x)[:7]
    assert torch.equal(part > 0, whole > 0)
    torch.testing.assert_close(part, whole, rtol=1e-6, atol=1e-7)
    topk = SparseAutoencoder(SAEConfig(16, 64, 3, "topk"), seed=2)
    assert ((topk.encode(x) > 0).sum(1) == 3).all()
    with pytest.raises(MedinterpError, match="cannot be trained"):
        SparseAutoencoder(SAEConfig(16, 64, None, "jumprelu")).select_train(pre)


def test_decoder_rows_start_unit_and_prefixes_decode_by_hand():
    sae = SparseAutoencoder(SAEConfig(5, 8, 2, "batchtopk", (2, 2, 4)), seed=4)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(8))
    assert torch.equal(sae.W_enc, sae.W_dec.T)
    with torch.no_grad():
        sae.b_dec.copy_(torch.arange(5.0))
    f = torch.rand(3, 8, generator=torch.Generator().manual_seed(5))
    recons = sae.decode_prefixes(f)
    for end, recon in zip((2, 4, 8), recons):
        assert torch.allclose(recon, f[:, :end] @ sae.W_dec[:end] + sae.b_dec, atol=1e-6)
    assert torch.allclose(recons[-1], sae.decode(f), atol=1e-6)


def test_from_tensors_names_a_bad_shape_in_one_line():
    with pytest.raises(MedinterpError, match=r"in f\.pt is malformed: W_dec has shape \(4, 3\), expected \(8, 3\)"):
        SparseAutoencoder.from_tensors(SAEConfig(3, 8, 2), "f.pt", W_enc=torch.zeros(3, 8), b_enc=torch.zeros(8),
                                       W_dec=torch.zeros(4, 3), b_dec=torch.zeros(3))
