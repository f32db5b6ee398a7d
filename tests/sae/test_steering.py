"""Steering with decoder rows on tiny random models: α = 0 is exact, a planted unembedding direction raises its word."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from helpers import load_tiny
from medinterp.errors import MedinterpError
from medinterp.judges import DeterministicJudge, Verdict
from medinterp.sae import SAEConfig, SparseAutoencoder
from medinterp.sae.steering import SteeringConfig, SteeringTarget, steer, steered_logprobs

TARGET_PROMPTS = ("The patient has a", "Symptoms include", "She reported a high")
UNRELATED = ("The capital of France is", "Two plus two equals", "The weather today is")


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def handle(request, cache_dir):
    family = request.param
    return load_tiny(family, cache_dir)


def planted_sae(handle, word: str = " fever") -> SparseAutoencoder:
    """Latent 0's decoder row is the unembedding row of ``word``'s first token; latent 1's is a random direction."""
    d = handle.d_model
    token = handle.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    W = torch.randn(2, d, generator=torch.Generator().manual_seed(0))
    W[0] = handle.parts.lm_head.weight.detach()[token].float()
    W = W / W.norm(dim=1, keepdim=True)
    return SparseAutoencoder.from_tensors(SAEConfig(d, 2, k=1, activation="topk"), "planted", W_enc=W.T.clone(),
                                          b_enc=torch.zeros(2), W_dec=W, b_dec=torch.zeros(d))


def test_alpha_zero_changes_no_logit_and_steering_starts_where_asked(handle):
    ids = handle.tokenizer("The patient has a fever and a cough", add_special_tokens=True)["input_ids"]
    w = planted_sae(handle).W_dec[0].detach()
    clean = handle.model(input_ids=torch.tensor([ids]), use_cache=False).logits.float().log_softmax(-1)
    for layer in (0, 2, handle.n_layers):
        assert torch.equal(steered_logprobs(handle, [ids], layer, 0.0 * w, 0), clean)
        start = len(ids) - 3
        moved = steered_logprobs(handle, [ids], layer, 4.0 * w, start)
        assert torch.equal(moved[0, :start], clean[0, :start])  # causal: nothing before the first steered position
        assert not torch.allclose(moved[0, start:], clean[0, start:], atol=1e-4)


def test_a_planted_unembedding_latent_raises_its_word_and_a_random_one_does_not(handle):
    sae = planted_sae(handle)
    targets = [SteeringTarget(j, (" fever",), TARGET_PROMPTS) for j in (0, 1)]
    result = steer(handle, sae, handle.n_layers, targets, UNRELATED, config=SteeringConfig(alphas=(0.0, 4.0, 64.0)))
    rows = {(r.latent, r.alpha): r for r in result.rows}
    for j in (0, 1):
        base = rows[(j, 0.0)]
        assert base.delta_target.value == 0.0 and base.delta_unrelated.value == 0.0 and base.coherence.value == 1.0
    planted, random = rows[(0, 64.0)], rows[(1, 64.0)]
    assert planted.delta_target.ci_low > 0.5 and planted.delta_unrelated.ci_low > 0.5  # the word goes up everywhere
    assert planted.delta_target.value > 5 * abs(random.delta_target.value)
    assert planted.success and result.latents[0].success and result.latents[0].best_alpha == 4.0
    assert result.latents[1].success is False
    assert result.success_rate().value == 0.5 and result.summary()["n_decided"] == 2


def test_from_last_steers_the_continuation_only(handle):
    sae = planted_sae(handle)
    cfg = SteeringConfig(alphas=(4.0,), positions="from_last", n_boot=50)
    [row] = steer(handle, sae, 2, [SteeringTarget(0, (" fever",), TARGET_PROMPTS)], UNRELATED, config=cfg).rows
    every = steer(handle, sae, 2, [SteeringTarget(0, (" fever",), TARGET_PROMPTS)], UNRELATED,
                  config=SteeringConfig(alphas=(4.0,), n_boot=50)).rows[0]
    assert row.delta_target.value != every.delta_target.value  # the prompt's earlier positions were left alone


@dataclass(frozen=True)
class ScriptedJudge(DeterministicJudge):
    """Scores every steered continuation ``score``, or misses the first ``n_missing`` items."""

    fixed: float = 9.0
    n_missing: int = 0

    def score(self, items):
        return [Verdict(None, missing_reason="HTTP 503") if i < self.n_missing else Verdict(self.fixed)
                for i in range(len(items))]


def test_incoherent_steering_fails_and_missing_verdicts_leave_it_undecided(handle):
    sae = planted_sae(handle)
    targets = [SteeringTarget(0, (" fever",), TARGET_PROMPTS)]
    cfg = SteeringConfig(alphas=(0.0, 4.0), n_boot=50)
    gibberish = steer(handle, sae, handle.n_layers, targets, UNRELATED, ScriptedJudge(9.0), cfg)
    assert gibberish.rows[1].delta_target.ci_low > 0 and gibberish.rows[1].success is False
    lost = steer(handle, sae, handle.n_layers, targets, UNRELATED, ScriptedJudge(1.0, n_missing=8), cfg)
    row = lost.rows[1]
    assert row.success is None and row.n_missing == 2  # 6 prompts per alpha: the first 8 items = all of α 0, 2 of α 4
    assert row.note == "coherence: 2 of 6 judge verdicts missing (HTTP 503)"
    assert lost.latents[0].success is None and math.isnan(lost.success_rate().value)
    assert lost.summary()["undecided"] == [f"latent 0: {row.note}"]


def test_bad_steering_input_is_one_line(handle):
    sae = planted_sae(handle)
    target = [SteeringTarget(0, (" fever",), TARGET_PROMPTS)]
    with pytest.raises(MedinterpError, match=r"read-out point in 0..4"):
        steer(handle, sae, 9, target, UNRELATED)
    with pytest.raises(MedinterpError, match="outside the dictionary 0..1"):
        steer(handle, sae, 2, [SteeringTarget(5, (" fever",), TARGET_PROMPTS)], UNRELATED)
    with pytest.raises(MedinterpError, match="unrelated prompt"):
        steer(handle, sae, 2, target, [])
    with pytest.raises(MedinterpError, match="steering positions"):
        SteeringConfig(positions="middle")
