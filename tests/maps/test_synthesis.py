"""Map building: the golden table, reading runs, channel selection, missing data, parameter validation."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from helpers import ROOT
from medinterp.errors import MedinterpError
from medinterp.maps.synthesis import MapParams, build_map, load_table, params_from_config
from medinterp.results import Row, write_rows

GOLDEN = ROOT / "tests" / "data" / "golden"


def assert_same(actual, expected, path="map"):
    """Deep equality, floats to 1e-12 (the expected curves come from a second smoothing implementation)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for k in expected:
            assert_same(actual[k], expected[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-12), path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def test_golden_table_gives_the_hand_derived_map():
    expected = json.loads((GOLDEN / "knowledge_map.json").read_text())
    kmap = build_map(load_table(GOLDEN).of("golden"), MapParams())
    assert kmap["params"] == MapParams().as_dict()
    kmap = {k: v for k, v in kmap.items() if k != "params"}
    assert_same(kmap, expected)


def rows_for(model="m", domain="drugs", method="umap", labeling="mechanism", metric="silhouette_umap", values=()):
    return [Row(model, domain, labeling, method, metric, layer, float(v)) for layer, v in enumerate(values)]


RAMP = [0.0, 0.0, 0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 0.2]  # steepest window [3, 5]
BUMP = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 1.0, 0.1]  # kl, layers 0..8 written, layer 0 dropped below


def test_runs_are_found_recursively_with_relative_sources(tmp_path):
    write_rows(tmp_path / "sweep" / "m-drugs-umap" / "per_layer.csv", rows_for(values=RAMP))
    kl = [r for r in rows_for(method="ablation", labeling="all", metric="kl", values=BUMP) if r.layer >= 1]
    write_rows(tmp_path / "sweep" / "m-drugs-ablation" / "per_layer.csv", kl)
    table = load_table(tmp_path / "sweep")
    kmap = build_map(table.of("m"), MapParams())
    drugs = kmap["domains"]["drugs"]
    assert drugs["umap"]["source"] == "m-drugs-umap/per_layer.csv"
    assert drugs["ablation"]["source"] == "m-drugs-ablation/per_layer.csv"
    assert drugs["umap"]["intervals"] == [[3, 5]] and drugs["ablation"]["intervals"] == [[6, 7]]
    assert drugs["ablation"]["curve"][0] is None and kmap["n_layers"] == 8
    # a file and a folder together, as a list
    both = load_table([tmp_path / "sweep" / "m-drugs-umap" / "per_layer.csv", tmp_path / "sweep" / "m-drugs-ablation"])
    assert sorted(set(both.sources)) == ["per_layer.csv"] and len(both.rows) == len(table.rows)


def test_bad_inputs_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedinterpError, match="no per_layer.csv under '.*empty'"):
        load_table(tmp_path / "empty")
    with pytest.raises(MedinterpError, match="no such file or folder '.*nope'"):
        load_table([tmp_path / "nope"])
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MedinterpError, match="is not a per_layer table"):
        load_table(tmp_path / "bad.csv")
    write_rows(tmp_path / "a" / "per_layer.csv", rows_for(values=RAMP))
    write_rows(tmp_path / "b" / "per_layer.csv", rows_for(values=RAMP))
    with pytest.raises(MedinterpError, match="'b/per_layer.csv' repeats m/drugs/umap/mechanism/silhouette_umap/0 from 'a/per_layer.csv'"):
        load_table(tmp_path)


def test_umap_curve_is_the_mean_over_labelings_and_filters_apply():
    rows = rows_for(labeling="mechanism", values=[0, 0, 0, 0, 0, 0.2, 0.4, 0.4, 0.4])
    rows += rows_for(labeling="specialty", values=[0, 0, 0, 0, 0, 0.4, 0.8, 0.8, 0.8])
    rows += rows_for(metric="silhouette_umap_null", values=[0.9, 0, 0, 0, 0, 0, 0, 0, 0])  # never a channel
    rows += [Row("m", "drugs", "mechanism", "umap", "silhouette_surface", -1, 5.0)]         # baseline
    kmap = build_map([(r, "f") for r in rows], MapParams())
    umap = kmap["domains"]["drugs"]["umap"]
    assert umap["raw"] == pytest.approx([0, 0, 0, 0, 0, 0.3, 0.6, 0.6, 0.6])
    assert umap["labelings"] == ["mechanism", "specialty"] and umap["intervals"] == [[4, 6]]
    only = MapParams(labelings={"umap": {"drugs": ["spec*"]}})
    assert build_map([(r, "f") for r in rows], only)["domains"]["drugs"]["umap"]["labelings"] == ["specialty"]


def test_saliency_ignores_embed_and_unembed_rows_and_n_layers_is_the_last_block():
    grad = [1.0, 1.0, 2.0, 3.0, 2.5, 1.0, 1.0, 1.0]  # layers 1..8: peak at 4, shoulder 5 above shoulder 3
    rows = [Row("m", "symptoms", "all", "saliency", "grad_block", layer + 1, v) for layer, v in enumerate(grad)]
    rows += [Row("m", "symptoms", "all", "saliency", "grad_embed", 0, 99.0),
             Row("m", "symptoms", "all", "saliency", "grad_unembed", 9, 99.0)]
    kmap = build_map([(r, "f") for r in rows], MapParams())
    sal = kmap["domains"]["symptoms"]["saliency"]
    assert kmap["n_layers"] == 8 and len(sal["curve"]) == 9 and sal["curve"][0] is None
    # 8 values: the 75th percentile lies between the 3rd and 2nd largest, so the two largest are above
    assert sal["intervals"] == [[4, 5]]


def test_missing_methods_and_metrics_are_recorded_not_raised():
    rows = rows_for(values=RAMP) + rows_for(method="ablation", labeling="all", metric="kl", values=BUMP)
    params = MapParams(methods=("umap", "ablation"), domains=("drugs", "dosage"),
                       channels={"umap": {"metric": "silhouette_umap", "rule": "window"},
                                  "ablation": {"metric": "judge_score", "rule": "segments"}})
    kmap = build_map([(r, "f") for r in rows], params)
    assert list(kmap["domains"]) == ["drugs"] and list(kmap["domains"]["drugs"]) == ["umap", "consensus"]
    assert kmap["missing"] == [
        {"domain": "drugs", "method": "ablation", "reason": "no judge_score rows (has: kl)"},
        {"domain": "dosage", "method": "umap", "reason": "no rows"},
        {"domain": "dosage", "method": "ablation", "reason": "no rows"},
    ]


def test_interior_gaps_and_nan_values_are_interpolated():
    values = [0.0, 0.0, 0.0, math.nan, 0.2, 0.2, 0.2]
    rows = [r for r in rows_for(values=values) if r.layer != 4]  # layer 3 NaN, layer 4 absent
    umap = build_map([(r, "f") for r in rows], MapParams())["domains"]["drugs"]["umap"]
    assert umap["interpolated_layers"] == [3, 4]
    assert umap["raw"] == pytest.approx([0.0, 0.0, 0.0, 0.2 / 3, 0.4 / 3, 0.2, 0.2])


def test_age_rule_can_be_switched_off_and_falls_back_to_one_curve():
    r2 = rows_for(domain="age", labeling="age/pooled", metric="r2_raw", values=[0.1, 0.5, 0.9, 0.9, 0.9, 0.5, 0.1])
    sil = rows_for(domain="age", labeling="gender", values=[0.0, 0.0, 0.0, 0.0, 0.3, 0.3, 0.3])
    rows = [(r, "f") for r in r2 + sil]
    age = build_map(rows, MapParams())["domains"]["age"]["umap"]
    assert age["rule"] == "age" and age["metric"] == "r2_raw" and "anisotropy" not in age
    assert age["intervals"] == age["r2_intervals"] == [[3, 3]]
    plain = build_map(rows, MapParams(age=None))["domains"]["age"]["umap"]
    assert plain["rule"] == "window" and plain["labelings"] == ["gender"]


@pytest.mark.parametrize("change, message", [
    ({"methods": ["umap", "magic"]}, "unknown method 'magic'; valid: ablation, geometry, patching, saliency, umap"),
    ({"sigma": -1}, "The map parameter 'sigma' must be in [0, inf]. Got -1 instead."),
    ({"sigma": "wide"}, "The map parameter 'sigma' must be in [0, inf]. Got 'wide' instead."),
    ({"window": 1}, "The map parameter 'window' must be an integer >= 2. Got 1 instead."),
    ({"min_segment": True}, "The map parameter 'min_segment' must be an integer >= 1. Got True instead."),
    ({"sigma": True}, "The map parameter 'sigma' must be in [0, inf]. Got True instead."),
    ({"channels": {"umap": {"metric": "x", "rule": "steep"}}}, "unknown map rule 'steep'; valid: segments, window"),
    ({"sigmaa": 1.0}, "unknown map parameter 'sigmaa'; valid:"),
    ({"findings": {"collapse_fraction": 1.5}}, "'collapse_fraction' must be in (0, 1). Got 1.5 instead."),
    ({"findings": {"collapse_fraction": "half"}}, "'collapse_fraction' must be in (0, 1). Got 'half' instead."),
    ({"findings": {"collapse_min_peak": None}}, "'collapse_min_peak' must be >= 0. Got None instead."),
    ({"findings": {"bogus": 1}}, "unknown findings parameter 'bogus'"),
])
def test_parameters_are_validated_with_one_line_errors(change, message):
    cfg = {**MapParams().as_dict(), "findings": {}, **change}
    with pytest.raises(MedinterpError) as err:
        params_from_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_round_trip_and_overrides():
    params, found = params_from_config({**MapParams().as_dict(), "sigma": 2.0, "findings": {"collapse_fraction": 0.3}})
    assert params == replace(MapParams(), sigma=2.0) and found.collapse_fraction == 0.3


def test_an_unknown_channel_metric_is_one_line_not_a_lost_lane():
    """A channel metric the method's rows never have would drop that method from every domain in silence."""
    rows = load_table([GOLDEN]).of("golden")
    from medinterp.maps.synthesis import DEFAULT_CHANNELS

    def channels(method, metric):
        return {"channels": {**DEFAULT_CHANNELS, method: {"metric": metric, "rule": "segments"}}}

    params = MapParams.from_dict(channels("ablation", "kl_div"))
    with pytest.raises(MedinterpError) as err:
        build_map(rows, params)
    assert str(err.value) == ("The 'map.channels.ablation.metric' setting names no metric of the ablation method: "
                              "'kl_div'; valid: dlogp, judge_*, kl.")
    ok = build_map(rows, MapParams.from_dict(channels("patching", "p_resid_last")))
    assert ok["domains"]["symptoms"]["patching"]["metric"] == "p_resid_last"
    assert {m["method"] for m in ok["missing"] if m["domain"] == "dosage"} >= {"saliency"}  # absent rows: still notes
