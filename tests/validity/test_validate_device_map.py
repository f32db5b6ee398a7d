"""Validity under ``strategy=device_map``: with a forced tiny memory budget (nearly every weight offloaded to disk
by accelerate) ablation and steer give the validity.json of ``single``."""
from __future__ import annotations

import math

import pytest

from helpers import json_numbers
from medinterp.models import ModelSpec, Placement, load_model
from medinterp.validity.validate import ValidateSettings, validate

KMAP = {"model": "tiny_llama", "n_layers": 4, "domains": {"drugs": {"ablation": {"intervals": [[2, 3]]}}}}
SETTINGS = ValidateSettings(n_draws=3, n_bands=1, max_items=12, n_boot=20, alphas=(2.0,))
SPEC = ModelSpec(name="tiny_llama", source="tiny", family="llama", n_layers=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory, cache_dir):
    offloaded = load_model(SPEC, "cpu", cache_dir, Placement(device_map="auto", max_memory={"cpu": "100KB"},
                                                              offload_folder=str(tmp_path_factory.mktemp("offload"))))
    assert "disk" in set(offloaded.model.hf_device_map.values())
    return load_model(SPEC, "cpu", cache_dir), offloaded


@pytest.mark.parametrize("intervention", ["ablation", "steer"])
def test_device_map_offload_gives_the_numbers_of_single(models, intervention):
    single, offloaded = (validate(m, KMAP, "drugs", intervention, SETTINGS, damage_domains=["disease"])
                         for m in models)
    a, b = json_numbers(single), json_numbers(offloaded)
    assert a.keys() == b.keys() and len(a) > 40
    assert single["lanes"][0]["blocks"] == [1, 2] and len(single["lanes"][0]["random"]) == 3
    for key in a:  # accuracies of 12 items: any flipped answer moves a value by >= 1/12
        assert (math.isnan(a[key]) and math.isnan(b[key])) or a[key] == pytest.approx(b[key], abs=1e-9), key
    # not a vacuous comparison: the intervention changes the probe's answers at some block set
    lane = single["lanes"][0]
    assert any(e != 0 for e in [lane["effect"]["value"], *(r["effect"] for r in lane["random"])])


def test_the_runner_under_device_map(tmp_path, caplog):
    import json

    from omegaconf import open_dict

    from helpers import compose_map, runner

    (tmp_path / "knowledge_map.json").write_text(json.dumps(KMAP))
    cfg = compose_map(["model=tiny_llama", "domain=drugs", f"map={tmp_path}", "logger=none", "device=cpu", "n_draws=3",
                       "n_bands=1", "max_items=12", "n_boot=20", "damage=[disease]", "strategy=device_map",
                       "strategy.max_memory={cpu: 100KB}", f"strategy.offload_folder={tmp_path / 'offload'}"],
                      "validate")
    with open_dict(cfg):
        del cfg["hydra"]
    out = runner("validate").run_validate(cfg, tmp_path / "out")
    result = json.loads((out / "validity.json").read_text())
    assert result["lanes"][0]["blocks"] == [1, 2] and math.isfinite(result["lanes"][0]["effect"]["value"])
    assert "offloaded to the disk" in caplog.text  # accelerate placed the weights as strategy.max_memory says
