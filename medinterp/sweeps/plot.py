"""Figures of a sweep summary (matplotlib, Agg backend); saving is the caller's job.

``stability_figure``: one panel per method (the map's lanes, then ``consensus``), each a domain × layer
heatmap of the fraction of settings that select the layer (0 white → 1 dark), the fraction printed in each
cell that is ever selected; cells selected by the map at the default parameters are outlined.

``robustness_figure``: left, each setting's best layer per domain and method (dots; the modal best layer as
a bar); right, the mean (bar) and smallest (diamond) pairwise Jaccard of the selected layers per domain
and method.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from medinterp.maps.plot import METHOD_COLOURS  # noqa: E402
from medinterp.maps.synthesis import DEFAULT_DOMAINS  # noqa: E402
from medinterp.sweeps.robustness import RobustnessRow  # noqa: E402
from medinterp.sweeps.stability import StabilityRow  # noqa: E402


def _colour(method: str, k: int) -> str:
    return METHOD_COLOURS.get(method) or ("#000000" if method == "consensus" else f"C{k}")


def _ordered(rows, attr: str, first: Sequence[str], last: Sequence[str] = ()) -> list[str]:
    """Distinct values of ``attr`` in ``rows``: those in ``first`` in that order, then others, then ``last``."""
    seen = list(dict.fromkeys(getattr(r, attr) for r in rows))
    return ([v for v in first if v in seen] + [v for v in seen if v not in first and v not in last]
            + [v for v in last if v in seen])


def stability_figure(model: str, rows: Sequence[StabilityRow],
                     default: Mapping[tuple[str, str], frozenset[int]] | None = None, title: str = "") -> Figure:
    """Heatmaps of ``rows`` (one model, one group) per method; ``default``: the default map's selections."""
    domains = _ordered(rows, "domain", DEFAULT_DOMAINS)
    methods = _ordered(rows, "method", list(METHOD_COLOURS), ["consensus"])
    n_layers = max((r.layer for r in rows), default=0)
    cells = {(r.domain, r.method, r.layer): r for r in rows}
    width = min(18.0, max(6.0, 0.38 * (n_layers + 1) + 2.5))
    fig, axes = plt.subplots(len(methods), 1, figsize=(width, (0.3 * len(domains) + 0.6) * len(methods) + 0.8),
                             squeeze=False, sharex=True, layout="constrained")
    image = None
    for ax, method in zip(axes[:, 0], methods):
        grid = np.full((len(domains), n_layers + 1), np.nan)
        for i, d in enumerate(domains):
            for layer in range(n_layers + 1):
                r = cells.get((d, method, layer))
                if r is not None:
                    grid[i, layer] = r.fraction_selected
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="Greys", vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        ax.set_facecolor("#f3e6e6")  # channels absent from every setting
        for i, d in enumerate(domains):
            for layer in range(n_layers + 1):
                v = grid[i, layer]
                if np.isfinite(v) and v > 0 and n_layers <= 40:
                    ax.text(layer, i, f"{v:.2f}".lstrip("0") if v < 1 else "1", ha="center", va="center", fontsize=6,
                            color="white" if v > 0.55 else "black")
            for layer in sorted((default or {}).get((d, method), ())):
                ax.add_patch(Rectangle((layer - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=_colour(method, 0), lw=1.6))
        ns = sorted({cells[(d, method, 0)].n_settings for d in domains if (d, method, 0) in cells})
        ax.set_yticks(range(len(domains)), domains, fontsize=8)
        ax.set_title(f"{method}  (settings per domain: {', '.join(map(str, ns))})", fontsize=9, loc="left",
                     color=_colour(method, 0) if method != "consensus" else "black")
    step = max(1, (n_layers + 1) // 20)
    axes[-1, 0].set_xticks(range(0, n_layers + 1, step))
    axes[-1, 0].set_xlabel("layer (read-out: 0 = embeddings)")
    if image is not None:
        fig.colorbar(image, ax=axes[:, 0].tolist(), fraction=0.02, pad=0.01, label="fraction of settings selecting the layer")
    fig.suptitle(title or f"Stability map: {model} (outlined: the map at the default parameters)", fontsize=10)
    return fig


def robustness_figure(model: str, rows: Sequence[RobustnessRow], title: str = "") -> Figure:
    """Best layers per setting and the selections' Jaccard overlap, per domain × method (one model, one group)."""
    domains = _ordered(rows, "domain", DEFAULT_DOMAINS)
    methods = _ordered(rows, "method", list(METHOD_COLOURS), ["consensus"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.55 * len(domains) + 2.2), sharey=True, layout="constrained")
    width = 0.8 / max(len(methods), 1)
    rng = np.random.default_rng(0)  # jitter only
    for k, method in enumerate(methods):
        colour = _colour(method, k)
        for i, d in enumerate(domains):
            r = next((r for r in rows if r.domain == d and r.method == method), None)
            if r is None:
                continue
            y = i - 0.4 + width * (k + 0.5)
            if r.best_layers:
                jitter = rng.uniform(-0.3, 0.3, len(r.best_layers)) * width
                left.scatter(r.best_layers, y + jitter, s=14, color=colour, alpha=0.6)
                left.plot([r.modal_best_layer] * 2, [y - width / 2, y + width / 2], color=colour, lw=2.5)
            if np.isfinite(r.jaccard_mean):
                right.barh(y, r.jaccard_mean, height=width * 0.9, color=colour)
                right.plot([r.jaccard_min], [y], marker="D", ms=4, mfc="white", mec="black")
    left.set_yticks(range(len(domains)), domains)
    left.set_ylim(len(domains) - 0.5, -0.5)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("best layer per setting (dots; bar: the modal one)")
    right.set_xlim(0, 1.02)
    right.set_xlabel("Jaccard of selected layers across settings (bar: mean, diamond: min)")
    handles = [Patch(color=_colour(m, k), label=m) for k, m in enumerate(methods)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    n = max((r.n_settings for r in rows), default=0)
    fig.suptitle(title or f"Robustness: {model} over {n} settings", fontsize=10)
    return fig
