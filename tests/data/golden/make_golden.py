"""Regenerate the golden input (per_layer.csv) and expected output (knowledge_map.json); see README.md.

    .venv/bin/python tests/data/golden/make_golden.py

Independent of medinterp.maps on purpose: the raw curves below are designed by hand, the expected
intervals, consensus and missing list are typed in by hand (derived in README.md), and the expected
smoothed curves come from an explicit Gaussian kernel with edge replication written out here (not
scipy), so the test compares the library against a second implementation.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = 12  # n_layers: read-outs 0..12
MODEL = "golden"


def const(v, lo=0, hi=N):
    return {layer: v for layer in range(lo, hi + 1)}


def with_(base: dict, **at) -> dict:
    """``base`` with some layers replaced: with_(const(0), L3=1.0)."""
    out = dict(base)
    for key, v in at.items():
        out[int(key[1:])] = v
    return out


# -- raw curves: (domain, method, labeling, metric) -> {layer: value} --------------------------------------
CURVES = {
    # age: the R² plateau 4..6 (centre 5), the anisotropy pair 8,9; subsets and the gender silhouette are decoys
    ("age", "umap", "age/pooled", "r2_raw"): with_(const(0.2), L4=0.9, L5=0.9, L6=0.9),
    ("age", "umap", "age/pooled", "anisotropy"): with_(const(0.4), L8=0.9, L9=0.9),
    ("age", "umap", "age/female", "r2_raw"): with_(const(0.2), L10=0.99, L11=0.99, L12=0.99),
    ("age", "umap", "gender", "silhouette_umap"): with_(const(0.3), L0=0.0),
    ("age", "ablation", "all", "kl"): with_(const(0.2, 1), L5=2.0, L6=2.0),
    # symptoms: all four methods around layers 2..5
    ("symptoms", "umap", "system", "silhouette_umap"): with_(const(0.2), L0=0.0, L1=0.0, L2=0.0, L3=0.1),
    ("symptoms", "umap", "system", "silhouette_umap_null"): with_(const(0.0), L11=0.5, L12=0.5),
    ("symptoms", "saliency", "all", "grad_block"): with_(const(1.0, 1), L3=2.0, L4=3.0, L5=2.0),
    ("symptoms", "saliency", "all", "grad_embed"): {0: 50.0},
    ("symptoms", "saliency", "all", "grad_unembed"): {N + 1: 40.0},
    ("symptoms", "ablation", "all", "kl"): with_(const(0.1, 1), L3=1.0, L4=1.0),
    ("symptoms", "patching", "pairs", "p_resid_diff"): with_(const(0.0), L2=1.0, L3=1.0, L4=1.0),
    ("symptoms", "patching", "pairs", "p_resid_last"): {layer: layer / N for layer in range(N + 1)},
    # drugs: umap is the mean of mechanism and specialty; no patching run
    ("drugs", "umap", "mechanism", "silhouette_umap"): with_(const(0.2), **{f"L{i}": 0.0 for i in range(5)}, L5=0.1),
    ("drugs", "umap", "specialty", "silhouette_umap"): with_(const(0.4), **{f"L{i}": 0.0 for i in range(5)}, L5=0.2),
    ("drugs", "saliency", "all", "grad_block"): with_(const(1.0, 1), L2=2.0, L3=3.0, L4=2.0),
    ("drugs", "ablation", "all", "kl"): with_(const(0.1, 1), L9=1.0, L10=1.0),
    # dosage: patching early, umap late
    ("dosage", "patching", "pairs", "p_resid_diff"): with_(const(0.0), **{f"L{i}": 1.0 for i in range(6)}, L6=0.5),
    ("dosage", "umap", "frequency", "silhouette_umap"): with_(const(0.2), **{f"L{i}": 0.0 for i in range(9)}, L9=0.1),
    # progression: the stage/* labelings only; "disease" is a decoy with an early step
    ("progression", "umap", "stage/parkinsons", "silhouette_umap"): with_(const(0.2), **{f"L{i}": 0.0 for i in range(7)}, L7=0.1),
    ("progression", "umap", "stage/copd", "silhouette_umap"): with_(const(0.6), **{f"L{i}": 0.0 for i in range(7)}, L7=0.3),
    ("progression", "umap", "disease", "silhouette_umap"): with_(const(1.0), L0=0.0, L1=0.0),
}

# Findings rows (not map channels): (domain, labeling, metric) -> {layer: (value, ci_low, ci_high)}
FINDINGS = {
    ("age", "age/pooled", "discontinuity"): with_({l: (1.0, 0.7, 1.3) for l in range(N + 1)}, L5=(3.0, 2.2, 3.8)),
    ("age", "age/female", "discontinuity"): with_({l: (1.0, 0.6, 1.4) for l in range(N + 1)}, L5=(4.0, 3.0, 5.0)),
    ("age", "age/male", "discontinuity"): with_({l: (1.0, 0.6, 1.4) for l in range(N + 1)}, L5=(2.0, 1.2, 2.8)),
    ("age", "age/female-male", "discontinuity_diff"): with_({l: (0.0, -0.5, 0.5) for l in range(N + 1)}, L5=(2.0, 0.8, 3.2)),
    ("drugs", "specialty-mechanism", "silhouette_umap_diff"):
        {l: (v, v - 0.05, v + 0.05) for l, v in with_(const(0.2), **{f"L{i}": 0.0 for i in range(5)}, L5=0.1).items()},
    ("drugs", "all", "effective_rank"):
        {l: (v, v - 1, v + 1) for l, v in enumerate([10, 20, 30, 30, 30, 12, 10, 14, 25, 30, 30, 30, 30])},
    ("progression", "stage/parkinsons", "circular_corr"): with_({l: (0.2, 0.1, 0.3) for l in range(N + 1)}, L7=(0.9, 0.8, 0.95)),
    ("progression", "stage/parkinsons", "circular_corr_null"): {l: (0.1, 0.0, 0.3) for l in range(N + 1)},
    ("progression", "stage/parkinsons", "circular_r2_gain"): with_({l: (0.05, 0.0, 0.1) for l in range(N + 1)}, L7=(0.4, 0.3, 0.5)),
    ("progression", "stage/parkinsons", "circular_r2_gain_null"): {l: (0.02, 0.0, 0.1) for l in range(N + 1)},
    ("progression", "stage/parkinsons", "closure_ratio"): with_({l: (3.0, 2.5, 3.5) for l in range(N + 1)}, L7=(1.1, 0.9, 1.3)),
    ("progression", "stage/parkinsons", "closure_ratio_null"): {l: (3.0, 2.0, 4.0) for l in range(N + 1)},
    ("progression", "stage/copd", "circular_corr"): with_({l: (0.2, 0.1, 0.3) for l in range(N + 1)}, L3=(0.25, 0.15, 0.35)),
    ("progression", "stage/copd", "circular_corr_null"): {l: (0.1, 0.0, 0.3) for l in range(N + 1)},
}

BASELINES = [  # layer -1 rows: never map layers
    ("age", "umap", "age/pooled", "anisotropy_null", 0.37),
    ("symptoms", "umap", "system", "silhouette_surface", 0.9),
    ("symptoms", "saliency", "all", "loss", 2.5),
    ("symptoms", "patching", "pairs", "ld_clean", 3.0),
]


def write_csv(path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["model", "domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high", "n"])
        for (domain, method, labeling, metric), curve in CURVES.items():
            for layer, v in sorted(curve.items()):
                w.writerow([MODEL, domain, labeling, method, metric, layer, repr(float(v)), "", "", 40])
        for (domain, labeling, metric), curve in FINDINGS.items():
            for layer, (v, lo, hi) in sorted(curve.items()):
                w.writerow([MODEL, domain, labeling, "umap", metric, layer, repr(float(v)), repr(float(lo)), repr(float(hi)), 40])
        for domain, method, labeling, metric, v in BASELINES:
            w.writerow([MODEL, domain, labeling, method, metric, -1, repr(v), "", "", 40])


# -- the second smoothing implementation ------------------------------------------------------------------
def smooth(values: list[float], sigma: float = 1.0) -> list[float]:
    """s(l) = Σ_{|k| ≤ 4σ} w_k f(clamp(l − k)), w_k = exp(−k²/2σ²) / Σ_j exp(−j²/2σ²)."""
    radius = int(4 * sigma + 0.5)
    raw = [math.exp(-k * k / (2 * sigma * sigma)) for k in range(-radius, radius + 1)]
    w = [x / sum(raw) for x in raw]
    n = len(values)
    return [sum(w[k + radius] * values[min(max(i - k, 0), n - 1)] for k in range(-radius, radius + 1)) for i in range(n)]


def by_layer(curve: dict[int, float], values: list[float] | None = None) -> list[float | None]:
    first = min(curve)
    vals = values if values is not None else [curve[layer] for layer in sorted(curve)]
    return [None] * first + list(vals) + [None] * (N - first - len(vals) + 1)


def mean_of(*curves: dict[int, float]) -> dict[int, float]:
    return {layer: sum(c[layer] for c in curves) / len(curves) for layer in curves[0]}


def channel(curve, metric, rule, intervals, labelings, **extra):
    values = [curve[layer] for layer in sorted(curve)]
    return {"metric": metric, "rule": rule, "intervals": intervals, "curve": by_layer(curve, smooth(values)),
            "raw": by_layer(curve), "labelings": labelings, **extra, "source": "per_layer.csv"}


def expected() -> dict:
    C = CURVES
    r2, aniso = C[("age", "umap", "age/pooled", "r2_raw")], C[("age", "umap", "age/pooled", "anisotropy")]
    age_umap = channel(r2, "r2_raw", "age", [[5, 5], [8, 9]], ["age/pooled"], r2_intervals=[[5, 5]])
    age_umap["anisotropy"] = {"metric": "anisotropy", "intervals": [[8, 9]],
                              "curve": by_layer(aniso, smooth([aniso[l] for l in sorted(aniso)])), "raw": by_layer(aniso)}
    age_umap["source"] = age_umap.pop("source")  # keep key order readable
    domains = {
        "age": {"umap": age_umap,
                "ablation": channel(C[("age", "ablation", "all", "kl")], "kl", "segments", [[5, 6]], ["all"]),
                "consensus": [[5, 5]]},
        "symptoms": {
            "umap": channel(C[("symptoms", "umap", "system", "silhouette_umap")], "silhouette_umap", "window", [[2, 4]], ["system"]),
            "saliency": channel(C[("symptoms", "saliency", "all", "grad_block")], "grad_block", "segments", [[3, 5]], ["all"]),
            "ablation": channel(C[("symptoms", "ablation", "all", "kl")], "kl", "segments", [[3, 4]], ["all"]),
            "patching": channel(C[("symptoms", "patching", "pairs", "p_resid_diff")], "p_resid_diff", "segments", [[2, 4]], ["pairs"]),
            "consensus": [[2, 4]]},
        "progression": {
            "umap": channel(mean_of(C[("progression", "umap", "stage/parkinsons", "silhouette_umap")],
                                    C[("progression", "umap", "stage/copd", "silhouette_umap")]),
                            "silhouette_umap", "window", [[6, 8]], ["stage/copd", "stage/parkinsons"]),
            "consensus": []},
        "drugs": {
            "umap": channel(mean_of(C[("drugs", "umap", "mechanism", "silhouette_umap")],
                                    C[("drugs", "umap", "specialty", "silhouette_umap")]),
                            "silhouette_umap", "window", [[4, 6]], ["mechanism", "specialty"]),
            "saliency": channel(C[("drugs", "saliency", "all", "grad_block")], "grad_block", "segments", [[2, 4]], ["all"]),
            "ablation": channel(C[("drugs", "ablation", "all", "kl")], "kl", "segments", [[9, 10]], ["all"]),
            "consensus": [[4, 4]]},
        "dosage": {
            "umap": channel(C[("dosage", "umap", "frequency", "silhouette_umap")], "silhouette_umap", "window", [[8, 10]], ["frequency"]),
            "patching": channel(C[("dosage", "patching", "pairs", "p_resid_diff")], "p_resid_diff", "segments", [[0, 2]], ["pairs"]),
            "consensus": []},
    }
    absent = [("age", "saliency"), ("age", "patching"), ("disease", "umap"), ("disease", "saliency"),
              ("disease", "ablation"), ("disease", "patching"), ("progression", "saliency"),
              ("progression", "ablation"), ("progression", "patching"), ("drugs", "patching"),
              ("dosage", "saliency"), ("dosage", "ablation")]
    return {"model": MODEL, "n_layers": N, "domains": domains,
            "missing": [{"domain": d, "method": m, "reason": "no rows"} for d, m in absent]}


if __name__ == "__main__":
    write_csv(HERE / "per_layer.csv")
    (HERE / "knowledge_map.json").write_text(json.dumps(expected(), indent=2) + "\n")
    print("wrote", HERE / "per_layer.csv", "and", HERE / "knowledge_map.json")
