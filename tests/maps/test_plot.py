"""Figures: the map grid draws one bar per interval and outlines consensus; empty findings say what is missing."""
from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from medinterp.maps.findings import findings
from medinterp.maps.plot import findings_figure, knowledge_map_figure
from medinterp.maps.synthesis import MapParams, build_map
from medinterp.results import Row


def test_map_figure_has_a_bar_per_interval_and_an_outline_per_consensus_run():
    ramp = [0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.2]            # umap window [3, 5]
    kl = [0.1, 0.1, 0.1, 1.0, 1.0, 0.1, 0.1, 0.1]                   # blocks 1..8: segment [4, 5]
    rows = [Row("m", "drugs", "mechanism", "umap", "silhouette_umap", i, v) for i, v in enumerate(ramp)]
    rows += [Row("m", "drugs", "all", "ablation", "kl", i + 1, v) for i, v in enumerate(kl)]
    kmap = build_map([(r, "f") for r in rows], MapParams(domains=("drugs", "age")))
    assert kmap["domains"]["drugs"]["consensus"] == [[4, 5]]
    fig = knowledge_map_figure(kmap)
    ax = fig.axes[0]
    rects = [p for p in ax.patches if isinstance(p, Rectangle)]
    filled = [p for p in rects if p.get_fill() and p.get_hatch() is None]
    outlined = [p for p in rects if not p.get_fill() and p.get_hatch() is None]
    hatched = [p for p in rects if p.get_hatch()]
    assert len(filled) == 2 and len(outlined) == 1
    assert len(hatched) == 2 + 4  # drugs: saliency + patching lanes; age (no data): all four lanes
    assert outlined[0].get_x() == 3.5 and outlined[0].get_width() == 2
    assert [t.get_text() for t in ax.get_yticklabels()] == ["drugs", "age (no data)"]  # params.domains order
    assert "m" in ax.get_title()
    plt.close(fig)


def test_findings_figure_names_missing_metrics():
    fig = findings_figure(findings([]))
    texts = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
    assert "discontinuity on age/pooled" in texts and "silhouette_umap_diff on specialty-mechanism" in texts
    assert "effective_rank on all" in texts and len(fig.axes) == 6
    plt.close(fig)
