"""Schedules per optimizer step: the learning-rate multiplier and the annealed sparsity k.

Learning rate: linear warm-up, constant, optional linear decay to 0,

    m(s) = min(1, (s + 1) / warmup_steps)                       (warm-up; 1 when warmup_steps = 0)
           * min(1, (total - s) / (total - decay_start))         (from decay_start on, when set)

Step s = 0 is the first optimizer step (it already uses 1 / warmup_steps of the rate, so no step is wasted at
lr 0); the decay reaches 0 after the last step (s = total).

Sparsity (dictionary_learning's ``k_anneal_steps``, its BatchTopK and Matryoshka trainers): k falls linearly
from the activation width d to the target k over the first ``k_anneal_steps`` steps,

    k(s) = floor(d (1 - r) + k r) = k + floor((d - k)(K - s) / K),   r = s / K for s < K = k_anneal_steps,

computed in integers (dictionary_learning's float ``int(...)`` gives one less where rounding falls just below
an integer, e.g. 4 for 5 at s = 9 of 10, d = 32, k = 2). Early steps keep many latents per token, so every
latent gets reconstruction gradient while the dictionary is still unorganised, before the top-k competition
sets in (docs/sae.md, "Planted hierarchy", for what it fixes).
"""
from __future__ import annotations


def lr_multiplier(step: int, warmup_steps: int, decay_start: int | None = None,
                  total_steps: int | None = None) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warm = 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)
    if decay_start is None or total_steps is None or step < decay_start or total_steps <= decay_start:
        return warm
    return warm * max(0.0, (total_steps - step) / (total_steps - decay_start))


def annealed_k(step: int, k: int, d: int, k_anneal_steps: int | None) -> int:
    """The sparsity k at optimizer step ``step`` (0-based): the target ``k`` without annealing or from step
    ``k_anneal_steps`` on, before that k + floor((d - k)(K - step) / K) (d at step 0)."""
    if not k_anneal_steps or step >= k_anneal_steps:
        return k
    return k + (d - k) * (k_anneal_steps - step) // k_anneal_steps


__all__ = ["annealed_k", "lr_multiplier"]
