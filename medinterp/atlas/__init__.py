"""The cross-model atlas: several models' maps side by side on relative depth (docs/atlas.md).

depth      relative depth l / n_layers, resampling a curve to a common depth grid, depth intervals,
           interval Jaccard, Spearman's ρ with a bootstrap CI
table1     the paper's Table 1: per concept and model, the best value, CI, layer and depth
agreement  per domain and channel, pairwise interval Jaccard and rank correlation; the paper's findings
           per model as verdicts with CIs
plot       atlas_figure: the knowledge maps stacked on relative depth, one panel per domain
compare    the stage: read runs, write table1.csv/md, agreement.json, atlas.png
"""
from __future__ import annotations

from medinterp.atlas.compare import Comparison, compare, read_runs
from medinterp.atlas.depth import depth_intervals, grid, interval_jaccard, rank_correlation, relative_depth, resample
from medinterp.atlas.table1 import PAPER_CONCEPTS, Concept, concepts_from, parse_concept, table1

__all__ = ["compare", "Comparison", "read_runs", "relative_depth", "grid", "resample", "depth_intervals",
           "interval_jaccard", "rank_correlation", "Concept", "PAPER_CONCEPTS", "parse_concept", "concepts_from",
           "table1"]
