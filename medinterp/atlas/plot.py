"""``atlas.png``: the models' knowledge maps stacked on a relative-depth axis, one panel per domain.

In each domain's panel every model has one row of thin method lanes (the knowledge map's lanes, in the
method's colour): its selected intervals as solid bars at their depths (medinterp.atlas.depth.depth_intervals),
its raw curve scaled to the lane as a faint line, and its consensus layers outlined in black. A model that
did not map the domain shows a hatched row. x = layer / n_layers: 0 = embeddings, 1 = the last block.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from medinterp.atlas.depth import depth_intervals  # noqa: E402
from medinterp.maps.plot import method_colours  # noqa: E402


def atlas_figure(kmaps: Mapping[str, Mapping[str, Any]], n_layers: Mapping[str, int], domains: Sequence[str],
                 methods: Sequence[str]) -> Figure:
    """One panel per domain (rows: models, lanes: methods) on relative depth; see the module docstring."""
    models = sorted(kmaps)
    colours = method_colours(methods)
    lane = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(len(domains), 1, squeeze=False,
                             figsize=(10, 0.3 + sum(0.55 * len(models) + 0.5 for _ in domains)))
    for ax, domain in zip(axes[:, 0], domains):
        for row, model in enumerate(models):
            n = n_layers[model]
            entry = kmaps[model]["domains"].get(domain)
            if entry is None:
                ax.add_patch(Rectangle((0, row + 0.1), 1, 0.8, facecolor="none", edgecolor="#cccccc", hatch="////",
                                       linewidth=0))
                continue
            for k, method in enumerate(methods):
                y = row + 0.1 + k * lane
                ch = entry.get(method)
                if ch is None:
                    continue
                raw = np.array([np.nan if v is None else v for v in ch["raw"]][: n + 1], dtype=float)
                if np.isfinite(raw).sum() > 1:
                    lo, hi = np.nanmin(raw), np.nanmax(raw)
                    scaled = (raw - lo) / (hi - lo) if hi > lo else np.full_like(raw, 0.5)
                    ax.plot(np.arange(raw.size) / n, y + lane * (0.9 - 0.8 * scaled), color=colours[method],
                            alpha=0.35, lw=1)
                for a, b in depth_intervals(ch["intervals"], n):
                    ax.add_patch(Rectangle((a, y + 0.1 * lane), b - a, 0.8 * lane, color=colours[method]))
            for a, b in depth_intervals(entry.get("consensus", []), n):
                ax.add_patch(Rectangle((a, row + 0.05), b - a, 0.9, fill=False, edgecolor="black", lw=1.5))
        ax.set_xlim(0, 1)
        ax.set_ylim(len(models), 0)
        ax.set_yticks(np.arange(len(models)) + 0.5,
                      [f"{m} ({n_layers[m]})" + ("" if domain in kmaps[m]["domains"] else ", not mapped")
                       for m in models], fontsize=8)
        ax.set_title(domain, fontsize=10, loc="left")
        ax.tick_params(axis="x", labelsize=8)
    axes[-1, 0].set_xlabel("relative depth (layer / n_layers: 0 = embeddings, 1 = last block)")
    handles = [Patch(color=colours[m], label=m) for m in methods]
    handles.append(Patch(facecolor="none", edgecolor="black", lw=1.5, label="consensus"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Atlas: {', '.join(models)}; lanes top to bottom: {', '.join(methods)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig
