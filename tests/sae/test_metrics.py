"""medinterp.sae.metrics: FVU about the mean, explained variance, L0, dead fraction — by hand and streamed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medinterp.errors import MedinterpError
from medinterp.sae.metrics import ReconstructionStats, dead_fraction, explained_variance, fvu, l0

X = [[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]]  # mean (3, 2); squared deviations 4 + 4 + 8 = 16
X_HAT = [[1.0, 1.0], [3.0, 3.0], [4.0, 0.0]]  # squared errors 1 + 1 + 1 = 3


def test_fvu_and_explained_variance_by_hand():
    assert fvu(X, X_HAT) == pytest.approx(3 / 16, abs=1e-15)
    assert explained_variance(X, X_HAT) == pytest.approx(13 / 16, abs=1e-15)
    assert fvu(X, X_HAT) != pytest.approx(3 / 55)  # about zero (sum ||x||^2 = 55) would be the inflated score
    assert fvu(X, X) == 0.0
    assert fvu(X, [[3.0, 2.0]] * 3) == pytest.approx(1.0, abs=1e-15)  # predicting the mean explains nothing


def test_fvu_is_about_the_mean_under_a_large_offset():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 16)) + 1000.0
    x_hat = np.full_like(x, 1000.0)  # the offset only: no structure captured
    got = fvu(x, x_hat)
    assert got == pytest.approx(((x - 1000.0) ** 2).sum() / ((x - x.mean(0)) ** 2).sum(), rel=1e-12)
    assert got > 0.99  # about zero it would be ~1e-6


def test_l0_and_dead_fraction_by_hand():
    f = torch.tensor([[0.0, 1.5, 0.0, 0.0], [2.0, 0.0, 0.1, 0.0]])
    assert l0(f) == 1.5
    assert dead_fraction(f) == 0.25


def test_streaming_equals_one_shot_on_offset_batches():
    rng = np.random.default_rng(1)
    xs = [torch.tensor(rng.normal(size=(n, 8)) * 0.01 + 1e4, dtype=torch.float32) for n in (7, 100, 1, 33)]
    hats = [x + torch.tensor(rng.normal(size=x.shape) * 0.005, dtype=torch.float32) for x in xs]
    fs = [torch.tensor(rng.random((len(x), 5)) * (rng.random((len(x), 5)) < 0.3)) for x in xs]
    fs[0][:, 4] = 0
    stats = ReconstructionStats(8, 5)
    for x, h, f in zip(xs, hats, fs):
        stats.update(x, h, f)
    got = stats.result()
    X, H, F = torch.cat(xs), torch.cat(hats), torch.cat(fs)
    assert got.fvu == pytest.approx(fvu(X, H), rel=1e-9)
    assert got.explained_variance == pytest.approx(1 - fvu(X, H), rel=1e-9)
    assert got.l0 == pytest.approx(l0(F), rel=1e-12)
    assert got.dead_fraction == dead_fraction(F)
    assert got.n_tokens == 141 and got.note == ""


def test_zero_variance_is_nan_with_a_note_and_bad_shapes_are_one_line():
    assert math.isnan(fvu([[1.0, 2.0]] * 4, [[1.0, 2.0]] * 4))
    stats = ReconstructionStats(2, 3)
    stats.update(torch.ones(4, 2), torch.ones(4, 2), torch.zeros(4, 3))
    got = stats.result()
    assert math.isnan(got.fvu) and "zero variance" in got.note and got.dead_fraction == 1.0
    with pytest.raises(MedinterpError, match="shape of x") as err:
        fvu(X, [[1.0, 2.0]])
    assert "\n" not in str(err.value)
    with pytest.raises(MedinterpError, match="ReconstructionStats"):
        stats.update(torch.ones(4, 3), torch.ones(4, 3), torch.zeros(4, 3))
