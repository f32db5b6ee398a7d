"""The fused CPU Σ|dᵀx| (medinterp/methods/saliency/abs_sums.py) against a float64 hand computation and against
the torch path it replaces on float32 CPU tensors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medinterp.methods.saliency import grads
from medinterp.methods.saliency.abs_sums import BLOCK, abs_grad_sums, fused


def reference(x, d, weight=None, skip=None):
    """Σ_{o,i} |w_{oi} (d[u]ᵀ x[u])_{oi}| per unit, in float64, with skipped rows zeroed."""
    g = d.double().transpose(1, 2) @ x.double()  # (G, out, in)
    if weight is not None:
        g = g * weight.double()
    if skip is not None:
        g = g.masked_fill(skip[:, :, None], 0)
    return g.abs().sum((1, 2))


@pytest.fixture
def tensors():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 24, generator=gen)
    d = torch.randn(3, 5, 2 * BLOCK + 7, generator=gen)  # three row blocks, the last one short
    x[1, 4], d[1, 4] = 0, 0  # a padding token
    return x, d


def test_equals_the_float64_sums_with_weights_and_skipped_rows(tensors):
    x, d = tensors
    w = torch.randn(d.shape[-1], x.shape[-1], generator=torch.Generator().manual_seed(1))
    skip = torch.zeros(3, d.shape[-1], dtype=torch.bool)
    skip[0, [0, 5, BLOCK, 2 * BLOCK + 6]] = True
    for weight, mask in ((None, None), (w, None), (None, skip), (w, skip)):
        got, want = abs_grad_sums(x, d, weight, mask), reference(x, d, weight, mask)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
    # a skipped row changes only its own unit, by exactly that row's contribution (up to rounding)
    full, less = abs_grad_sums(x, d), abs_grad_sums(x, d, skip=skip)
    assert torch.equal(full[1:], less[1:]) and less[0] < full[0]


def test_only_float32_cpu_tensors_take_the_fused_path(tensors):
    x, d = tensors
    assert fused(x, d) and not fused(x.double(), d.double()) and not fused(x.bfloat16(), d.bfloat16())


@pytest.mark.parametrize("reduction", ["abs", "abs_wxg"])
def test_linear_stats_fused_equals_the_torch_slices(tensors, reduction, monkeypatch):
    x, d = tensors
    layer = nn.Linear(x.shape[-1], d.shape[-1], bias=True)
    skip = [torch.tensor([1, 3]), torch.tensor([], dtype=torch.long), torch.tensor([2 * BLOCK])]
    ours = grads._linear_stats(x, d, layer, reduction, skip)
    monkeypatch.setattr(grads, "fused", lambda *a: False)
    torch_path = grads._linear_stats(x, d, layer, reduction, skip)
    torch.testing.assert_close(ours, torch_path, rtol=1e-6, atol=0)
    assert not torch.equal(ours[:, 0], grads._linear_stats(x, d, layer, reduction)[:, 0])  # the skip took effect
