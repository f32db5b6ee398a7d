"""Σ|g| of per-unit Linear weight gradients g = dᵀx without building g: one fused pass on the CPU.

For unit u (a prompt) with inputs x[u] (n, in) and output-gradients d[u] (n, out) at its n tokens, the weight
gradient is g[u] = d[u]ᵀ x[u] (out, in) and saliency needs Σ_{o,i} |g[u]_{oi}| (or |w_{oi} g[u]_{oi}|). Built
and reduced by torch, every entry is written by a matrix product, rewritten by ``abs_`` and read by ``sum``:
for a tied 262,144 × 640 head that is three passes over 168 M entries per prompt. :func:`abs_grad_sums` does one:
each output row o is accumulated in a row buffer (n multiply-adds per entry), reduced in float32, and the rows'
sums are added in float64 in blocks of :data:`BLOCK` rows, blocks in order, so the result does not depend on the
number of threads. It equals the torch reduction to float32 rounding (≈ 1e-7 relative: both sum the same
numbers, in another order; tests/methods/saliency/test_abs_sums.py), and is used for float32 CPU tensors;
every other device or dtype takes the torch path (:func:`medinterp.methods.saliency.grads._linear_stats`).
"""
from __future__ import annotations

import numba
import numpy as np
import torch

BLOCK = 256  # output rows per block: one block's float64 sum is a unit of parallel work

_FLAGS = {"reassoc", "contract", "nsz"}  # reordered sums and fused multiply-adds; no approximate maths


@numba.njit(fastmath=_FLAGS, parallel=True, cache=True)
def _abs_sums(x: np.ndarray, d: np.ndarray, w: np.ndarray, skip: np.ndarray) -> np.ndarray:  # pragma: no cover
    """x (G, n, in), d (G, n, out) float32; w (out, in) or (0, 0); skip (G, out) bool or (0, 0) → (G,) float64."""
    n_units, n_tok, n_in = x.shape
    n_out = d.shape[2]
    n_blocks = (n_out + BLOCK - 1) // BLOCK
    scaled, skipping = w.shape[0] > 0, skip.shape[0] > 0
    sums = np.zeros((n_units, n_blocks))
    for job in numba.prange(n_units * n_blocks):
        u, blk = job // n_blocks, job % n_blocks
        buf = np.empty(n_in, np.float32)
        total = 0.0
        for o in range(blk * BLOCK, min((blk + 1) * BLOCK, n_out)):
            if skipping and skip[u, o]:
                continue
            for i in range(n_in):
                buf[i] = 0.0
            for t in range(n_tok):
                c = d[u, t, o]
                if c != 0.0:
                    for i in range(n_in):
                        buf[i] += c * x[u, t, i]
            row = np.float32(0.0)
            if scaled:
                for i in range(n_in):
                    row += abs(buf[i] * w[o, i])
            else:
                for i in range(n_in):
                    row += abs(buf[i])
            total += row
        sums[u, blk] = total
    out = np.zeros(n_units)
    for u in range(n_units):
        for blk in range(n_blocks):
            out[u] += sums[u, blk]
    return out


def fused(x: torch.Tensor, d: torch.Tensor) -> bool:
    """Whether :func:`abs_grad_sums` serves these tensors (float32 on the CPU)."""
    return x.device.type == "cpu" and d.device.type == "cpu" and x.dtype == d.dtype == torch.float32


def abs_grad_sums(x: torch.Tensor, d: torch.Tensor, weight: torch.Tensor | None = None,
                  skip: torch.Tensor | None = None) -> torch.Tensor:
    """(G,) float64: Σ_{o,i} |(d[u]ᵀ x[u])_{oi}| per unit u, times |weight_{oi}| inside the sum when given.

    x: (G, n, in), d: (G, n, out), float32 CPU (:func:`fused`); padding tokens must be zero rows.
    skip: (G, out) bool, rows o left out of unit u's sum.
    """
    empty = np.zeros((0, 0), np.float32)
    w = empty if weight is None else weight.detach().contiguous().numpy()
    s = np.zeros((0, 0), np.bool_) if skip is None else skip.contiguous().numpy()
    return torch.from_numpy(_abs_sums(x.contiguous().numpy(), d.contiguous().numpy(), w, s))
