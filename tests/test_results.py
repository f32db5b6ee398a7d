"""RunWriter stamps run_id, seed and config_hash and writes config.json without secrets; read_run reads old folders too."""
from __future__ import annotations

import json
import math

import pytest

from medinterp.errors import MedinterpError
from medinterp.provenance import config_hash, run_id
from medinterp.results import COLUMNS, ITEM_COLUMNS, ItemRow, Row, RunWriter, read_run

SECRET = "sk-test-0123456789abcdef"
CONFIG = {"seed": 7, "batch_size": 32, "device": "cpu", "cache_dir": "some/cache",
          "judge": {"model": "gpt-4o", "api_key": SECRET, "api_key_env": "OPENAI_API_KEY",
                    "base_url": f"https://x.invalid/?key={SECRET}"},
          "logger": {"name": "none"}}


def write_run(folder, config=CONFIG):
    writer = RunWriter(folder)
    writer.add_rows([Row("m", "d", "lab", "umap", "s", 0, 0.25, 0.1, 0.4, 3),
                     Row("m", "d", "lab", "umap", "s", 1, math.nan, n=3, note="degenerate: 1 distinct row")])
    writer.add_item_rows([ItemRow("m", "d", "saliency", "all", "loss", -1, "i1", "t1", 2.0)])
    writer.finish({"config": config, "method": "umap"})
    return writer


def test_rows_carry_run_id_seed_and_config_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    writer = write_run(tmp_path / "run")
    folder = tmp_path / "run"
    header = (folder / "per_layer.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == COLUMNS and COLUMNS[-3:] == ("run_id", "seed", "config_hash")
    assert tuple((folder / "per_item.csv").read_text().splitlines()[0].split(",")) == ITEM_COLUMNS

    run = read_run(folder)
    summary = run.summary
    assert summary["run_id"] == writer.run_id == run_id("run", summary["started_at"])
    assert summary["seed"] == 7 and summary["config_hash"] == config_hash(run.config)
    assert {(r.run_id, r.seed, r.config_hash) for r in run.rows} == {(writer.run_id, 7, summary["config_hash"])}
    assert [(r.run_id, r.seed) for r in run.item_rows()] == [(writer.run_id, 7)]
    assert run.rows[0].value == 0.25 and math.isnan(run.rows[1].value)


def test_config_json_holds_the_config_without_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    write_run(tmp_path / "run")
    text = (tmp_path / "run" / "config.json").read_text()
    assert SECRET not in text and SECRET not in (tmp_path / "run" / "summary.json").read_text()
    config = json.loads(text)
    assert config["judge"] == {"model": "gpt-4o", "api_key_env": "OPENAI_API_KEY", "base_url": "<redacted>"}
    assert config["seed"] == 7 and config["cache_dir"] == "some/cache"
    assert "config" not in json.loads((tmp_path / "run" / "summary.json").read_text())  # one copy: config.json


def test_equal_settings_give_equal_hashes_and_a_new_seed_does_not(tmp_path):
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", {**CONFIG, "device": "cuda", "cache_dir": "/elsewhere", "logger": {"name": "wandb"}})
    write_run(tmp_path / "c", {**CONFIG, "seed": 8})
    a, b, c = (read_run(tmp_path / n) for n in "abc")
    assert a.rows[0].config_hash == b.rows[0].config_hash != c.rows[0].config_hash
    assert a.rows[0].run_id != b.rows[0].run_id
    assert c.rows[0].seed == 8


def test_a_run_without_config_has_empty_provenance_cells(tmp_path):
    writer = RunWriter(tmp_path / "run")
    writer.add_rows([Row("m", "d", "lab", "umap", "s", 0, 0.5)])
    writer.finish({})
    run = read_run(tmp_path / "run")
    assert not (tmp_path / "run" / "config.json").exists() and run.config is None
    assert (run.rows[0].run_id, run.rows[0].seed, run.rows[0].config_hash) == (writer.run_id, None, "")
    assert (tmp_path / "run" / "per_layer.csv").read_text().splitlines()[1].endswith(f",,{writer.run_id},,")


OLD_TABLE = "model,domain,labeling,method,metric,layer,value,ci_low,ci_high,n\nm,d,lab,umap,s,1,0.5,,,3\n"
OLD_ITEMS = "model,domain,method,labeling,metric,layer,item,template,value,note\nm,d,saliency,all,loss,-1,i1,t1,2.0,\n"


def test_an_old_folder_reads_with_its_config_from_summary_json(tmp_path):
    (tmp_path / "per_layer.csv").write_text(OLD_TABLE)
    (tmp_path / "per_item.csv").write_text(OLD_ITEMS)
    (tmp_path / "summary.json").write_text(json.dumps({"config": {"seed": 3}, "method": "umap"}))
    run = read_run(tmp_path)
    (r,) = run.rows
    assert (r.layer, r.value, r.n, r.note, r.run_id, r.seed, r.config_hash) == (1, 0.5, 3, "", "", None, "")
    assert math.isnan(r.ci_low)
    assert run.config == {"seed": 3} and run.summary["method"] == "umap"
    assert [(i.item, i.value, i.run_id, i.seed) for i in run.item_rows()] == [("i1", 2.0, "", None)]


def test_an_older_folder_takes_its_config_from_hydra(tmp_path):
    (tmp_path / "per_layer.csv").write_text(OLD_TABLE)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 3\nmethod:\n  n_neighbors: 5\n")
    run = read_run(tmp_path)
    assert run.config == {"seed": 3, "method": {"n_neighbors": 5}} and run.summary == {} and run.item_rows() == []


def test_read_run_names_what_is_wrong(tmp_path):
    with pytest.raises(MedinterpError, match=r"^no per_layer.csv in run folder '.*'$"):
        read_run(tmp_path)
    (tmp_path / "per_layer.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MedinterpError, match=r"per_layer.csv' is not a per_layer table \(KeyError"):
        read_run(tmp_path)
    (tmp_path / "per_layer.csv").write_text(OLD_TABLE)
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(MedinterpError, match=r"config.json is not valid JSON"):
        read_run(tmp_path)


def test_the_tokens_column_is_written_only_when_rows_carry_a_token_type(tmp_path):
    from medinterp.results import TOKEN_COLUMNS, read_rows, write_rows

    rows = [Row("m", "d", "side", "umap", "s", 0, 0.5, n=3, tokens="image")]
    write_rows(tmp_path / "vlm.csv", rows)
    assert tuple((tmp_path / "vlm.csv").read_text().splitlines()[0].split(",")) == TOKEN_COLUMNS
    assert [r.tokens for r in read_rows(tmp_path / "vlm.csv")] == ["image"]
    write_rows(tmp_path / "text.csv", [Row("m", "d", "side", "umap", "s", 0, 0.5, n=3)])
    assert tuple((tmp_path / "text.csv").read_text().splitlines()[0].split(",")) == COLUMNS  # text tables unchanged
    assert [r.tokens for r in read_rows(tmp_path / "text.csv")] == [""]
