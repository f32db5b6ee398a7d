"""The whole summary stage on hand-made sweeps: files, exact fractions, the default map, figures."""
from __future__ import annotations

import csv
import json

import pytest

from medinterp.maps.synthesis import MapParams
from medinterp.sweeps.summary import summarize


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_methods_sweep_hand_checked(methods_sweep, sigma0, tmp_path):
    out = tmp_path / "summary"
    summary = summarize(methods_sweep, out, sigma0)
    assert summary["kind"] == "methods" and summary["n_jobs"] == 8 and summary["varied_keys"] == ["seed", "templates"]
    rows = [r for r in read(out / "stability.csv") if r["group_by"] == "all"]
    frac = {(r["method"], int(r["layer"])): float(r["fraction_selected"]) for r in rows}
    assert [frac[("patching", layer)] for layer in range(9)] == [0, 0, 0, 0, 0.75, 1, 0.25, 0, 0]
    assert [frac[("umap", layer)] for layer in range(9)] == [0, 0, 0, 0, 1, 1, 1, 0, 0]
    assert [frac[("consensus", layer)] for layer in range(9)] == [0, 0, 0, 0, 0.75, 1, 0.25, 0, 0]
    by_seed = {(r["group"], int(r["layer"])): float(r["fraction_selected"]) for r in read(out / "stability.csv")
               if r["group_by"] == "seed" and r["method"] == "patching"}
    assert by_seed[("0", 4)] == 1 and by_seed[("1", 4)] == 0.5  # across templates at each seed
    rob = {r["method"]: r for r in read(out / "robustness.csv") if r["group_by"] == "all"}
    assert rob["patching"]["best_layers"] == "4 4 4 5" and rob["patching"]["core_layers"] == "5"
    assert rob["umap"]["raw_curve_identical"] == "True" and rob["patching"]["raw_curve_identical"] == "False"
    settings = read(out / "settings.csv")
    assert settings[0]["label"] == "seed=0, templates=a"
    assert settings[0]["jobs"] == "0_toy-disease-umap;1_toy-disease-patching"
    # no setting is the runner's default (no defaults given): the first is shown and flagged
    assert summary["default_map"]["is_default"] is False and settings[0]["is_default"] == "True"
    default = json.loads((out / "default_map" / "toy" / "knowledge_map.json").read_text())
    assert default["domains"]["disease"]["patching"]["intervals"] == [[4, 5]]
    for png in ("stability_toy.png", "robustness_toy.png", "default_map/toy/knowledge_map.png"):
        assert (out / png).stat().st_size > 10_000, png
    assert set(summary["figures"]) == {"stability_toy.png", "robustness_toy.png", "knowledge_map.png"}
    assert not list(out.rglob(".*.tmp"))


def test_methods_sweep_finds_the_setting_at_the_runners_defaults(methods_sweep, sigma0, tmp_path):
    defaults = lambda job: {"seed": 1, "templates": ["b"]}  # noqa: E731
    summary = summarize(methods_sweep, tmp_path / "out", sigma0, defaults=defaults, figures=False)
    assert summary["default_map"] == {"setting": 3, "is_default": True, "source": "setting seed=1, templates=b"}
    default = json.loads((tmp_path / "out" / "default_map" / "toy" / "knowledge_map.json").read_text())
    assert default["domains"]["disease"]["patching"]["intervals"] == [[5, 6]]


def test_maps_sweep_uses_the_job_at_default_parameters(tmp_path, kit):
    root = tmp_path / "sweep"
    selections = {0.5: [[1, 3]], 1.0: [[2, 3]], 2.0: [[3, 4]]}
    for i, (sigma, iv) in enumerate(selections.items()):
        kit.write_map(root / str(i), kit.kmap({"age": {"umap": iv, "saliency": [[3, 3]], "consensus": [[3, 3]]}},
                                              {"sigma": sigma}))
    summary = summarize(root, tmp_path / "out", MapParams(), figures=False)
    assert summary["kind"] == "maps" and summary["varied_keys"] == ["sigma"]
    assert summary["default_map"] == {"setting": 1, "is_default": True, "source": "job 1"}
    frac = {(r["method"], int(r["layer"])): float(r["fraction_selected"])
            for r in read(tmp_path / "out" / "stability.csv") if r["group_by"] == "all"}
    assert [frac[("umap", layer)] for layer in range(6)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1 / 3, 0])
    assert frac[("consensus", 3)] == 1
    # no job at the defaults and no tables known: no default map, said so
    summary = summarize(root, tmp_path / "out2", MapParams(sigma=3.0), figures=False)
    assert summary["default_map"]["setting"] is None and "pass runs=" in summary["default_map"]["source"]
    assert not (tmp_path / "out2" / "default_map").exists()


def test_maps_sweep_without_a_default_job_synthesises_the_default_from_runs(tmp_path, kit, methods_sweep):
    root = tmp_path / "maps"
    kit.write_map(root / "0", kit.kmap({"disease": {"umap": [[1, 1]]}}, {"sigma": 0.5}, model="toy"))
    summary = summarize(root, tmp_path / "out", MapParams(sigma=0.0), runs=[str(methods_sweep / "1_toy-disease-patching")],
                        figures=False)
    assert summary["default_map"]["is_default"] and summary["default_map"]["source"].startswith("fresh synthesis of")
    default = json.loads((tmp_path / "out" / "default_map" / "toy" / "knowledge_map.json").read_text())
    assert default["params"]["sigma"] == 0 and default["domains"]["disease"]["patching"]["intervals"] == [[4, 5]]


def test_the_runs_of_a_synthesize_job_come_from_its_config(tmp_path):
    from medinterp.sweeps.jobs import Job
    from medinterp.sweeps.summary import _runs_of

    old, new, bare = (tmp_path / n for n in ("old", "new", "bare"))
    for folder in (old, new, bare):
        folder.mkdir()
    (old / ".hydra").mkdir()
    (old / ".hydra" / "config.yaml").write_text("runs:\n- outputs/a\n- outputs/b\n")  # a folder from before config.json
    (new / "config.json").write_text(json.dumps({"runs": "outputs/c"}))
    job = lambda path: Job(path.name, path, "maps", {})  # noqa: E731
    assert _runs_of([job(bare), job(old)]) == ["outputs/a", "outputs/b"]
    assert _runs_of([job(new), job(old)]) == ["outputs/c"]
    assert _runs_of([job(bare)]) is None
