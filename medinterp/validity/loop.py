"""The closed loop: an intervention at a lane's blocks vs the same intervention at other blocks.

For one domain and one lane (:class:`medinterp.validity.lanes.Lane`), the intervention runs at the lane's
blocks, at ``n_draws`` depth-matched random sets (:func:`medinterp.validity.draws.random_draws`) and at the
baselines (first N, last N, complement). After each, ``evaluate()`` scores every probe: a mapping
probe name → per-item scores (1/0 correct, NaN where the intervened model gave no finite log-probs).
The effect on a probe is ``sign · (mean score intervened − mean score intact)`` over its finite items,
``sign = -1`` for interventions that remove (an accuracy drop is the effect) and ``+1`` for those that
add (steering, LoRA); effects on the lane's own domain give the validity score
(:func:`medinterp.validity.score.validity`), effects on the other probes are the damage. A set whose
evaluation has non-finite items is counted (``broken``), never averaged in: its effect is NaN.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from medinterp.metrics import mean_with_ci
from medinterp.validity.draws import baselines, random_draws
from medinterp.validity.lanes import Lane
from medinterp.validity.score import validity

Scores = Mapping[str, np.ndarray]  # probe name -> (n_items,) per-item score (1/0, NaN: broken)
Evaluate = Callable[[Sequence[str] | None, Sequence[int]], Scores]  # the named probes' scores (None: every probe)
# under an intervention at the given blocks (an evaluator may skip recomputing the blocks below them)
Intervene = Callable[[tuple[int, ...]], AbstractContextManager]


@dataclass
class SetResult:
    """One block set's outcome: per probe, the per-item scores, the effect (NaN when any item broke) and the
    broken item count."""

    blocks: tuple[int, ...]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    effects: dict[str, float] = field(default_factory=dict)
    broken: dict[str, int] = field(default_factory=dict)


def effect(intact: np.ndarray, intervened: np.ndarray, sign: float) -> tuple[float, int]:
    """``sign · (mean(intervened) − mean(intact))`` and the number of non-finite intervened items (the
    effect is NaN when there is any: a model that produced NaN log-probs is reported, not scored)."""
    broken = int((~np.isfinite(intervened)).sum())
    if broken:
        return float("nan"), broken
    return float(sign * (np.mean(intervened) - np.mean(intact))), 0


def run_set(blocks: tuple[int, ...], intact: Scores, evaluate: Evaluate, intervene: Intervene, sign: float,
            names: Sequence[str] | None = None, memo: dict | None = None) -> SetResult:
    """Evaluate the ``names`` probes (None: all) with the intervention at ``blocks`` (or take them from ``memo``)."""
    key = (blocks, None if names is None else tuple(names))
    if memo is not None and (key in memo or (blocks, None) in memo):
        return memo.get(key) or memo[(blocks, None)]
    with intervene(blocks):
        scores = evaluate(names, blocks)
    out = SetResult(blocks)
    for probe, values in scores.items():
        out.scores[probe] = np.asarray(values, dtype=float)
        out.effects[probe], out.broken[probe] = effect(intact[probe], out.scores[probe], sign)
    if memo is not None:
        memo[key] = out
    return out


def lane_validity(lane: Lane, domain: str, n_layers: int, intact: Scores, evaluate: Evaluate,
                  intervene: Intervene, sign: float, n_draws: int = 10, n_bands: int = 3, seed: int = 0,
                  n_boot: int = 1000, memo: dict | None = None) -> dict[str, Any]:
    """The lane's validity.json entry: blocks, the map's effect with a CI over the domain's items, every
    random draw's and baseline's effect, the validity score, and the damage on the other probes."""
    if not lane.blocks:
        return {"lane": lane.name, "blocks": [], "note": lane.note or "the lane selects no block"}
    draws = random_draws(lane.blocks, n_layers, n_draws, seed, n_bands)
    fixed = baselines(lane.blocks, n_layers)
    jobs = [("map", lane.blocks)] + [(k, v) for k, v in fixed.items()] + [(f"random_{i}", s) for i, s in enumerate(draws.sets)]
    memo = {} if memo is None else memo
    results = {name: run_set(blocks, intact, evaluate, intervene, sign, None if name == "map" else [domain], memo)
               for name, blocks in tqdm(jobs, desc=f"{domain}/{lane.name}", unit="set", leave=False)}
    mine = results["map"]
    random_effects = [results[f"random_{i}"].effects[domain] for i in range(len(draws.sets))]
    diffs = sign * (mine.scores[domain] - np.asarray(intact[domain], dtype=float))  # paired over items: the CI
    ci = mean_with_ci(diffs, seed=seed) if np.isfinite(diffs).all() and len(diffs) >= 2 else None
    v = validity(mine.effects[domain], random_effects, n_boot=n_boot, seed=seed)
    notes = [n for n in (lane.note, draws.note, v.note) if n]
    return {
        "lane": lane.name, "blocks": list(lane.blocks),
        "effect": {"value": mine.effects[domain], "ci_low": ci.ci_low if ci else float("nan"),
                   "ci_high": ci.ci_high if ci else float("nan"), "n": len(diffs), "broken": mine.broken[domain]},
        "random": [{"blocks": list(results[f"random_{i}"].blocks), "effect": random_effects[i],
                    "broken": results[f"random_{i}"].broken[domain]} for i in range(len(draws.sets))],
        "baselines": {k: {"blocks": list(v_), "effect": results[k].effects[domain]} for k, v_ in fixed.items()},
        "validity": v.as_dict(),
        "damage": {p: e for p, e in mine.effects.items() if p != domain},
        "note": "; ".join(notes),
    }
