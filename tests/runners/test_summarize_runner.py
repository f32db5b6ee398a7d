"""runners/summarize.py end to end (real subprocesses): a 4-setting robustness multirun on a tiny model, a
hand-made sweep with known fractions, a map-parameter sweep of runners/synthesize.py, one-line errors."""
from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from helpers import ROOT, run_runner
from medinterp.maps.synthesis import MapParams, build_map, load_table
from medinterp.results import Row, RunWriter, read_rows
from medinterp.sweeps.selection import best_layer, selected_layers

GOLDEN = ROOT / "tests" / "data" / "golden"
pytestmark = pytest.mark.slow  # runners/map.py, synthesize.py and summarize.py in subprocesses


def run(script, *args, check=True, timeout=600):
    return run_runner(script, *args, check=check, timeout=timeout, env={"WANDB_MODE": "disabled"})


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def fractions(path, group_by="all", group="all"):
    return {(r["domain"], r["method"], int(r["layer"])): float(r["fraction_selected"]) for r in read_csv(path)
            if r["group_by"] == group_by and r["group"] == group}


def test_robustness_multirun_on_a_tiny_model_then_summarize(tmp_path):
    """4 settings (2 template sets x 2 seeds) of UMAP on tiny_llama: the stability fractions equal those of the
    four maps built one by one. Progression needs >= 2 templates (one item per stage), hence leave-one-out."""
    sweep, out = tmp_path / "sweep", tmp_path / "summary"
    run("map.py", "-m", "+experiment=robustness", "model=tiny_llama", "domain=progression", "method=umap",
        "robustness.template=loo1,loo2", "seed=0,1", "robustness.center=template", f"hydra.sweep.dir={sweep}",
        "plots=false", "method.n_boot=20",
        "method.n_perm=3", "method.n_jobs=1")
    jobs = sorted(p for p in sweep.iterdir() if (p / "per_layer.csv").exists())
    assert [p.name for p in jobs] == [f"{i}_tiny_llama-progression-umap-{t}-template" for i, t in
                                      enumerate(["loo1-s0", "loo1-s1", "loo2-s0", "loo2-s1"])]
    loo1, loo2 = ["clinic_note", "follow_up", "assessment"], ["status", "follow_up", "assessment"]
    assert [json.loads((p / "summary.json").read_text())["templates"] for p in jobs] == [loo1, loo1, loo2, loo2]
    proc = run("summarize.py", f"sweep={sweep}", f"out_dir={out}")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["varied_keys"] == ["seed", "templates"] and len(summary["settings"]) == 4
    # the reference: each job's own map with the default parameters
    maps = [build_map(load_table(p).of("tiny_llama"), MapParams()) for p in jobs]
    chosen = [selected_layers(m)[("progression", "umap")] for m in maps]
    got = fractions(out / "stability.csv")
    expected = [sum(layer in c for c in chosen) / 4 for layer in range(5)]
    assert [got[("progression", "umap", layer)] for layer in range(5)] == expected
    rob = {r["method"]: r for r in read_csv(out / "robustness.csv") if r["group_by"] == "all"}
    assert rob["umap"]["best_layers"] == " ".join(str(best_layer(m["domains"]["progression"]["umap"])) for m in maps)
    assert rob["umap"]["raw_curve_identical"] == "False"  # templates and seeds do change UMAP's curve
    assert {r["group_by"] for r in read_csv(out / "robustness.csv")} == {"all", "seed", "templates"}
    # defaults: seed 0 and all templates; no job used all templates, so the first setting is shown, flagged
    assert summary["default_map"]["is_default"] is False
    assert (out / "stability_tiny_llama.png").stat().st_size > 10_000
    assert str(out) in proc.stderr + proc.stdout


def test_robustness_multirun_of_patching_resamples_pairs_per_seed(tmp_path):
    """Patching under the robustness experiment: each seed patches its own 80 % of the pairs, so the rows
    move with the seed and not with the template (pairs are complete prompts); summarize says exactly that."""
    sweep, out = tmp_path / "sweep", tmp_path / "summary"
    run("map.py", "-m", "+experiment=robustness", "model=tiny_llama", "domain=dosage", "method=patching",
        "robustness.template=t1,t2", "seed=0,1", "robustness.center=template", f"hydra.sweep.dir={sweep}",
        "plots=false", "report=false",
        "method.n_boot=20", "method.min_gap=0", "logger=none")
    jobs = sorted(p for p in sweep.iterdir() if (p / "per_layer.csv").exists())
    assert len(jobs) == 4
    summaries = [json.loads((p / "summary.json").read_text()) for p in jobs]
    sampled = [s["method_summary"]["sampled_pairs"] for s in summaries]  # t1-s0, t1-s1, t2-s0, t2-s1
    assert sampled[0] == sampled[2] and sampled[1] == sampled[3] and sampled[0] != sampled[1]
    assert all(s["method_summary"]["pair_fraction"] == 0.8 and len(p) == 20 for s, p in zip(summaries, sampled))
    tables = [[dataclasses.replace(r, run_id="", config_hash="") for r in read_rows(p / "per_layer.csv")] for p in jobs]
    assert tables[0] == tables[2] and tables[0] != tables[1]  # the template changes nothing but provenance; seed does
    run("summarize.py", f"sweep={sweep}", f"out_dir={out}")
    rob = {r["method"]: r for r in read_csv(out / "robustness.csv") if r["group_by"] == "all"}
    assert rob["patching"]["raw_curve_identical"] == "False"
    maps = [build_map(load_table(p).of("tiny_llama"), MapParams()) for p in jobs]
    chosen = [selected_layers(m)[("dosage", "patching")] for m in maps]
    got = fractions(out / "stability.csv")
    assert [got[("dosage", "patching", layer)] for layer in range(5)] == [sum(layer in c for c in chosen) / 4
                                                                          for layer in range(5)]


def write_job(folder, first, seed):
    """A patching run whose p_resid_diff is 1 on layers first, first+1 (selected exactly with map.sigma=0);
    its .hydra/hydra.yaml names the config groups it ran with, as Hydra writes them."""
    writer = RunWriter(folder)
    writer.add_rows(Row("toy", "disease", "pairs", "patching", "p_resid_diff", layer, float(layer in (first, first + 1)))
                    for layer in range(9))
    writer.finish({"config": {"seed": seed, "method": {"seed": seed}}})
    (folder / ".hydra").mkdir()
    choices = {"model": "tiny_llama", "domain": "disease", "method": "patching", "judge": "deterministic",
               "hydra/launcher": "basic"}
    (folder / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))


def test_hand_made_sweep_gives_the_expected_fractions(tmp_path):
    for job, first in enumerate((4, 4, 4, 5)):  # layer 4 in 3 of 4 settings, 5 in all, 6 in 1
        write_job(tmp_path / "sweep" / f"{job}_toy-disease-patching", first, seed=job)
    out = tmp_path / "out"
    run("summarize.py", f"sweep={tmp_path / 'sweep'}", f"out_dir={out}", "map.sigma=0", "logger=none")
    got = fractions(out / "stability.csv")
    assert [got[("disease", "patching", layer)] for layer in range(9)] == [0, 0, 0, 0, 0.75, 1, 0.25, 0, 0]
    assert fractions(out / "stability.csv", "setting", "seed=3")[("disease", "patching", 6)] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["map"]["sigma"] == 0 and summary["varied_keys"] == ["seed"]
    # the map runner's default seed is 0 (conf/map.yaml composed with the jobs' choices): setting 0 is the default
    assert summary["default_map"] == {"setting": 0, "is_default": True, "source": "setting seed=0"}
    assert set(summary["files"]) >= {"stability.csv", "stability.json", "robustness.csv", "robustness.json",
                                     "settings.csv", "stability_toy.png", "robustness_toy.png"}
    assert not (out / "wandb").exists() and not (out / ".hydra").exists()


def test_map_parameter_sweep_of_synthesize_then_summarize(tmp_path):
    """sweeps/sweep/map_consensus.yaml: min_methods 1..4 on the golden tables; the default job is min_methods=2."""
    sweep, out = tmp_path / "maps", tmp_path / "summary"
    run("synthesize.py", "--config-dir", "sweeps", "+sweep=map_consensus", f"runs={GOLDEN}", f"out_dir={sweep}")
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    assert not (sweep / "0" / "golden" / "knowledge_map.png").exists()  # the sweep turns figures and findings off
    assert not (sweep / "0" / "golden" / "findings.json").exists()
    run("summarize.py", f"sweep={sweep}", f"out_dir={out}", "logger=none")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "maps" and summary["varied_keys"] == ["min_methods"]
    assert summary["default_map"] == {"setting": 1, "is_default": True, "source": "job 1"}
    table = load_table(GOLDEN)
    consensus = [selected_layers(build_map(table.of("golden"), MapParams(min_methods=k))) for k in (1, 2, 3, 4)]
    got = fractions(out / "stability.csv")
    for domain in ("symptoms", "age"):
        present = [c[(domain, "consensus")] for c in consensus if (domain, "consensus") in c]
        for layer in range(4):
            assert got[(domain, "consensus", layer)] == pytest.approx(sum(layer in c for c in present) / len(present))
    default = json.loads((out / "default_map" / "golden" / "knowledge_map.json").read_text())
    assert default["params"]["min_methods"] == 2 and default["domains"]["symptoms"]["consensus"] == [[2, 4]]


@pytest.mark.parametrize("args, message", [
    ([], "error: sweep= is required"),
    (["sweep=/no/such/sweep"], "error: sweep: no such folder '/no/such/sweep'"),
    (["sweep={tmp}/empty"], "error: no knowledge_map.json under"),
    (["sweep={tmp}/empty", "kind=grid"], "error: unknown sweep kind 'grid'; valid: auto, maps, methods"),
    (["sweep={tmp}/empty", "map.sigma=-1"], "error: The map parameter 'sigma' must be in [0, inf]. Got -1 instead."),
    (["sweep={tmp}/empty", "map=nope"], "error: map=nope: map holds the knowledge-map settings (map.sigma=2.0, ...); a settings file is chosen with synthesis=<name>; valid: default"),
    (["sweep={tmp}/empty", "synthesis=nope"], "error: unknown synthesis 'nope'; valid: default"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    proc = run("summarize.py", *[a.format(tmp=tmp_path) for a in args], f"out_dir={tmp_path}/out", check=False, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message.format(tmp=tmp_path)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
