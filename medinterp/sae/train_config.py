"""Training settings of an SAE (defaults: methods.md 4, dictionary_learning's Matryoshka BatchTopK trainer).

Loss (objective.py), with MSE_g = mean over tokens of ||x - x_hat_g||^2 (summed over the d dimensions):

    L = sum_g w_g * MSE_g  +  auxk_alpha * AuxK

``group_weights`` w_g default to 1 for every prefix: the group losses are SUMMED (the issue's choice, and
SAELens's: inner losses plus the full loss, each weight 1). dictionary_learning instead multiplies each
group's MSE by 1/G and then averages over the G groups, i.e. w_g = 1/G^2 — its AuxK weight is therefore
G^2 times larger relative to the reconstruction than here (methods.md pitfall 10); pass
``group_weights=[1/G**2]*G`` to reproduce it. With one group the two agree.

- lr: Adam's step size; None = 2e-4 / sqrt(m / 2^14) (Gao et al. 2024's 1/sqrt(m) scaling, as dictionary_learning).
- warmup_steps: linear warm-up from 0 to lr; decay_start: linear decay to 0 at the last step (None: none).
- k_anneal_steps: k falls linearly from d to the SAE's k over this many first steps (dictionary_learning's
  ``k_anneal_steps``; schedule.py); None: the target k from the first step (dictionary_learning's default).
- grad_clip: the total gradient norm is clipped to this (after the parallel-component removal).
- auxk_alpha: weight of the auxiliary loss (1/32, Gao et al. 2024); top_k_aux: dead latents used per token
  (None = d // 2, their appendix B.1); dead_tokens: a latent is dead after this many training tokens without
  firing (10M in dictionary_learning; lower it for small corpora or the aux loss never engages).
- threshold_beta / threshold_start_step: the inference threshold is an EMA with this beta of each batch's
  smallest kept activation, updated from the step after threshold_start_step on.
- geometric_median_init: set b_dec to the geometric median of the first batch before the first step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medinterp.errors import MedinterpError
from medinterp.validation import is_int, is_number


@dataclass(frozen=True)
class TrainConfig:
    lr: float | None = None
    warmup_steps: int = 1000
    decay_start: int | None = None
    k_anneal_steps: int | None = None
    grad_clip: float = 1.0
    auxk_alpha: float = 1 / 32
    top_k_aux: int | None = None
    dead_tokens: int = 10_000_000
    threshold_beta: float = 0.999
    threshold_start_step: int = 1000
    group_weights: Sequence[float] | None = None
    geometric_median_init: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> MedinterpError:
            return MedinterpError(f"The SAE training setting {name!r} must be {expected}; got {getattr(self, name)!r}.")

        if self.lr is not None and (not is_number(self.lr) or self.lr <= 0):
            raise bad("lr", "a positive number or null")
        for name in ("warmup_steps", "threshold_start_step"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "an integer >= 0")
        if not is_int(self.dead_tokens) or self.dead_tokens < 1:
            raise bad("dead_tokens", "a positive integer")
        if self.decay_start is not None and (not is_int(self.decay_start) or self.decay_start < 0):
            raise bad("decay_start", "an integer >= 0 or null")
        if self.k_anneal_steps is not None and (not is_int(self.k_anneal_steps) or self.k_anneal_steps < 0):
            raise bad("k_anneal_steps", "an integer >= 0 or null")
        if self.top_k_aux is not None and (not is_int(self.top_k_aux) or self.top_k_aux < 1):
            raise bad("top_k_aux", "a positive integer or null")
        for name in ("grad_clip", "auxk_alpha"):
            if not is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise bad(name, "a number >= 0")
        if not is_number(self.threshold_beta) or not 0 <= self.threshold_beta < 1:
            raise bad("threshold_beta", "a number in [0, 1)")
        if self.group_weights is not None:
            if not all(is_number(w) and w >= 0 for w in self.group_weights):
                raise bad("group_weights", "a list of numbers >= 0, one per Matryoshka group, or null")
            object.__setattr__(self, "group_weights", tuple(float(w) for w in self.group_weights))

    def weights_for(self, n_groups: int) -> tuple[float, ...]:
        """The loss weight of each of ``n_groups`` prefixes (1 each unless ``group_weights`` is given)."""
        if self.group_weights is None:
            return (1.0,) * n_groups
        if len(self.group_weights) != n_groups:
            raise MedinterpError(f"The SAE training setting 'group_weights' has {len(self.group_weights)} "
                                 f"weights but the SAE has {n_groups} Matryoshka groups.")
        return tuple(self.group_weights)

    def lr_for(self, n_latents: int) -> float:
        """``lr``, or 2e-4 / sqrt(n_latents / 2^14) when unset."""
        return float(self.lr) if self.lr is not None else 2e-4 / (n_latents / 2**14) ** 0.5

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["group_weights"] = None if self.group_weights is None else list(self.group_weights)
        return out


__all__ = ["TrainConfig"]
