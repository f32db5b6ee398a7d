"""Geometry on image prompt sets (medinterp/methods/geometry.py, tokens=image|text|all) on both tiny VLM families:
the token rows and the per-prompt means equal the multimodal capture's hidden states at the chosen token type
(medinterp/capture/images.py, a reference computed independently, one batch), measured by the same metric
functions; a planted degenerate layer (text tokens at read-out 0 have not seen the image); rows carry tokens."""
from __future__ import annotations

import math

import pytest
from helpers import load_tiny, run_cell_in_process

from medinterp.capture.images import capture_image_batch, encode_images, token_masks
from medinterp.errors import MedinterpError
from medinterp.methods.geometry import Geometry
from medinterp.metrics.isotropy import anisotropy_cosine
from medinterp.prompts import load_prompt_set
from medinterp.results import read_rows
from medinterp.run import run_method

N_BOOT = 10


@pytest.fixture(scope="module", params=["llava", "gemma3_vlm"])
def vlm(request, cache_dir):
    ps = load_prompt_set("synthetic_xray")
    return load_tiny(request.param, cache_dir), ps, ps.prompts(ps.templates[0].id)


def reference(handle, prompts, tokens):
    """Every read-out's (N, D) per-prompt means and (R, D) token rows (prompt-major, position order) of ``tokens``,
    from one batch of the multimodal capture."""
    batch = encode_images(handle, prompts)
    mask = token_masks(batch, handle.tokenizer.all_special_ids)[tokens]
    hidden = capture_image_batch(handle, batch, list(range(handle.n_layers + 1)), None)  # (B, T, D) per read-out
    means = [(h * mask[..., None]).sum(1) / mask.sum(-1, keepdim=True) for h in hidden]
    return means, [h[mask] for h in hidden]


@pytest.mark.parametrize("tokens", ["image", "text"])
def test_rows_are_the_capture_at_the_token_type(vlm, tokens):
    handle, ps, prompts = vlm
    res = run_method(Geometry(tokens=tokens, max_rows=None, n_boot=N_BOOT), handle, ps, [ps.templates[0].id])
    rows = {(m.labeling, m.metric, m.layer): m for m in res.measurements}
    assert res.tokens == tokens and res.artifacts["summary"]["tokens"] == tokens
    means, token_rows = reference(handle, prompts, tokens)
    per_prompt = {"image": handle.parts.vision.grid.n_tokens}.get(tokens)
    assert res.artifacts["summary"]["all_rows"] == len(token_rows[0])
    if per_prompt:
        assert len(token_rows[0]) == per_prompt * len(prompts)
    for layer in range(handle.n_layers + 1):
        for labeling, X in (("mean", means[layer]), ("tokens", token_rows[layer])):
            expected = anisotropy_cosine(X.float(), n_pairs=10_000, n_boot=N_BOOT, seed=0).estimate.value
            assert rows[(labeling, "anisotropy_cosine", layer)].estimate.value == pytest.approx(expected, abs=1e-5)
    assert rows[("last", "lens_kl", handle.n_layers)].estimate.value == pytest.approx(0, abs=1e-4)


def test_text_tokens_at_readout_zero_are_one_point_and_image_tokens_are_not(vlm):
    """Planted by the prompt set: one template, so at read-out 0 (before any block) every prompt's text tokens are
    the same vectors; only the image tokens tell the 64 pictures apart."""
    handle, ps, _ = vlm
    out = {tokens: {(m.labeling, m.metric, m.layer): m for m in
                    run_method(Geometry(tokens=tokens, max_rows=500, n_boot=N_BOOT), handle, ps,
                               [ps.templates[0].id]).measurements} for tokens in ("image", "text")}
    text0 = out["text"][("mean", "id_twonn", 0)]
    assert math.isnan(text0.estimate.value) and text0.note.startswith("63 duplicate rows dropped")
    assert out["text"][("mean", "anisotropy_cosine", 0)].estimate.value == pytest.approx(1, abs=1e-6)
    image0 = out["image"][("mean", "id_twonn", 0)]
    assert math.isfinite(image0.estimate.value) and image0.note == ""
    assert math.isfinite(out["text"][("mean", "id_twonn", 1)].estimate.value)  # block 0 reads the image


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
def test_the_runner_reads_image_or_text_tokens(model, tmp_path):
    for tokens in ("image", "text"):
        folder = run_cell_in_process([f"model={model}", "domain=synthetic_xray", "method=geometry",
                                      f"method.tokens={tokens}", "method.max_rows=300", "method.lens_max_prompts=8",
                                      "method.n_boot=10", "templates=1", "logger=none", "report=false", "plots=false",
                                      "device=cpu", "resume=false"], tmp_path / tokens)
        rows = read_rows(folder / "per_layer.csv")
        assert {r.tokens for r in rows} == {tokens} and {r.layer for r in rows} == {0, 1, 2, 3, 4}
        assert {r.labeling for r in rows} == {"tokens", "mean", "last"}


def test_image_tokens_on_a_text_set_and_bad_tokens_are_one_line(cache_dir):
    handle = load_tiny("llava", cache_dir)
    with pytest.raises(MedinterpError) as err:
        run_method(Geometry(tokens="image"), handle, load_prompt_set("disease"), [])
    assert str(err.value) == ("method=geometry tokens=image needs an image prompt set; prompt set 'disease' is a text "
                              "set (tokens: text, all or null read it)")
    with pytest.raises(MedinterpError, match="geometry method: tokens must be one of image, text, all or null"):
        Geometry(tokens="patches")
