"""The shape of a sparse autoencoder: width, sparsity rule, Matryoshka groups (checked once, one-line errors).

An SAE reads activations x of width ``d`` and writes ``n_latents`` (m) latents. Its sparsity rule
(``activation``) is one of:

- ``topk`` (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"): each token keeps its own k largest
  ReLU pre-activations, in training and at inference;
- ``batchtopk`` (Bussmann et al. 2024, "BatchTopK Sparse Autoencoders"): in training a batch of B tokens keeps
  its k*B largest ReLU pre-activations across the whole batch and dictionary (k per token on average); at
  inference a single threshold theta (an EMA of the smallest kept activation, saved with the weights) replaces
  the batch: f = ReLU(pre) * [pre > theta];
- ``jumprelu`` (Rajamanoharan et al. 2024): f = ReLU(pre) * [pre > theta_j] with one threshold per latent;
  inference only (how SAELens ships BatchTopK SAEs and Gemma Scope's SAEs; a loaded ReLU SAE is theta = 0).

Matryoshka groups (Nabeshima 2024; Bussmann et al. 2025, "Learning Multi-Level Features with Matryoshka Sparse
Autoencoders"): ``group_sizes`` splits the dictionary into consecutive groups; prefix g (groups 0..g) must
reconstruct x on its own. One group = a plain TopK / BatchTopK SAE. :func:`group_sizes_from_fractions` turns
fractions (default [1/16, 1/16, 1/8, 1/4, 1/2], methods.md 4) into sizes as dictionary_learning does: every
group but the last gets int(f * m), the last the remainder.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.validation import is_int, is_number

ACTIVATIONS = ("topk", "batchtopk", "jumprelu")
TRAINABLE = ("topk", "batchtopk")
DEFAULT_GROUP_FRACTIONS = (1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2)


def group_sizes_from_fractions(n_latents: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Sizes of the Matryoshka groups: int(f * n_latents) for all but the last fraction, the remainder for the
    last. ``fractions`` must be positive, sum to 1, and give every group at least one latent."""
    fr = list(fractions)
    if not fr or not all(is_number(f) and f > 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise MedinterpError(f"The 'group_fractions' setting must be positive numbers summing to 1; got {fr!r}.")
    sizes = [int(f * n_latents) for f in fr[:-1]]
    sizes.append(n_latents - sum(sizes))
    if min(sizes) < 1:
        raise MedinterpError(f"The 'group_fractions' {fr!r} give an empty group with {n_latents} latents "
                             f"(sizes {sizes}); use fewer or larger groups.")
    return tuple(sizes)


@dataclass(frozen=True)
class SAEConfig:
    """Architecture of one SAE (what the weights files must carry to rebuild it).

    d: activation width; n_latents: dictionary size m; k: active latents per token (topk: exactly, batchtopk: on
    average in training; None for jumprelu); group_sizes: Matryoshka groups (sum = n_latents; empty = one group).
    """

    d: int
    n_latents: int
    k: int | None = None
    activation: str = "batchtopk"
    group_sizes: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        for name in ("d", "n_latents"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise MedinterpError(f"The SAE's {name!r} must be a positive integer; got {value!r}.")
        if self.activation not in ACTIVATIONS:
            raise unknown_choice("SAE activation", self.activation, ACTIVATIONS)
        if self.activation in TRAINABLE and (not is_int(self.k) or not 1 <= self.k <= self.n_latents):
            raise MedinterpError(f"The SAE's 'k' must be an integer in [1, n_latents] = [1, {self.n_latents}]; "
                                 f"got {self.k!r}.")
        sizes = tuple(int(s) for s in self.group_sizes) or (self.n_latents,)
        if min(sizes) < 1 or sum(sizes) != self.n_latents:
            raise MedinterpError(f"The SAE's 'group_sizes' must be positive and sum to n_latents = "
                                 f"{self.n_latents}; got {list(self.group_sizes)}.")
        object.__setattr__(self, "group_sizes", sizes)

    @property
    def group_ends(self) -> tuple[int, ...]:
        """Exclusive end of each nested prefix: group_sizes (4, 4, 8) -> (4, 8, 16)."""
        ends, total = [], 0
        for size in self.group_sizes:
            total += size
            ends.append(total)
        return tuple(ends)

    @property
    def is_matryoshka(self) -> bool:
        return len(self.group_sizes) > 1

    def to_dict(self) -> dict:
        return {"d": self.d, "n_latents": self.n_latents, "k": self.k, "activation": self.activation,
                "group_sizes": list(self.group_sizes)}


__all__ = ["ACTIVATIONS", "DEFAULT_GROUP_FRACTIONS", "SAEConfig", "TRAINABLE", "group_sizes_from_fractions"]
