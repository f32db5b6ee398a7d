"""A withheld value (NaN with a note, e.g. an ablation layer whose judge answered too little) is never read as a
number by the knowledge map: the channel lists it with its note, and a channel with no finite value says why."""
from __future__ import annotations

import math

from medinterp.maps.synthesis import MapParams, build_map
from medinterp.results import Row

NOTE = "judge coverage 0.00 < 0.80 (0 of 4 sent items answered)"
PARAMS = MapParams(methods=("ablation",), domains=("dosage",),
                   channels={"ablation": {"metric": "judge_score", "rule": "segments"}})


def judge_rows(values):
    return [Row("m", "dosage", "all", "ablation", "judge_score", layer, v, note="" if math.isfinite(v) else NOTE)
            for layer, v in enumerate(values, start=1)]


def test_nan_judge_score_layers_are_listed_with_their_note():
    values = [math.nan, 1.0, 2.0, math.nan, 6.0, 7.0, 2.0, math.nan]
    kmap = build_map([(r, "f") for r in judge_rows(values)], PARAMS)
    entry = kmap["domains"]["dosage"]["ablation"]
    assert entry["nan_layers"] == {"1": NOTE, "4": NOTE, "8": NOTE}
    assert entry["interpolated_layers"] == [4]  # inside the curve: bridged, and said so; 1 and 8 are not on it
    assert entry["raw"][1] is None and entry["raw"][4] == 4.0 and entry["raw"][7] == 2.0
    assert all(iv[0] >= 2 and iv[1] <= 7 for iv in entry["intervals"])


def test_a_channel_whose_rows_are_all_nan_is_missing_with_the_reason():
    kmap = build_map([(r, "f") for r in judge_rows([math.nan] * 5)], PARAMS)
    assert kmap["domains"] == {}
    assert kmap["missing"] == [{"domain": "dosage", "method": "ablation",
                                "reason": f"all 5 judge_score rows are NaN ({NOTE})"}]
