"""``device_map`` with a forced tiny memory budget (most weights offloaded to disk) gives the numbers of ``single``."""
from __future__ import annotations

import numpy as np
import pytest

from medinterp.capture import capture
from medinterp.models.weights import full_weights
from medinterp.run import run_method
from medinterp.methods.ablation import LayerAblation
from medinterp.methods.geometry import Geometry
from medinterp.methods.patching import ActivationPatching
from medinterp.methods.saliency import WeightSaliency
from medinterp.models import ModelSpec, load_model
from medinterp.models import Placement
from medinterp.prompts import load_prompt_set


def offload(family: str, folder, cache_dir):
    """Tiny ``family`` under accelerate's placement with a 100 KB budget: nearly every weight offloaded to disk."""
    spec = ModelSpec(name=f"tiny_{family}", source="tiny", family=family, n_layers=4)
    return load_model(spec, "cpu", cache_dir, Placement(device_map="auto", max_memory={"cpu": "100KB"},
                                                        offload_folder=str(folder)))


@pytest.fixture(scope="module")
def offloaded(tmp_path_factory, cache_dir):
    return offload("llama", tmp_path_factory.mktemp("offload"), cache_dir)


@pytest.fixture(scope="module")
def disease():
    return load_prompt_set("disease")


def values(result):
    return {(m.labeling, m.metric, m.layer): (m.estimate.value, m.estimate.ci_low, m.estimate.ci_high)
            for m in result.measurements}


def test_weights_really_are_offloaded(offloaded):
    placed = set(offloaded.model.hf_device_map.values())
    assert "disk" in placed, offloaded.model.hf_device_map
    head = offloaded.parts.lm_head
    assert head.weight.device.type == "meta"  # outside the forward only a placeholder is held
    with full_weights(head):
        assert head.weight.device.type == "cpu" and head.weight.abs().sum() > 0
    assert head.weight.device.type == "meta"


def test_capture_is_identical(offloaded, tiny_handles, disease):
    texts = [p.text for p in disease.prompts(disease.templates[0].id)][:12]
    np.testing.assert_array_equal(capture(offloaded, texts, batch_size=5), capture(tiny_handles["llama"], texts, batch_size=5))


@pytest.mark.parametrize("method", [WeightSaliency(max_prompts=6, n_boot=20),
                                    LayerAblation(max_prompts=4, max_new_tokens=3, n_boot=20),
                                    ActivationPatching(n_boot=20, min_gap=0, on_length_mismatch="skip")],
                         ids=lambda m: type(m).__name__)
def test_model_methods_are_identical(method, offloaded, tiny_handles, disease):
    templates = [disease.templates[0].id]
    ours = values(run_method(method, offloaded, disease, templates, batch_size=4))
    ref = values(run_method(method, tiny_handles["llama"], disease, templates, batch_size=4))
    assert ours.keys() == ref.keys() and ours
    # saliency ≤ 1e-6 relative; ablation's KL/Δlog p are differences of nearby float32 quantities and move by
    # float32 rounding (measured: ≤ 2e-8 absolute, judge score ≤ 8e-8 on its 1–10 scale) under accelerate's
    # hooks; patching is exact
    rtol, atol = {WeightSaliency: (1e-6, 0), LayerAblation: (1e-6, 1e-7), ActivationPatching: (0, 0)}[type(method)]
    for key in ref:
        np.testing.assert_allclose(ours[key], ref[key], rtol=rtol, atol=atol, equal_nan=True, err_msg=str(key))


def test_geometry_is_identical_on_offloaded_gemma3(tmp_path, cache_dir, tiny_handles):
    """Geometry's logit lens calls the final norm and the head (tied to the embedding in Gemma 3) outside the model's
    forward, on the last read-outs of the lens prompts: accelerate's own hooks load them from disk for that call
    (medinterp/capture/lens.py). Every row and per-item value equals the one-process run; the lens is finite."""
    handle = offload("gemma3", tmp_path, cache_dir)
    assert handle.parts.lm_head.weight.device.type == "meta"  # the head is offloaded
    ps = load_prompt_set("progression")
    templates = [t.id for t in ps.templates[:3]]  # 3 contexts per term: contextualization is defined
    method = Geometry(max_rows=800, lens_max_prompts=16, n_pairs=500, n_boot=10)
    ours = run_method(method, handle, ps, templates, batch_size=16)
    ref = run_method(method, tiny_handles["gemma3"], ps, templates, batch_size=16)
    got, want = values(ours), values(ref)
    assert got.keys() == want.keys() and ours.items
    assert np.isfinite([v[0] for k, v in want.items() if k[1] == "lens_kl"]).all()
    np.testing.assert_array_equal([got[k] for k in want], list(want.values()))  # NaN rows (read-out 0) alike
    assert [(i.labeling, i.metric, i.layer, i.item, i.template) for i in ours.items] == [
        (i.labeling, i.metric, i.layer, i.item, i.template) for i in ref.items]
    np.testing.assert_array_equal([i.value for i in ours.items], [i.value for i in ref.items])
