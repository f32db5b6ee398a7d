"""Vision-language adapters on the tiny VLMs: parts, image-token positions, the grid from the config, the processor path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY_VLM_FAMILIES
from medinterp.errors import MedinterpError
from medinterp.models import load_model
from medinterp.models.arch.vision import ImageGrid, patch_grid, pooled_grid
from medinterp.models.image_tokens import image_positions, token_types
from medinterp.models.processor import image_prompts, render_prompt

VLMS = TINY_VLM_FAMILIES
GRIDS = {"llava": ImageGrid(6, 6), "gemma3_vlm": ImageGrid(4, 4)}  # docs/multimodal.md; conf/model/tiny_*.yaml
QUESTIONS = ["Is there an opacity?", "Is there an opacity in the left lower lobe of this chest radiograph?"]


def images(n: int, side: int = 50, seed: int = 0) -> list[np.ndarray]:
    """``n`` random RGB images (H, W, 3) uint8 (the processors resize them to the tower's size)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side + 7 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("family", VLMS)
def test_parts_are_the_language_models(vlms, family):
    h = vlms[family]
    model, parts = h.model, h.parts
    lm = model.model.language_model
    assert parts.layers is lm.layers and parts.final_norm is lm.norm and parts.embed is lm.embed_tokens
    assert parts.backbone is lm and parts.lm_head is model.lm_head and parts.n_layers == 4
    assert parts.text_config is model.config.text_config
    vision = parts.vision
    assert vision.backbone is model.model and vision.tower is model.model.vision_tower
    assert vision.projector is model.model.multi_modal_projector
    assert vision.image_token_id == model.config.image_token_id == h.tokenizer.convert_tokens_to_ids(
        h.processor.tokenizer.image_token)
    assert vision.grid == GRIDS[family]


@pytest.mark.parametrize("family", VLMS)
def test_the_grid_is_what_the_vision_tower_produces(vlms, family):
    """The projected image features per image = grid.n_tokens rows (the config-derived grid is the model's)."""
    h = vlms[family]
    batch = image_prompts(h.processor, h.parts.vision, images(2), QUESTIONS)
    with torch.inference_mode():
        feats = h.model.model.get_image_features(pixel_values=batch.inputs["pixel_values"]).pooler_output
    assert [f.shape[0] for f in feats] == [h.parts.vision.grid.n_tokens] * 2


def test_grids_come_from_the_config():
    """LLaVA-1.5: 336 // 14 = 24 a side, CLS dropped (576) or kept as a prefix ("full", 577); MedGemma-4B: 896 // 14 =
    64 patches pooled to sqrt(256) = 16 a side."""
    from transformers import Gemma3Config, LlavaConfig

    assert patch_grid(LlavaConfig()) == ImageGrid(24, 24) and patch_grid(LlavaConfig()).n_tokens == 576
    full = patch_grid(LlavaConfig(vision_feature_select_strategy="full"))
    assert full == ImageGrid(24, 24, prefix=1) and full.n_tokens == 577
    siglip = dict(model_type="siglip_vision_model", image_size=896, patch_size=14)
    assert pooled_grid(Gemma3Config(vision_config=siglip)) == ImageGrid(16, 16)
    with pytest.raises(MedinterpError, match="mm_tokens_per_image=250 must be a square"):
        pooled_grid(Gemma3Config(vision_config=siglip, mm_tokens_per_image=250))
    values = torch.arange(577.0)
    assert full.to_grid(values)[0, 0] == 1 and full.to_grid(values)[1, 0] == 25  # row-major after the CLS


@pytest.mark.parametrize("family", VLMS)
def test_image_positions_are_where_the_image_features_enter(vlms, family):
    """The residual stream entering block 0 holds, at image_positions (grid order), exactly the projected image
    features; token types mark those positions image, padding -1, the rest text."""
    h = vlms[family]
    batch = image_prompts(h.processor, h.parts.vision, images(2), QUESTIONS)
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    n = GRIDS[family].n_tokens
    assert mask[0].sum() < mask[1].sum()  # the two prompts differ in length: padding is exercised
    assert batch.image_positions.shape == (2, 1, n)
    assert bool((ids.gather(1, batch.image_positions[:, 0]) == h.parts.vision.image_token_id).all())
    assert batch.token_types.eq(1).sum(-1).tolist() == [n, n]
    assert bool((batch.token_types[mask == 0] == -1).all()) and bool((batch.token_types[mask == 1] >= 0).all())
    if family == "gemma3_vlm":  # the processor's own token_type_ids (image = 1) agree
        assert torch.equal(batch.inputs["token_type_ids"], batch.token_types.clamp(min=0))
    seen = {}

    def block0_input(_module, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]  # (B, T, D)

    hook = h.parts.layers[0].register_forward_pre_hook(block0_input, with_kwargs=True)
    try:
        with torch.inference_mode():
            h.parts.vision.backbone(**batch.inputs)
            feats = h.model.model.get_image_features(pixel_values=batch.inputs["pixel_values"]).pooler_output
    finally:
        hook.remove()
    for b in range(2):
        torch.testing.assert_close(seen["x"][b, batch.image_positions[b, 0]], feats[b])


@pytest.mark.parametrize("family", VLMS)
def test_final_norm_and_unembedding_are_the_language_models(vlms, family):
    """logits = lm_head(final_norm(raw output of the last block)) on an image prompt: the norm once, the LM's head."""
    h = vlms[family]
    batch = image_prompts(h.processor, h.parts.vision, images(1), QUESTIONS[:1])
    seen = {}
    hook = h.parts.layers[-1].register_forward_hook(lambda _m, _a, out: seen.setdefault("h", out))
    try:
        with torch.inference_mode():
            logits = h.model(**batch.inputs).logits
    finally:
        hook.remove()
    with torch.inference_mode():
        torch.testing.assert_close(logits, h.parts.lm_head(h.parts.final_norm(seen["h"])))


@pytest.mark.parametrize("family", VLMS)
def test_prompts_put_the_placeholder_where_the_processor_needs_it(vlms, family):
    proc = vlms[family].processor
    chat = render_prompt(proc, "Is it left?")
    expected = {"llava": "USER: <image>\nIs it left? ASSISTANT:",
                "gemma3_vlm": "<|im_start|><start_of_turn>user\n<start_of_image>Is it left?<end_of_turn>\n"
                              "<start_of_turn>model\n"}  # (SmolLM2's BOS is <|im_start|>)
    assert chat == expected[family]
    own = f"Look: {proc.image_token} is it left?"
    assert render_prompt(proc, own) == own  # a template that placed it is kept as it is
    with pytest.raises(MedinterpError, match="one image per text"):
        image_prompts(proc, vlms[family].parts.vision, images(1), QUESTIONS)
    with pytest.raises(MedinterpError, match="must hold the placeholder"):
        image_prompts(proc, vlms[family].parts.vision, images(1), [f"{proc.image_token}{proc.image_token} two?"])


def test_broken_image_runs_are_one_line_errors(vlms):
    vision = vlms["llava"].parts.vision
    tok = vision.image_token_id
    short = torch.tensor([[1] + [tok] * 35 + [2]])
    with pytest.raises(MedinterpError, match=r"image tokens per prompt \[35\]: .* 36 tokens \(grid 6x6"):
        image_positions(short, vision)
    split = torch.tensor([[1] + [tok] * 18 + [2] + [tok] * 18 + [3]])
    with pytest.raises(MedinterpError, match="prompt 0: its image tokens are not contiguous"):
        image_positions(split, vision)
    assert token_types(torch.tensor([[tok, 5, 0]]), tok, torch.tensor([[1, 1, 0]])).tolist() == [[1, 0, -1]]


@pytest.mark.parametrize("family", VLMS)
def test_a_saved_tiny_vlm_reloads_with_its_processor(vlms, family, cache_dir):
    """The folder that sharded/offloaded placements load (tiny_folder) holds the same weights and processor."""
    from medinterp.models.load import pretrained, tiny_folder

    h = vlms[family]
    folder = tiny_folder(h.spec, cache_dir)
    model, processor, tokenizer = pretrained(str(folder), torch.float32)
    assert type(model) is type(h.model) and type(processor) is type(h.processor)
    assert processor.image_token == h.processor.image_token and len(tokenizer) == len(h.tokenizer)
    for (name, a), b in zip(h.model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    batch = image_prompts(processor, h.parts.vision, images(1), QUESTIONS[:1])
    assert torch.equal(batch.inputs["input_ids"], image_prompts(h.processor, h.parts.vision, images(1),
                                                                 QUESTIONS[:1]).inputs["input_ids"])


@pytest.mark.parametrize("family", VLMS)
def test_an_offloaded_tiny_vlm_gives_the_logits_of_the_whole_one(vlms, family, cache_dir, tmp_path):
    """device_map placement (weights offloaded to disk) loads the saved tiny VLM with its processor; an image
    prompt's logits are those of the model held whole."""
    from medinterp.models import Placement

    whole = vlms[family]
    placed = load_model(whole.spec, "cpu", cache_dir, Placement(device_map="auto", max_memory={"cpu": "100KB"},
                                                                offload_folder=str(tmp_path)))
    assert "disk" in set(placed.model.hf_device_map.values()) and placed.parts.vision.grid == GRIDS[family]
    batch = image_prompts(placed.processor, placed.parts.vision, images(2), QUESTIONS)
    with torch.inference_mode():
        torch.testing.assert_close(placed.model(**batch.inputs).logits, whole.model(**batch.inputs).logits)
