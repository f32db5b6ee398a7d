"""The specificity view: z-scored domain curve minus z-scored control curve, on hand-made curves and in a map."""
from __future__ import annotations

import math

import numpy as np
import pytest

from medinterp.errors import MedinterpError
from medinterp.maps.specificity import specificity
from medinterp.maps.synthesis import MapParams, build_map
from medinterp.results import Row


def test_a_difference_of_z_scores_on_hand_curves():
    s = specificity(np.array([1.0, 2.0, 3.0]), 0, np.array([3.0, 2.0, 1.0]), 0)
    z = np.sqrt(1.5)  # (3 - 2) / sd([1, 2, 3]) with ddof 0
    np.testing.assert_allclose(s.value, [-2 * z, 0.0, 2 * z])
    assert np.isnan(s.half_width).all()  # no intervals given


def test_scale_and_offset_do_not_matter_only_shape_does():
    d = np.array([0.2, 0.9, 0.4, 0.3])
    s = specificity(10 * d + 5, 1, d, 1)
    np.testing.assert_allclose(s.value, 0.0, atol=1e-12)
    assert s.first == 1 and s.last == 4


def test_shared_layers_and_intervals_combine_as_independent():
    d, c = np.array([0.0, 1.0, 2.0, 3.0]), np.array([5.0, 5.0, 7.0])  # layers 0-3 and 1-3
    s = specificity(d, 0, c, 1, domain_half=np.full(4, 0.5), control_half=np.full(3, 1.0))
    assert s.first == 1 and len(s.value) == 3  # layers 1..3 only
    sd_d, sd_c = np.std([1.0, 2.0, 3.0]), np.std([5.0, 5.0, 7.0])
    np.testing.assert_allclose(s.half_width, np.sqrt((0.5 / sd_d) ** 2 + (1.0 / sd_c) ** 2))
    assert specificity(d, 0, np.array([1.0, 1.0, 1.0]), 1) is None  # a flat control has no shape
    assert specificity(d, 0, c, 3) is None  # one shared layer


def _rows(domain, values, half=0.1):
    return [(Row("m", domain, "all", "saliency", "grad_block", layer + 1, float(v), float(v) - half, float(v) + half,
                 8), f"{domain}.csv") for layer, v in enumerate(values)]


# every text: a hump at layers 1-3; the drug domain also peaks at layers 8-9
GENERIC = [5, 6, 5, 2, 1, 1, 1, 1, 1, 1, 1]
DRUGS = [5, 6, 5, 2, 1, 1, 1, 3.5, 4, 1, 1]


def test_the_map_reports_both_views_and_contrast_control_takes_the_specific_lanes():
    rows = _rows("drugs", DRUGS) + _rows("control", GENERIC)
    params = dict(methods=("saliency",), domains=("drugs",), sigma=0.0, percentile=75.0)
    plain = build_map(rows, MapParams(**params))
    lane = plain["domains"]["drugs"]["saliency"]
    assert lane["intervals"][0] == [1, 3]  # the generic hump leads the absolute view
    assert lane["specificity"]["intervals"] == [[8, 9]] and lane["specificity"]["control"] == "control"
    assert "view" not in lane
    half = [h for h in lane["specificity"]["half_width"] if h is not None]
    assert len(half) == 11 and all(h > 0 for h in half)
    spec = build_map(rows, MapParams(**params, contrast="control"))["domains"]["drugs"]["saliency"]
    assert spec["intervals"] == [[8, 9]] and spec["absolute_intervals"] == lane["intervals"]
    assert spec["view"] == "specificity"


def test_a_lane_without_a_control_run_is_listed_as_missing_under_contrast():
    kmap = build_map(_rows("drugs", DRUGS), MapParams(methods=("saliency",), domains=("drugs",), contrast="control"))
    assert {"domain": "drugs", "method": "saliency", "reason": "specificity: no control rows (control)"} in kmap["missing"]
    assert kmap["domains"]["drugs"]["saliency"]["view"] == "absolute"
    with pytest.raises(MedinterpError, match=r"unknown map.contrast 'baseline'; valid: control, null"):
        MapParams(contrast="baseline")
    assert math.isfinite(kmap["domains"]["drugs"]["saliency"]["curve"][2])


def test_the_control_is_not_a_gap_for_methods_without_a_specificity_view():
    """make map runs the control for saliency, ablation and patching only: its missing umap is no gap."""
    umap = [(Row("m", "drugs", "mechanism", "umap", "silhouette_umap", layer, 0.1 * layer, 0.1 * layer - 0.05,
                 0.1 * layer + 0.05, 8), "u.csv") for layer in range(12)]
    rows = _rows("drugs", DRUGS) + _rows("control", GENERIC) + umap
    kmap = build_map(rows, MapParams(methods=("umap", "saliency"), domains=("drugs",), sigma=0.0))
    assert kmap["missing"] == []
    assert set(kmap["domains"]["control"]) - {"consensus"} == {"saliency"}
    # a method with a specificity view that the control lacks is still a gap of the control
    kmap = build_map(rows, MapParams(methods=("umap", "saliency"), domains=("drugs",), sigma=0.0,
                                     specific_methods=("umap", "saliency")))
    assert {"domain": "control", "method": "umap", "reason": "no rows"} in kmap["missing"]


def test_the_summary_names_generic_lanes_and_the_layers_beyond_the_control():
    from medinterp.maps.specificity import specificity_summary
    from medinterp.report.knowledge_map import specificity_section

    params = dict(methods=("saliency",), domains=("drugs",), sigma=0.0, percentile=75.0)
    kmap = build_map(_rows("drugs", DRUGS, half=0.05) + _rows("control", GENERIC, half=0.05), MapParams(**params))
    lane = specificity_summary(kmap)["lanes"]["drugs"]["saliency"]
    control_lane = kmap["domains"]["control"]["saliency"]["intervals"]
    assert lane["absolute"] == [[1, 3]] and lane["specificity"] == [[8, 9]] and lane["control_lane"] == control_lane
    assert lane["generic_overlap"] == 1.0 and control_lane == [[1, 3]]  # the absolute lane is the control's
    assert lane["specific_layers"] == [8, 9] and lane["verdict"] == "yes" and lane["view"] == "absolute"
    # wide bands: no layer's band clears 0, so no layer is specific beyond the CI
    wide = build_map(_rows("drugs", DRUGS, half=5.0) + _rows("control", GENERIC, half=5.0), MapParams(**params))
    assert specificity_summary(wide)["lanes"]["drugs"]["saliency"]["verdict"] == "no"
    assert "<td>8, 9</td>" in specificity_section(kmap)
    assert specificity_summary(build_map(_rows("drugs", DRUGS), MapParams(**params)))["available"] is False
    assert specificity_section(build_map(_rows("drugs", DRUGS), MapParams(**params))) == ""
