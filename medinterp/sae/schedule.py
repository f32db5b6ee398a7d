"""Learning-rate multiplier per optimizer step: linear warm-up, constant, optional linear decay to 0.

    m(s) = min(1, (s + 1) / warmup_steps)                       (warm-up; 1 when warmup_steps = 0)
           * min(1, (total - s) / (total - decay_start))         (from decay_start on, when set)

Step s = 0 is the first optimizer step (it already uses 1 / warmup_steps of the rate, so no step is wasted at
lr 0); the decay reaches 0 after the last step (s = total).
"""
from __future__ import annotations


def lr_multiplier(step: int, warmup_steps: int, decay_start: int | None = None,
                  total_steps: int | None = None) -> float:
    """The multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warm = 1.0 if warmup_steps == 0 else min(1.0, (step + 1) / warmup_steps)
    if decay_start is None or total_steps is None or step < decay_start or total_steps <= decay_start:
        return warm
    return warm * max(0.0, (total_steps - step) / (total_steps - decay_start))


__all__ = ["lr_multiplier"]
