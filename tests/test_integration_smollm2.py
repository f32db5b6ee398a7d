"""Integration on the real SmolLM2-135M-Instruct from its PyPI package (CI runs these)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.capture import capture_batch, encode
from medinterp.capture.cache import cached_activations, entry_path
from medinterp.methods import stack_points
from medinterp.methods.umap_geometry import UmapGeometry
from medinterp.prompts import load_prompt_set

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # the tiny-model twins: tests/capture/


def test_real_model_loads_with_the_documented_shape(smollm2):
    assert smollm2.n_layers == 30 and smollm2.d_model == 576
    assert smollm2.parts.adapter.family == "llama"
    assert smollm2.tokenizer.pad_token is not None


def test_hooks_equal_hidden_states_on_the_real_model(smollm2, monkeypatch):
    texts = [p.text for p in load_prompt_set("symptoms").prompts(load_prompt_set("symptoms").templates[0].id)[:6]]
    for side in ("left", "right"):
        monkeypatch.setattr(smollm2.tokenizer, "padding_side", side)  # the session's model: restored after the test
        batch = encode(smollm2.tokenizer, texts)
        ours = capture_batch(smollm2, batch, list(range(31)), None)
        with torch.inference_mode():
            ref = smollm2.model(**batch.model_inputs(), output_hidden_states=True).hidden_states
        real = batch.attention_mask.bool()
        worst = max((ours[i][real] - ref[i][real]).abs().max().item() for i in range(30))
        assert worst < 1e-4  # fp32 on activations of norm ~1e2
        assert (smollm2.parts.final_norm(ours[30])[real] - ref[30][real]).abs().max() < 1e-4


def test_activation_cache_then_drug_geometry(smollm2, tmp_path, monkeypatch):
    drugs = load_prompt_set("drugs")
    template = drugs.templates[0].id
    first = np.array(cached_activations(smollm2, drugs, template, "last", 32, tmp_path))
    assert first.shape == (31, len(drugs.items), 576)
    assert entry_path(tmp_path, smollm2, drugs, template, "last").exists()
    import medinterp.capture.cache as cache

    monkeypatch.setattr(cache, "capture_indices", lambda *a, **k: pytest.fail("cache miss on rerun"))
    again = cached_activations(smollm2, drugs, template, "last", 32, tmp_path)
    assert np.array_equal(first, again)

    points = stack_points(drugs, [template])
    res = UmapGeometry(n_boot=50, n_perm=10, n_jobs=1).run(first[:9], points, ["mechanism"])  # layers 0..8
    get = {(m.metric, m.layer): m.estimate for m in res.measurements}
    # Drug-name spelling already separates mechanism classes (-olol, -pril, -statin ...).
    assert get[("silhouette_surface", -1)].value > 0.0
    # A mid layer of a real LM separates mechanism above its own shuffled null band.
    assert get[("silhouette_raw", 8)].value > get[("silhouette_raw_null", 8)].ci_high
