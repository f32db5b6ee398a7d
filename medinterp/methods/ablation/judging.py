"""Judge scoring of the lesioned answers: coverage per block and agreement with KL.

A block's ``judge_coverage`` is the fraction of the items *sent* to the judge that got a valid verdict
(see :mod:`medinterp.methods.ablation`); ``judge_agreement`` is the Spearman correlation across
prompts between KL and the judge's score.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.judges import Verdict
from medinterp.metrics import Estimate


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Spearman's rho over the pairs where both are finite (``scipy.stats.spearmanr``), and the pair count.

    NaN when fewer than 3 pairs or either side is constant.
    """
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x[ok], y[ok]).statistic), n


def constant(value: float, n: int) -> Estimate:
    """A value without a confidence interval (counts, fractions, correlations)."""
    return Estimate(float(value), math.nan, math.nan, int(n))


def unsent_note(n: int) -> str:
    """The note of a block none of whose items was sent to the judge."""
    return f"no item sent to the judge: all {n} lesioned answers equal the intact ones"


@dataclass(frozen=True)
class JudgeCoverage:
    """Per block: the items sent to the judge (``asked``: not settled unsent) and those it answered."""

    layers: np.ndarray  # (K,) read-out layers (block + 1)
    sent: np.ndarray  # (K,) int
    answered: np.ndarray  # (K,) int

    @property
    def fraction(self) -> np.ndarray:
        """answered / sent per block; 1 where nothing was sent (nothing went unanswered)."""
        return np.where(self.sent > 0, self.answered / np.maximum(self.sent, 1), 1.0)

    def withheld(self, threshold: float) -> np.ndarray:
        """Per block: True where items were sent and the judge answered less than ``threshold`` of them."""
        return (self.sent > 0) & (self.fraction < threshold)

    @classmethod
    def of(cls, verdicts: Sequence[Verdict], blocks: Sequence[int], n: int) -> JudgeCoverage:
        """From block-major verdicts (block k's ``n`` items at ``k*n .. k*n + n - 1``)."""
        asked = np.array([v.asked for v in verdicts], dtype=bool).reshape(len(blocks), n)
        ok = np.array([not v.missing for v in verdicts], dtype=bool).reshape(len(blocks), n)
        return cls(np.asarray(blocks) + 1, asked.sum(1), (asked & ok).sum(1))
