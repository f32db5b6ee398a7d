"""``device_map`` on the tiny VLMs with a 100 KB budget (vision tower, projector and language model offloaded to
disk) gives the numbers of the model held whole: image capture, ``gradcam``, ``image_lens``, ``neurons``, ``saliency``
on image tokens and VQA generation.

accelerate's hooks load each module's weights for its forward (the head and final norm that ``image_lens`` calls
itself included); ``neurons`` reads its down projections' output rows through ``full_weights``. One process, no
process group: the fast tier.
"""
from __future__ import annotations

import numpy as np
import pytest

from medinterp.capture.images import capture_image_indices
from medinterp.methods.gradcam import GradCam
from medinterp.methods.image_lens import ImageLens
from medinterp.methods.neurons import Neurons
from medinterp.methods.saliency import WeightSaliency
from medinterp.models import ModelSpec, Placement, load_model
from medinterp.prompts import load_prompt_set
from medinterp.run import run_method

FAMILIES = ["llava", "gemma3_vlm"]
# gradcam and image_lens are exact. neurons' suppress/amplify rows are relative changes of a probability,
# (p' - p) / p, whose float32 rounding moves under accelerate's hooks on tiny Gemma 3 (measured 6.6e-8 relative,
# 2026-12-05; as ablation's KL in test_device_map.py): 1e-6.
# saliency (image tokens: weight gradients through the image positions) <= 1e-6 as for text models (test_device_map.py).
TOL = {GradCam: 0.0, ImageLens: 0.0, Neurons: 1e-6, WeightSaliency: 1e-6}


@pytest.fixture(scope="module")
def xray():
    return load_prompt_set("synthetic_xray")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory, cache_dir):
    """Per family: (offloaded, whole) tiny VLM."""
    out = {}
    for family in FAMILIES:
        spec = ModelSpec(name=f"tiny_{family}", source="tiny", family=family, n_layers=4)
        placed = load_model(spec, "cpu", cache_dir, Placement(device_map="auto", max_memory={"cpu": "100KB"},
                                                              offload_folder=str(tmp_path_factory.mktemp(family))))
        out[family] = placed, load_model(spec, "cpu", cache_dir)
    return out


def values(result):
    return {(m.labeling, m.metric, m.layer): (m.estimate.value, m.estimate.ci_low, m.estimate.ci_high)
            for m in result.measurements}


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_tower_and_head_are_offloaded(pairs, family):
    placed, _ = pairs[family]
    where = placed.model.hf_device_map
    assert "disk" in set(where.values()), where
    assert placed.parts.lm_head.weight.device.type == "meta"
    assert placed.parts.vision.backbone.vision_tower.parameters().__next__().device.type == "meta"


@pytest.mark.parametrize("family", FAMILIES)
def test_image_capture_is_identical(pairs, family, xray):
    placed, whole = pairs[family]
    prompts = xray.prompts(xray.templates[0].id)
    idx = np.arange(5)
    np.testing.assert_array_equal(capture_image_indices(placed, prompts, idx, "all"),
                                  capture_image_indices(whole, prompts, idx, "all"))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", [GradCam(max_prompts=5, n_boot=10, n_figures=0),
                                    ImageLens(max_prompts=5, n_boot=10, n_figures=0),
                                    Neurons(max_prompts=5, n_boot=10),
                                    WeightSaliency(max_prompts=5, n_boot=10, tokens="image")],
                         ids=lambda m: type(m).__name__)
def test_image_methods_are_identical(pairs, family, method, xray):
    placed, whole = pairs[family]
    templates = [t.id for t in xray.templates[:2]]
    ours, ref = run_method(method, placed, xray, templates, batch_size=2), run_method(method, whole, xray, templates,
                                                                                      batch_size=2)
    got, want = values(ours), values(ref)
    assert got.keys() == want.keys() and got
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=TOL[type(method)], atol=0, equal_nan=True,
                                   err_msg=str(key))
    np.testing.assert_allclose([i.value for i in ours.items], [i.value for i in ref.items], rtol=TOL[type(method)],
                               equal_nan=True)
    if not isinstance(method, (Neurons, WeightSaliency)):  # float scores in their summaries: compared in the rows
        assert ours.artifacts["summary"] == ref.artifacts["summary"]


@pytest.mark.parametrize("family", FAMILIES)
def test_vqa_answers_are_identical(pairs, family, xray, tmp_path):
    """runners/vqa.py's generation (greedy, batched, left padded) on the offloaded model: the same answers."""
    from medinterp.vqa import export_questions, read_questions
    from medinterp.vqa.generate import answer_texts

    path = export_questions(xray, tmp_path / "questions.jsonl", [xray.templates[0].id])
    questions = read_questions(path)[:4]
    placed, whole = pairs[family]
    ours, ref = (answer_texts(h, questions, tmp_path, batch_size=2, max_new_tokens=4) for h in (placed, whole))
    assert ours == ref and len(ours) == 4 and any(ours)
