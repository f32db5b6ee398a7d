"""A validity run folder (runners/validate.py) in W&B: its lanes' scores in the run summary, a lanes table, the
figure; logged offline by the runner's publish step with no secret anywhere."""
from __future__ import annotations

import json
import math

from omegaconf import open_dict

from helpers import compose_map, runner
from medinterp.io import save_png
from medinterp.tracking.folder import read_folder
from medinterp.validity.plot import validity_figure

NAN = math.nan
SECRET = "sk-validity-0123456789abcdef"


def _lane(name, blocks, effect, score, beats, variant=None, broken=0):
    lane = {"lane": name, "blocks": blocks,
            "effect": {"value": effect, "ci_low": effect - 0.1, "ci_high": effect + 0.1, "n": 12, "broken": broken},
            "random": [{"blocks": [0], "effect": 0.1, "broken": 0}, {"blocks": [3], "effect": 0.3, "broken": 0}],
            "baselines": {"first_n": {"blocks": [0], "effect": 0.1}, "last_n": {"blocks": [3], "effect": 0.3},
                          "complement": {"blocks": [0, 2, 3], "effect": 0.5}},
            "validity": {"score": score, "ci_low": score - 1, "ci_high": score + 1, "beats": beats, "random_mean": 0.2,
                         "random_sd": 0.1414, "n_draws": 2, "n_broken": 0, "note": ""},
            "damage": {"disease": 0.05}, "note": ""}
    return {**lane, "variant": variant} if variant else lane


RESULT = {"model": "tiny_llama", "n_layers": 4, "domain": "drugs", "intervention": "steer", "settings": {},
          "probes": {"drugs": {"accuracy": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 12, "chance": 0.1,
                               "majority": 0.2, "n_train": 20},
                     "disease": {"accuracy": 0.25, "ci_low": 0.0, "ci_high": 0.5, "n": 12, "chance": 0.1,
                                 "majority": 0.2, "n_train": 20}},
          "lanes": [_lane("ablation", [1], 0.6, 2.83, 1.0, variant="alpha=1"),
                    # a broken lane: NaN logits at the map's blocks -> NaN effect and score, never a number
                    {**_lane("umap", [2], NAN, NAN, NAN, variant="alpha=1", broken=12),
                     "note": "the intervention at the map's layers broke the model (NaN effect)"},
                    {"lane": "patching", "blocks": [], "note": "the lane selects no block"}]}


def _folder(tmp_path):
    folder = tmp_path / "0_tiny_llama_drugs_steer"
    folder.mkdir()
    (folder / "validity.json").write_text(json.dumps(RESULT))  # NaN as JSON NaN, as medinterp.io.write_json writes
    save_png(validity_figure(RESULT), folder / "validity.png")
    return folder


def test_the_lanes_go_to_the_summary_and_a_table(tmp_path):
    p = read_folder(_folder(tmp_path), "tiny_llama-drugs-validity-steer")
    key = "validity/ablation/alpha=1"
    assert p.kind == "validity" and p.summary == {
        "probe/drugs/accuracy": 0.5, "probe/disease/accuracy": 0.25,
        f"{key}/score": 2.83, f"{key}/score/ci_low": 1.83, f"{key}/score/ci_high": 3.83, f"{key}/beats": 1.0,
        f"{key}/effect": 0.6, f"{key}/effect/ci_low": 0.5, f"{key}/effect/ci_high": 0.7, f"{key}/random_mean": 0.2,
        f"{key}/random_sd": 0.1414, f"{key}/n_draws": 2, f"{key}/n_broken": 0, f"{key}/damage/disease": 0.05,
        # the broken lane: its draws and damage, no score or effect (NaN is never logged as a number)
        "validity/umap/alpha=1/random_mean": 0.2, "validity/umap/alpha=1/random_sd": 0.1414,
        "validity/umap/alpha=1/n_draws": 2, "validity/umap/alpha=1/n_broken": 0,
        "validity/umap/alpha=1/damage/disease": 0.05}
    table = p.tables["tables/validity_lanes"]
    rows = [dict(zip(table.columns, r)) for r in table.rows]
    assert [(r["lane"], r["variant"], r["blocks"]) for r in rows] == [
        ("ablation", "alpha=1", "[1]"), ("umap", "alpha=1", "[2]"), ("patching", "", "[]")]
    assert (rows[0]["validity"], rows[0]["beats"], rows[0]["first_n"], rows[0]["complement"]) == (2.83, 1.0, 0.1, 0.5)
    assert rows[1]["validity"] is None and rows[1]["effect"] is None and "broke the model" in rows[1]["note"]
    assert rows[2]["validity"] is None and rows[2]["note"] == "the lane selects no block"
    assert set(p.images) == {"figures/validity"} and p.provenance["intervention"] == "steer"


def test_the_runner_logs_it_offline_without_secrets(tmp_path, offline_summary):
    folder = _folder(tmp_path)
    cfg = compose_map(["model=tiny_llama", "domain=drugs", "map=/nowhere", "intervention=steer", "logger=wandb",
                       "logger.mode=offline"], "validate")
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.judge = {"api_key": SECRET}  # a secret that found its way into a config
    runner("_common").publish(folder, cfg, name="tiny_llama-drugs-validity-steer", job_type="validity", group=None,
                              report="validity")
    record = json.loads((folder / "wandb_logged.json").read_text())
    assert record["kind"] == "validity" and record["job_type"] == "validity" and record["mode"] == "offline"
    assert record["summary"]["validity/ablation/alpha=1/score"] == 2.83
    assert record["images"] == {"figures/validity": "validity.png"} and "tables/validity_lanes" in record["tables"]
    summary = offline_summary(next((folder / "wandb").glob("offline-run-*")))
    assert json.dumps(summary).count("2.83") >= 1  # the score reached the offline run itself
    assert "Validity · tiny_llama · drugs · steer" in (folder / "report.html").read_text()
    for path in folder.rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path
