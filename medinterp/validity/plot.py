"""validity.png: per lane, the effect at the map's blocks against the random draws and the baselines."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def validity_figure(result: Mapping[str, Any]):
    """One row per lane (and variant): random draws as grey dots, baselines as open markers, the map's effect
    as a red diamond with its CI over items; the validity score in the label. Broken (NaN) effects are not drawn
    and the label says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lanes = [e for e in result["lanes"] if e.get("blocks")]
    fig, ax = plt.subplots(figsize=(7, 0.55 * max(len(lanes), 1) + 1.2))
    markers = {"first_n": "^", "last_n": "v", "complement": "s"}
    labels = []
    for y, e in enumerate(lanes):
        rnd = np.array([r["effect"] for r in e["random"]], dtype=float)
        ax.scatter(rnd[np.isfinite(rnd)], np.full(np.isfinite(rnd).sum(), y), s=14, color="0.6", zorder=2)
        for name, b in e["baselines"].items():
            if np.isfinite(b["effect"]):
                ax.scatter([b["effect"]], [y], marker=markers.get(name, "o"), facecolors="none", edgecolors="C0",
                           zorder=3, label=name if y == 0 else None)
        eff = e["effect"]
        if np.isfinite(eff["value"]):
            ax.errorbar([eff["value"]], [y], xerr=[[eff["value"] - eff["ci_low"]], [eff["ci_high"] - eff["value"]]],
                        fmt="D", color="C3", zorder=4, label="map's blocks" if y == 0 else None)
        v = e["validity"]["score"]
        tag = f"{e['lane']}{' ' + e['variant'] if e.get('variant') else ''}"
        labels.append(f"{tag}  z={v:.1f}" if np.isfinite(v) else f"{tag}  z=n/a")
    ax.set_yticks(range(len(lanes)), labels)
    ax.axvline(0, color="0.8", lw=0.8, zorder=1)
    ax.set_xlabel("effect on the probe's accuracy (drop for ablation/mean, gain for steer/lora)")
    ax.set_title(f"{result['model']} · {result['domain']} · {result['intervention']}: map layers vs random "
                 f"depth-matched layers")
    if lanes:
        ax.legend(loc="best", fontsize=7)
    return fig
