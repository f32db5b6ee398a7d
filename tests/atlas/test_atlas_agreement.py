"""Agreement between models on hand-made knowledge maps: pairwise interval Jaccard and Spearman on relative depth."""
from __future__ import annotations

import pytest

from medinterp.atlas.agreement import domain_agreement, summary_score


def kmap(model: str, domains: dict) -> dict:
    return {"model": model, "domains": domains}


A = kmap("a", {"drugs": {"umap": {"intervals": [[1, 2]], "raw": [0, 1, 2, 3, 4]}, "consensus": [[1, 2]]},
               "age": {"umap": {"intervals": [], "raw": [1, 1, 1, 1, 1]}, "consensus": []}})
B = kmap("b", {"drugs": {"umap": {"intervals": [[2, 5]], "raw": [0, 1, 2, 3, 4, 5, 6, 7, 8]},
                         "saliency": {"intervals": [[7, 8]], "raw": [None, 1, 2, 3, 4, 5, 6, 7, 8]}, "consensus": []},
               "dosage": {"patching": {"intervals": [[0, 1]], "raw": [1, 0, 0, 0, 0, 0, 0, 0, 0]}, "consensus": []}})
C = kmap("c", {"drugs": {"umap": {"intervals": [[6, 8]], "raw": [8, 7, 6, 5, 4, 3, 2, 1, 0]}, "consensus": [[6, 8]]}})
LAYERS = {"a": 4, "b": 8, "c": 8}


def test_two_models_by_hand():
    found = domain_agreement({"a": A, "b": B}, LAYERS)
    assert sorted(found) == ["drugs"]  # age and dosage: one model each
    umap = found["drugs"]["channels"]["umap"]
    assert umap["depth_intervals"] == {"a": [[0.125, 0.625]], "b": [[0.1875, 0.6875]]}
    (pair,) = umap["pairs"]
    assert (pair["a"], pair["b"]) == ("a", "b")
    assert pair["jaccard"] == pytest.approx(7 / 9)  # [0.1875, 0.625] over [0.125, 0.6875]
    assert pair["spearman"]["value"] == pytest.approx(1.0) and pair["spearman"]["n"] == 21  # both rise with depth
    (cons,) = found["drugs"]["channels"]["consensus"]["pairs"]
    assert cons["jaccard"] == 0.0 and cons["spearman"] is None  # a selected layers, b none
    assert "saliency" not in found["drugs"]["channels"]  # one model only


def test_three_models_pairwise_and_the_score():
    found = domain_agreement({"a": A, "b": B, "c": C}, LAYERS)
    pairs = {(p["a"], p["b"]): p for p in found["drugs"]["channels"]["umap"]["pairs"]}
    assert sorted(pairs) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pairs[("b", "c")]["spearman"]["value"] == pytest.approx(-1.0)  # c falls where b rises
    # b: [0.1875, 0.6875], c: [0.6875, 1.0]: they touch at one point, no overlap
    assert pairs[("b", "c")]["jaccard"] == 0.0
    assert pairs[("a", "c")]["jaccard"] == 0.0
    cons = {(p["a"], p["b"]): p["jaccard"] for p in found["drugs"]["channels"]["consensus"]["pairs"]}
    assert cons == {("a", "b"): 0.0, ("a", "c"): 0.0, ("b", "c"): 0.0}
    assert summary_score(found) == 0.0
    assert summary_score(found, "umap") == pytest.approx((7 / 9 + 0 + 0) / 3)
