"""read_folder: what a run / synthesis / summary folder logs, as plain data (no W&B involved)."""
from __future__ import annotations

import hashlib
import json

import pytest

from medinterp.provenance import config_hash
from medinterp.results import folder_kind
from medinterp.tracking import read_folder
from medinterp.tracking.folder import artifact_name

SIL = "umap/mechanism/silhouette_umap"
R2 = "umap/age/female/r2_raw"
SIL_VALUES = [0.0, 0.3, 0.4, 0.3]  # 0.1·l·(4 − l), conftest.run_rows


def test_run_folder_steps_summary_tables_images(run_folder):
    p = read_folder(run_folder, "tiny_llama-drugs-umap")
    assert p.kind == "run"
    # one step per layer 0..3: silhouette with CI ±0.05, r2 l/10 without CI; no layer −1 step
    assert [s["layer"] for s in p.steps] == [0, 1, 2, 3]
    for layer, step in enumerate(p.steps):
        v = SIL_VALUES[layer]
        assert step == pytest.approx({"layer": layer, SIL: v, f"{SIL}/ci_low": v - 0.05, f"{SIL}/ci_high": v + 0.05,
                                      R2: layer / 10})
    assert p.step_globs == ["umap/*"]
    assert p.metric_keys == sorted([SIL, f"{SIL}/ci_low", f"{SIL}/ci_high", R2])
    # summary: the layer −1 baseline, the best layer (2 for silhouette, 3 for r2) with its value and CI, timings
    assert p.summary == pytest.approx({
        "umap/specialty/silhouette_surface": 0.25, "umap/specialty/silhouette_surface/ci_low": 0.2,
        "umap/specialty/silhouette_surface/ci_high": 0.3,
        f"best_layer/{SIL}": 2, SIL: 0.4, f"{SIL}/ci_low": 0.35, f"{SIL}/ci_high": 0.45,
        f"best_layer/{R2}": 3, R2: 0.3,
        "timings/capture_s": 1.5, "timings/total_s": 2.5, "n_points": 40, "n_rows": 9})
    summary = json.loads((run_folder / "summary.json").read_text())
    assert p.tables["tables/per_layer"].rows[1] == ["tiny_llama", "drugs", "mechanism", "umap", "silhouette_umap", 0,
                                                    0.0, -0.05, 0.05, 40, "", summary["run_id"], None,
                                                    config_hash(p.config)]
    assert (p.provenance["run_id"], p.provenance["config_hash"]) == (summary["run_id"], config_hash(p.config))
    assert len(p.tables["tables/per_layer"].rows) == 9
    assert sorted(p.tables) == ["tables/best_layers", "tables/per_layer"]
    assert {k: v.name for k, v in p.images.items()} == {"figures/curves_categorical": "curves_categorical.png",
                                                         "figures/umap_grid_mechanism": "umap_grid_mechanism.png"}
    assert p.config["judge"]["api_key_env"] == "OPENAI_API_KEY"
    assert p.provenance["prompt_set"]["version"] == "1.1.0" and p.provenance["kind"] == "run"


def test_run_folder_artifacts(run_folder):
    p = read_folder(run_folder, "tiny_llama-drugs-umap")
    prompts, results = p.artifacts
    assert (prompts.name, prompts.type, prompts.aliases) == ("prompts-drugs", "prompt-set", ["v1.1.0"])
    assert list(prompts.files) == ["drugs.yaml"]
    assert hashlib.sha256(prompts.files["drugs.yaml"].read_bytes()).hexdigest() == prompts.metadata["sha256"]
    assert (results.name, results.type) == ("results-tiny_llama-drugs-umap", "results")
    # the log file is not a result
    assert results.files == {name: run_folder / name for name in (
        "config.json", "curves_categorical.png", "per_layer.csv", "summary.json", "umap_grid_mechanism.png")}


def test_changed_prompt_set_is_not_logged_as_the_runs(run_folder):
    summary = json.loads((run_folder / "summary.json").read_text())
    summary["prompt_set"]["sha256"] = "0" * 64  # the packaged file is no longer what the run read
    (run_folder / "summary.json").write_text(json.dumps(summary))
    p = read_folder(run_folder, "x")
    assert [a.type for a in p.artifacts] == ["results"]
    assert p.skipped == ["prompt set medinterp.data.prompts/drugs.yaml: changed since the run (sha256 differs)"]


def test_files_holding_a_secret_are_left_out(run_folder, monkeypatch):
    secret = "sk-test-secret-in-a-file-123456"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    (run_folder / "notes.csv").write_text(f"a,b\n1,{secret}\n")                                # an env value
    (run_folder / "saved.json").write_text(json.dumps({"judge": {"api_key": "literal-key-not-in-env"}}))  # a key
    (run_folder / "other.csv").write_text("a,b\n1,2\n")
    (run_folder / "fine.json").write_text(json.dumps({"judge": {"api_key_env": "X", "token": None}}))
    p = read_folder(run_folder, "x")
    assert p.skipped == ["notes.csv: contains the value of a secret environment variable",
                         "saved.json: holds a secret-looking key (api_key, token, password, ...) with a value"]
    assert "tables/notes" not in p.tables and "tables/saved" not in p.tables
    assert p.tables["tables/other"].rows == [[1, 2]] and "tables/fine" in p.tables
    assert {"notes.csv", "saved.json"}.isdisjoint(p.artifacts[-1].files) and "fine.json" in p.artifacts[-1].files


def test_map_folder(map_folder):
    kmap = json.loads((map_folder / "knowledge_map.json").read_text())
    p = read_folder(map_folder, "tiny_llama-synthesis")
    assert p.kind == "map"
    raw = kmap["domains"]["drugs"]["umap"]["raw"]
    assert raw == pytest.approx(SIL_VALUES)  # the mean silhouette curve of run_rows
    assert [s["knowledge_map/drugs/umap/raw"] for s in p.steps] == pytest.approx(raw)
    assert p.step_globs == ["knowledge_map/*"]
    assert sorted(p.tables) == ["tables/findings", "tables/knowledge_map"]
    intervals = [[a, b] for a, b in kmap["domains"]["drugs"]["umap"]["intervals"]]
    assert [[r[5], r[6]] for r in p.tables["tables/knowledge_map"].rows if r[1] == "umap"] == intervals
    assert sorted(p.images) == ["figures/findings", "figures/knowledge_map"]
    assert p.summary["findings/age_step/available"] is False  # no age rows in the run
    assert p.summary["knowledge_map/drugs/consensus"] == "none"
    assert [a.type for a in p.artifacts] == ["results"]


def test_summary_folder_is_generic_and_recursive(tmp_path, map_folder):
    import shutil

    folder = tmp_path / "summary"
    folder.mkdir()
    (folder / "stability.csv").write_text("domain,layer,value\ndrugs,3,0.5\n")
    (folder / "robustness.json").write_text(json.dumps({"drugs": {"layer": 3, "value": 0.5, "n": 4}}))
    (folder / ".hidden.csv").write_text("x\n1\n")
    shutil.copytree(map_folder, folder / "default_map" / "tiny_llama")       # a nested knowledge map
    shutil.copytree(map_folder, folder / "wandb_sweep" / "abc123")          # downloaded W&B runs: inputs, not results
    assert folder_kind(folder) == "summary"
    p = read_folder(folder, "sweep-summary")
    assert p.tables["tables/stability"].rows == [["drugs", 3, 0.5]]
    assert p.tables["tables/robustness"].rows == [["drugs", 3, 0.5, None, None, 4, None]]
    kmap = p.tables["tables/default_map/tiny_llama/knowledge_map"]  # intervals, as in a map folder
    assert kmap.columns == ["domain", "method", "metric", "rule", "kind", "start", "end"]
    assert sorted(p.images) == ["figures/default_map/tiny_llama/findings", "figures/default_map/tiny_llama/knowledge_map"]
    assert p.steps == []
    assert sorted(p.artifacts[0].files) == [
        "default_map/tiny_llama/findings.json", "default_map/tiny_llama/findings.png",
        "default_map/tiny_llama/knowledge_map.json", "default_map/tiny_llama/knowledge_map.png",
        "robustness.json", "stability.csv"]


def test_long_tables_are_cut_where_wandb_cuts_them(tmp_path):
    folder = tmp_path / "summary"
    folder.mkdir()
    (folder / "stability.csv").write_text("i\n" + "".join(f"{i}\n" for i in range(10_005)))
    p = read_folder(folder, "s")
    assert p.tables["tables/stability"].rows[-1] == [9_999] and len(p.tables["tables/stability"].rows) == 10_000
    assert p.skipped == ["tables/stability: rows after the first 10000 of 10005 (the whole file is in the results artifact)"]
    assert "stability.csv" in p.artifacts[0].files


def test_artifact_names_are_valid():
    assert artifact_name("results-gemma3_270m-age/female:x y") == "results-gemma3_270m-age-female-x-y"
    assert artifact_name("///") == "results"


def test_vqa_folder_scores_go_to_the_summary(tmp_path):
    """runners/vqa.py's metrics.json (written by medinterp.vqa.results): each answer type's score, CI and n in the
    run summary; an answer type without questions keeps only its n = 0 (NaN values are left out); the files are tables as in any summary."""
    from medinterp.vqa import Answer, Question, score_answers
    from medinterp.vqa.results import write_scores

    qs = [Question(i, f"{i}.png", "q", ref, "closed") for i, ref in enumerate(["yes", "no", "yes", "no"])]
    scores = score_answers(qs, [Answer.of(q, "yes", "m") for q in qs], n_boot=50)  # accuracy 0.5
    write_scores(tmp_path, scores, model="m")
    p = read_folder(tmp_path, "m-vqa")
    closed = scores.by_type["closed"].estimate
    assert p.kind == "summary" and p.summary == {
        "vqa/closed/accuracy": 0.5, "vqa/closed/accuracy/ci_low": closed.ci_low,
        "vqa/closed/accuracy/ci_high": closed.ci_high, "vqa/closed/accuracy/n": 4, "vqa/open/recall/n": 0}
    assert 0 <= closed.ci_low < 0.5 < closed.ci_high <= 1
    assert sorted(p.tables) == ["tables/metrics", "tables/per_question"]


def test_sae_folder_metrics_go_to_the_summary(tmp_path):
    """runners/sae.py's metrics.json: its numbers under sae/<metric> (NaN left out, non-metric keys ignored); the
    tables and figures by the generic rules."""
    metrics = {"fvu": 0.25, "explained_variance": 0.75, "l0": 31.5, "dead_fraction": 0.0, "ce_loss_recovered": 0.9,
               "kl": float("nan"), "ce_clean": 3.0, "ce_sae": 3.2, "ce_zero": 5.0, "scale": 0.01, "layer": 9,
               "ablation": "zero", "note": ""}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "catalogue.csv").write_text("domain,latent,auroc\nage,3,0.9\n")
    p = read_folder(tmp_path, "m-sae")
    assert p.summary == {f"sae/{k}": v for k, v in metrics.items()
                         if k not in ("kl", "layer", "ablation", "note")}
    assert sorted(p.tables) == ["tables/catalogue", "tables/metrics"]
    (tmp_path / "metrics.json").write_text(json.dumps({"fvu": 0.5}))  # not an SAE folder's metrics
    assert read_folder(tmp_path, "x").summary == {}
