"""Knowledge maps: where each domain's knowledge sits, synthesised from earlier runs' per_layer tables.

curves     smoothing and interval rules on 1-D curves (methods.md §1.5): smooth, steepest_window,
           top_segments, age_layers, consensus
synthesis  MapParams, load_table (find per_layer.csv files), build_map (one model's map dict),
           synthesize (the whole stage: JSON + PNG per model)
findings   FindingsParams, findings: age 17→18 step, progression circularity, specialty vs mechanism,
           activation collapse — each with a CI and a null
plot       knowledge_map_figure, findings_figure

See docs/knowledge-map.md.
"""
from __future__ import annotations

from medinterp.maps.curves import age_layers, consensus, smooth, steepest_window, top_segments
from medinterp.maps.findings import FindingsParams, findings
from medinterp.maps.synthesis import AgeRule, Channel, MapParams, Table, build_map, load_table, synthesize

__all__ = [
    "smooth", "steepest_window", "top_segments", "age_layers", "consensus",
    "MapParams", "Channel", "AgeRule", "Table", "load_table", "build_map", "synthesize",
    "FindingsParams", "findings",
]
