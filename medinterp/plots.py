"""Figures: UMAP scatter grids (layers as panels) and per-layer metric curves with CI bands.

Functions take arrays/rows and return a matplotlib ``Figure``; saving is the results writer's job.
The Agg backend is used, so nothing needs a display.
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medinterp.results import Row  # noqa: E402


def umap_grid(embeddings: Sequence[np.ndarray], labels: np.ndarray, title: str, numeric: bool = False,
              panel_size: float = 2.2) -> Figure:
    """One 2-D scatter per layer (panel ``l`` = read-out layer ``l``), coloured by ``labels``."""
    n = len(embeddings)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols, panel_size * rows + 0.6), squeeze=False)
    if numeric:
        colors = np.asarray(labels, dtype=float)
        kw = dict(c=colors, cmap="viridis", vmin=np.nanmin(colors), vmax=np.nanmax(colors))
    else:
        classes = sorted(set(labels.tolist()))
        palette = plt.get_cmap("tab20" if len(classes) > 10 else "tab10")
        index = {c: i for i, c in enumerate(classes)}
        kw = dict(c=[palette(index[c] % palette.N) for c in labels])
    for layer, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if layer >= n:
            ax.axis("off")
            continue
        emb = embeddings[layer]
        sc = ax.scatter(emb[:, 0], emb[:, 1], s=6, linewidths=0, **kw)
        ax.set_title(f"layer {layer}", fontsize=8)
    if numeric:
        fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.6, label=title.split(" by ")[-1])
    else:
        handles = [plt.Line2D([], [], marker="o", ls="", color=palette(index[c] % palette.N), label=str(c)) for c in classes]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(classes)), fontsize=7, frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.025 * math.ceil(len(classes) / 6)))
    fig.suptitle(title, fontsize=11)
    return fig


def metric_curves(rows: Sequence[Row], metrics: Sequence[str], title: str) -> Figure:
    """Per-layer curves of ``metrics`` (one panel each), a line per labeling with its CI band.

    Layer-independent baselines (``layer == -1``) are drawn as dashed horizontal lines; a metric named
    ``<m>_null`` is drawn in grey in the panel of ``<m>``.
    """
    panels = [m for m in metrics if any(r.metric == m for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.4), squeeze=False)
    for ax, metric in zip(axes.flat, panels):
        series: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for r in rows:
            if r.metric in (metric, f"{metric}_null") or (metric.startswith("silhouette") and r.metric == "silhouette_surface"):
                series[(r.labeling, r.metric)].append(r)
        colors = {}
        for (labeling, m), rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r.layer)
            color = colors.setdefault(labeling, f"C{len(colors) % 10}")
            if rs[0].layer < 0:  # a baseline: one value for all layers
                ax.axhline(rs[0].value, color=color, ls="--", lw=1, alpha=0.8)
                continue
            x = np.array([r.layer for r in rs])
            y = np.array([r.value for r in rs])
            lo = np.array([r.ci_low for r in rs])
            hi = np.array([r.ci_high for r in rs])
            null = m.endswith("_null")
            ax.plot(x, y, color="0.55" if null else color, lw=1 if null else 1.6, ls=":" if null else "-",
                    label=None if null else labeling)
            if np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(x, lo, hi, color="0.8" if null else color, alpha=0.25, lw=0)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        if colors:
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle(title + "  (dotted grey: shuffled null; dashed: layer-independent baseline)", fontsize=9)
    fig.tight_layout()
    return fig


def family_curves(rows: Sequence[Row], families: dict[str, Sequence[str]], title: str,
                  right: Sequence[str] = ()) -> Figure:
    """One panel per metric family (``families``: panel title -> metrics), a line per (metric, labeling) with its CI
    band; metrics in ``right`` go on a second y axis with a symlog scale (ranks beside values in [0, 1])."""
    panels = [(name, ms) for name, ms in families.items() if any(r.metric in ms for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.4 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, (family, metrics) in zip(axes.flat, panels):
        twin = ax.twinx() if any(r.metric in right for r in rows if r.metric in metrics) else None
        series: dict[tuple[str, str], list[Row]] = defaultdict(list)
        for r in rows:
            if r.metric in metrics and r.layer >= 0:
                series[(r.metric, r.labeling)].append(r)
        for k, ((metric, labeling), rs) in enumerate(sorted(series.items(), key=lambda kv: metrics.index(kv[0][0]))):
            rs = sorted(rs, key=lambda r: r.layer)
            target = twin if metric in right else ax
            x, y = np.array([r.layer for r in rs]), np.array([r.value for r in rs])
            lo, hi = np.array([r.ci_low for r in rs]), np.array([r.ci_high for r in rs])
            color = f"C{k % 10}"
            target.plot(x, y, color=color, lw=1.5, ls="--" if metric in right else "-",
                        label=f"{metric} ({labeling})" + (" [right]" if metric in right else ""))
            ok = np.isfinite(lo) & np.isfinite(hi)
            target.fill_between(x, np.where(ok, lo, y), np.where(ok, hi, y), color=color, alpha=0.2, lw=0)
        if twin is not None:
            twin.set_yscale("symlog")
            twin.set_ylim(bottom=0)
        handles = [h for a in (ax, twin) if a is not None for h in a.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, fontsize=6, frameon=False)
        ax.set_title(family.replace("_", " "), fontsize=9)
        ax.set_xlabel("layer (read-out)")
        ax.grid(alpha=0.3)
    fig.suptitle(title + "  (bands: 95 % bootstrap CI)", fontsize=9)
    fig.tight_layout()
    return fig


CURVE_METRICS = {  # activation methods: one figure per labeling kind
    "numeric": ("anisotropy", "r2_raw", "r2_umap", "discontinuity"),
    "categorical": ("silhouette_umap", "silhouette_raw"),
}
METHOD_CURVES = {  # model methods: one panel per metric
    "saliency": ("grad_block", "grad_attn", "grad_mlp"),
    "ablation": ("kl", "dlogp", "judge_score"),
    "patching": ("p_resid_diff", "p_resid_last", "p_attn", "p_mlp"),
    "neurons": ("topk_mass", "label_hit_fraction", "suppress_rel", "amplify_rel"),
    "image_lens": ("entropy", "inbox_hit_rate", "outbox_hit_rate"),
    "gradcam": ("energy_in_box", "pointing_hit"),
}


def cell_figures(method: str, result, rows: Sequence[Row], points, labelings: Sequence[str] | None,
                 title: str) -> dict[str, Figure]:
    """A cell's figures by file name: metric curves (geometry: one panel per metric family), for UMAP one 2-D
    grid per labeling, and the method's own (``result.artifacts["figures"]``: name -> zero-argument callable
    drawing it; image_lens grids, gradcam overlays)."""
    own = {name: draw() for name, draw in result.artifacts.get("figures", {}).items()}
    return {**_standard_figures(method, result, rows, points, labelings, title), **own}


def _standard_figures(method: str, result, rows: Sequence[Row], points, labelings: Sequence[str] | None,
                      title: str) -> dict[str, Figure]:
    if method == "geometry":
        from medinterp.methods.geometry import FAMILIES

        return {"curves_geometry": family_curves(rows, FAMILIES, title, right=("lens_rank",))} if rows else {}
    if method in METHOD_CURVES:
        wanted = METHOD_CURVES[method]
        return {f"curves_{method}": metric_curves(rows, wanted, title)} if any(r.metric in wanted for r in rows) else {}
    out = {}
    labelings = list(points.labels) if labelings is None else list(labelings)
    emb = result.artifacts.get("embedding_2d")
    for name in labelings:
        if emb is not None:
            out[f"umap_grid_{name}"] = umap_grid(emb, points.labels[name], f"{title} by {name}",
                                                 points.kinds[name] != "categorical")
    for kind in sorted({"numeric" if points.kinds[n] == "numeric" else "categorical" for n in labelings}):
        if any(r.metric in CURVE_METRICS[kind] for r in rows):
            out[f"curves_{kind}"] = metric_curves(rows, CURVE_METRICS[kind], title)
    return out
