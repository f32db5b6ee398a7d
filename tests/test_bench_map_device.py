"""scripts/bench_map_device.py: the default map on seeded random weights in an exported model's shapes (the GPU
map's benchmark; dry-run here on CPU with a tiny model's shapes)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from helpers import ROOT


def bench():
    spec = importlib.util.spec_from_file_location("bench_map_device", ROOT / "scripts" / "bench_map_device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shape(tiny_handles, tmp_path) -> Path:
    """tiny_llama's shapes exported as ``export`` writes them: config, tokenizer, medinterp_shape.json."""
    handle, folder = tiny_handles["llama"], tmp_path / "shape"
    handle.model.config.save_pretrained(folder)
    handle.tokenizer.save_pretrained(folder)
    (folder / "medinterp_shape.json").write_text(json.dumps({"model": "tiny_llama", "from": "tiny-llama-seed0"}))
    return folder


def test_random_weights_have_the_exported_shapes_and_depend_on_the_seed_only(shape, tiny_handles, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    b = bench()
    one, two, other = (b.random_model(shape, tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    models = [AutoModelForCausalLM.from_pretrained(f) for f in (one, two, other)]
    real = tiny_handles["llama"].model.state_dict()
    first = models[0].state_dict()
    assert {k: v.shape for k, v in first.items()} == {k: v.shape for k, v in real.items()}
    assert all(torch.equal(first[k], v) for k, v in models[1].state_dict().items())  # same seed: same weights
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(first[name], models[2].state_dict()[name])  # another seed: other weights
    text = "Metformin lowers hepatic glucose output."
    assert AutoTokenizer.from_pretrained(one)(text)["input_ids"] == tiny_handles["llama"].tokenizer(text)["input_ids"]


def test_run_needs_an_export_and_a_new_output_folder(shape, tmp_path):
    b = bench()
    with pytest.raises(SystemExit, match=r"holds no exported shape .*run `python scripts/bench_map_device.py export`"):
        b.run(tmp_path, "cpu", "umap", "dosage", tmp_path / "out", 0, [])
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "device_map.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"used is not empty; give a new --out folder"):
        b.run(shape, "cpu", "umap", "dosage", tmp_path / "used", 0, [])
    assert (tmp_path / "used" / "device_map.json").read_text() == "{}"
    with pytest.raises(SystemExit, match=r"unknown model 'gemma4'; valid: .*gemma3_270m"):
        b.export("gemma4", tmp_path / "x")


@pytest.mark.slow  # two runners/map.py multiruns in subprocesses
def test_a_run_maps_every_cell_and_patches_every_pair(shape, tmp_path):
    result = bench().run(shape, "cpu", "umap,patching", "dosage", tmp_path / "out", 0, ["report=false"])
    assert [c["cell"] for c in result["cells"]] == ["map/0_hf-dosage-umap", "map_patching/0_hf-dosage-patching"]
    assert set(result["per_method_s"]) == {"umap", "patching"} and result["map_wall_s"] > result["cells_s"] > 0
    assert json.loads((tmp_path / "out" / "device_map.json").read_text()) == result
    patching = json.loads((tmp_path / "out" / "map_patching" / "0_hf-dosage-patching" / "summary.json").read_text())
    done = patching["method_summary"]
    # random weights: every logit gap is below the default min_gap of 1; with min_gap 0 every pair is patched
    assert (done["min_gap"], done["n_filtered"], done["n_kept"]) == (0, 0, done["n_pairs"]) and done["n_pairs"] > 0
