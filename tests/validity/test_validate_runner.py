"""runners/validate.py in process on a tiny model with a hand-made knowledge map; bad input as one line."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from omegaconf import open_dict

from helpers import compose_map, run_runner, runner
from medinterp.errors import MedinterpError

KMAP = {"model": "tiny_llama", "n_layers": 4, "domains": {"drugs": {
    "ablation": {"intervals": [[2, 2]]}, "umap": {"intervals": [[0, 1]]}, "consensus": [[2, 2]]}}}


def _run(tmp_path, *overrides):
    (tmp_path / "knowledge_map.json").write_text(json.dumps(KMAP))
    cfg = compose_map(["model=tiny_llama", "domain=drugs", f"map={tmp_path}", "logger=none", "device=cpu",
                       "n_draws=3", "max_items=12", "n_boot=50", "damage=[disease]", *overrides], "validate")
    with open_dict(cfg):
        del cfg["hydra"]
    out = runner("validate").run_validate(cfg, tmp_path / "out")
    return json.loads((out / "validity.json").read_text()), out


@pytest.mark.parametrize("intervention", ["ablation", "steer", "mean"])
def test_validity_json_on_a_tiny_model(tmp_path, intervention):
    result, out = _run(tmp_path, f"intervention={intervention}", "alphas=[2.0,-2.0]")
    assert (out / "validity.png").stat().st_size > 0
    assert result["model"] == "tiny_llama" and set(result["probes"]) == {"drugs", "disease"}
    drugs = result["probes"]["drugs"]
    assert drugs["n"] == 12 and drugs["chance"] == pytest.approx(0.1)
    lanes = result["lanes"]
    assert [e["lane"] for e in lanes][:3] == ["ablation", "umap", "consensus"]
    ablation = lanes[0]
    assert ablation["blocks"] == [1] and len(ablation["random"]) == 3  # read-out 2 is written by block 1
    assert set(ablation["baselines"]) == {"first_n", "last_n", "complement"}
    assert ablation["baselines"]["complement"]["blocks"] == [0, 2, 3]
    assert "disease" in ablation["damage"]
    assert lanes[1]["blocks"] == [0] and "read-out 0" in lanes[1]["note"]
    # the consensus equals the ablation lane: the same sets, taken from the memo
    assert lanes[2]["effect"] == ablation["effect"] and lanes[2]["validity"] == ablation["validity"]
    v = ablation["validity"]
    random = np.array([r["effect"] for r in ablation["random"]])
    if np.ptp(random) > 0:
        assert v["score"] == pytest.approx((ablation["effect"]["value"] - random.mean()) / random.std(ddof=1))
    else:
        assert math.isnan(v["score"])
    if intervention == "steer":
        assert {e.get("variant") for e in lanes} == {"alpha=2", "alpha=-2"}


def test_lora_reports_its_training(tmp_path):
    result, _ = _run(tmp_path, "intervention=lora", "lora.steps=2", "lanes=[ablation]", "n_draws=2")
    training = result["lora_training"]
    assert training and all(t["steps"] == 2 and t["n_params"] > 0 for t in training)
    # every set of one block trains the same number of parameters
    singles = [t["n_params"] for t in training if len(t["blocks"]) == 1]
    assert len(singles) >= 3 and len(set(singles)) == 1
    assert [t["n_params"] for t in training if len(t["blocks"]) == 3] == [3 * singles[0]]  # the complement


@pytest.mark.parametrize("overrides, message", [
    (["intervention=prune"], "intervention"),
    (["lanes=[patching]"], "lanes ['patching'] are not in the map's 'drugs' entry"),
    (["lora.steps=0", "intervention=lora"], "lora budget: steps must be an int >= 1"),
    (["model=tiny_qwen2"], "made for model 'tiny_llama', not 'tiny_qwen2'"),
])
def test_bad_input_is_one_line(tmp_path, overrides, message):
    with pytest.raises(MedinterpError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _run(tmp_path, *overrides)


def test_a_domain_without_a_probe_and_a_missing_map(tmp_path):
    from medinterp.validity.probe import probe_spec

    with pytest.raises(MedinterpError, match=r"no behavioural probe for domain 'synthetic_xray'; domains with one"):
        probe_spec("synthetic_xray")
    with pytest.raises(MedinterpError, match="no knowledge_map.json there"):
        runner("validate").read_map(str(tmp_path / "nowhere"), "tiny_llama")


@pytest.mark.slow
def test_cli_exit_2_on_a_missing_map(tmp_path):
    proc = run_runner("validate.py", f"map={tmp_path}", "model=tiny_llama", "logger=none", check=False)
    assert proc.returncode == 2 and "no knowledge_map.json there" in proc.stderr + proc.stdout
