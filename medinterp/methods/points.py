"""The analysed points of a domain: one per (item, template), with their labels.

Methods see a prompt set as a flat table of N = n_items × n_templates points, template-major (all
items under the first template, then under the second, ...), which is also the order in which
:func:`stack_activations` concatenates the per-template activation arrays.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.prompts import PromptSet
from medinterp.validation import is_int


@dataclass(frozen=True)
class Points:
    """Labels and identities of N analysed points."""

    item_ids: np.ndarray  # (N,) str
    template_ids: np.ndarray  # (N,) str
    terms: tuple[str, ...]  # (N,) the term's own text (for the surface-form control)
    labels: Mapping[str, np.ndarray]  # labeling name -> (N,) values
    kinds: Mapping[str, str]  # labeling name -> categorical | numeric | ordinal
    group_by: Mapping[str, str | None]  # ordinal labeling -> the label it is nested in (stage within disease)

    def __len__(self) -> int:
        return len(self.item_ids)


def select_templates(prompt_set: PromptSet, templates: str | int | Sequence[str] | None) -> list[str]:
    """``None``/``"all"`` → every template id; an int n → the first n; otherwise the given ids, each checked."""
    valid = [t.id for t in prompt_set.templates]
    if templates in (None, "all"):
        return valid
    if is_int(templates):
        if not 1 <= templates <= len(valid):
            raise MedinterpError(f"templates={templates}: domain {prompt_set.domain!r} has {len(valid)} templates; "
                                 f"use 1..{len(valid)}, 'all' or ids from: {', '.join(valid)}")
        return valid[:templates]
    chosen = [templates] if isinstance(templates, str) else list(templates) if isinstance(templates, Iterable) else []
    if not chosen:  # an empty list, or neither a count nor ids (a bool, a float)
        raise MedinterpError(f"The 'templates' setting must be 'all', a number 1..{len(valid)} or a non-empty list of "
                             f"template ids of domain {prompt_set.domain!r} ({', '.join(valid)}); got {templates!r}.")
    for t in chosen:
        if t not in valid:
            raise unknown_choice(f"template for domain {prompt_set.domain!r}:", t, valid)
    return chosen


def stack_points(prompt_set: PromptSet, templates: Sequence[str]) -> Points:
    """The point table for ``templates`` of ``prompt_set`` (template-major)."""
    n_t = len(templates)
    items = prompt_set.items
    terms = tuple(item.slots[prompt_set.term_slot] if prompt_set.term_slot else item.image  # image sets: the image
                  for item in items) * n_t
    labels = {name: np.concatenate([prompt_set.label_array(name)] * max(n_t, 1))[:n_t * len(items)]
              for name in prompt_set.labelings}  # no templates (patching): empty columns
    return Points(
        item_ids=np.array([item.id for item in items] * n_t),
        template_ids=np.repeat(np.array(list(templates)), len(items)),
        terms=terms,
        labels=labels,
        kinds={name: lab.kind for name, lab in prompt_set.labelings.items()},
        group_by={name: lab.group_by for name, lab in prompt_set.labelings.items()},
    )


def stack_activations(per_template: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate (L+1, n_items, D) arrays along the item axis → (L+1, N, D), template-major."""
    return np.concatenate([np.asarray(a) for a in per_template], axis=1)
