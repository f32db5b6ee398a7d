"""Reconstruction metrics of an SAE that need no language model: FVU, explained variance, L0, dead fraction.

- FVU (fraction of variance unexplained) = sum_t ||x_t - x_hat_t||^2 / sum_t ||x_t - mean(x)||^2, both sums over
  tokens t and dimensions, the denominator about the MEAN of x over the tokens (per dimension). In [0, inf):
  0 = perfect, 1 = as good as predicting the mean, > 1 = worse. Measured about zero instead (sum ||x_t||^2),
  the denominator absorbs the residual stream's large common offset and the score looks far better than it is
  (one widely used library reported explained variance that way for a year). dictionary_learning's
  ``frac_variance_explained`` also centres the residual (var(x - x_hat)), which forgives a constant bias of
  the reconstruction; this module does not.
- explained variance = 1 - FVU.
- L0 = mean over tokens of the number of nonzero latents.
- dead fraction = share of latents that are zero on every evaluated token (the training-time notion, dead for
  N tokens, is in training_state.py).

:class:`ReconstructionStats` accumulates the same quantities batch by batch in float64 (the variance about the
mean by Chan et al.'s pairwise update, no cancellation from the large offset), so held-out sets of any size
stream through it; its ``result()`` equals the one-shot functions on the concatenated batches. A zero-variance
input gives FVU NaN with the reason in ``note``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from medinterp.errors import MedinterpError
from medinterp.metrics._validation import check_tensor


def batch_fvu(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """FVU of tensors x, x_hat (n, d) without input checks, as a float64 scalar (NaN for zero variance; a NaN
    reconstruction gives NaN): the per-step training curve."""
    x, x_hat = x.detach().double(), x_hat.detach().double()
    total = (x - x.mean(0)).square().sum()
    return (x - x_hat).square().sum() / total if float(total) > 0 else total.new_tensor(math.nan)


def fvu(x, x_hat) -> float:
    """FVU of x_hat (n, d) against x (n, d), about the mean of x; NaN when x has zero variance."""
    x = check_tensor(x, "fvu", "x", min_rows=1)
    x_hat = check_tensor(x_hat, "fvu", "x_hat", min_rows=1).to(x.device)
    if x_hat.shape != x.shape:
        raise MedinterpError(f"The 'x_hat' parameter of fvu must have the shape of x {tuple(x.shape)}. "
                             f"Got {tuple(x_hat.shape)} instead.")
    return float(batch_fvu(x, x_hat))


def explained_variance(x, x_hat) -> float:
    """1 - FVU (about the mean)."""
    return 1.0 - fvu(x, x_hat)


def l0(f) -> float:
    """Mean number of nonzero latents per token of f (n, m)."""
    f = check_tensor(f, "l0", "f", min_rows=1)
    return float((f != 0).sum(1).double().mean())


def dead_fraction(f) -> float:
    """Share of the m latents of f (n, m) that are zero on all n tokens."""
    f = check_tensor(f, "dead_fraction", "f", min_rows=1)
    return float((~(f != 0).any(0)).double().mean())


@dataclass(frozen=True)
class ReconstructionMetrics:
    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    n_tokens: int
    note: str = ""

    def to_dict(self) -> dict:
        return {"fvu": self.fvu, "explained_variance": self.explained_variance, "l0": self.l0,
                "dead_fraction": self.dead_fraction, "n_tokens": self.n_tokens, "note": self.note}


class ReconstructionStats:
    """Streaming FVU / explained variance / L0 / dead fraction over batches (x, x_hat, f) of the same widths."""

    def __init__(self, d: int, n_latents: int):
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64)  # running per-dimension mean of x
        self.m2 = torch.zeros(d, dtype=torch.float64)  # running sum of squared deviations from it
        self.sse = 0.0  # sum ||x - x_hat||^2
        self.nonzeros = 0  # sum over tokens of the latents that are nonzero
        self.fired = torch.zeros(n_latents, dtype=torch.bool)

    @torch.no_grad()
    def update(self, x: torch.Tensor, x_hat: torch.Tensor, f: torch.Tensor) -> None:
        """Add a batch: x, x_hat (b, d), f (b, m)."""
        x, x_hat = x.detach().to("cpu", torch.float64), x_hat.detach().to("cpu", torch.float64)
        f = f.detach().cpu()
        if x.shape != x_hat.shape or x.shape[1] != len(self.mean) or f.shape != (len(x), len(self.fired)):
            raise MedinterpError(f"ReconstructionStats({len(self.mean)}, {len(self.fired)}) got batches of shapes "
                                 f"x {tuple(x.shape)}, x_hat {tuple(x_hat.shape)}, f {tuple(f.shape)}.")
        b = len(x)
        if b == 0:
            return
        mean_b = x.mean(0)
        m2_b = (x - mean_b).square().sum(0)
        delta = mean_b - self.mean
        total = self.n + b
        self.m2 += m2_b + delta.square() * (self.n * b / total)
        self.mean += delta * (b / total)
        self.n = total
        self.sse += float((x - x_hat).square().sum())
        nz = f != 0
        self.nonzeros += int(nz.sum())
        self.fired |= nz.any(0)

    def result(self) -> ReconstructionMetrics:
        if self.n == 0:
            return ReconstructionMetrics(math.nan, math.nan, math.nan, math.nan, 0, "no tokens evaluated")
        total = float(self.m2.sum())
        value = self.sse / total if total > 0 else math.nan
        note = "" if total > 0 else "the activations have zero variance: FVU undefined"
        return ReconstructionMetrics(fvu=value, explained_variance=1.0 - value, l0=self.nonzeros / self.n,
                                     dead_fraction=float((~self.fired).double().mean()), n_tokens=self.n,
                                     note=note)


__all__ = ["ReconstructionMetrics", "ReconstructionStats", "batch_fvu", "dead_fraction", "explained_variance", "fvu",
           "l0"]
