"""ModelSpec validation, loading errors, the packaged-weights cache and the conf/model ↔ spec mapping."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medinterp.errors import MedinterpError
from medinterp.models import ModelSpec, load_model
from medinterp.models.sources import package_dir

from helpers import ROOT


def test_every_model_config_is_a_valid_spec():
    for path in sorted((ROOT / "conf" / "model").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data.get("path") == "???":  # the generic hf config needs model.path from the user
            data["path"] = "/somewhere"
        spec = ModelSpec.from_dict(data)
        assert spec.name == path.stem, path
        assert spec.trust_remote_code is False


@pytest.mark.parametrize("kw, message", [
    (dict(source="zip"), "unknown source for model 'm': 'zip'; valid: gguf_file, gguf_package, hf, tiny"),
    (dict(source="hf"), "The 'model.path' setting is required for model 'm' (source hf); it is not set"),
    (dict(source="hf", path="???"), "The 'model.path' setting is required for model 'm' (source hf)"),  # Hydra's unset
    (dict(source="hf", path="x", dtype="int3"), "unknown dtype for model 'm': 'int3'"),
    (dict(source="tiny", family="mamba"), "unknown tiny family for model 'm': 'mamba'"),
])
def test_bad_specs_give_one_line_errors(kw, message):
    with pytest.raises(MedinterpError) as err:
        ModelSpec(name="m", **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_spec_key_is_named():
    with pytest.raises(MedinterpError, match=r"unknown model setting\(s\) \['layers'\]"):
        ModelSpec.from_dict({"name": "m", "source": "hf", "path": "x", "layers": 3})


def test_missing_local_folder_is_a_clear_error(tmp_path):
    spec = ModelSpec(name="mine", source="hf", path=str(tmp_path / "nope"))
    with pytest.raises(MedinterpError, match="model 'mine': model.path .* does not exist"):
        load_model(spec, "cpu", tmp_path)


@pytest.mark.parametrize("path", ["models/nope", "./nope", "~/nope-medinterp", "a/b/c", "nope/"])
def test_a_missing_local_looking_path_fails_at_once_without_the_hub(path, tmp_path, monkeypatch):
    """A relative path that does not exist is an error in one line, before transformers (no hub retries)."""
    import time

    import transformers

    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)  # "models/nope": its first part is an existing folder, so it is a path

    def no_hub(*_a, **_k):
        raise AssertionError("went to transformers / the hub")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_hub)
    t0 = time.perf_counter()
    with pytest.raises(MedinterpError) as err:
        load_model(ModelSpec(name="mine", source="hf", path=path), "cpu", tmp_path)
    assert time.perf_counter() - t0 < 5
    assert f"model.path {path!r} does not exist" in str(err.value) and "\n" not in str(err.value)


def test_hub_ids_and_local_paths_are_told_apart(tmp_path, monkeypatch):
    from medinterp.models.spec import looks_like_local_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert not looks_like_local_path("HuggingFaceTB/SmolLM2-135M")  # org/name, no local folder "HuggingFaceTB"
    assert not looks_like_local_path("gpt2")
    assert all(map(looks_like_local_path, ["/abs/x", "./x", "../x", "~/x", "a/b/c", "models/x", "x/", "a\\b"]))


def test_a_missing_gguf_file_is_one_line(tmp_path):
    """source=gguf_file with a file that does not exist: one line naming it (was FileNotFoundError in _fingerprint)."""
    spec = ModelSpec(name="g", source="gguf_file", gguf_file="/missing.gguf")
    with pytest.raises(MedinterpError, match=r"model 'g': model.gguf_file '/missing.gguf' is not a file"):
        load_model(spec, "cpu", tmp_path)


def test_missing_package_says_how_to_install():
    with pytest.raises(MedinterpError, match="pip install not-a-real-pkg"):
        package_dir("not_a_real_pkg")


def test_layer_count_mismatch_is_caught(tmp_path, cache_dir):
    with pytest.raises(MedinterpError, match="n_layers=7 but the weights have 4"):
        load_model(ModelSpec(name="t", source="tiny", family="llama", n_layers=7), "cpu", cache_dir)


def test_hf_folder_round_trip(tmp_path, tiny_handles):
    """A saved HF folder loads through source=hf with the same weights (the path users take for big models)."""
    import torch

    h = tiny_handles["qwen2"]
    h.model.save_pretrained(tmp_path / "m")
    h.tokenizer.save_pretrained(tmp_path / "m")
    g = load_model(ModelSpec(name="q", source="hf", path=str(tmp_path / "m"), n_layers=4), "cpu", tmp_path)
    assert g.parts.adapter.family == "qwen"
    assert torch.equal(g.model.model.layers[2].self_attn.q_proj.weight, h.model.model.layers[2].self_attn.q_proj.weight)


def _slow_build(out: Path) -> None:
    import time

    (out / "part1").write_text("a")
    time.sleep(0.5)  # a window in which a second builder would interleave without the lock
    (out / "part2").write_text("b")
    with open(out.parent / "builds.log", "a") as f:
        f.write("built\n")


def _race(target: str) -> list[str]:
    from medinterp.models.sources import cached_folder

    return sorted(p.name for p in cached_folder(Path(target), _slow_build).iterdir())


def test_concurrent_first_use_builds_once_and_never_exposes_a_partial_folder(tmp_path):
    from concurrent.futures import ProcessPoolExecutor

    target = tmp_path / "models" / "m-123"
    with ProcessPoolExecutor(3) as pool:
        listings = list(pool.map(_race, [str(target)] * 3))
    assert all(names == [".medinterp-complete", "part1", "part2"] for names in listings), listings
    assert (tmp_path / "models" / "builds.log").read_text() == "built\n"
    assert sorted(p.name for p in target.parent.iterdir() if not p.name.endswith(".lock")) == ["builds.log", "m-123"]
