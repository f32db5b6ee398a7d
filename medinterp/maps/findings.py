"""The paper's four findings (methods.md §1.6), quantified from per_layer rows, each with a CI and a null.

- ``age_step``: the 17 → 18 ``discontinuity`` on ``age/pooled`` (null 1.0: a smooth ramp), its layer of
  maximum, the female and male values there, and the female − male difference ``discontinuity_diff``
  on ``age/female-male`` (null 0);
- ``progression_circularity``: per ``stage/<disease>``, ``circular_corr``, ``circular_r2_gain`` and
  ``closure_ratio`` at the disease's best layer, each against its ``<metric>_null`` row;
- ``drugs_specialty_vs_mechanism``: ``silhouette_umap_diff`` / ``silhouette_raw_diff`` on
  ``specialty-mechanism`` (specialty − mechanism, null 0): the layers whose CI excludes 0, and the sign;
- ``collapse``: per domain, ``effective_rank`` on ``all`` and the domain's silhouette curve: layers where
  the value drops below ``collapse_fraction`` × its running maximum and a later layer climbs back above.
- ``explained_by_spelling`` (the lexical confound): per domain and labeling with a spelling control
  (``silhouette_surface``, layer −1), the layers whose ``silhouette_umap`` / ``silhouette_raw`` row carries
  the note ``explained_by_spelling`` (the umap method sets it when the control reaches
  ``spelling_fraction`` of a positive silhouette; medinterp.metrics.surface.explained_by_spelling).
  ``drugs_specialty_vs_mechanism`` repeats, per difference metric, the flagged layers of each side.

Every finding carries ``stable``: whether its verdict (:func:`verdicts`) is the same in every setting
of a robustness sweep. One map has no sweep to compare with: ``stable`` is null and ``stable_note`` says
"no robustness sweep"; runners/summarize.py fills both in (medinterp.sweeps.findings_stability).

A finding whose metrics are absent (older runs) is ``{"available": false, "missing": [...]}``, never an
error. Layers are read-out indices; baseline rows (layer −1) are ignored except as nulls.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from medinterp.errors import MedinterpError
from medinterp.results import Row
from medinterp.validation import is_number

AGE_POOLED, AGE_SUBSETS, AGE_DIFF = "age/pooled", ("age/female", "age/male"), "age/female-male"
CIRCULAR = {"circular_corr": "higher", "circular_r2_gain": "higher", "closure_ratio": "lower"}  # more circular =
DRUGS_LABELING, DRUGS_METRICS = "specialty-mechanism", ("silhouette_umap_diff", "silhouette_raw_diff")
RANK_METRIC, RANK_LABELING = "effective_rank", "all"
SPELLING_FLAG, SPELLING_METRICS = "explained_by_spelling", ("silhouette_umap", "silhouette_raw")
FINDINGS = ("age_step", "progression_circularity", "drugs_specialty_vs_mechanism", "collapse", "explained_by_spelling")
NO_SWEEP = "no robustness sweep"


@dataclass(frozen=True)
class FindingsParams:
    """Settings of the findings (conf/synthesis/default.yaml, ``findings:``)."""

    discontinuity_null: float = 1.0      # the 17→18 step over the median step of a smooth ramp
    progression_best_by: str = "circular_corr"  # the metric whose best layer is reported per disease
    collapse_fraction: float = 0.5       # collapse: value < fraction × running maximum
    collapse_min_peak: float = 0.05      # ignore curves whose running maximum is below this (silhouettes ≈ 0)

    def __post_init__(self) -> None:
        if self.progression_best_by not in CIRCULAR:
            raise MedinterpError(f"The findings parameter 'progression_best_by' must be one of {sorted(CIRCULAR)}. "
                                 f"Got {self.progression_best_by!r} instead.")
        if not is_number(self.collapse_fraction) or not 0.0 < self.collapse_fraction < 1.0:
            raise MedinterpError("The findings parameter 'collapse_fraction' must be in (0, 1). "
                                 f"Got {self.collapse_fraction!r} instead.")
        if not is_number(self.collapse_min_peak) or not self.collapse_min_peak >= 0.0:
            raise MedinterpError("The findings parameter 'collapse_min_peak' must be >= 0. "
                                 f"Got {self.collapse_min_peak!r} instead.")


# -- series ------------------------------------------------------------------------------------------
def _point(r: Row) -> dict[str, Any]:
    nan = lambda v: None if math.isnan(v) else float(v)  # noqa: E731  (JSON has no NaN)
    return {"layer": r.layer, "value": nan(r.value), "ci_low": nan(r.ci_low), "ci_high": nan(r.ci_high), "n": r.n}


def series(rows: Sequence[Row], labeling: str, metric: str) -> list[dict[str, Any]]:
    """Points (layer, value, ci_low, ci_high, n) of one labeling's metric, layers ≥ 0, by layer."""
    return sorted((_point(r) for r in rows if r.labeling == labeling and r.metric == metric and r.layer >= 0
                   and math.isfinite(r.value)), key=lambda p: p["layer"])


def _at(points: Sequence[dict[str, Any]], layer: int) -> dict[str, Any] | None:
    return next((p for p in points if p["layer"] == layer), None)


def _excludes(p: Mapping[str, Any], null: float) -> bool | None:
    """True when the point's CI lies entirely on one side of ``null``; None without a CI."""
    if p["ci_low"] is None or p["ci_high"] is None:
        return None
    return p["ci_low"] > null or p["ci_high"] < null


def _not_available(*missing: str) -> dict[str, Any]:
    return {"available": False, "missing": list(missing)}


# -- 1. age 17 → 18 ----------------------------------------------------------------------------------
def age_step(rows: Sequence[Row], params: FindingsParams = FindingsParams()) -> dict[str, Any]:
    """The layer of the largest pooled 17→18 step, its value and CI against the null, and the gender gap."""
    pooled = series(rows, AGE_POOLED, "discontinuity")
    if not pooled:
        return _not_available(f"discontinuity on {AGE_POOLED}")
    peak = max(pooled, key=lambda p: p["value"])
    subsets = {lab: series(rows, lab, "discontinuity") for lab in AGE_SUBSETS}
    out = {"available": True, "metric": "discontinuity", "null": params.discontinuity_null,
           "peak": {**peak, "excludes_null": _excludes(peak, params.discontinuity_null)},
           "at_peak": {lab: _at(s, peak["layer"]) for lab, s in subsets.items()},
           "series": {AGE_POOLED: pooled, **subsets},
           "missing": [f"discontinuity on {lab}" for lab, s in subsets.items() if not s]}
    diff = series(rows, AGE_DIFF, "discontinuity_diff")
    if not diff:
        out["gender_difference"] = _not_available(f"discontinuity_diff on {AGE_DIFF}")
    else:
        out["gender_difference"] = {
            "available": True, "metric": "discontinuity_diff", "labeling": AGE_DIFF, "null": 0.0,
            "at_peak": _at(diff, peak["layer"]),
            "layers_excluding_null": [p["layer"] for p in diff if _excludes(p, 0.0)], "series": diff}
    return out


# -- 2. progression circularity ----------------------------------------------------------------------
def _beats_null(value: float, null: dict[str, Any] | None, direction: str) -> bool | None:
    """Is ``value`` more circular than the null's band (its mean where it has no band)?"""
    if null is None:
        return None
    if direction == "higher":
        edge = null["ci_high"] if null["ci_high"] is not None else null["value"]
        return value > edge
    edge = null["ci_low"] if null["ci_low"] is not None else null["value"]
    return value < edge


def progression_circularity(rows: Sequence[Row], params: FindingsParams = FindingsParams()) -> dict[str, Any]:
    """Per disease (labeling ``stage/<disease>``): the best layer by ``progression_best_by`` and every
    circularity metric there, each with its CI, its null at that layer, and whether it beats the null."""
    labelings = sorted({r.labeling for r in rows if r.labeling.startswith("stage/") and r.metric in CIRCULAR})
    if not labelings:
        return _not_available(*(f"{m} on stage/<disease>" for m in CIRCULAR))
    by = params.progression_best_by
    diseases: dict[str, Any] = {}
    for lab in labelings:
        best_series = series(rows, lab, by)
        entry: dict[str, Any] = {"labeling": lab, "best_by": by, "missing": []}
        if not best_series:
            entry.update(best_layer=None, missing=[f"{by} on {lab}"])
            diseases[lab.split("/", 1)[1]] = entry
            continue
        pick = max if CIRCULAR[by] == "higher" else min
        layer = pick(best_series, key=lambda p: p["value"])["layer"]
        entry["best_layer"] = layer
        for metric, direction in CIRCULAR.items():
            s, null_s = series(rows, lab, metric), series(rows, lab, f"{metric}_null")
            point = _at(s, layer)
            if point is None:
                entry["missing"].append(f"{metric} on {lab}")
                continue
            null = _at(null_s, layer)
            if null is None:
                entry["missing"].append(f"{metric}_null on {lab}")
            entry[metric] = {**point, "more_circular_when": direction, "null": null,
                             "beats_null": _beats_null(point["value"], null, direction),
                             "series": s, "null_series": null_s}
        diseases[lab.split("/", 1)[1]] = entry
    return {"available": True, "diseases": diseases}


# -- 3. drugs: specialty vs mechanism ----------------------------------------------------------------
def specialty_vs_mechanism(rows: Sequence[Row]) -> dict[str, Any]:
    """Per difference metric: the layers whose CI excludes 0, split by sign, and the overall verdict."""
    found: dict[str, Any] = {}
    missing = []
    for metric in DRUGS_METRICS:
        s = series(rows, DRUGS_LABELING, metric)
        if not s:
            missing.append(f"{metric} on {DRUGS_LABELING}")
            continue
        pos = [p["layer"] for p in s if p["ci_low"] is not None and p["ci_low"] > 0]
        neg = [p["layer"] for p in s if p["ci_high"] is not None and p["ci_high"] < 0]
        sign = ("specialty > mechanism" if pos and not neg else "mechanism > specialty" if neg and not pos
                else "mixed" if pos else "none")
        space = metric.removesuffix("_diff")
        spelled = {side: _flagged_layers(rows, side, space) for side in DRUGS_LABELING.split("-")}
        found[metric] = {"null": 0.0, "layers_excluding_null": sorted(pos + neg), "specialty_higher": pos,
                         "mechanism_higher": neg, "sign": sign, "peak": max(s, key=lambda p: abs(p["value"])),
                         "series": s, "explained_by_spelling": spelled}
    if DRUGS_METRICS[0] not in found:
        return _not_available(*missing)
    return {"available": True, "labeling": DRUGS_LABELING, "difference": "specialty - mechanism",
            "metrics": found, "missing": missing}


# -- 4. activation collapse --------------------------------------------------------------------------
def collapse_episodes(values: Sequence[float | None], fraction: float = 0.5, min_peak: float = 0.0) -> dict[str, Any]:
    """Collapses of a per-layer curve (``values[l]`` at layer l; None = no value there).

    Scanning layers in order with the running maximum M(l) = max of values up to l: a collapse starts
    at the first layer with v < fraction · M while M ≥ ``min_peak``; it ends (recovers) at the first
    later layer with v > fraction · M(start) (the threshold is frozen at the start). A drop that never
    recovers is not a collapse; it is returned as ``unrecovered``. Scanning resumes after a recovery.
    """
    episodes, unrecovered = [], None
    best, best_layer, start = -math.inf, None, None
    for layer, v in enumerate(values):
        if v is None or not math.isfinite(v):
            continue
        if start is None:
            if v > best:
                best, best_layer = v, layer
            elif best >= min_peak and v < fraction * best:
                start = {"collapse_layer": layer, "reference_layer": best_layer, "reference": best,
                         "threshold": fraction * best, "trough_layer": layer, "trough": v}
        elif v > start["threshold"]:
            episodes.append({**start, "recovery_layer": layer})
            start = None
            if v > best:
                best, best_layer = v, layer
        elif v < start["trough"]:
            start.update(trough_layer=layer, trough=v)
    if start is not None:
        unrecovered = start
    return {"episodes": episodes, "unrecovered": unrecovered}


def collapse(rows: Sequence[Row], silhouettes: Mapping[str, Sequence[float | None]],
             params: FindingsParams = FindingsParams()) -> dict[str, Any]:
    """Collapse episodes of each domain's ``effective_rank`` (labeling ``all``) and silhouette curve.

    ``silhouettes`` maps a domain to its raw mean silhouette curve by layer (the knowledge map's
    ``umap`` ``raw`` curve). Effective-rank episodes carry the CIs at the reference and trough layers,
    and ``ci_confirms``: the trough's upper CI is below the threshold (None without CIs).
    """
    by_domain: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.metric == RANK_METRIC and r.labeling == RANK_LABELING:
            by_domain[r.domain].append(r)
    curves: dict[str, Any] = {}
    for domain, rs in sorted(by_domain.items()):
        s = series(rs, RANK_LABELING, RANK_METRIC)
        values: list[float | None] = [None] * (max(p["layer"] for p in s) + 1)
        for p in s:
            values[p["layer"]] = p["value"]
        found = collapse_episodes(values, params.collapse_fraction, params.collapse_min_peak)
        for ep in found["episodes"]:
            ep["reference_point"], ep["trough_point"] = _at(s, ep["reference_layer"]), _at(s, ep["trough_layer"])
            hi = ep["trough_point"]["ci_high"]
            ep["ci_confirms"] = None if hi is None else hi < ep["threshold"]
        curves[f"{domain}/{RANK_METRIC}"] = {**found, "series": s}
    for domain, values in sorted(silhouettes.items()):
        curves[f"{domain}/silhouette"] = {**collapse_episodes(values, params.collapse_fraction, params.collapse_min_peak),
                                          "values": list(values)}
    if not curves:
        return _not_available(f"{RANK_METRIC} on {RANK_LABELING}", "silhouette curves")
    missing = [] if by_domain else [f"{RANK_METRIC} on {RANK_LABELING}"]
    return {"available": True, "fraction": params.collapse_fraction, "null": "no drop below fraction x running max",
            "curves": curves, "any_collapse": sorted(k for k, c in curves.items() if c["episodes"]), "missing": missing}


# -- 5. lexical confound -----------------------------------------------------------------------------
def _flagged_layers(rows: Sequence[Row], labeling: str, metric: str, domain: str | None = None) -> list[int]:
    return sorted(r.layer for r in rows if r.labeling == labeling and r.metric == metric and r.layer >= 0
                  and SPELLING_FLAG in r.note and (domain is None or r.domain == domain))


def spelling_confound(rows: Sequence[Row]) -> dict[str, Any]:
    """Per ``<domain>/<labeling>`` with a spelling control: the control, and per silhouette metric the
    layers whose clustering is explained by spelling (their rows' note); ``any``: the labelings with one."""
    surface = {(r.domain, r.labeling): r for r in rows if r.metric == "silhouette_surface" and r.layer < 0}
    if not surface:
        return _not_available("silhouette_surface")
    labelings = {}
    for (domain, labeling), r in sorted(surface.items()):
        labelings[f"{domain}/{labeling}"] = {"surface": _point(r), **{
            m: _flagged_layers(rows, labeling, m, domain) for m in SPELLING_METRICS}}
    return {"available": True, "rule": "surface > 0, silhouette > 0 and surface >= spelling_fraction x silhouette",
            "labelings": labelings,
            "any": [k for k, e in labelings.items() if any(e[m] for m in SPELLING_METRICS)]}


# -- verdicts (what a robustness sweep compares) -----------------------------------------------------
def _sign(value: float | None, null: float) -> str:
    return "none" if value is None else "+" if value > null else "-" if value < null else "0"


def verdicts(found: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """{finding: {claim: verdict}}: the sign of each claim of a findings dict, as plain strings.

    A robustness sweep calls a finding *stable* when every claim has the same verdict in every setting.
    age_step: the peak's side of the null where its CI excludes it (``+``/``-``), else ``none``; the
    female − male difference at the peak likewise. progression: per disease and metric, beats the null
    or not. drugs: per difference metric, its ``sign``. collapse: per curve, whether it collapses.
    explained_by_spelling: per labeling, whether any layer is flagged. An unavailable finding: ``{}``.
    """
    out: dict[str, dict[str, str]] = {k: {} for k in FINDINGS}
    f = found.get("age_step") or {}
    if f.get("available"):
        peak = f["peak"]
        out["age_step"]["peak"] = _sign(peak["value"], f["null"]) if peak.get("excludes_null") else "none"
        g = f.get("gender_difference") or {}
        if g.get("available") and g.get("at_peak"):
            p = g["at_peak"]
            out["age_step"]["female-male"] = _sign(p["value"], 0.0) if _excludes(p, 0.0) else "none"
    f = found.get("progression_circularity") or {}
    if f.get("available"):
        for disease, d in f["diseases"].items():
            for metric in CIRCULAR:
                if isinstance(d.get(metric), dict):
                    out["progression_circularity"][f"{disease}/{metric}"] = str(d[metric].get("beats_null"))
    f = found.get("drugs_specialty_vs_mechanism") or {}
    if f.get("available"):
        out["drugs_specialty_vs_mechanism"] = {m: e["sign"] for m, e in f["metrics"].items()}
    f = found.get("collapse") or {}
    if f.get("available"):
        out["collapse"] = {c: str(bool(e["episodes"])) for c, e in f["curves"].items()}
    f = found.get("explained_by_spelling") or {}
    if f.get("available"):
        out["explained_by_spelling"] = {k: str(k in f["any"]) for k in f["labelings"]}
    return out


# -- all ---------------------------------------------------------------------------------------------
def findings(rows: Sequence[Row], silhouettes: Mapping[str, Sequence[float | None]] | None = None,
             params: FindingsParams = FindingsParams()) -> dict[str, Any]:
    """The five findings of one model's rows (see the module docstring)."""
    models = {r.model for r in rows}
    if len(models) > 1:
        raise MedinterpError(f"findings needs the rows of one model; got {sorted(models)}")
    out = {"model": next(iter(models), None), "params": asdict(params),
           "age_step": age_step(rows, params),
           "progression_circularity": progression_circularity(rows, params),
           "drugs_specialty_vs_mechanism": specialty_vs_mechanism(rows),
           "collapse": collapse(rows, silhouettes or {}, params),
           "explained_by_spelling": spelling_confound(rows)}
    for key in FINDINGS:  # one map: nothing to compare with (a sweep summary fills these in)
        out[key].update(stable=None, stable_note=NO_SWEEP, disagreeing_settings=[])
    return out
