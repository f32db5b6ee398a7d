"""Offline processors for the tiny vision-language models (medinterp/models/tiny.py: ``llava``, ``gemma3_vlm``).

A processor = image processor + tokenizer + chat template. The tiny models reuse SmolLM2's tokenizer (as the
tiny text models do) with the family's image tokens added after its vocabulary
(:data:`~medinterp.models.tiny.IMAGE_TOKENS`), an image processor built from its class with the tiny tower's
image size (the PIL backends: no torchvision needed), and a chat template in the real family's format
(medinterp/models/chat_templates.py):

- ``llava``: LLaVA-1.5's ``USER: <image>\\n<question> ASSISTANT:``; CLIP preprocessing (resize the shortest
  edge, centre crop) to 48 x 48;
- ``gemma3_vlm``: Gemma 3's ``<bos><start_of_turn>user\\n<start_of_image><question><end_of_turn>\\n``
  ``<start_of_turn>model\\n``, where the processor expands ``<start_of_image>`` into the 16 image tokens and
  their brackets; SigLIP preprocessing (resize to 64 x 64).
"""
from __future__ import annotations

from pathlib import Path

from medinterp.models.chat_templates import GEMMA3, LLAVA
from medinterp.models.tiny import IMAGE_TOKENS, tiny_config


def tiny_vlm_processor(family: str, tokenizer_dir: Path):
    """The processor of tiny ``family`` (``llava`` | ``gemma3_vlm``) on the tokenizer saved in ``tokenizer_dir``.

    Its tokenizer's length is the tiny model's vocabulary size (the image tokens are the last ids)."""
    from transformers import AutoTokenizer

    tokens = IMAGE_TOKENS[family]
    if family == "llava":
        from transformers import LlavaProcessor
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), extra_special_tokens={"image_token": tokens[0]})
        config = tiny_config(family, len(tokenizer))
        side = config.vision_config.image_size
        images = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        processor = LlavaProcessor(image_processor=images, tokenizer=tokenizer, chat_template=LLAVA,
                                   patch_size=config.vision_config.patch_size, image_token=tokens[0],
                                   vision_feature_select_strategy=config.vision_feature_select_strategy,
                                   num_additional_image_tokens=1)  # CLIP's CLS, which the default strategy drops
    else:
        from transformers import Gemma3Processor
        from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

        names = ("image_token", "boi_token", "eoi_token")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), extra_special_tokens=dict(zip(names, tokens)))
        config = tiny_config(family, len(tokenizer))
        side = config.vision_config.image_size
        images = Gemma3ImageProcessorPil(size={"height": side, "width": side})
        processor = Gemma3Processor(image_processor=images, tokenizer=tokenizer, chat_template=GEMMA3,
                                    image_seq_length=config.mm_tokens_per_image)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    assert ids == list(range(len(tokenizer) - len(tokens), len(tokenizer))), ids  # the last ids, in order
    return processor
