"""Findings across a robustness sweep: a hand-made sweep where one centring setting flips the drugs sign."""
from __future__ import annotations

import json

from medinterp.results import Row, RunWriter
from medinterp.sweeps.summary import summarize

RAMP = [0, 0, 0, 0, 0.2, 0.6, 1.0, 1.0, 1.0]


def write_job(folder, method, config, diff_sign=1.0):
    """A run folder as runners/map.py writes it. umap: a silhouette ramp and a specialty − mechanism difference
    whose CI excludes 0 on layers 4..8 with sign ``diff_sign``; patching: a bump on layers 4, 5."""
    writer = RunWriter(folder)
    if method == "umap":
        writer.add_rows(Row("toy", "drugs", "mechanism", "umap", "silhouette_umap", layer, v, v - 0.05, v + 0.05, 55)
                        for layer, v in enumerate(RAMP))
        writer.add_rows(Row("toy", "drugs", "specialty-mechanism", "umap", "silhouette_umap_diff", layer, d, d - 0.05,
                            d + 0.05, 55) for layer, d in enumerate(diff_sign * (0.3 if layer >= 4 else 0.0)
                                                                   for layer in range(9)))
    else:
        writer.add_rows(Row("toy", "drugs", "pairs", "patching", "p_resid_diff", layer, float(layer in (4, 5)), n=10)
                        for layer in range(9))
    writer.finish({"config": config})


def make_sweep(root, flip):
    """2 seeds x 2 centrings, each a umap job and a patching job (patching has no method.center)."""
    job = 0
    for seed in (0, 1):
        for center in ("template", "none"):
            for method in ("umap", "patching"):
                config = {"seed": seed, "robustness": {"center": center, "template": "t1"},
                          "method": {"seed": seed, **({"center": center} if method == "umap" else {})}}
                sign = -1.0 if (seed, center) == flip else 1.0
                write_job(root / f"{job}_toy-drugs-{method}-t1-s{seed}-{center}", method, config, sign)
                job += 1
    return root


def test_a_setting_that_flips_the_sign_makes_the_finding_unstable_and_names_the_setting(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", flip=(0, "none"))
    summary = summarize(sweep, tmp_path / "out", figures=False)
    # umap's method.center and the robustness.center that set it are one factor; patching jobs join their setting
    assert summary["varied_keys"] == ["seed", "robustness.center"]
    assert [len(s["jobs"]) for s in summary["settings"]] == [2, 2, 2, 2]
    drugs = summary["findings_stability"]["toy"]["drugs_specialty_vs_mechanism"]
    assert drugs == {"stable": False, "disagreeing_settings": ["seed=0, robustness.center=none"],
                     "stable_note": "1 of 4 settings disagree"}
    full = json.loads((tmp_path / "out" / "findings_stability.json").read_text())["findings_stability"]["toy"]
    assert full["drugs_specialty_vs_mechanism"]["claims"]["silhouette_umap_diff"] == {
        "seed=0, robustness.center=template": "specialty > mechanism", "seed=0, robustness.center=none":
        "mechanism > specialty", "seed=1, robustness.center=template": "specialty > mechanism",
        "seed=1, robustness.center=none": "specialty > mechanism"}
    assert summary["findings_stability"]["toy"]["age_step"]["stable"] is None  # no age rows anywhere
    # the default map's findings carry the verdict, and the summary report shows it
    found = json.loads((tmp_path / "out" / "default_map" / "toy" / "findings.json").read_text())
    assert found["drugs_specialty_vs_mechanism"]["stable"] is False
    assert found["drugs_specialty_vs_mechanism"]["disagreeing_settings"] == ["seed=0, robustness.center=none"]
    from medinterp.report.summary import summary_page

    page = summary_page(tmp_path / "out")
    assert "<b>NO</b>: seed=0, robustness.center=none disagree" in page


def test_the_same_sign_everywhere_is_stable(tmp_path):
    summary = summarize(make_sweep(tmp_path / "sweep", flip=None), tmp_path / "out", figures=False)
    drugs = summary["findings_stability"]["toy"]["drugs_specialty_vs_mechanism"]
    assert drugs["stable"] is True and drugs["disagreeing_settings"] == []
    assert drugs["stable_note"] == "same verdict in all 4 settings"
