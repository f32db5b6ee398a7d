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


DEEP = {**KMAP, "domains": {"drugs": {"ablation": {"intervals": [[2, 6]]}}}}  # read-outs 5, 6 of a 4-block model


@pytest.mark.parametrize("kmap, overrides, line", [
    (KMAP, ["model=tiny_qwen2"], "error: map: made for model 'tiny_llama', not 'tiny_qwen2'; map the model first "
                                 "or pass its own map"),
    (KMAP, ["domain=age"], "error: map: has no domain 'age'; valid: ['drugs']"),
    (KMAP, ["domain=synthetic_xray"], "error: no behavioural probe for domain 'synthetic_xray'; domains with one: "),
    (DEEP, [], "error: map: lane 'ablation' of 'drugs' selects read-outs [5, 6], more than model 'tiny_llama' has; "
               "valid: 0..4"),
    ({**KMAP, "n_layers": 18}, [], "error: map: has 18 layers, model 'tiny_llama' has 4"),
    (KMAP, ["intervention=lora", "lora.steps=0"], "error: lora budget: steps must be an int >= 1"),
    (KMAP, ["intervention=prune"], "error: unknown intervention 'prune'; valid: ablation, lora, mean, steer"),
    (KMAP, ["strategy=ddp"], "error: strategy=ddp: not for validity runs; use strategy=single or "
                             "strategy=device_map or strategy=zero3"),
    (KMAP, ["strategy=zero3", "intervention=lora"], "error: strategy=zero3: intervention=lora trains adapters in one "
                                                    "process; use strategy=single or strategy=device_map"),
])
def test_bad_input_exits_2_with_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys, kmap, overrides,
                                                                   line):
    validate = runner("validate")
    monkeypatch.setattr(validate, "cached_model", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "knowledge_map.json").write_text(json.dumps(kmap))
    cfg = compose_map(["model=tiny_llama", "domain=drugs", f"map={tmp_path}", "logger=none", *overrides], "validate")
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(SystemExit) as exit_:
        runner("_common").user_errors(validate.run_validate)(cfg, tmp_path / "out")
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(line), err
    assert not (tmp_path / "out").exists()


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


def test_a_steer_that_makes_the_logits_non_finite_is_reported_broken_never_averaged(tmp_path):
    """alpha 1e39 overflows float32 at the steered blocks: inf in the residual stream, NaN logits after the next
    norm (a real broken model, no mock). Every set under it is broken; alpha 1 beside it is scored as usual."""
    result, out = _run(tmp_path, "intervention=steer", "alphas=[1.0,1e39]", "lanes=[ablation]")
    fine, broken = result["lanes"]
    assert (fine["variant"], broken["variant"]) == ("alpha=1", "alpha=1e+39")
    assert math.isfinite(fine["effect"]["value"]) and fine["effect"]["broken"] == 0
    assert all(math.isfinite(r["effect"]) and r["broken"] == 0 for r in fine["random"])
    eff, v = broken["effect"], broken["validity"]
    assert math.isnan(eff["value"]) and eff["broken"] == eff["n"] == 12  # every item of the map's blocks NaN
    assert all(math.isnan(r["effect"]) and r["broken"] == 12 for r in broken["random"])
    assert math.isnan(v["score"]) and v["n_broken"] == 3 and v["n_draws"] == 0
    assert "broke the model" in v["note"] and "3 random draws broke the model" in v["note"]
    assert all(math.isnan(b["effect"]) for b in broken["baselines"].values())
    assert math.isnan(broken["damage"]["disease"])
    assert "broke the model" in broken["note"]
