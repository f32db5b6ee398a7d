"""Prompt-set data model: templates, labelled items, contrast pairs and rendered prompts.

A prompt set is one medical domain (age, symptoms, disease, progression, drugs, dosage) stored as one
YAML file in ``medinterp/data/prompts``. This module holds only the frozen dataclasses and the pure
helpers that turn a template plus an item into prompt text; reading and validating files lives in
:mod:`medinterp.prompts.load`, which is the only place a :class:`PromptSet` should be built.

An *image* prompt set (``modality: image``, docs/multimodal-data.md) has one image per item and questions
as templates; each template holds :data:`IMAGE_TOKEN` exactly once, where the model's processor puts the
image tokens, and the image plays the part of the term (``Prompt.term_span`` is the placeholder's span).

Contents, top to bottom:

- :class:`PromptSetError` -- the one-line error for an invalid prompt set;
- :func:`template_fields` / :func:`render` -- slot parsing and exact term-span rendering;
- :class:`Template`, :class:`Labeling`, :class:`Item`, :class:`ContrastPair` -- one per YAML section;
- :class:`Prompt` -- one rendered template with the character span of the term;
- :class:`PromptSet` -- a whole file, with ``prompts()``, ``label_array()`` and ``key``.
"""
from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medinterp.errors import MedinterpError, unknown_choice

LABEL_KINDS = ("categorical", "numeric", "ordinal")  # what a labeling's values mean
MODALITIES = ("text", "image")  # a prompt set's kind: text prompts, or one image per item with questions
IMAGE_TOKEN = "<image>"  # the image placeholder of image-set templates (LLaVA's DEFAULT_IMAGE_TOKEN)
ANSWER_TYPES = ("closed", "open")  # a question's kind in VQA scoring (medinterp/vqa/score.py)


class PromptSetError(MedinterpError):
    """An invalid prompt-set file; the message is ``<file>: [item '<id>': ]<problem>`` on one line."""


def template_fields(text: str) -> list[str]:
    """Return the slot names of a template in order of appearance, repeats included.

    Slots are plain ``{name}`` fields of :class:`string.Formatter`; ``{{`` and ``}}`` are literal
    braces. Raises ``ValueError`` for malformed braces, positional fields (``{}``, ``{0}``),
    attribute/index access, conversions (``!r``) and format specs (``:>3``), none of which a prompt
    template needs.
    """
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:  # trailing literal text
            continue
        if not name.isidentifier():
            raise ValueError(f"slot {{{name}}} is not a plain name")
        if spec or conversion:
            raise ValueError(f"slot {{{name}}} has a conversion or format spec")
        fields.append(name)
    return fields


def render(text: str, values: Mapping[str, str], term_slot: str) -> tuple[str, tuple[int, int]]:
    """Fill a template and return ``(prompt, (start, end))``, the span of ``term_slot``'s value.

    The template is filled piece by piece, so the span is exact even when the term's text also
    occurs elsewhere in the prompt. If the term slot occurs more than once (the loader forbids it),
    the last occurrence wins.
    """
    pieces: list[str] = []
    pos = 0  # length of the prompt so far
    span: tuple[int, int] | None = None
    for literal, name, _, _ in string.Formatter().parse(text):
        pieces.append(literal)
        pos += len(literal)
        if name is None:
            continue
        value = values[name]
        if name == term_slot:
            span = (pos, pos + len(value))
        pieces.append(value)
        pos += len(value)
    assert span is not None, f"term slot {term_slot!r} not in template {text!r}"
    return "".join(pieces), span


def render_image_question(text: str, values: Mapping[str, str]) -> tuple[str, tuple[int, int]]:
    """Fill an image-set template and return ``(prompt, (start, end))``, the span of :data:`IMAGE_TOKEN`.

    The loader guarantees the placeholder occurs exactly once in the template and in no slot value, so
    its position in the filled text is unambiguous.
    """
    prompt = text.format_map(values)
    start = prompt.index(IMAGE_TOKEN)
    return prompt, (start, start + len(IMAGE_TOKEN))


@dataclass(frozen=True)
class Template:
    """A paraphrase template (or, in an image set, a question); ``slots`` are its distinct slot names in order
    of appearance. ``answer_type`` (image sets only, optional) is ``closed`` or ``open``, or "" when not given."""

    id: str
    text: str
    slots: tuple[str, ...]
    answer_type: str = ""

    @classmethod
    def from_text(cls, id: str, text: str, answer_type: str = "") -> Template:  # noqa: A002 - the YAML field name
        """Build a template, parsing its slots from ``text`` (``ValueError`` if malformed)."""
        return cls(id=id, text=text, slots=tuple(dict.fromkeys(template_fields(text))), answer_type=answer_type)


@dataclass(frozen=True)
class Labeling:
    """A label column that defines what the geometry metrics should separate.

    ``kind`` is categorical (class names), numeric (numbers, e.g. age in years) or ordinal (integer
    ranks 0..n-1). An ordinal labeling may rank within groups: ``group_by`` names the categorical
    labeling that defines the groups (progression: stage within disease). ``min_per_class`` applies to
    categorical labelings: every class must have at least that many items.
    """

    name: str
    kind: str
    min_per_class: int = 1
    group_by: str | None = None


@dataclass(frozen=True)
class Item:
    """One labelled entity (a drug, a disease, an age/gender pair...).

    ``slots`` fill the templates, ``labels`` hold one value per labeling and ``provenance`` has at
    least ``system`` and ``code`` (e.g. ``{"system": "ATC", "code": "C07AB02"}``).

    Image sets only: ``image`` is the absolute path of the item's image (""), ``box`` an optional
    ``(x0, y0, x1, y1)`` region in pixels (origin top-left, x0 < x1 <= width, y0 < y1 <= height; the box
    covers [x0, x1) x [y0, y1)), and ``answers`` the reference answer per template id (templates without one
    have no reference for this item).
    """

    id: str
    slots: Mapping[str, str]
    labels: Mapping[str, str | int | float]
    provenance: Mapping[str, str]
    image: str = ""
    box: tuple[float, float, float, float] | None = None
    answers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContrastPair:
    """A clean/corrupted prompt pair for activation patching.

    The two prompts differ by one swapped span; ``clean_answer`` and ``corrupted_answer`` are the
    expected next tokens (leading space included), e.g. ``" twice"`` and ``" once"``.

    An *image pair* (an image set's ``pairs``; docs/multimodal-data.md) asks the same question of two
    images: ``clean == corrupted`` is the question (one template rendered, with its image placeholder) and
    ``clean_image`` / ``corrupted_image`` are the two images' absolute paths (different files); a text
    pair leaves them empty.
    """

    id: str
    clean: str
    corrupted: str
    clean_answer: str
    corrupted_answer: str
    provenance: Mapping[str, str]
    clean_image: str = ""
    corrupted_image: str = ""

    @property
    def has_images(self) -> bool:
        return bool(self.clean_image)


@dataclass(frozen=True)
class Prompt:
    """One item rendered with one template; ``text[term_span[0]:term_span[1]]`` is the term."""

    item_id: str
    template_id: str
    text: str
    term_span: tuple[int, int]
    image: str = ""  # image sets: the item's image path; the term span is the IMAGE_TOKEN placeholder

    @property
    def question(self) -> str:
        """The text without the image placeholder, stripped: what a chat template that places the image itself
        (or LLaVA-Med's question file) wants. A text prompt is returned as it is."""
        return self.text.replace(IMAGE_TOKEN, "").strip() if self.image else self.text


@dataclass(frozen=True)
class PromptSet:
    """A validated prompt set for one domain; build it with :func:`medinterp.prompts.load_prompt_set`.

    A *patching-only* set (a file with only ``pairs``) has ``term_slot=""`` and no templates, items or
    labelings; :meth:`require_items` turns that into one line for methods that need items.
    ``sha256`` is the hash of the file's bytes (an image set: of the file's bytes and every image's, in item
    order) and ``source`` the path or package resource it was read from. ``modality`` is ``text`` or
    ``image``; an image set has ``term_slot=""`` (the image is the term) and image pairs (``ContrastPair.has_images``). ``key`` combines domain, version and hash, so cached activations are invalidated whenever the
    file changes. ``disclaimer`` and ``sources`` are copied from the file ("" and () when absent).
    Treat the mappings as read-only: the dataclass is frozen, but plain dicts keep it picklable.
    """

    domain: str
    version: str
    description: str
    term_slot: str
    templates: tuple[Template, ...]
    items: tuple[Item, ...]
    labelings: Mapping[str, Labeling]
    pairs: tuple[ContrastPair, ...]
    sha256: str
    source: str
    disclaimer: str = ""
    sources: tuple[Mapping[str, str], ...] = ()
    modality: str = "text"

    def require_items(self, what: str) -> None:
        """Raise a one-line error when this is a patching-only set (pairs, no items) and ``what`` needs items."""
        if not self.items:
            raise MedinterpError(f"{self.source}: prompt set {self.domain!r} has only contrast pairs (no items, "
                                 f"templates or labelings); {what} needs labelled items: use method=patching, or "
                                 f"add term_slot, labelings, templates and items to the file")

    def require_modality(self, what: str, modalities: tuple[str, ...]) -> None:
        """Raise a one-line error when ``what`` (e.g. ``method=umap``) reads none of this set's modality."""
        if self.modality not in modalities:
            raise MedinterpError(f"{self.source}: prompt set {self.domain!r} is an {self.modality} prompt set; {what} "
                                 f"reads {' or '.join(modalities)} prompt sets only (vision-language methods: "
                                 f"docs/multimodal.md)")

    @property
    def key(self) -> str:
        """Cache key ``<domain>-v<version>-<first 12 hex digits of sha256>``."""
        return f"{self.domain}-v{self.version}-{self.sha256[:12]}"

    def template(self, template_id: str) -> Template:
        """Return the template with this id; an unknown id raises an error listing the valid ones."""
        for template in self.templates:
            if template.id == template_id:
                return template
        error = unknown_choice("template", template_id, [t.id for t in self.templates])
        raise MedinterpError(f"prompt set {self.domain!r}: {error}")

    def prompts(self, template_id: str) -> list[Prompt]:
        """Render one template for every item, in item order, with the term's character span."""
        template = self.template(template_id)
        prompts = []
        for item in self.items:
            if self.modality == "image":
                text, span = render_image_question(template.text, item.slots)
            else:
                text, span = render(template.text, item.slots, self.term_slot)
            prompts.append(Prompt(item_id=item.id, template_id=template.id, text=text, term_span=span, image=item.image))
        return prompts

    def label_array(self, name: str) -> np.ndarray:
        """One label value per item, in item order.

        Categorical labelings give a dtype-object array of class names; numeric and ordinal labelings
        give float64. An unknown name raises an error listing the labelings.
        """
        if name not in self.labelings:
            error = unknown_choice("labeling", name, self.labelings)
            raise MedinterpError(f"prompt set {self.domain!r}: {error}")
        values = [item.labels[name] for item in self.items]
        if self.labelings[name].kind == "categorical":
            array = np.empty(len(values), dtype=object)
            array[:] = values  # element-wise, never a 2-D array of characters
            return array
        return np.asarray(values, dtype=np.float64)
