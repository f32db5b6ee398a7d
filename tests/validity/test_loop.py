"""The closed loop on a planted evaluator: one block carries the domain, so its lane has high validity and a
random lane ~0; broken sets are reported; the map's lanes come from knowledge_map.json."""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.validity.lanes import Lane, map_lanes
from medinterp.validity.loop import lane_validity

N_LAYERS, N_ITEMS = 18, 40


class Planted:
    """A fake model of 18 blocks: knocking out block 7 drops the drugs probe from 90 % to 30 % correct; every
    other block costs 0-5 % at random (fixed per block); knocking out block 17 breaks it (NaN)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.cost = rng.uniform(0, 0.05, N_LAYERS)
        self.cost[7] = 0.6
        self.off = set()
        self.calls = 0

    @contextmanager
    def knock_out(self, blocks):
        self.off = set(blocks)
        try:
            yield
        finally:
            self.off = set()

    def evaluate(self, names=None, blocks=()):
        self.calls += 1
        acc = 0.9 - sum(self.cost[b] for b in self.off)
        n_right = int(round(max(acc, 0) * N_ITEMS))
        drugs = np.r_[np.ones(n_right), np.zeros(N_ITEMS - n_right)]
        if 17 in self.off:
            drugs[0] = np.nan
        out = {"drugs": drugs, "control": np.ones(10) - (0.5 if 7 in self.off else 0)}
        return {k: v for k, v in out.items() if names is None or k in names}


def test_the_planted_block_has_high_validity_and_a_random_lane_does_not():
    m = Planted()
    intact = m.evaluate()
    good = lane_validity(Lane("ablation", (7,)), "drugs", N_LAYERS, intact, m.evaluate, m.knock_out, sign=-1,
                         n_draws=5, seed=0)
    assert good["effect"]["value"] == pytest.approx(0.6, abs=0.03)  # 90 % -> 30 %
    assert good["validity"]["score"] > 10 and good["validity"]["beats"] == 1.0
    assert good["damage"]["control"] == pytest.approx(0.5)
    assert all(7 not in r["blocks"] for r in good["random"])  # depth-matched draws avoid the lane's block
    assert good["effect"]["ci_low"] < 0.6 < good["effect"]["ci_high"] + 1e-9
    plain = lane_validity(Lane("saliency", (3,)), "drugs", N_LAYERS, intact, m.evaluate, m.knock_out, sign=-1,
                          n_draws=5, seed=0)
    assert abs(plain["validity"]["score"]) < 3 and plain["validity"]["beats"] < 1.0
    assert "control" not in [k for r in plain["random"] for k in r] and set(plain["damage"]) == {"control"}


def test_block_sets_already_evaluated_are_not_run_again():
    m = Planted()
    memo = {}
    first = lane_validity(Lane("ablation", (7,)), "drugs", N_LAYERS, m.evaluate(), m.evaluate, m.knock_out, sign=-1,
                          n_draws=5, seed=0, memo=memo)
    calls = m.calls
    again = lane_validity(Lane("consensus", (7,)), "drugs", N_LAYERS, m.evaluate(), m.evaluate, m.knock_out, sign=-1,
                          n_draws=5, seed=0, memo=memo)
    assert m.calls == calls + 1  # only the intact evaluation passed in above
    assert again["validity"] == first["validity"] and again["damage"] == first["damage"]


def test_a_set_that_breaks_the_model_is_counted_not_averaged():
    m = Planted()
    out = lane_validity(Lane("consensus", (17,)), "drugs", N_LAYERS, m.evaluate(), m.evaluate, m.knock_out,
                        sign=-1, n_draws=4, seed=0)
    assert math.isnan(out["effect"]["value"]) and out["effect"]["broken"] == 1
    assert math.isnan(out["validity"]["score"]) and "broke the model" in out["validity"]["note"]
    assert lane_validity(Lane("umap", (), "the lane selects no block"), "drugs", N_LAYERS, {}, m.evaluate,
                         m.knock_out, sign=-1)["note"] == "the lane selects no block"


def test_map_lanes_turn_read_out_intervals_into_blocks_and_reject_other_maps():
    kmap = {"model": "gemma3_270m", "n_layers": 18, "domains": {"drugs": {
        "umap": {"intervals": [[0, 2]]}, "ablation": {"intervals": [[5, 6], [9, 9]]}, "patching": {"intervals": []},
        "consensus": [[5, 6]]}}}
    lanes = {lane.name: lane for lane in map_lanes(kmap, "drugs", "gemma3_270m", 18)}
    assert lanes["umap"].blocks == (0, 1) and "read-out 0" in lanes["umap"].note
    assert lanes["ablation"].blocks == (4, 5, 8) and lanes["consensus"].blocks == (4, 5)
    assert lanes["patching"].blocks == () and "no block" in lanes["patching"].note
    with pytest.raises(MedinterpError, match="made for model 'gemma3_270m', not 'smollm2_135m'"):
        map_lanes(kmap, "drugs", "smollm2_135m", 30)
    with pytest.raises(MedinterpError, match=r"no domain 'age'; valid: \['drugs'\]"):
        map_lanes(kmap, "age", "gemma3_270m", 18)
