"""Versioned, schema-validated, labelled prompt sets for the six medical domains.

Load a packaged set by name (``load_prompt_set("drugs")``) or any YAML file by path; see
``docs/prompt-sets.md`` for the schema and the per-domain contents. Image prompt sets (one image per item,
questions as templates, the generated ``synthetic_xray``) are described in ``docs/multimodal-data.md``.
"""
from __future__ import annotations

from medinterp.prompts.images import load_image
from medinterp.prompts.load import available_prompt_sets, load_prompt_set
from medinterp.prompts.schema import (
    IMAGE_TOKEN,
    ContrastPair,
    Item,
    Labeling,
    Prompt,
    PromptSet,
    PromptSetError,
    Template,
)

__all__ = [
    "IMAGE_TOKEN",
    "ContrastPair",
    "Item",
    "Labeling",
    "Prompt",
    "PromptSet",
    "PromptSetError",
    "Template",
    "available_prompt_sets",
    "load_image",
    "load_prompt_set",
]
