"""How far models agree on where each domain's knowledge sits, and which of the paper's findings hold in which.

Input: each model's knowledge map (medinterp.maps.synthesis.build_map) and findings (medinterp.maps.findings),
and its layer count. Per domain that at least two models mapped, and per channel (each method of the map,
and ``consensus``), for every pair of models:

- ``jaccard``: the interval Jaccard of their selected layers on relative depth
  (:func:`medinterp.atlas.depth.interval_jaccard` of :func:`~medinterp.atlas.depth.depth_intervals`): 1 = the
  same depths, 0 = disjoint, NaN = neither selected a layer;
- ``spearman``: Spearman's ρ of their raw per-layer curves (the map's ``raw``: the channel metric before
  smoothing) resampled to a common grid of relative depths, with a bootstrap CI over grid points; the
  consensus channel has no curve (null).

Findings (:func:`findings_table`): per model, one verdict per paper finding — ``yes``, ``no``, ``partial``
(some diseases only), or ``n/a`` (its metrics were not run) — with the value, 95 % CI, layer and depth it
rests on:

- ``specialty > mechanism``: the drugs' ``silhouette_umap_diff`` (specialty − mechanism) has layers whose CI
  is above 0 and none below (``yes``); the value shown is the largest |difference|;
- ``progression circularity``: per disease, ``circular_corr`` at its best layer beats the shuffled null; ``yes``
  when every disease with a null does, ``partial`` when some do (``n/a`` without nulls); the value shown is the
  best disease's;
- ``age step``: the pooled 17→18 ``discontinuity`` peak's CI lies above 1 (a smooth ramp);
- ``collapse``: some effective-rank or silhouette curve drops below half its running maximum and recovers
  (medinterp.maps.findings.collapse_episodes); the value shown is the first episode's trough.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medinterp.atlas import depth as dp

FINDING_NAMES = ("specialty > mechanism", "progression circularity", "age step", "collapse")
CONSENSUS = "consensus"


def _none(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v)


def _curve(values: Sequence[float | None], n_layers: int) -> list[float | None]:
    """The curve over read-outs 0..n_layers (cut or padded with None)."""
    v = list(values)[: n_layers + 1]
    return v + [None] * (n_layers + 1 - len(v))


def channel_pairs(entries: Mapping[str, Mapping[str, Any]], n_layers: Mapping[str, int], depths: np.ndarray,
                  channel: str) -> dict[str, Any]:
    """Agreement of one channel of one domain: each model's depth intervals, and every pair's Jaccard and ρ.

    ``entries``: model → that model's domain entry of its knowledge map (``{method: {...}, "consensus": [...]}``).
    """
    models = sorted(m for m, e in entries.items() if channel in e)
    intervals, resampled = {}, {}
    for m in models:
        e = entries[m][channel]
        ivs = e if channel == CONSENSUS else e["intervals"]
        intervals[m] = dp.depth_intervals(ivs, n_layers[m])
        if channel != CONSENSUS:
            resampled[m] = dp.resample(_curve(e["raw"], n_layers[m]), n_layers[m], depths)
    pairs = []
    for a, b in itertools.combinations(models, 2):
        pair: dict[str, Any] = {"a": a, "b": b, "jaccard": _none(dp.interval_jaccard(intervals[a], intervals[b]))}
        if channel != CONSENSUS:
            rho = dp.rank_correlation(resampled[a], resampled[b])
            pair["spearman"] = {"value": _none(rho.value), "ci_low": _none(rho.ci_low), "ci_high": _none(rho.ci_high),
                                "n": rho.n}
        else:
            pair["spearman"] = None
        pairs.append(pair)
    return {"models": models, "depth_intervals": {m: [list(iv) for iv in ivs] for m, ivs in intervals.items()},
            "pairs": pairs}


def domain_agreement(kmaps: Mapping[str, Mapping[str, Any]], n_layers: Mapping[str, int],
                     grid_points: int = dp.GRID_POINTS) -> dict[str, Any]:
    """Per domain mapped by ≥ 2 models, per channel: :func:`channel_pairs` (see the module docstring)."""
    depths = dp.grid(grid_points)
    domains = sorted({d for k in kmaps.values() for d in k["domains"]})
    out: dict[str, Any] = {}
    for domain in domains:
        entries = {m: k["domains"][domain] for m, k in kmaps.items() if domain in k["domains"]}
        if len(entries) < 2:
            continue
        channels = sorted({c for e in entries.values() for c in e if c != CONSENSUS}) + [CONSENSUS]
        found = {c: channel_pairs(entries, n_layers, depths, c) for c in channels}
        out[domain] = {"models": sorted(entries), "channels": {c: v for c, v in found.items() if len(v["models"]) >= 2}}
    return out


# -- findings ----------------------------------------------------------------------------------------
def _verdict(holds: str, point: Mapping[str, Any] | None, n_layers: int, detail: str) -> dict[str, Any]:
    p = point or {}
    layer = p.get("layer")
    return {"holds": holds, "value": _none(p.get("value")), "ci_low": _none(p.get("ci_low")),
            "ci_high": _none(p.get("ci_high")), "layer": layer,
            "depth": None if layer is None else layer / n_layers, "detail": detail}


def _na(f: Mapping[str, Any] | None, n_layers: int) -> dict[str, Any]:
    missing = ", ".join((f or {}).get("missing", [])) or "not run"
    return _verdict("n/a", None, n_layers, f"missing: {missing}")


def _drugs(f: Mapping[str, Any], n: int) -> dict[str, Any]:
    if not f.get("available"):
        return _na(f, n)
    m = f["metrics"]["silhouette_umap_diff"]
    holds = {"specialty > mechanism": "yes", "mixed": "partial"}.get(m["sign"], "no")
    where = m["specialty_higher"]
    return _verdict(holds, m["peak"], n, f"{m['sign']}; specialty CI above 0 at layers {where or 'none'}")


def _progression(f: Mapping[str, Any], n: int) -> dict[str, Any]:
    if not f.get("available"):
        return _na(f, n)
    rated = {d: e["circular_corr"] for d, e in f["diseases"].items()
             if isinstance(e.get("circular_corr"), dict) and e["circular_corr"].get("beats_null") is not None}
    beats = sorted(d for d, c in rated.items() if c["beats_null"])
    if not rated:
        return _na({"missing": ["circular_corr with its circular_corr_null at a best layer"]}, n)
    holds = "yes" if len(beats) == len(rated) else "partial" if beats else "no"
    best = max(rated.values(), key=lambda c: c["value"])
    return _verdict(holds, best, n, f"{len(beats)} of {len(rated)} diseases beat the null ({', '.join(beats) or 'none'})")


def _age(f: Mapping[str, Any], n: int) -> dict[str, Any]:
    if not f.get("available"):
        return _na(f, n)
    peak = f["peak"]
    above = peak.get("excludes_null") and peak["value"] > f["null"]
    ci = "no CI" if peak.get("excludes_null") is None else "CI above the null" if above else "CI reaches the null"
    return _verdict("yes" if above else "no", peak, n, f"17→18 step / median step, null {f['null']:g}; {ci}")


def _collapse(f: Mapping[str, Any], n: int) -> dict[str, Any]:
    if not f.get("available"):
        return _na(f, n)
    hits = f["any_collapse"]
    if not hits:
        return _verdict("no", None, n, f"no curve collapses ({len(f['curves'])} checked)")
    ep = f["curves"][hits[0]]["episodes"][0]
    point = {"layer": ep["trough_layer"], "value": ep["trough"]}
    return _verdict("yes", point, n, f"collapses: {', '.join(hits)}")


def findings_table(findings_by_model: Mapping[str, Mapping[str, Any]], n_layers: Mapping[str, int]) -> dict[str, Any]:
    """{"models": [...], "rows": [{"finding": name, <model>: verdict, ...}]} (see the module docstring)."""
    makers = {"specialty > mechanism": ("drugs_specialty_vs_mechanism", _drugs),
              "progression circularity": ("progression_circularity", _progression),
              "age step": ("age_step", _age), "collapse": ("collapse", _collapse)}
    models = sorted(findings_by_model)
    rows = []
    for name in FINDING_NAMES:
        key, make = makers[name]
        rows.append({"finding": name, **{m: make(findings_by_model[m].get(key) or {}, n_layers[m]) for m in models}})
    return {"models": models, "rows": rows}


def summary_score(domains: Mapping[str, Any], channel: str = CONSENSUS) -> float:
    """The mean pairwise interval Jaccard of ``channel`` over domains (NaN when none): what a sweep optimises."""
    values = [p["jaccard"] for d in domains.values() for p in d["channels"].get(channel, {}).get("pairs", [])
              if p["jaccard"] is not None]
    return float(np.mean(values)) if values else float("nan")
