"""The validity score: does an intervention at a map's layers do more than at depth-matched random layers?

For one domain, lane and intervention, with ``e_map`` the effect at the map's blocks and ``e_1..e_R`` the
effects at R random draws (:func:`medinterp.validity.draws.random_draws`), effects signed so that larger
means "these layers matter more" (an ablation's accuracy drop, a steering or LoRA gain):

    validity = (e_map - mean(e_r)) / sd(e_r)          (sd with ddof = 1; a z-score against the draws)
    beats    = #{r : e_map > e_r} / R  (+ half the ties)

``validity`` near 0 means the map's layers are no better than random ones of the same depth; > 2 means they
clearly are. Its CI resamples the draws (percentile bootstrap over the R random effects). A random draw
whose intervention broke the model (NaN effect: NaN logits) is left out and counted in ``n_broken``; a map
effect that is NaN gives a NaN score with the reason — never an average over broken runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.metrics.bootstrap import _boot_indices, _percentiles
from medinterp.validation import is_int


@dataclass(frozen=True)
class Validity:
    """A lane's validity: ``score`` with its CI over the random draws, ``beats`` (fraction of draws the map's
    effect exceeds), the draws' mean and sd, ``n_draws`` used, ``n_broken`` left out, and a note."""

    score: float
    ci_low: float
    ci_high: float
    beats: float
    random_mean: float
    random_sd: float
    n_draws: int
    n_broken: int
    note: str = ""

    def as_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def validity(map_effect: float, random_effects: Sequence[float], n_boot: int = 1000, seed: int = 0,
             alpha: float = 0.05) -> Validity:
    """The validity score of ``map_effect`` against ``random_effects`` (module docstring)."""
    if not is_int(n_boot) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1; got {n_boot!r}")
    r_all = np.asarray(random_effects, dtype=np.float64).ravel()
    r = r_all[np.isfinite(r_all)]
    broken = int(len(r_all) - len(r))
    notes = [f"{broken} random draws broke the model (NaN effect) and are left out"] if broken else []
    nan = np.nan
    if not np.isfinite(map_effect):
        notes.insert(0, "the intervention at the map's layers broke the model (NaN effect)")
        return Validity(nan, nan, nan, nan, _mean(r), _sd(r), len(r), broken, "; ".join(notes))
    beats = float(np.mean((map_effect > r) + 0.5 * (map_effect == r))) if len(r) else nan
    if len(r) < 2:
        notes.append(f"{len(r)} usable random draws: no spread to compare with")
        return Validity(nan, nan, nan, beats, _mean(r), nan, len(r), broken, "; ".join(notes))
    sd = _sd(r)
    if np.ptp(r) == 0:  # (not sd == 0: the sd of equal floats can round to 1e-17)
        notes.append("every random draw had the same effect (sd 0): the z-score is undefined")
        return Validity(nan, nan, nan, beats, _mean(r), sd, len(r), broken, "; ".join(notes))
    score = (map_effect - r.mean()) / sd
    reps = r[_boot_indices(len(r), n_boot, seed)]  # (n_boot, R)
    rep_sd = np.where(np.ptp(reps, axis=1) > 0, reps.std(axis=1, ddof=1), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rep_scores = (map_effect - reps.mean(axis=1)) / rep_sd
    rep_scores = rep_scores[np.isfinite(rep_scores)]  # a resample of identical draws has no sd: no z, left out
    lo, hi = _percentiles(rep_scores, alpha) if len(rep_scores) else (nan, nan)
    return Validity(float(score), lo, hi, beats, float(r.mean()), sd, len(r), broken, "; ".join(notes))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else np.nan


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) >= 2 else np.nan
