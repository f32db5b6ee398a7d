"""The image prompts an SAE on a vision-language model reads (``sae.images``), split into held-out and training
items.

Each image prompt set (``synthetic_xray`` or a .yaml path; docs/multimodal-data.md) gives every item through the
chosen templates (``sae.image_templates``: the catalogue's rule, medinterp.methods.select_templates): one image
and its question per prompt. Items, not prompts, are split, so no image is seen both in training and in the
held-out evaluation: per set, the items are shuffled (``np.random.default_rng([seed, set index])``) and the first
round(share x n_items) of them (at least 1, at most n_items - 1) are held out, ``share`` being the held-out
share of the run's tokens, eval_tokens / (eval_tokens + train_tokens).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.methods import select_templates
from medinterp.prompts import Prompt, PromptSet, load_prompt_set


@dataclass(frozen=True)
class ImagePrompts:
    """Held-out and training image prompts, and a text that fixes them (the activation cache key)."""

    eval: list[Prompt]
    train: list[Prompt]
    key: str


def image_prompt_sets(names: Sequence[str]) -> list[PromptSet]:
    """Load ``sae.images``: one line for a set that is not an image set or has fewer than 2 items."""
    sets = []
    for name in names:
        prompt_set = load_prompt_set(name)
        prompt_set.require_modality("sae.images", ("image",))
        if len(prompt_set.items) < 2:
            raise MedinterpError(f"sae.images: prompt set {prompt_set.domain!r} has {len(prompt_set.items)} item(s); "
                                 f"at least 2 are needed (held-out and training images)")
        sets.append(prompt_set)
    return sets


def split_image_prompts(sets: Sequence[PromptSet], templates, share: float, seed: int) -> ImagePrompts:
    """The prompts of ``sets`` through ``templates``, items split by ``share`` (module docstring)."""
    held, train, key = [], [], []
    for s, prompt_set in enumerate(sets):
        ids = [item.id for item in prompt_set.items]
        order = np.random.default_rng([seed, s]).permutation(len(ids))
        n_eval = min(max(round(share * len(ids)), 1), len(ids) - 1)
        held_ids = {ids[i] for i in order[:n_eval]}
        key.append(prompt_set.key)  # domain, version, sha256 of the file and every image
        for t in select_templates(prompt_set, templates):
            for p in prompt_set.prompts(t):
                (held if p.item_id in held_ids else train).append(p)
                key.append(f"{p.item_id}\t{p.template_id}\t{p.text}\t{p.image}")
    return ImagePrompts(held, train, "\n".join(key))


__all__ = ["ImagePrompts", "image_prompt_sets", "split_image_prompts"]
