"""The LLaVA-Med converter on a tiny synthetic checkpoint written in the original LLaVA layout.

Reference: the original LLaVA forward wired by hand on the original tensors (a Mistral causal LM whose input
embeddings get the projected CLIP features spliced in at the image position, as LLaVA's ``-200`` id does;
projector = Linear → exact GELU → Linear on layer -2's patch features, CLS dropped)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medinterp.errors import MedinterpError
from medinterp.models.arch.vision import ImageGrid
from medinterp.models.llava_convert import TOWER, convert

from helpers import run_runner

TOWER_KEYS = TOWER + "vision_model."
MM = dict(mm_projector_type="mlp2x_gelu", mm_hidden_size=32, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
          mm_patch_merge_type="flat", image_aspect_ratio="pad", mm_use_im_start_end=False, mm_use_im_patch_token=False,
          model_type="llava_mistral", architectures=["LlavaMistralForCausalLM"])


def configs(vocab: int):
    from transformers import CLIPVisionConfig, MistralConfig

    text = MistralConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, rope_theta=1e6)  # Mistral-7B-v0.2's, not the default
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)  # 4 x 4 = 16 patches + CLS
    return text, vision


def original_checkpoint(root: Path, cache_dir: Path, tower_inside: bool = True, **mm) -> tuple[Path, Path]:
    """(checkpoint folder, CLIP folder) of a random tiny LLaVA-Mistral in the original repository's layout."""
    from huggingface_hub import save_torch_state_dict
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, CLIPVisionModel, MistralForCausalLM

    from medinterp.models.sources import smollm2_tokenizer_dir

    src, clip = root / "llava-med", root / "clip"
    src.mkdir(), clip.mkdir()
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir(cache_dir)))
    text, vision = configs(len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = dict(MistralForCausalLM(text).state_dict())  # model.embed_tokens/layers/norm, lm_head
        tower = {f"vision_model.{k}": v for k, v in CLIPVisionModel(vision).state_dict().items()}
        tower["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # a buffer old checkpoints hold
        state |= {"model.mm_projector.0.weight": torch.randn(64, 32) / 4, "model.mm_projector.0.bias": torch.randn(64),
                  "model.mm_projector.2.weight": torch.randn(64, 64) / 4, "model.mm_projector.2.bias": torch.randn(64)}
    if tower_inside:
        state |= {TOWER + k: v for k, v in tower.items()}
    else:
        save_file({k: v.contiguous() for k, v in tower.items()}, str(clip / "model.safetensors"))
    (clip / "config.json").write_text(json.dumps({"model_type": "clip", "vision_config": vision.to_dict()}))
    config = text.to_dict() | MM | {"mm_vision_tower": str(clip)} | mm
    del config["rope_parameters"]
    config["rope_theta"] = 1e6  # as the transformers-4.36 file of LLaVA-Med v1.5 writes it
    (src / "config.json").write_text(json.dumps(config))
    save_torch_state_dict({k: v.contiguous() for k, v in state.items()}, src, max_shard_size="10MB")  # sharded
    tokenizer.save_pretrained(src)
    return src, clip


def reference_logits(src: Path, clip: Path, input_ids: torch.Tensor, image_id: int, pixel_values: torch.Tensor):
    """The original LLaVA forward on the original tensors: (1, T, V) logits over the original vocabulary."""
    from transformers import CLIPVisionModel, MistralForCausalLM

    from medinterp.models.llava_convert import load_state

    state = load_state(src)
    if not any(k.startswith(TOWER) for k in state):
        state |= {TOWER + k: v for k, v in load_state(clip).items()}
    text, vision = configs(state["lm_head.weight"].shape[0])
    lm = MistralForCausalLM(text).eval()
    lm.load_state_dict({k: v for k, v in state.items() if not k.startswith(("model.mm_projector", TOWER))})
    tower = CLIPVisionModel(vision).eval()
    own = tower.state_dict()
    tower.load_state_dict({k[len(TOWER_KEYS):]: v for k, v in state.items() if k[len(TOWER_KEYS):] in own})
    p = {i: (state[f"model.mm_projector.{i}.weight"], state[f"model.mm_projector.{i}.bias"]) for i in (0, 2)}
    ids = input_ids[0]
    where = (ids == image_id).nonzero()[:, 0]  # the processor's run of placeholders = the original's one -200
    with torch.inference_mode():
        patches = tower(pixel_values, output_hidden_states=True).hidden_states[-2][0, 1:]  # (16, 32), CLS dropped
        feats = F.linear(F.gelu(F.linear(patches, *p[0])), *p[2])  # (16, 64)
        embed = lm.get_input_embeddings()
        x = torch.cat([embed(ids[:where[0]]), feats, embed(ids[where[-1] + 1:])])[None]
        return lm(inputs_embeds=x).logits


@pytest.mark.parametrize("tower_inside", [True, False], ids=["tower-in-checkpoint", "tower-from-clip-folder"])
def test_converted_checkpoint_loads_cleanly_and_matches_the_original_forward(tmp_path, cache_dir, tower_inside):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from medinterp.models import adapter_for

    src, clip = original_checkpoint(tmp_path, cache_dir, tower_inside)
    done = convert(src, tmp_path / "hf", None if tower_inside else clip)
    model, info = LlavaForConditionalGeneration.from_pretrained(str(done.folder), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected, mismatched keys
    processor = AutoProcessor.from_pretrained(str(done.folder))
    assert model.config.image_token_id == done.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")
    assert done.vocab_size % 64 == 0 and model.lm_head.weight.shape[0] == done.vocab_size
    assert adapter_for(model).vision.grid == ImageGrid(4, 4)
    assert model.config.text_config.rope_parameters["rope_theta"] == 1e6
    assert processor.image_processor.do_pad  # image_aspect_ratio "pad": padded to a square first, as the original
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                           "text": "Is there an opacity?"}]}], add_generation_prompt=True, tokenize=False)
    assert prompt == "[INST] <image>\nIs there an opacity? [/INST]"  # LLaVA-Med v1.5's mistral_instruct format
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    batch = processor(images=[image], text=[prompt], return_tensors="pt")
    assert int((batch["input_ids"] == done.image_token_id).sum()) == 16
    with torch.inference_mode():
        logits = model(**batch).logits
    vocab = len(processor.tokenizer) - 1  # the original vocabulary (before "<image>")
    ref = reference_logits(src, clip, batch["input_ids"], done.image_token_id, batch["pixel_values"])
    torch.testing.assert_close(logits[..., :vocab], ref[..., :vocab], rtol=1e-4, atol=1e-4)
    after = int((batch["input_ids"][0] == done.image_token_id).nonzero()[-1]) + 1
    assert (ref[0, after:] - reference_logits(src, clip, batch["input_ids"], done.image_token_id,
                                              batch["pixel_values"].flip(-1))[0, after:]).abs().max() > 1e-3  # image matters


def test_bad_checkpoints_are_one_line_errors(tmp_path, cache_dir):
    src, _ = original_checkpoint(tmp_path, cache_dir, mm_projector_type="linear")
    with pytest.raises(MedinterpError, match=r"^unknown mm_projector_type 'linear'; valid: mlp2x_gelu$"):
        convert(src, tmp_path / "out")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "mistral", "vocab_size": 10}))
    with pytest.raises(MedinterpError, match="not an original-layout LLaVA checkpoint .* got model_type 'mistral'"):
        convert(plain, tmp_path / "out")
    with pytest.raises(MedinterpError, match="no config.json"):
        convert(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written on a refusal


def test_a_checkpoint_without_its_tower_needs_the_clip_folder(tmp_path, cache_dir):
    src, clip = original_checkpoint(tmp_path, cache_dir, tower_inside=False)
    with pytest.raises(MedinterpError, match="no vision-tower weights .* give the CLIP folder"):
        convert(src, tmp_path / "out")


@pytest.mark.slow
def test_the_runner_exits_2_with_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    proc = run_runner("convert_llava_med.py", str(tmp_path), str(tmp_path / "out"), check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
