"""Saliency on image prompt sets: the target is the item's reference answer, read after the image and question.

For an image set (``modality: image``) the term is the image, which a language model cannot be asked to
predict. The loss is instead the teacher-forced log-likelihood of the item's reference answer for the
template (``item.answers[template]``, e.g. ``" yes"``), after the template's text (the image placeholder
replaced by the processor's own; no chat template, as the capture of image prompts:
medinterp/capture/images.py):

    L = −Σ_j log p(answer_j | image, question, answer_<j)

Items without an answer for the template are skipped (logged). Tokenization goes through the processor,
which expands the placeholder into the image's ``grid.n_tokens`` tokens: the prompt and prompt + answer are
encoded with the same image, and the answer is what follows the prompt's ids (an example whose prompt ids
are not a prefix of the whole, a merge across the boundary, is skipped with a warning).

``tokens`` (image | text | all) restricts every per-prompt weight gradient to the positions of that type
(medinterp.capture.images.type_masks: image tokens; text tokens without special tokens; both):
for a Linear layer ∂L/∂W restricted to S is Σ_{t ∈ S} δ_t x_tᵀ (δ_t the gradient at the layer's output,
x_t its input at position t), and likewise for norms, the embedding and the LM head. The LM head only sees
the answer's predicting positions (text), so with ``tokens=image`` its saliency is 0; the embedding's rows
at the image positions get no gradient (the image features replace them after the lookup).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medinterp.capture.images import image_texts, require_vision
from medinterp.methods.targets import SaliencyExample, TargetTokens
from medinterp.models import ModelHandle
from medinterp.models.processor import image_prompts
from medinterp.prompts import PromptSet, load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageExample(SaliencyExample):
    """A saliency example of an image set: ``prompt`` holds medinterp's ``<image>``; ``image`` is its file."""

    image: str = ""

    @property
    def text(self) -> str:  # what medinterp.capture.images.image_texts reads
        return self.prompt


def image_examples(prompt_set: PromptSet, template_id: str) -> list[ImageExample]:
    """One example per item with a reference answer for ``template_id``, in item order (target: `` <answer>``)."""
    template = prompt_set.template(template_id)
    examples = [ImageExample(item.id, p.text, " " + item.answers[template.id].strip(), template.id, p.image)
                for item, p in zip(prompt_set.items, prompt_set.prompts(template.id))
                if item.answers.get(template.id, "").strip()]
    if len(examples) < len(prompt_set.items):
        log.warning("saliency: template %r of %r: %d of %d items have no reference answer and are skipped",
                    template_id, prompt_set.domain, len(prompt_set.items) - len(examples), len(prompt_set.items))
    return examples


def encode_image_targets(handle: ModelHandle,
                         examples: Sequence[ImageExample]) -> list[tuple[ImageExample, TargetTokens]]:
    """The examples whose answer can be isolated, each with the processor's ids of prompt + answer (image expanded)."""
    require_vision(handle, "the prompt set")
    out = []
    for example in examples:
        image = load_image(example.image)
        prompt, = image_texts(handle.processor, [example])
        full, alone = (image_prompts(handle.processor, handle.parts.vision, [image], [text]).inputs["input_ids"][0]
                       for text in (prompt + example.target, prompt))
        full, alone = full.tolist(), alone.tolist()
        if full[:len(alone)] != alone or len(full) <= len(alone):
            log.warning("saliency: skipping %r (%s): the answer %r does not follow the prompt's tokens",
                        example.item_id, example.template_id, example.target)
            continue
        out.append((example, TargetTokens(tuple(full), len(alone))))
    return out


def image_pixels(handle: ModelHandle, examples: Sequence[ImageExample]) -> torch.Tensor:
    """(B, 3, H, W) ``pixel_values`` of the examples' images, as the processor prepares them."""
    return image_prompts(handle.processor, handle.parts.vision, [load_image(e.image) for e in examples],
                         image_texts(handle.processor, examples)).inputs["pixel_values"]
