"""Activation patching on image pairs (medinterp/methods/patching_images.py): synthetic_xray's pairs (one question,
the opacity in one lung vs the other) on both tiny VLM families with tokens=image|text|all. The checks are exact
consequences of the definitions: at read-out 0 only the image positions differ between the two runs; at the last
read-out only the text positions reach the answer; image and text positions partition the sequence; and a planted
model whose image reaches the answer only through block 0's attention."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import load_tiny, run_cell_in_process

from medinterp.errors import MedinterpError
from medinterp.methods.patching import ActivationPatching
from medinterp.prompts import load_prompt_set
from medinterp.results import read_rows
from medinterp.run import run_method

FAMILIES = ("llava", "gemma3_vlm")
SITES = ("resid_diff", "resid_last", "resid_all", "attn", "mlp")
EXACT = 1e-9  # the patched run equals the clean (or corrupted) run: the same floats, up to the division in P


@pytest.fixture(scope="module")
def xray():
    return load_prompt_set("synthetic_xray")


def patch_scores(handle, ps, tokens, engine="fast", fraction=0.2):
    """P per (site, layer) averaged over a seeded fifth of the pairs (min_gap 0: the random models' gaps are small
    but nonzero), and the result."""
    res = run_method(ActivationPatching(tokens=tokens, sites=SITES, min_gap=0.0, n_boot=10, engine=engine,
                                        pair_fraction=fraction), handle, ps, [])
    return {(m.metric, m.layer): m for m in res.measurements}, res


@pytest.fixture(scope="module", params=FAMILIES)
def runs(request, cache_dir, xray):
    handle = load_tiny(request.param, cache_dir)
    return request.param, {tokens: patch_scores(handle, xray, tokens) for tokens in ("image", "text", "all")}


def value(rows, site, layer):
    return rows[(f"p_{site}", layer)].estimate.value


def test_image_pairs_run_with_their_images_and_say_the_token_type(runs):
    _, out = runs
    for tokens, (rows, res) in out.items():
        summary = res.artifacts["summary"]
        assert res.tokens == tokens and summary["tokens"] == tokens
        assert summary["n_kept"] == 10 and summary["n_skipped"] == 0  # 51 pairs, a fifth sampled
        assert summary["logit_check_abs_diff"] < 1e-5  # the backbone + head LD equals the whole VLM's own
        assert np.all(res.artifacts["ld_clean"] != res.artifacts["ld_corrupt"])  # the images change the answer
        assert {layer for (metric, layer) in rows if metric == "p_resid_all"} == {0, 1, 2, 3, 4}


def test_readout_zero_differs_only_at_the_image_and_the_last_readout_is_read_only_at_text(runs):
    _, out = runs
    image, text, everything = (out[t][0] for t in ("image", "text", "all"))
    # read-out 0 (block 0's input): the text positions have not seen the image yet, so they are the same in both runs
    assert value(image, "resid_all", 0) == pytest.approx(1, abs=EXACT)
    assert value(text, "resid_all", 0) == 0
    # the last read-out: what the image positions hold there is read by no later block
    assert value(image, "resid_all", 4) == 0 and value(text, "resid_all", 4) == pytest.approx(1, abs=EXACT)
    for layer in range(5):  # every position: the clean run
        assert value(everything, "resid_all", layer) == pytest.approx(1, abs=EXACT)
    # resid_diff is the image positions (the token ids are equal): image = all, text patches nothing
    for layer in range(5):
        assert value(image, "resid_diff", layer) == value(everything, "resid_diff", layer)
        assert value(text, "resid_diff", layer) == 0
    # the last position is a text token: resid_last under image patches nothing, under text it is resid_last
    for layer in range(5):
        assert value(image, "resid_last", layer) == 0
        assert value(text, "resid_last", layer) == value(everything, "resid_last", layer)
    assert image[("p_resid_last", 0)].note == "patches nothing: an image pair's resid_last has no image positions (P = 0)"
    assert text[("p_resid_diff", 2)].note == "patches nothing: an image pair's resid_diff has no text positions (P = 0)"
    assert image[("p_resid_all", 2)].note == ""
    # after block 0 the image positions still carry something to the answer (the zeros above are not everywhere)
    assert abs(value(image, "resid_all", 1)) > 1e-3 and abs(value(image, "mlp", 1)) > 1e-3


def test_fast_and_naive_engines_agree_on_image_pairs(cache_dir, xray):
    for family in FAMILIES:
        handle = load_tiny(family, cache_dir)
        for tokens in ("image", "text"):
            _, fast = patch_scores(handle, xray, tokens, "fast", 0.1)
            _, naive = patch_scores(handle, xray, tokens, "naive", 0.1)
            for site in SITES:
                np.testing.assert_allclose(fast.artifacts["ld_patched"][site], naive.artifacts["ld_patched"][site],
                                           rtol=0, atol=1e-5)
            assert fast.artifacts["summary"]["n_block_calls"] < naive.artifacts["summary"]["n_block_calls"]


@pytest.mark.parametrize("family, reader", [("llava", 0), ("gemma3_vlm", 2)])
def test_planted_image_read_by_one_block(family, reader, cache_dir, xray):
    """Planted: every attention output but block ``reader``'s is zeroed, so the answer's positions read the image
    only there (tiny Gemma 3's blocks 0, 1, 3 are sliding-window layers, window 8; block 2 attends globally). Up to
    read-out ``reader`` the text positions are the same in both runs: the image positions carry all of it (P = 1)
    and the text ones none (P = 0). After it, the reverse; and whatever any block from ``reader`` on writes at the
    image positions is read by nothing (attn, mlp: P = 0), while block ``reader``'s attention at the text positions
    is everything (P = 1). All exact."""
    handle = load_tiny(family, cache_dir)
    with torch.no_grad():
        for block in set(range(4)) - {reader}:
            handle.parts.attn(block).o_proj.weight.zero_()
    image, _ = patch_scores(handle, xray, "image")
    text, res = patch_scores(handle, xray, "text")
    assert np.all(res.artifacts["ld_clean"] != res.artifacts["ld_corrupt"])
    for layer in range(reader + 1):
        assert value(image, "resid_all", layer) == pytest.approx(1, abs=EXACT) and value(text, "resid_all", layer) == 0
    for layer in range(reader + 1, 5):
        assert value(text, "resid_all", layer) == pytest.approx(1, abs=EXACT)
        for site in ("resid_all", "attn", "mlp"):
            assert value(image, site, layer) == 0
    assert value(text, "attn", reader + 1) == pytest.approx(1, abs=EXACT)


@pytest.mark.parametrize("model", ["tiny_llava", "tiny_gemma3_vlm"])
def test_the_runner_patches_image_or_text_positions(model, tmp_path):
    base = [f"model={model}", "domain=synthetic_xray", "method=patching", "method.min_gap=0", "method.n_boot=10",
            "method.pair_fraction=0.1", "method.sites=[resid_all]", "logger=none", "report=false", "plots=false",
            "device=cpu", "resume=false"]
    rows = {}
    for tokens in ("image", "text"):
        folder = run_cell_in_process([*base, f"method.tokens={tokens}"], tmp_path / tokens)
        rows[tokens] = {(r.metric, r.layer): r for r in read_rows(folder / "per_layer.csv")}
        assert {r.tokens for r in rows[tokens].values()} == {tokens}
    assert rows["image"][("p_resid_all", 0)].value == pytest.approx(1, abs=EXACT)
    assert rows["text"][("p_resid_all", 0)].value == 0 and rows["text"][("p_resid_all", 4)].value == pytest.approx(1)
    assert math.isfinite(rows["image"][("ld_clean", -1)].value)


def test_image_tokens_on_a_text_set_and_bad_tokens_are_one_line(cache_dir):
    handle = load_tiny("llava", cache_dir)
    with pytest.raises(MedinterpError) as err:
        run_method(ActivationPatching(tokens="image"), handle, load_prompt_set("disease"), [])
    assert str(err.value) == ("method=patching tokens=image needs an image prompt set; prompt set 'disease' is a text "
                              "set (tokens: text, all or null read it)")
    with pytest.raises(MedinterpError, match="patching method: tokens must be one of image, text, all or null"):
        ActivationPatching(tokens="patches")
