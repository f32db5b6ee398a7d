"""Capture of image prompts (medinterp/capture/images.py) on both tiny VLM families, against the models' own tensors:
read-out 0 at the image positions is the projector's output (what the model writes into inputs_embeds), at the
text positions the token embedding; later read-outs are transformers' hidden states; the token-type masks are the
processor's image positions; pooling does not depend on the batch."""
import numpy as np
import pytest
import torch

from medinterp.capture.images import (capture_image_batch, capture_image_indices, encode_images, image_readout,
                                      image_tokens, model_inputs, pool_weight, token_masks)
from medinterp.errors import MedinterpError
from medinterp.models import ModelSpec, load_model
from medinterp.prompts import load_prompt_set

VLMS = {"llava": 36, "gemma3_vlm": 16}  # image tokens per prompt: 6 x 6, 4 x 4 (docs/multimodal.md)


@pytest.fixture(scope="module")
def prompts():
    ps = load_prompt_set("synthetic_xray")
    return ps.prompts("left_lung")[:3] + ps.prompts("finding")[3:5]  # two templates: different text lengths (padding)


@pytest.mark.parametrize("family", VLMS)
def test_token_masks_are_the_processors_image_positions(vlms, prompts, family):
    h = vlms[family]
    batch = encode_images(h, prompts)
    masks = token_masks(batch, h.tokenizer.all_special_ids)
    ids = batch.inputs["input_ids"]
    for b in range(len(prompts)):
        image = masks["image"][b].nonzero().flatten()
        assert image.tolist() == batch.image_positions[b, 0].tolist() and len(image) == VLMS[family]
        assert (ids[b, image] == h.parts.vision.image_token_id).all()
        text = masks["text"][b]
        real = batch.inputs["attention_mask"][b].bool()
        assert not (text & masks["image"][b]).any() and not (text & ~real).any()
        # every real non-image token is text unless it is a special token (Gemma's image brackets)
        special = set(h.tokenizer.all_special_ids)
        assert text.tolist() == [bool(r) and t != h.parts.vision.image_token_id and t not in special
                                 for r, t in zip(real.tolist(), ids[b].tolist())]
        assert (masks["all"][b] == (masks["image"][b] | text)).all()
    w = pool_weight(batch, h.tokenizer.all_special_ids, "image")
    assert torch.allclose(w.sum(-1), torch.ones(len(prompts))) and (w[masks["image"]] == 1 / VLMS[family]).all()


@pytest.mark.parametrize("family", VLMS)
def test_readout_0_is_the_projector_output_and_later_readouts_the_hidden_states(vlms, prompts, family):
    h = vlms[family]
    batch = encode_images(h, prompts)
    acts = capture_image_batch(h, batch, list(range(h.n_layers + 1)), None)  # (B, T, D) each
    with torch.no_grad():
        projected = h.model.model.get_image_features(pixel_values=batch.inputs["pixel_values"]).pooler_output
        projected = torch.stack(list(projected)) if isinstance(projected, (list, tuple)) else projected
        embedded = h.parts.embed(batch.inputs["input_ids"])
        hidden = h.model(**model_inputs(batch), output_hidden_states=True).hidden_states
    image = batch.token_types == 1
    assert projected.shape == (len(prompts), VLMS[family], h.d_model)
    assert (projected[0] - projected[1]).abs().max() > 1e-3  # two images, two feature sets (no zero projector)
    torch.testing.assert_close(acts[0][image], projected.reshape(-1, h.d_model), rtol=0, atol=1e-6)
    text = batch.token_types == 0
    torch.testing.assert_close(acts[0][text], embedded[text], rtol=0, atol=1e-6)
    # the embedding module's output at the image positions is the placeholder's embedding, not the image
    assert not torch.allclose(acts[0][image], embedded[image], atol=1e-3)
    real = batch.inputs["attention_mask"].bool()
    for layer in range(h.n_layers):  # transformers' last entry has the final norm; ours is the raw block output
        torch.testing.assert_close(acts[layer][real], hidden[layer][real], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", VLMS)
@pytest.mark.parametrize("tokens", ["image", "text", "all"])
def test_pooled_capture_is_the_masked_mean_and_does_not_depend_on_the_batch(vlms, prompts, family, tokens):
    h = vlms[family]
    full = capture_image_batch(h, encode_images(h, prompts), [0, 2, 4], None)
    masks = token_masks(encode_images(h, prompts), h.tokenizer.all_special_ids)[tokens]
    pooled = capture_image_indices(h, prompts, np.arange(len(prompts)), tokens, layers=[0, 2, 4])
    alone = np.concatenate([capture_image_indices(h, prompts, np.array([i]), tokens, layers=[0, 2, 4])
                            for i in range(len(prompts))], axis=1)
    want = np.stack([np.stack([a[b][masks[b]].mean(0).numpy() for b in range(len(prompts))]) for a in full])
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled, alone, rtol=1e-4, atol=1e-5)  # padding and batch-mates change nothing


def test_text_tokens_at_readout_0_do_not_see_the_image(vlms, prompts):
    h = vlms["llava"]
    same_text = prompts[:3]  # one template, three images
    for tokens, distinct in (("text", 1), ("image", 3)):
        acts = capture_image_indices(h, same_text, np.arange(3), tokens, layers=[0, 1])
        assert len(np.unique(acts[0].round(6), axis=0)) == distinct
        assert len(np.unique(acts[1].round(6), axis=0)) == 3  # block 0 mixes the image into the text tokens


def test_readout_names_round_trip_and_refuse_text_reductions():
    assert image_tokens(image_readout("image")) == "image" and image_readout("all") == "tokens-all"
    with pytest.raises(MedinterpError, match="not by the text reduction 'last'"):
        image_tokens("last")
    with pytest.raises(MedinterpError, match="tokens"):
        image_readout("patches")


def test_a_text_only_model_is_refused_in_one_line(cache_dir, prompts):
    h = load_model(ModelSpec(name="tiny_llama", source="tiny", family="llama", n_layers=4), "cpu", cache_dir)
    with pytest.raises(MedinterpError, match="text-only model") as err:
        capture_image_indices(h, prompts, np.arange(2), "image")
    assert "\n" not in str(err.value)
