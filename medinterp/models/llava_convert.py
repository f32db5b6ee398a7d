"""Convert a checkpoint in the original LLaVA repository's layout (LLaVA-Med v1.5) to transformers' Llava layout.

LLaVA-Med's released checkpoint (microsoft/llava-med-v1.5-mistral-7b) was written by the original LLaVA code
(``LlavaMistralForCausalLM``): a Mistral causal LM whose ``model`` also holds the projector and the CLIP tower,
and a config.json of Mistral fields plus ``mm_*`` fields. transformers' ``LlavaForConditionalGeneration``
keeps the three apart. The mapping (``rename``):

==============================================  ==================================================
original                                        transformers 5 (``LlavaForConditionalGeneration``)
==============================================  ==================================================
``model.embed_tokens|layers|norm.*``            ``model.language_model.embed_tokens|layers|norm.*``
``lm_head.weight``                              ``lm_head.weight``
``model.mm_projector.0.*`` / ``.2.*``           ``model.multi_modal_projector.linear_1.*`` / ``linear_2.*``
``model.vision_tower.vision_tower.vision_model.*``  ``model.vision_tower.*`` (CLIPVisionModel, no prefix)
==============================================  ==================================================

and the config: ``mm_vision_select_layer`` → ``vision_feature_layer``; ``mm_vision_select_feature`` ``patch``
(CLS dropped) / ``cls_patch`` → ``vision_feature_select_strategy`` ``default`` / ``full``;
``mm_projector_type`` must be ``mlp2x_gelu`` (Linear → GELU → Linear, the only projector transformers'
Llava has); the text config is the Mistral (or Llama) part of config.json; the vision config comes from the
``--vision-tower`` folder, else a local ``mm_vision_tower`` folder, else the published numbers of
``openai/clip-vit-large-patch14-336`` (:data:`KNOWN_TOWERS`).

The original code splices the image features in at a ``-200`` id in the input; transformers needs an
in-vocabulary placeholder: ``<image>`` is added to the tokenizer (id = the tokenizer's length), and the
embedding and LM head grow to the next multiple of 64 rows, new rows set to the mean of the old ones (as
transformers' own LLaVA conversion does; the image rows are overwritten by the image features anyway). The
processor pads each image to a square with the CLIP mean colour first when ``image_aspect_ratio`` is ``pad``
(as the original LLaVA preprocessing does), then CLIP-resizes and centre-crops it.

Checkpoints whose vision-tower weights are not in the checkpoint (LLaVA-1.5 style; the tower was loaded
from ``mm_vision_tower`` at run time) need ``vision_tower=<HF CLIP folder>`` (its ``vision_model.*`` weights).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.models.chat_templates import LLAVA, LLAVA_MISTRAL

log = logging.getLogger(__name__)

PROJECTORS = ("mlp2x_gelu",)
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}
TEXT_MODEL_TYPES = {"llava_mistral": "mistral", "llava_llama": "llama", "llava": "llama"}
# vision_config of openai/clip-vit-large-patch14-336 (the tower of LLaVA-1.5 and LLaVA-Med v1.5)
KNOWN_TOWERS = {"openai/clip-vit-large-patch14-336": dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
    patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)}
TOWER = "model.vision_tower.vision_tower."
PROJECTOR = {"model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
             "model.mm_projector.2.": "model.multi_modal_projector.linear_2."}
LEGACY_TEXT_KEYS = ("rope_theta", "rope_scaling", "torch_dtype")  # 4.x config fields 5.x still reads
DROPPED = (".position_ids", ".rotary_emb.inv_freq")  # buffers older checkpoints saved; rebuilt by the model
IMAGE_TOKEN = "<image>"
PAD_TO = 64
# Prompt formats of the original conversation templates: LLaVA-Med v1.5 "mistral_instruct", LLaVA-1.5 "llava_v1".
CHAT_TEMPLATES = {"mistral": LLAVA_MISTRAL, "llama": LLAVA}


@dataclass(frozen=True)
class Converted:
    """What :func:`convert` wrote."""

    folder: Path
    image_token_id: int
    vocab_size: int  # rows of the embedding and LM head after growing
    n_tensors: int
    tower_from: str  # "checkpoint" or the vision-tower folder


def read_llava_config(folder: Path) -> dict[str, Any]:
    """The original config.json, checked to be a LLaVA checkpoint this converter handles."""
    path = folder / "config.json"
    if not path.is_file():
        raise MedinterpError(f"{folder}: no config.json; expected a checkpoint in the original LLaVA layout")
    config = json.loads(path.read_text())
    if "mm_vision_tower" not in config or config.get("model_type") not in TEXT_MODEL_TYPES:
        raise MedinterpError(f"{folder}: not an original-layout LLaVA checkpoint (config.json needs mm_vision_tower and "
                             f"model_type one of {', '.join(TEXT_MODEL_TYPES)}; got model_type "
                             f"{config.get('model_type')!r})")
    projector = config.get("mm_projector_type", "linear")
    if projector not in PROJECTORS:
        raise unknown_choice("mm_projector_type", projector, PROJECTORS)
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURES:
        raise unknown_choice("mm_vision_select_feature", feature, SELECT_FEATURES)
    if config.get("mm_patch_merge_type", "flat") != "flat" or config.get("image_aspect_ratio") == "anyres":
        raise MedinterpError(f"{folder}: anyres / spatial patch merging (LLaVA-NeXT) is not supported; "
                             f"valid: mm_patch_merge_type flat with image_aspect_ratio pad or square")
    return config


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint in ``folder`` (``*.safetensors`` shards, else ``pytorch_model*.bin``)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        return {k: v for f in files for k, v in load_file(str(f)).items()}
    files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise MedinterpError(f"{folder}: no *.safetensors or pytorch_model*.bin weights")
    return {k: v for f in files for k, v in torch.load(f, map_location="cpu", weights_only=True).items()}


def rename(key: str) -> str:
    """The transformers 5 name of an original-layout key (see the module docstring's table)."""
    if key.startswith(TOWER):
        return "model.vision_tower." + key[len(TOWER):].removeprefix("vision_model.")
    for old, new in PROJECTOR.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    return key


def vision_config(config: dict[str, Any], tower: Path | None) -> dict[str, Any]:
    """The CLIP vision config: the tower folder's, a local ``mm_vision_tower`` folder's, or a known tower's."""
    name = str(config["mm_vision_tower"])
    for folder in (tower, Path(name).expanduser()):
        if folder is not None and (folder / "config.json").is_file():
            data = json.loads((folder / "config.json").read_text())
            return data.get("vision_config", data)  # a CLIPModel folder, or a CLIPVisionModel one
    if name in KNOWN_TOWERS:
        return dict(KNOWN_TOWERS[name])
    raise MedinterpError(f"vision tower {name!r}: give its Hugging Face folder with --vision-tower (known without "
                         f"one: {', '.join(KNOWN_TOWERS)})")


def tower_weights(tower: Path) -> dict[str, torch.Tensor]:
    """The ``vision_model.*`` weights of a Hugging Face CLIP folder, in the original checkpoint's naming."""
    state = load_state(tower)
    picked = {TOWER + k: v for k, v in state.items() if k.startswith("vision_model.")}
    if not picked:
        raise MedinterpError(f"--vision-tower {tower}: no vision_model.* weights in it (a CLIP model folder)")
    return picked


def grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` (V, D) with rows appended up to ``rows``, each the mean of the old rows."""
    extra = weight.float().mean(0, keepdim=True).to(weight.dtype).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra])


def convert(src: Path, dst: Path, vision_tower: Path | None = None, max_shard_size: str = "5GB") -> Converted:
    """Write the transformers-layout copy of the original-layout LLaVA checkpoint ``src`` into ``dst``.

    The result loads with ``LlavaForConditionalGeneration.from_pretrained(dst)`` with no missing or
    unexpected keys (checked here against the model built on the meta device before anything is written)."""
    from huggingface_hub import save_torch_state_dict
    from transformers import AutoTokenizer, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    tower = Path(vision_tower).expanduser() if vision_tower else None
    if dst.exists() and any(dst.iterdir()):
        raise MedinterpError(f"output folder {dst} exists and is not empty; give a new folder")
    config = read_llava_config(src)
    state = load_state(src)
    has_tower = any(k.startswith(TOWER) for k in state)
    if not has_tower and tower is None:
        raise MedinterpError(f"{src}: the checkpoint has no vision-tower weights ({TOWER}*); give the CLIP folder "
                             f"of {config['mm_vision_tower']!r} with --vision-tower")
    if not has_tower:
        state |= tower_weights(tower)

    text_type = TEXT_MODEL_TYPES[config["model_type"]]
    text_class = CONFIG_MAPPING[text_type]
    known = set(text_class().to_dict()) | set(LEGACY_TEXT_KEYS)  # (rope_theta: 1e6 for Mistral-7B-v0.2, not 1e4)
    text = text_class(**{k: v for k, v in config.items() if k in known and k not in ("model_type", "architectures")})
    tokenizer = AutoTokenizer.from_pretrained(str(src), extra_special_tokens={"image_token": IMAGE_TOKEN})
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    rows = max(text.vocab_size, math.ceil(len(tokenizer) / PAD_TO) * PAD_TO)
    text.vocab_size, text.pad_token_id = rows, tokenizer.pad_token_id
    vision = vision_config(config, tower)
    strategy = SELECT_FEATURES[config.get("mm_vision_select_feature", "patch")]
    side = int(vision["image_size"]) // int(vision["patch_size"])
    llava = LlavaConfig(text_config=text.to_dict(), vision_config=dict(vision, model_type="clip_vision_model"),
                        image_token_index=image_id, vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
                        vision_feature_select_strategy=strategy, projector_hidden_act="gelu",
                        image_seq_length=side * side + (strategy == "full"), tie_word_embeddings=False)

    out = {rename(k): v for k, v in state.items()}
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        if key in out and out[key].shape[0] < rows:
            out[key] = grow_rows(out[key], rows)
    with torch.device("meta"):
        expected = {k: v.shape for k, v in LlavaForConditionalGeneration(llava).state_dict().items()}
    out = {k: v for k, v in out.items() if k in expected or not k.endswith(DROPPED)}
    missing, unexpected = sorted(set(expected) - set(out)), sorted(set(out) - set(expected))
    if missing or unexpected:
        raise MedinterpError(f"{src}: the converted keys do not fit LlavaForConditionalGeneration: missing "
                             f"{missing[:3]}{' ...' if len(missing) > 3 else ''}, unexpected "
                             f"{unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
    wrong = [k for k, v in out.items() if v.shape != expected[k]]
    if wrong:
        k = wrong[0]
        raise MedinterpError(f"{src}: {k} has shape {tuple(out[k].shape)} but the converted config expects "
                             f"{tuple(expected[k])} ({len(wrong)} such tensors; check --vision-tower)")

    side_px = int(vision["image_size"])
    images = LlavaImageProcessorPil(size={"shortest_edge": side_px}, crop_size={"height": side_px, "width": side_px},
                                    do_pad=config.get("image_aspect_ratio", "pad") == "pad")
    processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=int(vision["patch_size"]),
                               vision_feature_select_strategy=strategy, num_additional_image_tokens=1,
                               image_token=IMAGE_TOKEN, chat_template=CHAT_TEMPLATES[text_type])
    dst.mkdir(parents=True, exist_ok=True)
    llava.save_pretrained(dst)
    processor.save_pretrained(dst)
    save_torch_state_dict({k: v.contiguous() for k, v in out.items()}, dst, max_shard_size=max_shard_size)
    log.info("converted %s -> %s (%d tensors, <image> = %d, vocab %d)", src, dst, len(out), image_id, rows)
    return Converted(dst, image_id, rows, len(out), "checkpoint" if has_tower else str(tower))
