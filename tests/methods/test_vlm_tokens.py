"""The ``tokens`` setting on vision-language prompt sets (medinterp/methods/tokens.py), through runners/map.py in
process: umap on both tiny VLM families reads image or text tokens of synthetic_xray and says which in the
``tokens`` column; a text set reads exactly as before; tokens=image on a text set is one line."""
from __future__ import annotations

import csv
import math

import pytest
from helpers import run_cell_in_process

from medinterp.errors import MedinterpError
from medinterp.methods.tokens import token_type
from medinterp.prompts import load_prompt_set
from medinterp.results import read_rows

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
