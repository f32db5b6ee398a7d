"""The comparison stage on two tiny models' result folders (tests/data/golden_map: tiny_gemma3, tiny_llama), in
process: the files, Table 1 against the rows, the report, the runner's config, and the bad inputs."""
from __future__ import annotations

import json
import logging
import math
import shutil

import pytest

from helpers import ROOT, compose_map, run_runner, runner
from medinterp.atlas import compare
from medinterp.errors import MedinterpError
from medinterp.maps.synthesis import load_table
from medinterp.report import write_report

GOLDEN = ROOT / "tests" / "data" / "golden_map"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    return compare([GOLDEN], tmp_path_factory.mktemp("cmp"))


def test_writes_every_file(compared):
    assert [p.name for p in compared.files] == ["table1.csv", "table1.md", "agreement.json", "atlas.png"]
    assert compared.models == ["tiny_gemma3", "tiny_llama"]
    agreement = json.loads((compared.out_dir / "agreement.json").read_text())
    assert agreement["shared_domains"] == ["age", "disease"]
    assert {m: e["n_layers"] for m, e in agreement["models"].items()} == {"tiny_gemma3": 4, "tiny_llama": 4}
    assert set(agreement["domains"]["age"]["channels"]) == {"umap", "saliency", "ablation", "consensus"}
    assert (compared.out_dir / "atlas.png").stat().st_size > 10_000
    report = write_report(compared.out_dir)  # the folder's kind is "atlas"
    html = report.read_text(encoding="utf-8")
    assert "Table 1" in html and "Agreement between models" in html and "data:image/png;base64" in html


def test_what_wandb_logs(compared):
    """The folder as W&B gets it (medinterp.tracking.read_folder, no wandb needed): both tables and the figure."""
    from medinterp.tracking import read_folder

    payload = read_folder(compared.out_dir, "atlas")
    assert payload.kind == "atlas"
    assert {"tables/table1", "tables/agreement"} <= set(payload.tables) and "figures/atlas" in payload.images
    assert len(payload.tables["tables/table1"].rows) == 7 * 2  # concepts × models


def test_table1_is_the_best_row_of_each_model(compared):
    """age R²: the largest finite r2_raw on age/pooled at a read-out ≥ 0, straight from the rows."""
    table = load_table([GOLDEN])
    cells = {(r["concept"], r["model"]): r for r in _csv(compared.out_dir / "table1.csv")}
    for model in ("tiny_gemma3", "tiny_llama"):
        rows = [r for r in table.rows if r.model == model and r.metric == "r2_raw" and r.labeling == "age/pooled"
                and r.layer >= 0 and math.isfinite(r.value)]
        best = max(rows, key=lambda r: (r.value, -r.layer))
        cell = cells[("age R²", model)]
        assert float(cell["value"]) == best.value and int(cell["layer"]) == best.layer
        assert float(cell["depth"]) == best.layer / 4
        assert cells[("dosage patching P", model)]["note"] == "no rows: dosage/patching/p_resid_diff on pairs"


def _csv(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_one_model_warns_and_still_writes_its_table(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="medinterp"):
        result = compare([GOLDEN / "tiny_llama-age-umap"], tmp_path, figures=False)
    assert "one model only (tiny_llama)" in caplog.text
    assert result.models == ["tiny_llama"] and result.agreement["domains"] == {}
    assert math.isnan(result.score) and (tmp_path / "table1.csv").is_file()


def test_two_runs_of_the_same_model_and_domain(tmp_path):
    copy = tmp_path / "again"
    shutil.copytree(GOLDEN / "tiny_llama-age-umap", copy)
    with pytest.raises(MedinterpError, match=r"both hold tiny_llama/age/umap: keep one of them"):
        compare([GOLDEN / "tiny_llama-age-umap", copy], tmp_path / "out")
    with pytest.raises(MedinterpError, match="twice"):
        compare([GOLDEN / "tiny_llama-age-umap", GOLDEN], tmp_path / "out")


def test_models_without_a_common_domain(tmp_path):
    with pytest.raises(MedinterpError, match=r"share no domain \(tiny_gemma3 has disease; tiny_llama has age\)"):
        compare([GOLDEN / "tiny_llama-age-umap", GOLDEN / "tiny_gemma3-disease-umap"], tmp_path)


def test_a_folder_without_results(tmp_path):
    with pytest.raises(MedinterpError, match="no per_layer.csv under"):
        compare([tmp_path], tmp_path / "out")


def test_the_runner_in_process(tmp_path):
    """conf/compare.yaml composed as the CLI does, with map parameters and an extra concept."""
    cfg = compose_map([f"runs=[{GOLDEN}]", f"out_dir={tmp_path}", "map.sigma=0", "logger=none",
                       "table1.extra=[age:umap:anisotropy:age/pooled]"], config_name="compare")
    result = runner("compare").run_compare(cfg, tmp_path)
    assert json.loads((tmp_path / "agreement.json").read_text())["map_params"]["sigma"] == 0
    concepts = {r["concept"] for r in _csv(tmp_path / "table1.csv")}
    assert "age:umap:anisotropy:age/pooled" in concepts and "age R²" in concepts
    assert result.models == ["tiny_gemma3", "tiny_llama"]


@pytest.mark.slow
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = run_runner("compare.py", f"runs=[{GOLDEN / 'tiny_llama-age-umap'},{GOLDEN / 'tiny_gemma3-disease-umap'}]",
                      f"out_dir={tmp_path}", "logger=none", check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: the models share no domain (tiny_gemma3 has disease; tiny_llama has age); compare needs a domain "
        "mapped by two of them"]
