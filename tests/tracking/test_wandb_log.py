"""log_run_folder end to end with real offline W&B runs, read back from what W&B wrote to disk.

The offline run folder is checked three ways: its media files (images and table JSON), its .wandb log
(via ``wandb leet inspect --json``: config, metric definitions, per-layer history, summary,
artifacts), and our own wandb_logged.json.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import wandb

from medinterp.tracking import RECORD_NAME, log_run_folder

FAKE_OPENAI = "sk-test-OPENAI-0123456789abcdefXYZ"
FAKE_WANDB = "wandb-test-KEY-9876543210fedcbaQRS"
SIL = "umap/mechanism/silhouette_umap"
R2 = "umap/age/female/r2_raw"
SIL_VALUES = [0.0, 0.3, 0.4, 0.3]  # 0.1·l·(4 − l), conftest.run_rows: best layer 2, not the last
OFFLINE = {"name": "wandb", "mode": "offline"}


def _log(folder: Path, **kwargs):
    args = dict(settings=OFFLINE, name=folder.name, group="sweep-1", job_type="umap")
    return log_run_folder(folder, **{**args, **kwargs})


def _by_type(records: list[dict], kind: str) -> list[dict]:
    return [r[kind] for r in records if r["type"] == kind]


def test_offline_run_folder(run_folder, offline_records, offline_summary):
    tracked = _log(run_folder, config={"model": {"name": "tiny_llama"}, "seed": 0}, tags=["ci"])
    assert tracked is not None and tracked.mode == "offline" and tracked.url is None
    wdir = tracked.wandb_dir
    assert wdir.parent == run_folder / "wandb" and wdir.name.startswith("offline-run-")  # next to the results
    records = offline_records(wdir)

    (run,) = _by_type(records, "run")
    assert (run["display_name"], run["run_group"], run["job_type"], run["project"]) == (
        "tiny_llama-drugs-umap", "sweep-1", "umap", "medinterp")
    assert run["tags"] == ["ci"]
    config = run["config"]["update"]
    assert config["model"] == {"name": "tiny_llama"} and config["seed"] == 0
    assert config["provenance"]["prompt_set"]["version"] == "1.1.0"
    assert config["provenance"]["model"]["key"] == "tiny_llama-abc"
    assert any("python" in e for e in _by_type(records, "environment"))  # W&B's run metadata is kept here

    # layer is the x-axis of every umap/* key
    metrics = _by_type(records, "metric")
    assert {"name": "layer", "options": {"defined": True}} in metrics
    assert any(m.get("glob_name") == "umap/*" and m.get("step_metric") == "layer" for m in metrics)

    # one history row per layer with the analytic values, then one row of media
    history = [h["item"] for h in _by_type(records, "history")]
    per_layer = [h for h in history if "layer" in h]
    assert [h["layer"] for h in per_layer] == [0, 1, 2, 3]
    for h in per_layer:
        layer = h["layer"]
        assert h[SIL] == pytest.approx(SIL_VALUES[layer])
        assert h[f"{SIL}/ci_low"] == pytest.approx(SIL_VALUES[layer] - 0.05)
        assert h[f"{SIL}/ci_high"] == pytest.approx(SIL_VALUES[layer] + 0.05)
        assert h[R2] == pytest.approx(layer / 10) and f"{R2}/ci_low" not in h
    media_row = history[-1]
    assert media_row["tables/per_layer._type"] == "table-file" and media_row["tables/per_layer.nrows"] == 9
    assert media_row["figures/curves_categorical._type"] == "image-file"

    # final summary: the best layer's value and CI (not the last layer's), the layer −1 baseline (never a
    # history point), timings
    summary = offline_summary(wdir)["summary"]
    assert summary[f"best_layer/{SIL}"] == 2
    assert [summary[SIL], summary[f"{SIL}/ci_low"], summary[f"{SIL}/ci_high"]] == pytest.approx([0.4, 0.35, 0.45])
    assert summary[f"best_layer/{R2}"] == 3 and summary[R2] == pytest.approx(0.3)
    assert summary["umap/specialty/silhouette_surface"] == pytest.approx(0.25)
    assert summary["timings/total_s"] == pytest.approx(2.5)
    assert not any("silhouette_surface" in k for h in history for k in h)

    # artifacts: the prompt set (with its version as alias) and the results
    artifacts = {a["name"]: a for a in _by_type(records, "artifact") if a["type"] in ("prompt-set", "results")}
    prompts, results = artifacts["prompts-drugs"], artifacts["results-tiny_llama-drugs-umap"]
    assert prompts["type"] == "prompt-set" and "v1.1.0" in prompts["aliases"]
    assert json.loads(prompts["metadata"])["version"] == "1.1.0"
    assert [c["path"] for c in prompts["manifest"]["contents"]] == ["drugs.yaml"]
    assert sorted(c["path"] for c in results["manifest"]["contents"]) == [
        "config.json", "curves_categorical.png", "per_layer.csv", "summary.json", "umap_grid_mechanism.png"]

    # media files: the images are the run's PNGs byte for byte; the table holds per_layer.csv's rows
    images = sorted((wdir / "files/media/images/figures").glob("*.png"))
    assert [p.name.split("_")[0] for p in images] == ["curves", "umap"]
    assert {p.read_bytes() for p in images} == {(run_folder / "curves_categorical.png").read_bytes(),
                                               (run_folder / "umap_grid_mechanism.png").read_bytes()}
    (table_file,) = (wdir / "files/media/table/tables").glob("per_layer_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"][:6] == ["model", "domain", "labeling", "method", "metric", "layer"]
    assert ["tiny_llama", "drugs", "mechanism", "umap", "silhouette_umap", 2] == table["data"][5][:6]
    assert table["data"][5][6] == pytest.approx(0.4)

    # our record agrees
    record = json.loads((run_folder / RECORD_NAME).read_text())
    assert record["metric_keys"] == sorted([SIL, f"{SIL}/ci_low", f"{SIL}/ci_high", R2])
    assert (record["n_steps"], record["layers"], record["mode"], record["run_id"]) == (4, [0, 1, 2, 3], "offline", tracked.run_id)
    assert record["tables"]["tables/per_layer"] == {"columns": table["columns"], "n_rows": 9}
    assert sorted(record["images"]) == ["figures/curves_categorical", "figures/umap_grid_mechanism"]
    assert [(a["name"], a["type"], a["version"]) for a in record["artifacts"]] == [
        ("prompts-drugs", "prompt-set", "1.1.0"), ("results-tiny_llama-drugs-umap", "results", None)]


def test_offline_synthesis_folder(map_folder, offline_records):
    kmap = json.loads((map_folder / "knowledge_map.json").read_text())
    tracked = _log(map_folder, name="tiny_llama-synthesis", group=None, job_type="synthesis")
    records = offline_records(tracked.wandb_dir)
    (run,) = _by_type(records, "run")
    assert run["job_type"] == "synthesis" and "run_group" not in run
    history = [h["item"] for h in _by_type(records, "history")]
    curve = [h["knowledge_map/drugs/umap/raw"] for h in history if "layer" in h]
    assert curve == pytest.approx(kmap["domains"]["drugs"]["umap"]["raw"])
    assert curve == pytest.approx(SIL_VALUES)  # the mean silhouette of the run's rows
    assert any(m.get("glob_name") == "knowledge_map/*" for m in _by_type(records, "metric"))
    tables = {p.name.split("_")[0] for p in (tracked.wandb_dir / "files/media/table/tables").glob("*.table.json")}
    assert tables == {"findings", "knowledge"}
    (km_file,) = (tracked.wandb_dir / "files/media/table/tables").glob("knowledge_map_*.table.json")
    km = json.loads(km_file.read_text())
    umap_rows = [r for r in km["data"] if r[1] == "umap"]
    assert [[r[5], r[6]] for r in umap_rows] == kmap["domains"]["drugs"]["umap"]["intervals"]
    images = sorted(p.name.split("_")[0] for p in (tracked.wandb_dir / "files/media/images/figures").glob("*.png"))
    assert images == ["findings", "knowledge"]
    record = json.loads((map_folder / RECORD_NAME).read_text())
    assert record["kind"] == "map" and record["job_type"] == "synthesis"
    assert record["tables"]["tables/findings"]["columns"] == ["path", "layer", "value", "ci_low", "ci_high", "n", "text"]


def test_secrets_never_reach_any_file_or_log_line(run_folder, tmp_path, monkeypatch, caplog, offline_records,
                                                  wandb_env):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB)  # a key in the environment, mode offline all the same
    monkeypatch.setattr(sys, "argv", ["runners/map.py", f"judge.api_key={FAKE_OPENAI}", "domain=drugs"])  # W&B records argv
    config = {"judge": {"api_key": FAKE_OPENAI, "api_key_env": "OPENAI_API_KEY", "max_tokens": 200,
                        "headers": {"Authorization": f"Bearer {FAKE_WANDB}"}},
              "note": f"copied {FAKE_OPENAI} by mistake", "wandb": {"token": FAKE_WANDB}}
    with caplog.at_level(logging.DEBUG):
        tracked = _log(run_folder, config=config, group=f"sweep-{FAKE_WANDB}")
    assert tracked is not None and tracked.mode == "offline"
    records = offline_records(tracked.wandb_dir)
    (run,) = _by_type(records, "run")
    logged = run["config"]["update"]  # secret keys dropped, secret values redacted, the rest kept
    assert logged["judge"] == {"api_key_env": "OPENAI_API_KEY", "max_tokens": 200, "headers": {}}
    assert logged["note"] == "<redacted>" and logged["wandb"] == {}
    assert run["run_group"] == "sweep-<redacted>"
    assert not any("args" in e for e in _by_type(records, "environment"))  # the command line is not recorded
    assert any(p.is_file() for p in (wandb_env / "data").rglob("*"))  # W&B's staged artifact copies: walked too
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(".wandb" == p.suffix for p in files) and any(p.name == RECORD_NAME for p in files)
    assert len(files) > 15  # W&B logs, media, staged artifacts, our record, the results
    for path in files:
        data = path.read_bytes()
        assert FAKE_OPENAI.encode() not in data, path
        assert FAKE_WANDB.encode() not in data, path
    assert not any(FAKE_OPENAI in r.getMessage() or FAKE_WANDB in r.getMessage() for r in caplog.records)


def test_wandb_failure_is_one_warning_and_leaves_the_results_untouched(run_folder, monkeypatch, caplog, snapshot):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_OPENAI)
    before = snapshot(run_folder)

    def boom(**kwargs):
        raise RuntimeError(f"server said no to {FAKE_OPENAI}")

    monkeypatch.setattr(wandb, "init", boom)
    with caplog.at_level(logging.INFO, logger="medinterp"):
        assert _log(run_folder) is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "W&B logging of" in message and "RuntimeError" in message and "the local results there are complete" in message
    assert FAKE_OPENAI not in message and "<redacted>" in message
    assert snapshot(run_folder) == before  # byte-identical, nothing added


def test_failure_after_init_finishes_the_run_and_keeps_the_results(run_folder, monkeypatch, caplog, snapshot):
    before = snapshot(run_folder)
    monkeypatch.setattr(wandb, "Table", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad table")))
    with caplog.at_level(logging.WARNING, logger="medinterp"):
        assert _log(run_folder) is None
    assert len(caplog.records) == 1 and "ValueError: bad table" in caplog.records[0].getMessage()
    after = snapshot(run_folder)
    assert {k: v for k, v in after.items() if not k.startswith("wandb/")} == before  # results untouched
    assert RECORD_NAME not in after  # no record of a run that did not complete


def test_wandb_not_installed(run_folder, monkeypatch, caplog, snapshot):
    before = snapshot(run_folder)
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with caplog.at_level(logging.WARNING, logger="medinterp"):
        assert _log(run_folder) is None
    assert "ModuleNotFoundError" in caplog.records[0].getMessage() or "ImportError" in caplog.records[0].getMessage()
    assert snapshot(run_folder) == before


def test_online_init_failure_falls_back_to_offline(run_folder, tmp_path, monkeypatch, caplog):
    import shutil

    from medinterp.tracking import wandb_log

    monkeypatch.setattr(wandb_log, "_online_failed", False)
    real_init = wandb.init
    modes = []

    def flaky(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise TimeoutError("no network")
        return real_init(**kwargs)

    monkeypatch.setattr(wandb, "init", flaky)
    with caplog.at_level(logging.INFO, logger="medinterp"):
        tracked = _log(run_folder, settings={"name": "wandb", "mode": "online"})
    assert modes == ["online", "offline"] and tracked.mode == "offline"
    assert "this and later runs of this process are logged offline" in caplog.records[0].getMessage()
    assert "wandb sync" in caplog.records[-1].getMessage() and str(tracked.wandb_dir) in caplog.records[-1].getMessage()
    # the next cell of the multirun does not wait for the network again
    again = _log(shutil.copytree(run_folder, tmp_path / "cell2"), settings={"name": "wandb", "mode": "online"})
    assert modes == ["online", "offline", "offline"] and again.mode == "offline"


def test_no_fallback_when_disabled(run_folder, monkeypatch):
    monkeypatch.setattr(wandb, "init", lambda **kwargs: (_ for _ in ()).throw(TimeoutError("no network")))
    assert _log(run_folder, settings={"name": "wandb", "mode": "online", "offline_fallback": False}) is None


@pytest.mark.parametrize("settings, env_mode", [({"name": "none"}, "offline"), (None, "offline"),
                                                ({"name": "wandb", "mode": "disabled"}, "offline"),
                                                ({"name": "wandb"}, "disabled")])
def test_logging_off_does_nothing(run_folder, monkeypatch, caplog, snapshot, settings, env_mode):
    monkeypatch.setenv("WANDB_MODE", env_mode)
    monkeypatch.setitem(sys.modules, "wandb", None)  # importing wandb would fail loudly
    before = snapshot(run_folder)
    with caplog.at_level(logging.DEBUG, logger="medinterp"):
        assert _log(run_folder, settings=settings) is None
    assert caplog.records == [] and snapshot(run_folder) == before


def test_settings_dir_and_group_override(run_folder, tmp_path):
    tracked = _log(run_folder, settings={"name": "wandb", "mode": "offline", "dir": str(tmp_path / "elsewhere"),
                                         "group": "study-A", "tags": ["team"]}, tags=["cell"])
    assert tracked.wandb_dir.parent == tmp_path / "elsewhere" / "wandb" and tracked.group == "study-A"
    assert not (run_folder / "wandb").exists()
    record = json.loads((run_folder / RECORD_NAME).read_text())
    assert record["tags"] == ["cell", "team"] and record["group"] == "study-A"


def test_many_runs_in_one_process(run_folder, tmp_path):
    """A multirun logs its cells one after another from one process; each is its own W&B run."""
    import shutil

    folders = [run_folder] + [shutil.copytree(run_folder, tmp_path / f"cell{i}") for i in range(2)]
    tracked = [_log(f, name=f"cell-{i}") for i, f in enumerate(folders)]
    assert len({t.run_id for t in tracked}) == 3
    assert all(json.loads((f / RECORD_NAME).read_text())["name"] == f"cell-{i}" for i, f in enumerate(folders))
