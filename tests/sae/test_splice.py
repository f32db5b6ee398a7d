"""CE-loss recovered and KL with a reconstruction spliced in at the layer: planted reconstructions (identity -> 1,
zero ablation -> 0) and the CE values against forwards hooked by hand, on two tiny families."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import load_tiny
from medinterp.sae.activations import token_batch
from medinterp.sae.splice import splice_metrics


@pytest.fixture(scope="module", params=["gemma3", "llama"])
def tiny(request, cache_dir):
    return load_tiny(request.param, cache_dir)


def contexts(handle, n=3, ctx_len=10):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 1000, (n, ctx_len), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, 6:] = 0
    return ids, mask


def hand_ce(handle, ids, mask, layer, edit):
    """Mean next-token CE over t >= 1 with a real t+1, the read-out ``layer`` edited at real positions >= 1 by
    ``edit`` (a hook written here, independent of medinterp.hooks)."""
    module = [handle.parts.embed, *handle.parts.layers][layer]

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        keep = mask.bool().clone()
        keep[:, 0] = False
        new = torch.where(keep[..., None], edit(h), h)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    handle_ = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            logits = handle.model(**token_batch(ids, mask).model_inputs(), use_cache=False).logits.float()
    finally:
        handle_.remove()
    scored = mask[:, 1:-1].bool() & mask[:, 2:].bool()  # t = 1..T-2 real with t+1 real
    return F.cross_entropy(logits[:, 1:-1][scored], ids[:, 2:][scored]).item(), logits


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_identity_recovers_everything_and_zero_nothing(tiny, layer):
    ids, mask = contexts(tiny)
    same = splice_metrics(tiny, ids, mask, layer, lambda h: h, progress=False)
    assert same.ce_loss_recovered == 1.0 and same.kl == pytest.approx(0.0, abs=1e-6)
    assert same.ce_sae == same.ce_clean and same.ablation == "zero" and same.note == ""
    assert same.n_tokens == 2 * 8 + 4  # per context T-2 predictions at t >= 1; the padded one: t = 1..4
    zero = splice_metrics(tiny, ids, mask, layer, torch.zeros_like, progress=False)
    assert zero.ce_loss_recovered == 0.0 and zero.ce_sae == zero.ce_zero
    assert zero.ce_clean == pytest.approx(hand_ce(tiny, ids, mask, layer, lambda h: h)[0], rel=1e-5)
    assert zero.ce_zero == pytest.approx(hand_ce(tiny, ids, mask, layer, torch.zeros_like)[0], rel=1e-5)


def test_a_partial_reconstruction_scores_its_ce_and_kl(tiny):
    ids, mask = contexts(tiny)
    layer = 2
    got = splice_metrics(tiny, ids, mask, layer, lambda h: 0.5 * h, batch_contexts=2, progress=False)
    clean, logits_clean = hand_ce(tiny, ids, mask, layer, lambda h: h)
    half, logits_half = hand_ce(tiny, ids, mask, layer, lambda h: 0.5 * h)
    zero = hand_ce(tiny, ids, mask, layer, torch.zeros_like)[0]
    assert got.ce_sae == pytest.approx(half, rel=1e-5)
    assert got.ce_loss_recovered == pytest.approx((zero - half) / (zero - clean), rel=1e-4)
    scored = mask[:, 1:-1].bool() & mask[:, 2:].bool()
    p = F.log_softmax(logits_clean[:, 1:-1][scored], -1)
    q = F.log_softmax(logits_half[:, 1:-1][scored], -1)
    assert got.kl == pytest.approx(float((p.exp() * (p - q)).sum(-1).mean()), rel=1e-4)
    assert got.kl > 0
