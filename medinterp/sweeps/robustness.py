"""Robustness of a knowledge map over a sweep: how far the best layer and the selected layers move.

Per model × domain × method (and ``consensus``), over the settings whose map has that channel
(grouped as in :mod:`medinterp.sweeps.stability`: ``all``, and per value of each varied key):

- ``best_layers``: per setting, the layer where the channel's smoothed curve peaks
  (:func:`~medinterp.sweeps.selection.best_layer`; none for the consensus);
- ``modal_best_layer``: the most frequent best layer (the smallest on ties); ``best_layer_range`` (max − min)
  and ``best_layer_std`` (population SD) of the best layers; ``fraction_within_1``: the fraction of settings
  whose best layer is within ±1 layer of the modal one;
- ``jaccard_mean`` / ``jaccard_min``: the mean / smallest Jaccard index |A ∩ B| / |A ∪ B| of the selected
  layer sets over all pairs of settings (1 = identical selections; two empty selections count as 1);
- ``core_layers``: layers selected in every setting; ``any_layers``: in at least one;
- ``raw_curve_identical``: every setting produced exactly the same unsmoothed curve, i.e. the varied keys
  do not reach this method (activation patching ignores templates and seeds; in a map-parameter sweep
  every raw curve is the same by construction).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from medinterp.sweeps.selection import CONSENSUS, best_layer, mean_pairwise_jaccard, method_entries, selected_layers
from medinterp.sweeps.stability import SettingMaps, groups, order

COLUMNS = ("model", "domain", "method", "group_by", "group", "n_settings", "best_layers", "modal_best_layer",
           "best_layer_range", "best_layer_std", "fraction_within_1", "jaccard_mean", "jaccard_min", "core_layers",
           "any_layers", "raw_curve_identical")


@dataclass(frozen=True)
class RobustnessRow:
    model: str
    domain: str
    method: str
    group_by: str
    group: str
    n_settings: int
    best_layers: tuple[int, ...]        # per setting, in setting order (empty for the consensus)
    modal_best_layer: int | None
    best_layer_range: float
    best_layer_std: float
    fraction_within_1: float
    jaccard_mean: float
    jaccard_min: float
    core_layers: tuple[int, ...]
    any_layers: tuple[int, ...]
    raw_curve_identical: bool | None   # None for the consensus (it has no curve)


def spread(best: Sequence[int]) -> tuple[int | None, float, float, float]:
    """(modal layer, range, population SD, fraction within ±1 of the mode) of best layers."""
    if not best:
        return None, math.nan, math.nan, math.nan
    counts = Counter(best)
    top = max(counts.values())
    mode = min(layer for layer, c in counts.items() if c == top)
    values = np.asarray(best, dtype=float)
    return mode, float(values.max() - values.min()), float(values.std()), float(np.mean(np.abs(values - mode) <= 1))


def robustness(setting_maps: SettingMaps) -> list[RobustnessRow]:
    """Every row of the module docstring, for every model found in ``setting_maps``."""
    settings = [s for s, _ in setting_maps]
    models = sorted({m for _, maps in setting_maps for m in maps})
    rows: list[RobustnessRow] = []
    for model in models:
        maps = {s.id: m[model] for s, m in setting_maps if model in m}
        selected = {i: selected_layers(kmap) for i, kmap in maps.items()}
        domains, methods, _ = order(list(maps.values()))
        for group_by, group, ids in groups(settings):
            if group_by == "setting":
                continue
            for domain in domains:
                for method in methods:
                    ids_ = [i for i in ids if i in maps and (domain, method) in selected[i]]
                    if not ids_:
                        continue
                    sets = [selected[i][(domain, method)] for i in ids_]
                    channels = [method_entries(maps[i]["domains"][domain]).get(method) for i in ids_]
                    best = [] if method == CONSENSUS else [b for c in channels if (b := best_layer(c)) is not None]
                    mode, range_, std, within = spread(best)
                    j_mean, j_min = mean_pairwise_jaccard(sets)
                    identical = None if method == CONSENSUS else all(c["raw"] == channels[0]["raw"] for c in channels)
                    rows.append(RobustnessRow(model, domain, method, group_by, group, len(ids_), tuple(best), mode,
                                              range_, std, within, j_mean, j_min,
                                              tuple(sorted(frozenset.intersection(*sets))),
                                              tuple(sorted(frozenset.union(*sets))), identical))
    return rows


def as_dicts(rows: Sequence[RobustnessRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (layer tuples as lists), for robustness.json."""
    return [{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(r).items()} for r in rows]


def as_csv_cells(row: RobustnessRow) -> dict[str, Any]:
    """One CSV line: layer lists space-separated, missing numbers empty."""
    out: dict[str, Any] = {}
    for k, v in asdict(row).items():
        if isinstance(v, tuple):
            v = " ".join(map(str, v))
        elif v is None or (isinstance(v, float) and math.isnan(v)):
            v = ""
        out[k] = v
    return out


def by_key(rows: Sequence[RobustnessRow]) -> Mapping[tuple[str, str, str, str, str], RobustnessRow]:
    """Index rows by (model, domain, method, group_by, group)."""
    return {(r.model, r.domain, r.method, r.group_by, r.group): r for r in rows}
