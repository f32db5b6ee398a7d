"""Finding a sweep's jobs, its varied keys and its settings."""
from __future__ import annotations

import json

import pytest

from medinterp.errors import MedinterpError
from medinterp.sweeps.jobs import canonical, find_jobs, flatten, settings_of, value_label, varied_keys


def test_flatten_and_canonical():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}
    assert canonical(1.0) == canonical(1) and canonical([1, 2]) != canonical([2, 1])
    assert value_label(["aged"]) == "aged" and value_label(2.0) == "2" and value_label(0.5) == "0.5"


def test_methods_sweep_varied_keys_ignore_noise_and_report_each_piece_of_information_once(methods_sweep):
    kind, jobs = find_jobs(methods_sweep)
    assert kind == "methods" and len(jobs) == 8
    assert [j.name for j in jobs][:3] == ["0_toy-disease-umap", "1_toy-disease-patching", "2_toy-disease-umap"]
    assert jobs[1].cell == (("toy", "disease", "patching"),)
    # cache_dir differs per job but is ignored; method.seed repeats seed; robustness.template repeats templates
    assert varied_keys(jobs) == ["seed", "templates"]
    assert "cache_dir" in varied_keys(jobs, ignore=())
    settings = settings_of(jobs, ["seed", "templates"])
    assert [s.label for s in settings] == ["seed=0, templates=a", "seed=0, templates=b", "seed=1, templates=a",
                                           "seed=1, templates=b"]
    assert [len(s.jobs) for s in settings] == [2, 2, 2, 2]  # umap + patching of one setting synthesise together


def test_a_repeated_job_becomes_a_replicate(tmp_path, kit):
    root = tmp_path / "sweep"
    for i in range(3):
        kit.write_run(root / str(i), "umap", kit.RAMP, {"seed": 0})
    _, jobs = find_jobs(root)
    assert varied_keys(jobs) == []
    settings = settings_of(jobs, [])
    assert [s.values for s in settings] == [{"replicate": 0}, {"replicate": 1}, {"replicate": 2}]


def test_maps_sweep_reads_params_and_skips_summary_folders(tmp_path, kit):
    root = tmp_path / "sweep"
    for i, sigma in enumerate((0.5, 1.0)):
        kit.write_map(root / str(i), kit.kmap({"age": {"umap": [[1, 2]]}}, {"sigma": sigma}))
    summary = root / "summary"
    (summary / "default_map").mkdir(parents=True)
    (summary / "stability.json").write_text("{}")
    kit.write_map(summary / "default_map", kit.kmap({"age": {"umap": [[1, 2]]}}))
    kind, jobs = find_jobs(root)
    assert kind == "maps" and [j.name for j in jobs] == ["0", "1"]
    assert varied_keys(jobs) == ["sigma"] and jobs[0].config["channels.umap.metric"] == "silhouette_umap"


def test_kind_auto_prefers_tables_and_can_be_forced(tmp_path, kit):
    root = kit.make_methods_sweep(tmp_path / "sweep")
    kit.write_map(root / "synthesis", kit.kmap({"disease": {"umap": [[4, 6]]}}))
    assert find_jobs(root)[0] == "methods"
    kind, jobs = find_jobs(root, "maps")
    assert kind == "maps" and [j.name for j in jobs] == ["synthesis"]


def test_config_falls_back_to_hydra_config(tmp_path, kit):
    folder = kit.write_run(tmp_path / "s" / "0", "umap", kit.RAMP, {})
    (folder / "summary.json").write_text(json.dumps({"n_rows": 9}))
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text("seed: 3\nmethod:\n  n_neighbors: 5\n")
    _, (job,) = find_jobs(tmp_path / "s")
    assert job.config == {"seed": 3, "method.n_neighbors": 5}


@pytest.mark.parametrize("make, kind, message", [
    (lambda p: None, "auto", "sweep: no such folder"),
    (lambda p: p.mkdir(), "auto", "no knowledge_map.json under"),
    (lambda p: p.mkdir(), "methods", "no per_layer.csv under"),
    (lambda p: p.mkdir(), "grid", "unknown sweep kind 'grid'; valid: auto, maps, methods"),
])
def test_errors_name_the_problem(tmp_path, make, kind, message):
    make(tmp_path / "x")
    with pytest.raises(MedinterpError, match=message):
        find_jobs(tmp_path / "x", kind)


def test_job_choices_from_config_json(tmp_path, kit):
    """runners/map.py writes Hydra's group choices into config.json (``hydra.runtime.choices``); they win over
    ``.hydra/hydra.yaml`` and the cell, and never count as a varied key."""
    from medinterp.sweeps.jobs import job_choices

    choices = {"model": "tiny_gemma3", "domain": "disease", "method": "umap", "judge": None, "experiment": "robustness"}
    for i, seed in enumerate((0, 1)):
        kit.write_run(tmp_path / "s" / str(i), "umap", kit.RAMP, {"seed": seed, "hydra": {"runtime": {"choices": choices}}})
    (tmp_path / "s" / "0" / ".hydra").mkdir()
    (tmp_path / "s" / "0" / ".hydra" / "hydra.yaml").write_text("hydra:\n  runtime:\n    choices:\n      model: other\n")
    _, jobs = find_jobs(tmp_path / "s")
    want = {"model": "tiny_gemma3", "domain": "disease", "method": "umap", "experiment": "robustness"}
    assert [job_choices(j) for j in jobs] == [want, want]
    assert varied_keys(jobs) == ["seed"]


def test_job_choices_of_older_folders_from_hydra_yaml_or_from_the_cell(tmp_path, kit):
    """Folders written before config.json kept the choices: ``.hydra/hydra.yaml``, else the cell's names."""
    from medinterp.sweeps.jobs import job_choices

    folder = kit.write_run(tmp_path / "s" / "0", "umap", kit.RAMP, {"seed": 0})
    _, (job,) = find_jobs(tmp_path / "s")
    assert job_choices(job) == {"model": "toy", "domain": "disease", "method": "umap"}
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n      model: tiny_llama\n      local: null\n      experiment: robustness\n")
    assert job_choices(job) == {"model": "tiny_llama", "experiment": "robustness"}
