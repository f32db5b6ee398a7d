"""Stability fractions and robustness statistics on maps whose selections are written by hand."""
from __future__ import annotations

import math

import pytest

from medinterp.sweeps.jobs import Setting
from medinterp.sweeps.robustness import robustness, spread
from medinterp.sweeps.stability import as_json, groups, stability


def settings_with(kit, selections, keys=("seed",)):
    """(Setting, {"toy": map}) per entry of ``selections``: ((values...), {domain: {method: intervals}})."""
    return [(Setting(i, dict(zip(keys, values)), ()), {"toy": kit.kmap(sel)}) for i, (values, sel) in enumerate(selections)]


def test_layer_selected_in_three_of_four_settings_has_fraction_075(kit):
    maps = settings_with(kit, [((0,), {"age": {"umap": [[2, 3]]}}), ((1,), {"age": {"umap": [[2, 2]]}}),
                               ((2,), {"age": {"umap": [[1, 2]]}}), ((3,), {"age": {"umap": [[5, 6]]}})])
    rows = {(r.layer): r for r in stability(maps) if r.group_by == "all"}
    assert [rows[layer].fraction_selected for layer in range(9)] == [0, 0.25, 0.75, 0.25, 0, 0.25, 0.25, 0, 0]
    assert rows[2].n_selected == 3 and rows[2].n_settings == 4
    per_setting = [r for r in stability(maps) if r.group_by == "setting" and r.group == "seed=3"]
    assert [r.layer for r in per_setting if r.fraction_selected == 1] == [5, 6]


def test_settings_without_a_channel_do_not_count(kit):
    maps = settings_with(kit, [((0,), {"age": {"umap": [[2, 2]], "patching": [[2, 3]], "consensus": [[2, 2]]}}),
                               ((1,), {"age": {"umap": [[2, 2]]}})])
    rows = {(r.method, r.layer): r for r in stability(maps) if r.group_by == "all"}
    assert rows[("patching", 3)].n_settings == 1 and rows[("patching", 3)].fraction_selected == 1
    assert rows[("umap", 2)].n_settings == 2
    assert rows[("consensus", 2)].n_settings == 1  # the second setting has one method: no consensus there


def test_groups_per_value_of_each_varied_key(kit):
    sel = {(0, "a"): [[4, 5]], (0, "b"): [[4, 5]], (1, "a"): [[4, 5]], (1, "b"): [[5, 6]]}
    maps = settings_with(kit, [(k, {"d": {"patching": v}}) for k, v in sel.items()], keys=("seed", "templates"))
    assert [(g, v) for g, v, _ in groups([s for s, _ in maps])][:5] == [("all", "all"), ("seed", "0"), ("seed", "1"),
                                                                       ("templates", "a"), ("templates", "b")]
    frac = {(r.group_by, r.group, r.layer): r.fraction_selected for r in stability(maps)}
    assert frac[("seed", "0", 4)] == 1 and frac[("seed", "1", 4)] == 0.5 and frac[("seed", "1", 6)] == 0.5
    assert frac[("templates", "a", 6)] == 0 and frac[("templates", "b", 4)] == 0.5
    nested = as_json(stability(maps))
    assert nested["toy"]["all"]["all"]["d"]["patching"] == {"n_settings": 4, "fraction": [0, 0, 0, 0, 0.75, 1, 0.25, 0, 0]}


def test_spread_of_best_layers():
    mode, range_, std, within = spread([3, 3, 4, 7])
    assert (mode, range_, within) == (3, 4.0, 0.75)
    assert std == pytest.approx(math.sqrt(((3 - 4.25) ** 2 * 2 + 0.25 ** 2 + 2.75 ** 2) / 4))
    assert spread([5, 2, 5, 2])[0] == 2  # a tie goes to the smaller layer
    assert spread([])[0] is None


def test_robustness_rows(kit):
    maps = settings_with(kit, [((i,), {"d": {"patching": iv, "umap": [[4, 6]], "consensus": iv}})
                               for i, iv in enumerate([[[4, 5]], [[4, 5]], [[4, 5]], [[5, 6]]])])
    for (_, m), first in zip(maps, (4, 4, 4, 5)):  # give patching a curve peaking on its bump's first layer
        m["toy"]["domains"]["d"]["patching"]["curve"] = kit.bump(first)
        m["toy"]["domains"]["d"]["patching"]["raw"] = kit.bump(first)
    rows = {r.method: r for r in robustness(maps) if r.group_by == "all"}
    p = rows["patching"]
    assert p.best_layers == (4, 4, 4, 5) and p.modal_best_layer == 4 and p.best_layer_range == 1
    assert p.best_layer_std == pytest.approx(math.sqrt(0.1875)) and p.fraction_within_1 == 1
    assert p.jaccard_mean == pytest.approx((3 * 1 + 3 * (1 / 3)) / 6) and p.jaccard_min == pytest.approx(1 / 3)
    assert p.core_layers == (5,) and p.any_layers == (4, 5, 6) and p.raw_curve_identical is False
    u = rows["umap"]
    assert u.jaccard_mean == 1 and u.raw_curve_identical is True and u.best_layers == (0, 0, 0, 0)  # flat curves
    assert rows["consensus"].best_layers == () and rows["consensus"].raw_curve_identical is None
