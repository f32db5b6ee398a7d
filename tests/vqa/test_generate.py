"""Greedy VQA answers on the tiny VLMs: equal to a hand-written argmax loop, independent of the batch, placeholder-free."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import TINY_VLM_FAMILIES
from medinterp.errors import MedinterpError
from medinterp.models.processor import image_prompts
from medinterp.vqa import Question
from medinterp.vqa.generate import answer_texts, generate_batch, load_image

VLMS = TINY_VLM_FAMILIES
QUESTIONS = ["Is there an opacity?", "Which lung holds the opacity in this chest radiograph?", "Any finding?"]
NEW = 6  # max_new_tokens


def images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 5 * i, 52, 3), dtype=np.uint8) for i in range(n)]


def hand_greedy(handle, image, text: str, n_new: int) -> str:
    """Reference: one unpadded prompt, a full forward per step (no KV cache), argmax of the last logits, stop at EOS."""
    inputs = dict(image_prompts(handle.processor, handle.parts.vision, [image], [text]).inputs)
    eos = handle.model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    new = []
    with torch.inference_mode():
        for _ in range(n_new):
            token = int(handle.model(**inputs).logits[0, -1].argmax())
            if token in eos:
                break
            new.append(token)
            one = torch.tensor([[token]])
            inputs["input_ids"] = torch.cat([inputs["input_ids"], one], dim=1)
            inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(one)], dim=1)
            if "token_type_ids" in inputs:  # Gemma 3: generated tokens are text (0)
                inputs["token_type_ids"] = torch.cat([inputs["token_type_ids"], torch.zeros_like(one)], dim=1)
    return handle.processor.tokenizer.decode(new, skip_special_tokens=True).strip()


@pytest.mark.parametrize("family", VLMS)
def test_batched_answers_equal_a_hand_written_greedy_loop(vlms, family):
    """Left-padded batches + generate() == one prompt at a time with an explicit argmax loop."""
    h = vlms[family]
    pics = images(3)
    got = generate_batch(h, pics, QUESTIONS, NEW)
    want = [hand_greedy(h, pic, text, NEW) for pic, text in zip(pics, QUESTIONS)]
    assert got == want
    assert any(got), "the tiny model answered nothing: the comparison would be vacuous"
    assert h.processor.tokenizer.padding_side == "right"  # the tokenizer's own side is restored


@pytest.mark.parametrize("family", VLMS)
def test_answers_do_not_depend_on_the_batch_size_or_on_our_placeholder(vlms, family, tmp_path):
    """answer_texts reads the images from the folder; batch_size 1 and 2 agree; a question file's ``<image>``
    (LLaVA-Med files carry it) is dropped, so the prompt holds one placeholder and the same answers come back."""
    from PIL import Image

    h = vlms[family]
    questions = []
    for i, (pic, text) in enumerate(zip(images(3), QUESTIONS)):
        Image.fromarray(pic).save(tmp_path / f"{i}.png")
        questions.append(Question(i, f"{i}.png", text, "yes", "closed"))
    one = answer_texts(h, questions, tmp_path, batch_size=1, max_new_tokens=NEW)
    two = answer_texts(h, questions, tmp_path, batch_size=2, max_new_tokens=NEW)
    marked = [Question(q.question_id, q.image, f"<image>\n{q.text}", q.answer, q.answer_type) for q in questions]
    assert one == two == answer_texts(h, marked, tmp_path, batch_size=3, max_new_tokens=NEW)
    assert one == generate_batch(h, [load_image(tmp_path / f"{i}.png") for i in range(3)], QUESTIONS, NEW)


def test_max_new_tokens_caps_the_answer(vlms):
    h = vlms["llava"]
    long = generate_batch(h, images(1), QUESTIONS[:1], 8)
    ids = h.processor.tokenizer(long[0], add_special_tokens=False)["input_ids"]
    short = generate_batch(h, images(1), QUESTIONS[:1], 2)
    assert len(ids) > 2 and long[0].startswith(short[0]) and short[0] != long[0]


def test_a_text_only_model_is_one_line(tiny_handles, tmp_path):
    with pytest.raises(MedinterpError, match=r"^model=tiny_llama is a text-only model; VQA needs a vision-language"):
        answer_texts(tiny_handles["llama"], [Question(1, "x.png", "q", "a", "open")], tmp_path, 1, 4)


def test_a_missing_image_and_bad_settings_are_one_line(vlms, tmp_path):
    h = vlms["llava"]
    q = [Question(1, "missing.png", "Is there an opacity?", "no", "closed")]
    with pytest.raises(MedinterpError, match=r"missing\.png: image not readable \(FileNotFoundError"):
        answer_texts(h, q, tmp_path, 1, 4)
    with pytest.raises(MedinterpError, match=r"^The 'max_new_tokens' setting must be a positive integer; got 0\.$"):
        answer_texts(h, q, tmp_path, 1, 0)
