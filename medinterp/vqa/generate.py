"""Greedy answers of a vision-language model to (image, question) pairs, batched, deterministic.

Each question goes through the processor path (:func:`medinterp.models.processor.image_prompts`): the bare
question text (an image prompt set's ``prompt.question``, a question file's ``text`` with any ``<image>``
removed, as LLaVA-Med's ``model_vqa.py`` does) is rendered by the processor's chat template as one user turn
holding the image, then the text, with the generation prompt; the processor expands the placeholder into the
grid's image tokens. A batch is padded on the **left** (a decoder continues from the last position of every
row), whatever the tokenizer's own padding side; the side is restored afterwards.

Decoding is greedy (``do_sample=False``, no temperature, one beam: argmax at every step), at most
``max_new_tokens`` new tokens, stopping at the model's end-of-sequence token. The answer is the decoded new
tokens without special tokens, stripped of surrounding whitespace. Same weights, questions, batch size and
device give the same answers (rows of a different batch cut can differ in the last float bits, as any
padded forward).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.models.padding import padding_side
from medinterp.models.processor import image_prompts
from medinterp.prompts import IMAGE_TOKEN
from medinterp.validation import check_positive_int
from medinterp.vqa.files import Question


def require_vlm(handle: Any) -> None:
    """One line unless ``handle`` is a vision-language model (a processor and a vision side)."""
    if getattr(handle, "processor", None) is None or getattr(handle.parts, "vision", None) is None:
        raise MedinterpError(f"model={handle.name} is a text-only model; VQA needs a vision-language model "
                             f"(e.g. model=tiny_llava, tiny_gemma3_vlm, llava15_7b, llava_med_v15_mistral_7b, "
                             f"medgemma_4b)")


def generate_batch(handle: Any, images: Sequence[Any], texts: Sequence[str], max_new_tokens: int) -> list[str]:
    """Greedy answers (one string each) to ``texts[i]`` about ``images[i]`` (PIL images or (H, W, 3) arrays),
    in one padded forward per decoding step. Under several ranks (ZeRO-3: every forward gathers the sharded
    weights from all ranks) the ranks decode in lockstep (``synced_gpus``) until the last one is done."""
    with padding_side(handle.processor.tokenizer, "left"):
        batch = image_prompts(handle.processor, handle.parts.vision, images, texts)
    batch = batch.to(handle.device, handle.model.dtype)
    tokenizer = handle.processor.tokenizer
    with torch.inference_mode():
        out = handle.model.generate(**batch.inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                    pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
                                    synced_gpus=torch.distributed.is_initialized()
                                    and torch.distributed.get_world_size() > 1)
    new = out[:, batch.inputs["input_ids"].shape[1]:]  # (B, <= max_new_tokens): the generated tokens only
    return [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]


def load_image(path: os.PathLike[str] | str) -> Image.Image:
    """The image at ``path`` as RGB; a missing or unreadable file is one line."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise MedinterpError(f"{path}: image not readable ({type(err).__name__}: {err}); check the question "
                             f"file's 'image' field and image_folder") from None


def answer_texts(handle: Any, questions: Sequence[Question], image_folder: os.PathLike[str] | str,
                 batch_size: int, max_new_tokens: int) -> list[str]:
    """The model's greedy answer to every question (file order), ``batch_size`` questions per batch; images
    are read from ``image_folder`` one batch at a time."""
    require_vlm(handle)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_new_tokens", max_new_tokens)
    answers: list[str] = []
    starts = range(0, len(questions), batch_size)
    for start in tqdm(starts, desc="vqa", unit="batch", leave=False, disable=len(starts) < 2):
        chunk = questions[start:start + batch_size]
        images = [load_image(q.image_path(image_folder)) for q in chunk]
        texts = [q.text.replace(IMAGE_TOKEN, "").strip() for q in chunk]  # as LLaVA-Med's model_vqa.py
        answers.extend(generate_batch(handle, images, texts, max_new_tokens))
    return answers
