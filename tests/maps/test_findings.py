"""Each finding on synthetic rows with a known answer, and "not available" when its metrics are absent."""
from __future__ import annotations

import math

import pytest

from medinterp.maps.findings import (
    FindingsParams,
    age_step,
    collapse,
    collapse_episodes,
    findings,
    progression_circularity,
    specialty_vs_mechanism,
)
from medinterp.results import Row

NAN = math.nan


def curve(labeling, metric, values, half_width=0.1, domain="x", model="m"):
    """Rows of one per-layer curve (layer = index), CI = value ± half_width (None: no CI)."""
    hw = NAN if half_width is None else half_width
    return [Row(model, domain, labeling, "umap", metric, layer, float(v), v - hw, v + hw, 50)
            for layer, v in enumerate(values)]


# -- age ---------------------------------------------------------------------------------------------
def test_age_step_reports_the_layer_of_the_largest_pooled_step():
    rows = curve("age/pooled", "discontinuity", [1.0, 1.1, 2.5, 1.9, 1.0], half_width=0.3)
    rows += curve("age/female", "discontinuity", [1.0, 1.0, 3.5, 1.0, 1.0])
    rows += curve("age/male", "discontinuity", [1.0, 1.0, 1.5, 1.0, 1.0])
    rows += curve("age/female-male", "discontinuity_diff", [0.0, 0.05, 2.0, 0.3, 0.0], half_width=0.2)
    rows += [Row("m", "x", "age/pooled", "umap", "discontinuity", -1, 50.0)]  # baseline rows never count
    f = age_step(rows)
    assert f["available"] and f["null"] == 1.0
    assert f["peak"]["layer"] == 2 and f["peak"]["value"] == 2.5
    assert f["peak"]["ci_low"] == pytest.approx(2.2) and f["peak"]["excludes_null"] is True
    assert f["at_peak"]["age/female"]["value"] == 3.5 and f["at_peak"]["age/male"]["value"] == 1.5
    g = f["gender_difference"]
    assert g["available"] and g["null"] == 0.0 and g["at_peak"]["value"] == 2.0
    assert g["layers_excluding_null"] == [2, 3]  # 0.3 ± 0.2 excludes 0 too; 0.05 ± 0.2 does not
    assert f["missing"] == []


def test_age_step_without_a_ci_and_without_subsets():
    f = age_step(curve("age/pooled", "discontinuity", [1.0, 0.9, 1.2], half_width=None))
    assert f["peak"]["layer"] == 2 and f["peak"]["excludes_null"] is None and f["peak"]["ci_low"] is None
    assert f["missing"] == ["discontinuity on age/female", "discontinuity on age/male"]
    assert f["gender_difference"] == {"available": False, "missing": ["discontinuity_diff on age/female-male"]}
    assert age_step(curve("age/pooled", "r2_raw", [0.5])) == {"available": False,
                                                              "missing": ["discontinuity on age/pooled"]}


# -- progression -------------------------------------------------------------------------------------
def test_progression_best_layer_and_nulls_per_disease():
    rows = curve("stage/parkinsons", "circular_corr", [0.1, 0.3, 0.8, 0.5])
    rows += curve("stage/parkinsons", "circular_corr_null", [0.1, 0.1, 0.1, 0.1], half_width=0.15)
    rows += curve("stage/parkinsons", "circular_r2_gain", [0.0, 0.1, 0.3, 0.2], half_width=0.05)
    rows += curve("stage/parkinsons", "circular_r2_gain_null", [0.02] * 4, half_width=0.02)
    rows += curve("stage/parkinsons", "closure_ratio", [3.0, 2.0, 1.2, 1.5], half_width=0.2)
    rows += curve("stage/parkinsons", "closure_ratio_null", [3.0] * 4, half_width=0.5)
    rows += curve("stage/copd", "circular_corr", [0.2, 0.25, 0.1, 0.0])
    rows += curve("stage/copd", "circular_corr_null", [0.1] * 4, half_width=0.2)
    f = progression_circularity(rows)
    park, copd = f["diseases"]["parkinsons"], f["diseases"]["copd"]
    assert park["best_layer"] == 2 and park["missing"] == []
    assert park["circular_corr"]["value"] == 0.8 and park["circular_corr"]["beats_null"] is True  # 0.8 > 0.25
    assert park["circular_r2_gain"]["beats_null"] is True                                          # 0.3 > 0.04
    assert park["closure_ratio"]["value"] == 1.2 and park["closure_ratio"]["beats_null"] is True   # 1.2 < 2.5
    assert copd["best_layer"] == 1 and copd["circular_corr"]["beats_null"] is False                # 0.25 ≤ 0.3
    assert copd["missing"] == ["circular_r2_gain on stage/copd", "closure_ratio on stage/copd"]
    by_closure = progression_circularity(rows, FindingsParams(progression_best_by="closure_ratio"))
    assert by_closure["diseases"]["parkinsons"]["best_layer"] == 2 and by_closure["diseases"]["copd"]["best_layer"] is None


def test_progression_not_available():
    f = progression_circularity(curve("stage/copd", "silhouette_umap", [0.1, 0.2]))
    assert f["available"] is False and "circular_corr on stage/<disease>" in f["missing"]


# -- drugs -------------------------------------------------------------------------------------------
def test_specialty_vs_mechanism_layers_and_sign():
    rows = curve("specialty-mechanism", "silhouette_umap_diff", [0.0, 0.05, 0.2, 0.3, 0.15], half_width=0.1)
    f = specialty_vs_mechanism(rows)
    m = f["metrics"]["silhouette_umap_diff"]
    assert f["available"] and m["layers_excluding_null"] == [2, 3, 4] and m["sign"] == "specialty > mechanism"
    assert m["peak"]["layer"] == 3 and f["missing"] == ["silhouette_raw_diff on specialty-mechanism"]
    rows += curve("specialty-mechanism", "silhouette_raw_diff", [-0.3, 0.0, 0.2, 0.0, 0.0], half_width=0.1)
    raw = specialty_vs_mechanism(rows)["metrics"]["silhouette_raw_diff"]
    assert raw["sign"] == "mixed" and raw["mechanism_higher"] == [0] and raw["specialty_higher"] == [2]
    flat = specialty_vs_mechanism(curve("specialty-mechanism", "silhouette_umap_diff", [0.01, -0.02]))
    assert flat["metrics"]["silhouette_umap_diff"]["sign"] == "none"
    assert specialty_vs_mechanism([])["available"] is False


# -- collapse ----------------------------------------------------------------------------------------
def test_collapse_episode_with_recovery():
    # running max 30 at layer 2 → threshold 15; drops below at 5 (12), trough 10 at 6, back above at 8.
    values = [10, 20, 30, 30, 30, 12, 10, 14, 25, 30]
    found = collapse_episodes(values, fraction=0.5)
    assert found["unrecovered"] is None
    (ep,) = found["episodes"]
    assert (ep["collapse_layer"], ep["trough_layer"], ep["recovery_layer"], ep["reference_layer"]) == (5, 6, 8, 2)
    assert ep["threshold"] == 15 and ep["trough"] == 10


def test_no_collapse_cases():
    assert collapse_episodes([1, 2, 3, 2.9, 4]) == {"episodes": [], "unrecovered": None}    # shallow dip
    late = collapse_episodes([1, 5, 6, 2, 1])                                               # never recovers
    assert late["episodes"] == [] and late["unrecovered"]["collapse_layer"] == 3
    assert collapse_episodes([0.02, 0.0, 0.03], min_peak=0.05)["episodes"] == []          # silhouettes ≈ 0
    assert collapse_episodes([0.02, 0.0, 0.03], min_peak=0.0)["episodes"][0]["collapse_layer"] == 1
    assert collapse_episodes([-0.2, -0.5, -0.1], min_peak=0.0)["episodes"] == []          # negative peak
    # two separate episodes, and a missing layer in between is skipped
    two = collapse_episodes([4, 1, 4, None, 8, 3, 9])
    assert [(e["collapse_layer"], e["recovery_layer"]) for e in two["episodes"]] == [(1, 2), (5, 6)]


def test_collapse_finding_uses_effective_rank_cis_and_silhouette_curves():
    rows = curve("all", "effective_rank", [10, 20, 30, 30, 12, 10, 14, 25, 30], half_width=1.0, domain="drugs")
    rows += curve("all", "effective_rank", [10, 20, 30, 40, 50], half_width=1.0, domain="age")
    f = collapse(rows, {"drugs": [0.0, 0.2, 0.4, 0.1, None, 0.3], "symptoms": [0.1, 0.2]})
    assert f["available"] and f["missing"] == []
    (ep,) = f["curves"]["drugs/effective_rank"]["episodes"]
    assert (ep["collapse_layer"], ep["recovery_layer"]) == (4, 7) and ep["ci_confirms"] is True  # 11 < 15
    assert ep["trough_point"]["ci_high"] == 11 and ep["reference_point"]["layer"] == 2
    assert f["curves"]["age/effective_rank"]["episodes"] == []
    assert [(e["collapse_layer"], e["recovery_layer"]) for e in f["curves"]["drugs/silhouette"]["episodes"]] == [(3, 5)]
    assert f["any_collapse"] == ["drugs/effective_rank", "drugs/silhouette"]
    assert collapse([], {})["available"] is False
    assert collapse([], {"drugs": [0.1]})["missing"] == ["effective_rank on all"]


def test_findings_bundle_and_validation():
    f = findings(curve("age/pooled", "discontinuity", [1.0, 3.0]))
    assert f["model"] == "m" and f["age_step"]["peak"]["layer"] == 1
    assert not f["drugs_specialty_vs_mechanism"]["available"] and not f["collapse"]["available"]
    from medinterp.errors import MedinterpError
    with pytest.raises(MedinterpError, match="'progression_best_by' must be one of"):
        FindingsParams(progression_best_by="silhouette")
    with pytest.raises(MedinterpError, match="one model"):
        findings(curve("a", "b", [1.0]) + curve("a", "b", [1.0], model="other"))


# -- lexical confound ----------------------------------------------------------------------------------
def test_layers_explained_by_spelling_are_reported_per_labeling_and_beside_the_drugs_difference():
    from dataclasses import replace

    from medinterp.maps.findings import spelling_confound, verdicts
    from medinterp.report.tables import findings_rows

    flag = "explained_by_spelling: surface 0.355 >= 0.5 x 0.400"
    mech = curve("mechanism", "silhouette_umap", [0.4, 0.8, 0.9], domain="drugs")
    mech[0] = replace(mech[0], note=flag)
    rows = [Row("m", "drugs", "mechanism", "umap", "silhouette_surface", -1, 0.355, 0.3, 0.4, 55),
            Row("m", "drugs", "specialty", "umap", "silhouette_surface", -1, 0.05, 0.0, 0.1, 55),
            *mech, *curve("specialty", "silhouette_umap", [0.1, 0.2, 0.3], domain="drugs"),
            *curve("specialty-mechanism", "silhouette_umap_diff", [-0.3, -0.6, -0.6], domain="drugs")]
    f = spelling_confound(rows)
    assert f["available"] and f["any"] == ["drugs/mechanism"]
    assert f["labelings"]["drugs/mechanism"]["silhouette_umap"] == [0]
    assert f["labelings"]["drugs/mechanism"]["silhouette_raw"] == [] and f["labelings"]["drugs/specialty"]["silhouette_umap"] == []
    found = findings(rows)
    drugs = found["drugs_specialty_vs_mechanism"]["metrics"]["silhouette_umap_diff"]
    assert drugs["explained_by_spelling"] == {"specialty": [], "mechanism": [0]}
    assert found["explained_by_spelling"]["stable"] is None
    assert found["explained_by_spelling"]["stable_note"] == "no robustness sweep"
    assert verdicts(found)["explained_by_spelling"] == {"drugs/mechanism": "True", "drugs/specialty": "False"}
    text = " ".join(" ".join(r) for r in findings_rows(found))
    assert "mechanism clustering explained by spelling at layers 0" in text
    assert "drugs/mechanism: spelling control (layer −1)" in text and "explained_by_spelling: silhouette_umap at layers 0" in text
    assert spelling_confound(mech)["available"] is False  # no control rows (an older table)
