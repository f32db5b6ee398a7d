"""The ``tokens`` setting on vision-language prompt sets (medinterp/methods/tokens.py), through runners/map.py in
process: umap, saliency and ablation on both tiny VLM families read (or lesion) image or text tokens of
synthetic_xray and say which in the ``tokens`` column; a text set reads exactly as before; tokens=image on a
text set is one line. Ablation's position-restricted lesion (medinterp.hooks.identity_at) is checked against
the whole-block identity, the intact model, cached generation and a planted model."""
from __future__ import annotations

import csv
import math

import pytest
from helpers import run_cell_in_process

import torch
from helpers import load_tiny

from medinterp.capture.images import encode_images
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, identity_at, replace_by_identity
from medinterp.methods.ablation import LayerAblation, answer_logprobs, greedy_generate, padding_side
from medinterp.methods.tokens import token_type
from medinterp.prompts import load_prompt_set
from medinterp.results import read_rows
from medinterp.run import run_method

COMMON = ("logger=none", "report=false", "plots=false", "device=cpu", "resume=false", "templates=1",
          "method.n_boot=10", "method.n_perm=2", "method.n_jobs=1")


def rows_by_key(folder):
    return {(r.labeling, r.metric, r.layer): r for r in read_rows(folder / "per_layer.csv")}


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
def test_umap_reads_image_or_text_tokens_of_an_image_set(model, tmp_path):
    out = {}
    for tokens in ("image", "text"):
        out[tokens] = rows_by_key(run_cell_in_process(
            [f"model={model}", "domain=synthetic_xray", "method=umap", f"method.tokens={tokens}",
             "use_activation_cache=false", *COMMON], tmp_path / tokens))
    for tokens, rows in out.items():
        assert {r.tokens for r in rows.values()} == {tokens}
        assert {layer for _, _, layer in rows} == {0, 1, 2, 3, 4}  # read-outs 0..n_layers, no spelling baseline
        assert not any(metric == "silhouette_surface" for _, metric, _ in rows)
    # planted: one template, 64 images. At read-out 0 a text token has not seen the image, so every prompt's text
    # tokens are the same row (template-centred: zero) and the layer is degenerate; the image tokens are 64 images.
    text0, image0 = out["text"][("side", "silhouette_raw", 0)], out["image"][("side", "silhouette_raw", 0)]
    assert math.isnan(text0.value) and text0.note == "degenerate: 1 distinct row"
    assert math.isfinite(image0.value) and image0.note == "" and image0.n == 64
    text1 = out["text"][("side", "silhouette_raw", 1)]  # after block 0 the text tokens have read the image
    assert math.isfinite(text1.value) and text1.note == ""


def test_image_set_capture_is_cached_by_token_type(tmp_path):
    folder = run_cell_in_process(["model=tiny_llava", "domain=synthetic_xray", "method=umap", "method.tokens=image",
                                  "use_activation_cache=true", f"cache_dir={tmp_path / 'cache'}", *COMMON],
                                 tmp_path / "run")
    entries = sorted(p.name for p in (tmp_path / "cache" / "activations").rglob("*.npy"))
    assert entries == ["tokens-image.npy"]
    with open(folder / "per_layer.csv", newline="") as f:
        assert "tokens" in next(csv.reader(f))


def test_a_text_set_reads_as_before_with_tokens_text(tmp_path):
    base = ["model=tiny_llava", "domain=disease", "method=umap", "use_activation_cache=false", *COMMON]
    before = run_cell_in_process(base, tmp_path / "default")
    text = run_cell_in_process([*base, "method.tokens=text"], tmp_path / "text")
    with open(before / "per_layer.csv", newline="") as f:
        assert "tokens" not in next(csv.reader(f))  # a text set's table has today's columns
    a, b = rows_by_key(before), rows_by_key(text)
    assert a.keys() == b.keys() and all(r.tokens == "" for r in b.values())
    assert all(a[k].value == b[k].value or (math.isnan(a[k].value) and math.isnan(b[k].value)) for k in a)


def test_image_tokens_on_a_text_set_are_one_line(tmp_path):
    with pytest.raises(MedinterpError) as err:
        run_cell_in_process(["model=tiny_llava", "domain=disease", "method=umap", "method.tokens=image", *COMMON],
                            tmp_path / "run")
    assert str(err.value) == ("method=umap tokens=image needs an image prompt set; prompt set 'disease' is a text set "
                              "(tokens: text, all or null read it)")
    assert not (tmp_path / "run" / "per_layer.csv").exists()
    with pytest.raises(MedinterpError, match="tokens must be one of image, text, all or null"):
        token_type("umap", "patches", load_prompt_set("synthetic_xray"))
    assert token_type("umap", None, load_prompt_set("synthetic_xray")) == "all"
    assert token_type("umap", "all", load_prompt_set("disease")) is None


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
def test_saliency_reads_image_or_text_tokens_of_an_image_set(model, tmp_path):
    out = {}
    for tokens in ("image", "text"):
        out[tokens] = rows_by_key(run_cell_in_process(
            [f"model={model}", "domain=synthetic_xray", "method=saliency", f"method.tokens={tokens}",
             "method.max_prompts=6", "method.n_boot=10", "templates=[left_lung,which_lobe]", "logger=none",
             "report=false", "plots=false", "device=cpu", "resume=false"], tmp_path / tokens))
    for tokens, rows in out.items():
        assert {r.tokens for r in rows.values()} == {tokens} and rows[("all", "loss", -1)].n == 6
    # planted: the last block's output at the image positions reaches the answer through no later block
    assert out["image"][("all", "grad_mlp", 4)].value == 0 and out["text"][("all", "grad_mlp", 4)].value > 0
    assert out["image"][("all", "grad_mlp", 1)].value > 0  # block 0 at the image positions does reach it
    # the same prompts and answers: the loss does not depend on the token type
    assert out["image"][("all", "loss", -1)].value == pytest.approx(out["text"][("all", "loss", -1)].value, rel=1e-6)


# -- ablation ------------------------------------------------------------------------------------------------
ABLATION = ("method=ablation", "method.max_prompts=4", "method.n_boot=10", "method.max_new_tokens=3", "templates=1",
            "logger=none", "report=false", "plots=false", "device=cpu", "resume=false")
VLMS = {"tiny_llava": "llava", "tiny_gemma3_vlm": "gemma3_vlm"}


@pytest.mark.parametrize("model", list(VLMS))
def test_ablation_lesions_image_or_text_positions_of_an_image_set(model, tmp_path):
    out = {tokens: rows_by_key(run_cell_in_process([f"model={model}", "domain=synthetic_xray", f"method.tokens={tokens}",
                                                    *ABLATION], tmp_path / tokens)) for tokens in ("image", "text", "all")}
    for tokens, rows in out.items():
        assert {r.tokens for r in rows.values()} == {tokens}
        assert {layer for _, _, layer in rows} == {1, 2, 3, 4} and rows[("all", "kl", 1)].n == 4
    # the last block's output at the image positions is read by no later block: lesioning it there changes nothing,
    # and lesioning it at the text positions is the whole lesion (image and text partition the sequence)
    assert out["image"][("all", "kl", 4)].value == 0 and out["image"][("all", "dlogp", 4)].value == 0
    assert out["text"][("all", "kl", 4)].value == pytest.approx(out["all"][("all", "kl", 4)].value, rel=1e-6)
    assert out["text"][("all", "kl", 4)].value > 0
    assert out["image"][("all", "kl", 1)].value > 0 and out["text"][("all", "kl", 1)].value > 0  # block 0 does matter


def test_ablation_on_a_text_set_reads_as_before_with_tokens_text_or_all(tmp_path):
    base = ["model=tiny_llava", "domain=disease", *ABLATION]
    before = rows_by_key(run_cell_in_process(base, tmp_path / "default"))
    for tokens in ("text", "all"):
        folder = run_cell_in_process([*base, f"method.tokens={tokens}"], tmp_path / tokens)
        with open(folder / "per_layer.csv", newline="") as f:
            assert "tokens" not in next(csv.reader(f))
        rows = rows_by_key(folder)
        assert rows.keys() == before.keys() and all(rows[k].value == before[k].value for k in rows)
    with pytest.raises(MedinterpError) as err:
        run_cell_in_process([*base, "method.tokens=image"], tmp_path / "image")
    assert str(err.value) == ("method=ablation tokens=image needs an image prompt set; prompt set 'disease' is a text "
                              "set (tokens: text, all or null read it)")
    with pytest.raises(MedinterpError, match="ablation method: tokens must be one of image, text, all or null"):
        LayerAblation(tokens="patches")


@pytest.fixture(scope="module", params=list(VLMS.values()))
def vlm(request, cache_dir):
    """A fresh tiny VLM (tests below may change its weights) and a left-padded batch of 3 synthetic_xray prompts
    with their greedy answers: (handle, ids, mask, extra inputs, image mask, answers, answer mask)."""
    handle = load_tiny(request.param, cache_dir)
    prompts = load_prompt_set("synthetic_xray").prompts(load_prompt_set("synthetic_xray").templates[0].id)[:3]
    with padding_side(handle.processor.tokenizer, "left"):
        batch = encode_images(handle, prompts)
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    extra = {k: v for k, v in batch.inputs.items() if k not in ("input_ids", "attention_mask")}
    ans, ans_mask = greedy_generate(handle, ids, mask, 4, extra=extra)
    return handle, ids, mask, extra, batch.token_types == 1, ans, ans_mask


def test_identity_at_every_position_is_the_block_identity_and_at_none_the_intact_model(vlm):
    handle, ids, mask, extra, image, ans, ans_mask = vlm
    args = (handle, ids, mask, ans, ans_mask)
    intact = answer_logprobs(*args, extra=extra)
    with replace_by_identity(handle.parts, 1):
        whole = answer_logprobs(*args, extra=extra)
    everywhere, nowhere = torch.ones_like(image), torch.zeros_like(image)
    with forward_hooks([(handle.parts.layers[1], identity_at(everywhere, tail=True))]):
        torch.testing.assert_close(answer_logprobs(*args, extra=extra), whole, rtol=0, atol=1e-5)
    with forward_hooks([(handle.parts.layers[1], identity_at(nowhere, tail=False))]):
        torch.testing.assert_close(answer_logprobs(*args, extra=extra), intact, rtol=0, atol=1e-6)
    assert (whole - intact).abs().max() > 1e-3  # the comparison above is not 0 == 0


@pytest.mark.parametrize("tokens", ["image", "text"])
def test_generation_under_a_restricted_lesion_is_the_same_with_and_without_the_cache(vlm, tokens):
    """Decoding steps with a KV cache see only new (text) positions: identity_at's tail rule must agree with the
    full recomputation of every step."""
    handle, ids, mask, extra, image, *_ = vlm
    positions = image if tokens == "image" else ~image
    with forward_hooks([(handle.parts.layers[0], identity_at(positions, tail=tokens == "text"))]):
        cached = greedy_generate(handle, ids, mask, 5, use_cache=True, extra=extra)
        full = greedy_generate(handle, ids, mask, 5, use_cache=False, extra=extra)
    assert torch.equal(cached[0] * cached[1], full[0] * full[1]) and torch.equal(cached[1], full[1])


@pytest.mark.parametrize("family", list(VLMS.values()))
def test_planted_image_positions_read_by_no_later_block_give_zero_image_kl(family, cache_dir):
    """Planted: the attention output of the last block (3) is zeroed, so no position reads another there. The image
    positions' outputs of blocks 2 and 3 then reach the answer through nothing (kl exactly 0 at layers 3 and 4);
    those of blocks 0 and 1 through block 2's attention (kl > 0); lesions at the text positions change the answer at
    every layer. In the intact tiny LLaVA block 2's image outputs do matter (read by block 3): the planting is
    what zeroes them. (Tiny Gemma 3's block 3 is a sliding-window layer, window 8, that cannot see the image from
    the answer's positions anyway: its intact layer-3 image kl is already 0.)"""
    handle = load_tiny(family, cache_dir)
    ps = load_prompt_set("synthetic_xray")

    def kl(tokens):
        res = run_method(LayerAblation(max_prompts=4, max_new_tokens=3, n_boot=10, tokens=tokens), handle, ps,
                         [ps.templates[0].id])
        assert res.tokens == tokens and res.artifacts["summary"]["tokens"] == tokens
        return {m.layer: m.estimate.value for m in res.measurements if m.metric == "kl"}

    intact = kl("image")
    assert intact[4] == 0 and (intact[3] > 1e-6) == (family == "llava")
    with torch.no_grad():
        handle.parts.attn(3).o_proj.weight.zero_()
    image, text = kl("image"), kl("text")
    assert image[1] > 1e-6 and image[2] > 1e-6 and image[3] == 0 and image[4] == 0
    assert all(text[layer] > 1e-6 for layer in (1, 2, 3, 4))
