"""The specificity view: a domain's per-layer curve relative to the non-medical control's (issue 11).

Saliency, ablation and patching curves are dominated by how much a layer matters for *any* text: in the
default Gemma map their lanes sit on layers 1-7 in every domain. The specificity view subtracts that part.
Each curve is z-scored over the layers both share (mean 0, sd 1), and the domain's minus the control's is
the specificity curve:

    spec(l) = (x_d(l) − mean_l x_d) / sd_l x_d  −  (x_c(l) − mean_l x_c) / sd_l x_c

Why a difference of z-scores and not a ratio x_d / x_c: the metrics have different units and signs across
methods (a KL in nats, a patching probability difference that can be negative, a gradient norm), a ratio is
undefined or explodes where the control is near 0 (late layers' KL), and z-scoring removes each curve's scale
so only its shape is compared. spec(l) > 0 where the layer matters more for the domain than its average does,
relative to how the layer matters for the control. The interval rules of the map then apply unchanged.

CI per layer: each curve's per-layer interval half-width h(l) (the mean over labelings of (ci_high −
ci_low) / 2 of its rows) is scaled by the same sd, and the two are combined as independent,
w(l) = sqrt((h_d / sd_d)² + (h_c / sd_c)²); the band is spec(l) ± w(l). The z-scoring's own mean and sd are
taken as fixed (they pool every layer, so their uncertainty is small next to one layer's).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SpecificityCurve:
    """The specificity on layers ``first..first+len−1``, with its per-layer half-width (NaN: no interval)."""

    first: int
    value: np.ndarray
    half_width: np.ndarray

    @property
    def last(self) -> int:
        return self.first + len(self.value) - 1


def specificity(domain: np.ndarray, domain_first: int, control: np.ndarray, control_first: int,
                domain_half: np.ndarray | None = None, control_half: np.ndarray | None = None
                ) -> SpecificityCurve | None:
    """The specificity of ``domain`` (values on layers ``domain_first..``) against ``control``; None when they
    share fewer than 2 layers or either is flat there (sd 0: no shape to compare)."""
    lo = max(domain_first, control_first)
    hi = min(domain_first + len(domain), control_first + len(control)) - 1
    if hi - lo + 1 < 2:
        return None
    d = np.asarray(domain, dtype=float)[lo - domain_first:hi - domain_first + 1]
    c = np.asarray(control, dtype=float)[lo - control_first:hi - control_first + 1]
    sd_d, sd_c = d.std(), c.std()
    if not (sd_d > 0 and sd_c > 0) or not (math.isfinite(sd_d) and math.isfinite(sd_c)):
        return None
    value = (d - d.mean()) / sd_d - (c - c.mean()) / sd_c

    def part(h, first, sd):
        if h is None:
            return np.full(len(value), np.nan)
        return np.asarray(h, dtype=float)[lo - first:hi - first + 1] / sd

    width = np.sqrt(part(domain_half, domain_first, sd_d) ** 2 + part(control_half, control_first, sd_c) ** 2)
    return SpecificityCurve(lo, value, width)


def _layers(intervals) -> set[int]:
    return {layer for a, b in intervals or () for layer in range(a, b + 1)}


def specificity_summary(kmap: Mapping[str, Any]) -> dict[str, Any]:
    """What the specificity view says about each lane of a knowledge map (``findings.json`` → ``specificity``).

    Per medical domain and method with a specificity view: the absolute lane, the specificity lane, the control's
    own lane of that method, ``generic_overlap`` = the Jaccard index of the absolute lane's layers with the
    control's (1: the lane is where the method points for any text), ``specific_layers`` = the read-outs whose
    specificity band lies above 0 (raw spec(l) − w(l) > 0: the layer matters more for the domain than for the
    control, beyond the CI), and ``verdict``: ``yes`` when there is such a layer, ``no`` when there is none.
    """
    lanes: dict[str, dict[str, Any]] = {}
    control = None
    for domain, entries in kmap["domains"].items():
        for method, e in entries.items():
            if not isinstance(e, Mapping) or "specificity" not in e:
                continue
            view = e["specificity"]
            control = view["control"]
            absolute = e.get("absolute_intervals", e["intervals"])
            base = kmap["domains"].get(control, {}).get(method, {})
            base_layers, abs_layers = _layers(base.get("intervals")), _layers(absolute)
            union = abs_layers | base_layers
            specific = [layer for layer, (v, w) in enumerate(zip(view["raw"], view["half_width"]))
                        if v is not None and w is not None and math.isfinite(v - w) and v - w > 0]
            lanes.setdefault(domain, {})[method] = {
                "absolute": absolute, "specificity": view["intervals"], "control_lane": base.get("intervals", []),
                "generic_overlap": len(abs_layers & base_layers) / len(union) if union else None,
                "specific_layers": specific, "verdict": "yes" if specific else "no",
                "view": e.get("view", "absolute" if kmap.get("params", {}).get("contrast") is None else "specificity")}
    if not lanes:
        return {"available": False, "missing": ["a control run (domain=control) of saliency, ablation or patching"]}
    return {"available": True, "control": control,
            "rule": "specific layer: spec(l) - w(l) > 0 (z-scored domain minus control, its 95 % band above 0)",
            "lanes": lanes}
