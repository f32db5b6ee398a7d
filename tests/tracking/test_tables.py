"""Results files as plain tables: hand-made inputs with every expected row written out."""
from __future__ import annotations

import math

from medinterp.results import Row
from medinterp.tracking.tables import (
    FLAT_COLUMNS,
    MAP_COLUMNS,
    csv_table,
    flatten_json,
    knowledge_map_table,
    map_curves,
    per_layer_table,
)


def test_per_layer_table_turns_nan_into_none():
    t = per_layer_table([Row("m", "d", "lab", "umap", "s", 2, 0.5, math.nan, 0.7, 9, "", "a1b2", 3, "f00d"),
                         Row("m", "d", "lab", "umap", "s", 3, math.nan, math.nan, math.nan, 9, "degenerate")])
    assert t.columns == ["model", "domain", "labeling", "method", "metric", "layer", "value", "ci_low", "ci_high", "n",
                         "note", "run_id", "seed", "config_hash"]
    assert t.rows == [["m", "d", "lab", "umap", "s", 2, 0.5, None, 0.7, 9, "", "a1b2", 3, "f00d"],
                      ["m", "d", "lab", "umap", "s", 3, None, None, None, 9, "degenerate", "", None, ""]]


def test_flatten_json_measurements_leaves_and_lists():
    data = {
        "age_step": {"available": True, "metric": "discontinuity", "null": 1.0,
                     "peak": {"layer": 7, "value": 1.5, "ci_low": 0.5, "ci_high": 2.5, "n": 800, "excludes_null": False},
                     "series": {"age/pooled": [{"layer": 1, "value": 0.7, "ci_low": None, "ci_high": None, "n": 8},
                                               {"layer": 2, "value": float("nan"), "n": 8}]},
                     "layers": [3, 4]},
        "missing": [{"domain": "age", "reason": "no rows"}],
        "empty": [],
    }
    t = flatten_json(data)
    assert t.columns == list(FLAT_COLUMNS)
    assert t.rows == [
        ["age_step/available", None, None, None, None, None, "true"],
        ["age_step/metric", None, None, None, None, None, "discontinuity"],
        ["age_step/null", None, 1.0, None, None, None, None],
        ["age_step/peak", 7, 1.5, 0.5, 2.5, 800, None],
        ["age_step/peak/excludes_null", None, None, None, None, None, "false"],
        ["age_step/series/age/pooled", 1, 0.7, None, None, 8, None],
        ["age_step/series/age/pooled", 2, None, None, None, 8, None],
        ["age_step/layers", None, None, None, None, None, "[3, 4]"],
        ["missing[0]/domain", None, None, None, None, None, "age"],
        ["missing[0]/reason", None, None, None, None, None, "no rows"],
        ["empty", None, None, None, None, None, "[]"],
    ]


KMAP = {"model": "m", "n_layers": 3, "domains": {
    "drugs": {"umap": {"metric": "silhouette_umap", "rule": "window", "intervals": [[1, 3]],
                       "curve": [0.0, 0.5, None, 1.0], "raw": [0.1, 0.4, 0.8, 1.2]},
              "ablation": {"metric": "kl", "rule": "segments", "intervals": [[2, 2], [3, 3]], "curve": [1, 2, 3, 4]},
              "consensus": [[2, 3]]},
    "age": {"umap": {"metric": "r2_raw", "rule": "age", "intervals": [[2, 2]], "r2_intervals": [[1, 2]],
                     "anisotropy": {"metric": "anisotropy", "intervals": [[3, 3]], "curve": [0, 0, 0, 1], "raw": [1, 1, 1, 2]},
                     "curve": [0.1, 0.2, 0.3, 0.4]},
            "consensus": []}}}


def test_knowledge_map_table():
    t = knowledge_map_table(KMAP)
    assert t.columns == list(MAP_COLUMNS)
    assert t.rows == [  # domains sorted, methods in file order
        ["age", "umap", "r2_raw", "age", "interval", 2, 2],
        ["age", "umap", "r2_raw", "age", "r2", 1, 2],
        ["age", "umap", "anisotropy", "age", "anisotropy", 3, 3],
        ["drugs", "umap", "silhouette_umap", "window", "interval", 1, 3],
        ["drugs", "ablation", "kl", "segments", "interval", 2, 2],
        ["drugs", "ablation", "kl", "segments", "interval", 3, 3],
        ["drugs", "consensus", None, None, "consensus", 2, 3],
    ]


def test_map_curves():
    assert map_curves(KMAP) == {
        "knowledge_map/age/umap": [0.1, 0.2, 0.3, 0.4],
        "knowledge_map/age/umap/anisotropy": [0.0, 0.0, 0.0, 1.0],
        "knowledge_map/age/umap/anisotropy/raw": [1.0, 1.0, 1.0, 2.0],
        "knowledge_map/drugs/umap": [0.0, 0.5, None, 1.0],
        "knowledge_map/drugs/umap/raw": [0.1, 0.4, 0.8, 1.2],
        "knowledge_map/drugs/ablation": [1.0, 2.0, 3.0, 4.0],
    }


def test_csv_table_parses_numbers_and_pads_ragged_lines(tmp_path):
    path = tmp_path / "stability.csv"
    path.write_text("domain,layer,value,note\ndrugs,3,0.25,ok\nage,4,nan\nage,x,1e-3,a,extra\n")
    table, total = csv_table(path)
    assert table.columns == ["domain", "layer", "value", "note"]
    assert table.rows == [["drugs", 3, 0.25, "ok"], ["age", 4, None, None], ["age", "x", 0.001, "a"]]
    assert total == 3
    assert csv_table(path, max_rows=1)[0].rows == [["drugs", 3, 0.25, "ok"]]
