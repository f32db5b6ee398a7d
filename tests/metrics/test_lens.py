"""medinterp.metrics.lens.lens_stats against scipy's KL and a numpy rank count, ties included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, rel_entr, softmax

from medinterp.errors import MedinterpError
from medinterp.metrics.lens import lens_stats


def test_equal_to_a_hand_computation_with_ties():
    rng = np.random.default_rng(0)
    final = rng.normal(size=(6, 11)) * 3
    lens = rng.normal(size=(6, 11)) * 3
    top = final.argmax(1)
    lens[0] = final[0]  # identical: KL 0, rank 0
    lens[1, (top[1] + 1) % 11] = lens[1, top[1]] = lens[1].max() + 1  # tied at the lens top: still rank 0
    lens[2] = np.arange(11.0)
    lens[2, top[2]] = 8.0  # exactly two entries (9, 10) strictly greater; 8 itself is a tie
    final[3, :] = final[3, 0]
    final[3, 4] = final[3, 0] + 1  # final top-1 = 4 is unique
    kl, rank, agree = lens_stats(torch.from_numpy(final).float(), torch.from_numpy(lens).float())
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # the inputs as the function saw them
    want_kl = rel_entr(softmax(f32(final), 1), softmax(f32(lens), 1)).sum(1)
    np.testing.assert_allclose(kl.numpy(), want_kl, rtol=1e-9, atol=1e-12)
    assert kl[0] == 0.0
    want_rank = (f32(lens) > f32(lens)[np.arange(6), f32(final).argmax(1)][:, None]).sum(1)
    assert rank.tolist() == want_rank.tolist() and rank[:3].tolist() == [0, 0, 2]
    assert agree.tolist() == (want_rank == 0).astype(float).tolist()
    assert kl.dtype == torch.float64 and rank.dtype == torch.int64


def test_masked_entries():
    final = np.array([[0.0, 1.0, -np.inf], [0.0, 1.0, 2.0]])
    lens = np.array([[0.0, 1.0, 5.0], [0.0, 1.0, -np.inf]])
    kl, rank, _ = lens_stats(final, lens)
    assert kl[0] == pytest.approx((softmax([0, 1]) * (log_softmax([0, 1]) - log_softmax([0, 1, 5])[:2])).sum())
    assert kl[1] == np.inf  # the final layer's top token is impossible under the lens
    assert rank.tolist() == [1, 2]


def test_bad_input():
    with pytest.raises(MedinterpError, match=r"'lens_logits' parameter of lens_stats must have the shape"):
        lens_stats(np.zeros((2, 5)), np.zeros((2, 4)))
    with pytest.raises(MedinterpError, match="without NaN"):
        lens_stats(np.array([[0.0, np.nan]]), np.zeros((1, 2)))
    with pytest.raises(MedinterpError, match=r"\(B, V\) tensor of logits with V >= 2"):
        lens_stats(np.zeros(5), np.zeros(5))
