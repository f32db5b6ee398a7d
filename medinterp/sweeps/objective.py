"""One number per run for sweepers that optimise (W&B bayes, Hydra's Optuna sweeper).

- :func:`run_objective`: for a method run's rows, ``best/<metric>``: the maximum over layers of the mean,
  over labelings, of ``metric`` (default ``silhouette_umap``: the UMAP geometry sweep's target), and
  ``best/<metric>_layer``: where it is. The map runner logs these to the W&B run summary and returns the
  value, so ``metric: {name: best/silhouette_umap, goal: maximize}`` in a W&B sweep works.
- :func:`folders_agreement`: for synthesis output folders, the mean :func:`map_agreement` of their maps
  (what ``runners/synthesize.py`` returns to a sweeper).

Optimising a map parameter for agreement is exploration, not evidence: report the stability over the
whole grid (runners/summarize.py), not the optimum.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from medinterp.maps.synthesis import mean_curve
from medinterp.results import Row
from medinterp.sweeps.selection import map_agreement


def run_objective(rows: Sequence[Row], metric: str = "silhouette_umap") -> dict[str, float]:
    """``{"best/<metric>": value, "best/<metric>_layer": layer}``; nan/-1 when the run has no such rows."""
    curve = mean_curve([(r, "") for r in rows if r.metric == metric])
    if curve is None or not len(curve.raw):
        return {f"best/{metric}": math.nan, f"best/{metric}_layer": -1}
    i = int(curve.raw.argmax())  # first maximum
    return {f"best/{metric}": float(curve.raw[i]), f"best/{metric}_layer": curve.first + i}


def folders_agreement(folders: Iterable[str | Path]) -> float:
    """Mean method agreement of the knowledge_map.json in each synthesis folder (nan when undefined)."""
    values = [map_agreement(json.loads((Path(f) / "knowledge_map.json").read_text())) for f in folders]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
