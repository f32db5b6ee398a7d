"""Figures of a knowledge map and of the findings (matplotlib, Agg backend); saving is the caller's job.

``knowledge_map_figure``: a domain × layer grid. Each domain row has one thin lane per method, in the
method's colour; a method's selected intervals are solid bars in its lane, its smoothed curve (scaled to
the lane) a faint line behind them, and a lane without data is hatched grey. Consensus layers are
outlined in black across the whole row.

``findings_figure``: small multiples, one panel per finding, with CI bands and the null as a dashed line.
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
from matplotlib.ticker import MaxNLocator  # noqa: E402

METHOD_COLOURS = {"umap": "#1b9e77", "saliency": "#d95f02", "ablation": "#7570b3", "patching": "#e7298a"}
_EXTRA = ("#66a61e", "#e6ab02", "#a6761d", "#666666")


def method_colours(methods: Sequence[str]) -> dict[str, str]:
    """Each method's colour: the fixed ones of the four map methods, then a palette for others."""
    extra = iter(_EXTRA * 4)
    return {m: METHOD_COLOURS.get(m) or next(extra) for m in methods}


def knowledge_map_figure(kmap: Mapping[str, Any]) -> Figure:
    """Draw ``kmap`` (the dict of :func:`medinterp.maps.synthesis.build_map`)."""
    methods = list(kmap["params"]["methods"])
    colours = method_colours(methods)
    expected = list(kmap["params"]["domains"])
    absent = [d for d in expected if d not in kmap["domains"]]  # drawn as fully hatched rows
    domains = (expected + [d for d in kmap["domains"] if d not in expected]) or ["(none)"]
    n_layers = kmap["n_layers"]
    lane = 0.8 / max(len(methods), 1)  # each domain row spans 0.9 of a unit; lanes stacked top to bottom
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.32 * (n_layers + 1) + 2.5)), 0.9 * max(len(domains), 1) + 1.6))
    for row, domain in enumerate(domains):
        entry = kmap["domains"].get(domain, {})
        top = row + 0.1
        for k, method in enumerate(methods):
            y = top + k * lane
            ch = entry.get(method)
            if ch is None:  # not run / no rows: hatched lane
                ax.add_patch(Rectangle((-0.5, y), n_layers + 1, lane, facecolor="none", edgecolor="#cccccc",
                                       hatch="////", linewidth=0))
                continue
            curve = np.array([np.nan if v is None else v for v in ch["curve"]], dtype=float)
            if np.isfinite(curve).sum() > 1:
                lo, hi = np.nanmin(curve), np.nanmax(curve)
                scaled = (curve - lo) / (hi - lo) if hi > lo else np.full_like(curve, 0.5)
                ax.plot(np.arange(len(curve)), y + lane * (0.9 - 0.8 * scaled), color=colours[method], alpha=0.35, lw=1)
            for a, b in ch["intervals"]:
                ax.add_patch(Rectangle((a - 0.45, y + 0.1 * lane), b - a + 0.9, 0.8 * lane, color=colours[method]))
        for a, b in entry.get("consensus", []):
            ax.add_patch(Rectangle((a - 0.5, row + 0.05), b - a + 1, 0.9, fill=False, edgecolor="black", lw=2))
        if row:
            ax.axhline(row, color="#888888", lw=0.5)
    ax.set_xlim(-0.5, n_layers + 0.5)
    ax.set_ylim(len(domains), 0)
    ax.set_yticks(np.arange(len(domains)) + 0.5, [f"{d} (no data)" if d in absent else d for d in domains])
    step = max(1, (n_layers + 1) // 20)
    ax.set_xticks(range(0, n_layers + 1, step))
    ax.set_xlabel("layer (read-out: 0 = embeddings, l = output of block l-1)")
    ax.set_ylabel("domain")
    handles = [Patch(color=colours[m], label=m) for m in methods]
    handles += [Patch(facecolor="none", edgecolor="black", lw=2, label=f"consensus (>= {kmap['params']['min_methods']} methods)"),
                Patch(facecolor="none", edgecolor="#aaaaaa", hatch="////", label="no data")]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.02 * (4 / max(len(domains), 1))),
              ncol=min(len(handles), 6), fontsize=8, frameon=False)
    ax.set_title(f"Knowledge map: {kmap['model']} ({n_layers} layers); lanes top to bottom: {', '.join(methods)}",
                 fontsize=10)
    fig.tight_layout()
    return fig


# -- findings ----------------------------------------------------------------------------------------
def _band(ax, points: Sequence[Mapping[str, Any]], label: str, colour=None) -> None:
    """A line with its CI band (where the points have one)."""
    x = np.array([p["layer"] for p in points])
    y = np.array([p["value"] for p in points], dtype=float)
    line, = ax.plot(x, y, marker=".", ms=4, label=label, color=colour)
    lo = np.array([np.nan if p.get("ci_low") is None else p["ci_low"] for p in points], dtype=float)
    hi = np.array([np.nan if p.get("ci_high") is None else p["ci_high"] for p in points], dtype=float)
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def _unavailable(ax, title: str, finding: Mapping[str, Any]) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, "not available:\n" + "\n".join(finding.get("missing", [])), ha="center", va="center",
            fontsize=8, color="#777777", transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _age(ax, f: Mapping[str, Any]) -> None:
    title = "Age 17→18 step (discontinuity; null 1)"
    if not f["available"]:
        return _unavailable(ax, title, f)
    for lab, pts in f["series"].items():
        if pts:
            _band(ax, pts, lab)
    ax.axhline(f["null"], ls="--", color="grey", lw=1)
    ax.axvline(f["peak"]["layer"], color="black", lw=0.8, ls=":")
    ax.set_title(f"{title}: max {f['peak']['value']:.2f} at L{f['peak']['layer']}", fontsize=9)
    ax.legend(fontsize=7)


def _age_diff(ax, f: Mapping[str, Any]) -> None:
    title = "Age step, female − male (null 0)"
    g = f.get("gender_difference", {"available": False, "missing": f.get("missing", [])})
    if not g["available"]:
        return _unavailable(ax, title, g)
    _band(ax, g["series"], "discontinuity_diff")
    ax.axhline(0, ls="--", color="grey", lw=1)
    ax.set_title(f"{title}; CI excludes 0 at {g['layers_excluding_null'] or 'no layer'}", fontsize=9)


def _progression(ax, f: Mapping[str, Any]) -> None:
    title = "Progression circularity (circular_corr; grey = shuffled null)"
    if not f["available"]:
        return _unavailable(ax, title, f)
    for disease, e in f["diseases"].items():
        c = e.get("circular_corr")
        if not c:
            continue
        _band(ax, c["series"], f"{disease} (best L{e['best_layer']})")
        if c["null_series"]:
            null = c["null_series"]
            nx = [p["layer"] for p in null]
            ax.plot(nx, [p["value"] for p in null], ls="--", color="grey", lw=0.8)
            if all(p["ci_low"] is not None for p in null):
                ax.fill_between(nx, [p["ci_low"] for p in null], [p["ci_high"] for p in null], color="grey", alpha=0.1, lw=0)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def _drugs(ax, f: Mapping[str, Any]) -> None:
    title = "Drugs: silhouette specialty − mechanism"
    if not f["available"]:
        return _unavailable(ax, title, f)
    for metric, m in f["metrics"].items():
        _band(ax, m["series"], f"{metric} ({m['sign']})")
    ax.axhline(0, ls="--", color="grey", lw=1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def _collapse(ax, f: Mapping[str, Any], kind: str) -> None:
    title = f"Collapse: {kind} (< {f.get('fraction', 0.5)} × running max)"
    if not f["available"]:
        return _unavailable(ax, title, f)
    drawn = False
    for name, c in f["curves"].items():
        if not name.endswith(kind):
            continue
        if "series" in c:
            pts = c["series"]
        else:
            pts = [{"layer": i, "value": v} for i, v in enumerate(c["values"]) if v is not None]
        if not pts:
            continue
        _band(ax, pts, name.split("/")[0])
        drawn = True
        for ep in c["episodes"]:
            ax.axvspan(ep["collapse_layer"] - 0.5, ep["recovery_layer"] - 0.5, color="red", alpha=0.12)
    if not drawn:
        return _unavailable(ax, title, {"missing": f.get("missing", [])})
    ax.set_title(title + "; red = collapsed", fontsize=9)
    ax.legend(fontsize=7)


def findings_figure(found: Mapping[str, Any]) -> Figure:
    """Small multiples of :func:`medinterp.maps.findings.findings` (one panel each, unavailable ones say so)."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    _age(axes[0, 0], found["age_step"])
    _age_diff(axes[0, 1], found["age_step"])
    _progression(axes[0, 2], found["progression_circularity"])
    _drugs(axes[1, 0], found["drugs_specialty_vs_mechanism"])
    _collapse(axes[1, 1], found["collapse"], "effective_rank")
    _collapse(axes[1, 2], found["collapse"], "silhouette")
    for ax in axes.flat:
        if ax.get_xticks().size:
            ax.set_xlabel("layer", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Findings: {found['model']}", fontsize=12)
    fig.tight_layout()
    return fig
