"""Load and validate prompt-set YAML files.

:func:`load_prompt_set` takes a packaged name (``"drugs"``) or a path to a YAML file, checks every rule
below and returns a frozen :class:`~medinterp.prompts.schema.PromptSet`. Every problem raises
:class:`~medinterp.prompts.schema.PromptSetError` with one line that names the file and the part at
fault::

    <file>: <problem>
    <file>: template '<id>': <problem>
    <file>: labeling '<name>': <problem>
    <file>: item '<id>': <problem>
    <file>: pair '<id>': <problem>

Rules, in the order they are checked:

1. the file is YAML (duplicate mapping keys count as errors) holding a mapping whose top-level keys
   are :data:`REQUIRED_KEYS`, either all of :data:`ITEM_SECTIONS` or none of them, and any of
   :data:`OPTIONAL_KEYS`; a file without the item sections is a *patching-only* file and must have
   ``pairs`` (its PromptSet has no term slot, templates, items or labelings);
2. ``domain`` equals the file stem; ``version`` looks like ``1.0.0``; ``disclaimer`` is present for
   the domains in :data:`DISCLAIMER_REQUIRED`;
3. labelings have a known kind, a positive ``min_per_class`` and, for ordinal ones, a ``group_by`` that
   names a categorical labeling;
4. at least :data:`MIN_TEMPLATES` templates with unique ids, well-formed slots and the term slot exactly
   once each;
5. items have unique ids, string slots, exactly the declared labels (numbers where numeric, integers
   where ordinal), provenance with ``system`` and ``code``, and no two items share all slot values;
6. every template slot is filled by every item;
7. categorical labelings have at least two classes and ``min_per_class`` items per class; ordinal
   labelings take the values 0..n-1 (within each group);
8. pairs have all fields, unique ids, clean != corrupted and different answers;
9. each template renders every item to a different prompt (image sets: a different prompt or image).

An image set (``modality: image``; docs/multimodal-data.md) follows the same rules with these changes:
no ``term_slot`` (the image is the term); ``pairs`` are *image pairs* (the same question asked of two images:
``id``, ``template`` (a template without slots), ``clean_image`` and ``corrupted_image`` (two different files,
relative to the YAML), ``clean_answer``, ``corrupted_answer``, ``provenance``); at least :data:`MIN_IMAGE_TEMPLATES` templates,
each a question holding :data:`~medinterp.prompts.schema.IMAGE_TOKEN` exactly once, with an optional
``answer_type`` (closed/open); items carry ``image`` (a path relative to the YAML file), optional ``slots``,
optional ``answers`` (one string for every template, or a mapping template id -> answer) and an optional
``box`` [x0, y0, x1, y1] in pixels. Every image is verified and decoded once (missing, unreadable or corrupt files fail)
and each box is checked against its image's size; no two items share image and slots.

The schema itself is documented in ``docs/prompt-sets.md`` (image sets: ``docs/multimodal-data.md``).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from tqdm.auto import tqdm

from medinterp.errors import unknown_choice
from medinterp.prompts.images import check_box, check_image, file_sha256
from medinterp.prompts.synthetic_xray import synthetic_xray
from medinterp.prompts.schema import (
    ANSWER_TYPES,
    IMAGE_TOKEN,
    LABEL_KINDS,
    MODALITIES,
    ContrastPair,
    Item,
    Labeling,
    PromptSet,
    PromptSetError,
    Template,
    render,
    render_image_question,
    template_fields,
)
from medinterp.validation import is_int, is_number

PACKAGE = "medinterp.data.prompts"  # where the shipped YAML files live
GENERATED = {"synthetic_xray": synthetic_xray}  # packaged sets built by code into the cache at first use
REQUIRED_KEYS = ("domain", "version", "description", "sources")  # every file
ITEM_SECTIONS = ("term_slot", "labelings", "templates", "items")  # all (labelled items) or none (pairs only)
OPTIONAL_KEYS = ("disclaimer", "pairs", "modality")
IMAGE_SECTIONS = ("labelings", "templates", "items")  # an image set (modality: image) needs all of them
TEXT_ONLY_KEYS = ("term_slot",)  # refused in an image set: the image is the term
DISCLAIMER_REQUIRED = frozenset({"drugs", "dosage", "synthetic_xray"})  # not clinical advice / not clinical data
MIN_TEMPLATES = 3  # paraphrases per domain, so no result hangs on one wording
MIN_IMAGE_TEMPLATES = 1  # an image set's templates are questions, not paraphrases of one prompt
ID_RE = re.compile(r"[a-z0-9_]+")  # item, template and pair ids
VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
LABELING_KEYS = ("kind", "min_per_class", "group_by")
ITEM_KEYS = ("id", "slots", "labels", "provenance")
IMAGE_ITEM_KEYS = ("id", "image", "slots", "labels", "provenance", "answers", "box")
IMAGE_ITEM_REQUIRED = ("id", "image", "labels", "provenance")
PAIR_KEYS = ("id", "clean", "corrupted", "clean_answer", "corrupted_answer", "provenance")
IMAGE_PAIR_KEYS = ("id", "template", "clean_image", "corrupted_image", "clean_answer", "corrupted_answer", "provenance")


# --------------------------------------------------------------------------- YAML reading


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are left to SafeLoader's own error
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(raw: bytes, source: str) -> dict[str, Any]:
    """Parse the file into its top-level mapping, turning YAML errors into one line."""
    try:
        data = yaml.load(raw, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise PromptSetError(f"{source}: invalid YAML{where}: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise PromptSetError(f"{source}: invalid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise PromptSetError(f"{source}: expected a mapping of top-level keys, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- small checks


def _fail(source: str, where: str, problem: str) -> PromptSetError:
    """Build the one-line error; ``where`` is e.g. ``"item 'x'"`` or ``""`` for the whole file."""
    return PromptSetError(f"{source}: {where}: {problem}" if where else f"{source}: {problem}")


def _text(value: Any, source: str, where: str, field: str) -> str:
    """Require a non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, where, f"'{field}' must be a non-empty string, got {value!r}")
    return value


def _mapping(value: Any, source: str, where: str, field: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise _fail(source, where, f"'{field}' must be a mapping, got {type(value).__name__}")
    return value


def _list(value: Any, source: str, where: str, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(source, where, f"'{field}' must be a list, got {type(value).__name__}")
    return value


def _keys(entry: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...], source: str, where: str) -> None:
    """Require the ``required`` keys and refuse keys outside ``allowed``."""
    for key in required:
        if key not in entry:
            raise _fail(source, where, f"missing field '{key}'")
    for key in entry:
        if key not in allowed:
            raise _fail(source, where, f"unknown field {key!r}; valid: {', '.join(allowed)}")


def _id(entry: dict[str, Any], index: int, kind: str, seen: set[str], source: str) -> tuple[str, str]:
    """Validate an entry's id (pattern, uniqueness) and return ``(id, "<kind> '<id>'")``."""
    if not isinstance(entry, dict):
        raise _fail(source, f"{kind} #{index + 1}", f"must be a mapping, got {type(entry).__name__}")
    ident = entry.get("id")
    if not isinstance(ident, str) or not ID_RE.fullmatch(ident):
        raise _fail(source, f"{kind} #{index + 1}", f"id must match [a-z0-9_]+, got {ident!r}")
    where = f"{kind} '{ident}'"
    if ident in seen:
        raise _fail(source, where, f"duplicate {kind} id")
    seen.add(ident)
    return ident, where


def _provenance(value: Any, source: str, where: str) -> dict[str, str]:
    """Provenance is a mapping of strings with at least ``system`` and ``code``."""
    prov = _mapping(value, source, where, "provenance")
    for key in ("system", "code"):
        if not isinstance(prov.get(key), str) or not prov[key].strip():
            raise _fail(source, where, f"provenance needs a non-empty string '{key}' (got {prov.get(key)!r})")
    for key, val in prov.items():
        if not isinstance(val, str):
            raise _fail(source, where, f"provenance '{key}' must be a string (quote it), got {val!r}")
    return dict(prov)


# --------------------------------------------------------------------------- sections


def _modality(data: dict[str, Any], source: str) -> str:
    """The file's ``modality`` (``text`` when absent)."""
    modality = data.get("modality", "text")
    if modality not in MODALITIES:
        raise _fail(source, "", f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    return modality


def _check_header(data: dict[str, Any], source: str, stem: str, modality: str = "text") -> None:
    """Top-level keys, domain, version, description, disclaimer, term slot and sources."""
    for key in data:
        if key not in REQUIRED_KEYS + ITEM_SECTIONS + OPTIONAL_KEYS:
            valid = ", ".join(REQUIRED_KEYS + ITEM_SECTIONS + OPTIONAL_KEYS)
            raise _fail(source, "", f"unknown top-level key {key!r}; valid: {valid}")
    if modality == "image":
        for key in TEXT_ONLY_KEYS:
            if key in data:
                raise _fail(source, "", f"'{key}' is not allowed in an image set (modality: image): the image is the "
                                        f"term ({IMAGE_TOKEN} in each template)")
    has_items = modality == "image" or any(key in data for key in ITEM_SECTIONS)
    sections = IMAGE_SECTIONS if modality == "image" else ITEM_SECTIONS
    for key in REQUIRED_KEYS + (sections if has_items else ()):
        if key not in data:
            raise _fail(source, "", f"missing top-level key '{key}'")
    if not has_items and not data.get("pairs"):
        raise _fail(source, "", f"no items and no pairs: give {', '.join(ITEM_SECTIONS)} (labelled items), "
                                f"or 'pairs' alone (a patching-only file), or both")
    domain = _text(data["domain"], source, "", "domain")
    if domain != stem:
        raise _fail(source, "", f"domain {domain!r} must equal the file stem {stem!r}")
    if not isinstance(data["version"], str) or not VERSION_RE.fullmatch(data["version"]):
        raise _fail(source, "", f"version must be a quoted string like \"1.0.0\", got {data['version']!r}")
    _text(data["description"], source, "", "description")
    if domain in DISCLAIMER_REQUIRED and "disclaimer" not in data:
        raise _fail(source, "", f"domain {domain!r} needs a 'disclaimer' (not clinical advice)")
    if "disclaimer" in data:
        _text(data["disclaimer"], source, "", "disclaimer")
    if has_items and modality == "text" and (not isinstance(data["term_slot"], str)
                                             or not data["term_slot"].isidentifier()):
        raise _fail(source, "", f"term_slot must be a slot name, got {data['term_slot']!r}")
    sources = _list(data["sources"], source, "", "sources")
    if not sources:
        raise _fail(source, "", "'sources' must list at least one source")
    for i, entry in enumerate(sources):
        entry = _mapping(entry, source, f"source #{i + 1}", "source")
        _text(entry.get("system"), source, f"source #{i + 1}", "system")
        for key, val in entry.items():
            if not isinstance(val, str):
                raise _fail(source, f"source #{i + 1}", f"'{key}' must be a string, got {val!r}")


def _parse_labelings(value: Any, source: str) -> dict[str, Labeling]:
    """Labelings: kind, min_per_class and group_by, each checked."""
    raw = _mapping(value, source, "", "labelings")
    if not raw:
        raise _fail(source, "", "'labelings' must declare at least one labeling")
    labelings = {}
    for name, spec in raw.items():
        where = f"labeling '{name}'"
        if not isinstance(name, str) or not ID_RE.fullmatch(name):
            raise _fail(source, where, "name must match [a-z0-9_]+")
        spec = _mapping(spec, source, where, name)
        _keys(spec, LABELING_KEYS, ("kind",), source, where)
        if spec["kind"] not in LABEL_KINDS:
            raise _fail(source, where, f"kind must be one of {', '.join(LABEL_KINDS)}, got {spec['kind']!r}")
        min_per_class = spec.get("min_per_class", 1)
        if not is_int(min_per_class) or min_per_class < 1:
            raise _fail(source, where, f"min_per_class must be a positive integer, got {min_per_class!r}")
        group_by = spec.get("group_by")
        if group_by is not None and spec["kind"] != "ordinal":
            raise _fail(source, where, "group_by is only allowed for ordinal labelings")
        labelings[name] = Labeling(name=name, kind=spec["kind"], min_per_class=min_per_class, group_by=group_by)
    for labeling in labelings.values():
        group_by = labeling.group_by
        if group_by is None:
            continue
        if group_by not in labelings or group_by == labeling.name:
            others = [n for n in labelings if n != labeling.name]
            problem = f"group_by names unknown label {group_by!r}; valid: {', '.join(others)}"
            raise _fail(source, f"labeling '{labeling.name}'", problem)
        if labelings[group_by].kind != "categorical":
            raise _fail(source, f"labeling '{labeling.name}'", f"group_by label {group_by!r} must be categorical")
    return labelings


def _parse_templates(value: Any, term_slot: str, source: str, modality: str = "text") -> tuple[Template, ...]:
    """Templates: unique ids, well-formed slots, the term slot exactly once, at least MIN_TEMPLATES.

    Image sets: the image placeholder exactly once instead of the term slot, an optional answer_type, at
    least MIN_IMAGE_TEMPLATES."""
    image = modality == "image"
    seen: set[str] = set()
    templates = []
    for i, entry in enumerate(_list(value, source, "", "templates")):
        ident, where = _id(entry, i, "template", seen, source)
        _keys(entry, ("id", "text", "answer_type") if image else ("id", "text"), ("id", "text"), source, where)
        text = _text(entry["text"], source, where, "text")
        try:
            fields = template_fields(text)
        except ValueError as err:
            raise _fail(source, where, f"bad template text: {err}") from None
        uses, marker = (text.count(IMAGE_TOKEN), f"image placeholder {IMAGE_TOKEN}") if image else \
            (fields.count(term_slot), f"term slot '{term_slot}'")
        if uses != 1:
            raise _fail(source, where, f"{marker} must appear exactly once, found {uses}")
        answer_type = entry.get("answer_type", "")
        if "answer_type" in entry and answer_type not in ANSWER_TYPES:
            raise _fail(source, where, f"answer_type must be one of {', '.join(ANSWER_TYPES)}, got {answer_type!r}")
        templates.append(Template.from_text(ident, text, answer_type))
    minimum = MIN_IMAGE_TEMPLATES if image else MIN_TEMPLATES
    if len(templates) < minimum:
        raise _fail(source, "", f"needs at least {minimum} templates, found {len(templates)}")
    return tuple(templates)


def _label_value(value: Any, labeling: Labeling, source: str, where: str) -> str | int | float:
    """Check one label value against its labeling's kind."""
    name = labeling.name
    if labeling.kind == "categorical":
        if not isinstance(value, str) or not value.strip():
            raise _fail(source, where, f"label '{name}' must be a class name (string), got {value!r}")
    elif labeling.kind == "numeric":
        if not is_number(value) or not math.isfinite(value):
            raise _fail(source, where, f"label '{name}' must be a finite number, got {value!r}")
    elif not is_int(value) or value < 0:  # ordinal
        raise _fail(source, where, f"label '{name}' must be a non-negative integer rank, got {value!r}")
    return value


def _answers(value: Any, templates: tuple[Template, ...], source: str, where: str) -> dict[str, str]:
    """An image item's reference answers: one string for every template, or a mapping template id -> answer."""
    ids = [t.id for t in templates]
    if value is None:
        return {}
    if isinstance(value, str):
        return dict.fromkeys(ids, _text(value, source, where, "answers"))
    answers = _mapping(value, source, where, "answers")
    for template_id, answer in answers.items():
        if template_id not in ids:
            raise _fail(source, where, f"answers name unknown template {template_id!r}; valid: {', '.join(ids)}")
        if not isinstance(answer, str) or not answer.strip():
            raise _fail(source, where, f"answer for template '{template_id}' must be a non-empty string (quote yes/no "
                                       f"and numbers in YAML), got {answer!r}")
    return dict(answers)


def _image_fields(entry: dict[str, Any], templates: tuple[Template, ...], base_dir: Path, source: str,
                  where: str) -> dict[str, Any]:
    """An image item's image (decoded once; path relative to the YAML file), box and answers, as Item fields."""
    path = (base_dir / _text(entry["image"], source, where, "image")).resolve()  # an absolute path stays as it is
    try:
        size = check_image(path)
        box = None if entry.get("box") is None else check_box(entry["box"], size)
    except ValueError as err:
        raise _fail(source, where, str(err)) from None
    return {"image": str(path), "box": box, "answers": _answers(entry.get("answers"), templates, source, where)}


def _parse_items(value: Any, labelings: Mapping[str, Labeling], source: str, modality: str = "text",
                 templates: tuple[Template, ...] = (), base_dir: Path = Path(".")) -> tuple[Item, ...]:
    """Items: ids, string slots, exactly the declared labels, provenance, no duplicate slot tuples.

    Image sets: an image (relative to ``base_dir``), optional slots, answers and box; no two items with the
    same image and slots."""
    image = modality == "image"
    entries = _list(value, source, "", "items")
    if not entries:
        raise _fail(source, "", "'items' must not be empty")
    seen: set[str] = set()
    by_slots: dict[tuple[Any, ...], str] = {}  # (image path, slot values) -> first item id
    items = []
    checking = tqdm(entries, desc="checking images", unit="image", leave=False, disable=not image or len(entries) < 100)
    for i, entry in enumerate(checking):
        ident, where = _id(entry, i, "item", seen, source)
        _keys(entry, *((IMAGE_ITEM_KEYS, IMAGE_ITEM_REQUIRED) if image else (ITEM_KEYS, ITEM_KEYS)), source, where)
        slots = _mapping(entry.get("slots", {}), source, where, "slots")
        for name, text in slots.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise _fail(source, where, f"slot name {name!r} must be a plain name like 'drug'")
            if not isinstance(text, str) or not text.strip():
                raise _fail(source, where, f"slot '{name}' must be a non-empty string (quote numbers), got {text!r}")
            if image and IMAGE_TOKEN in text:
                raise _fail(source, where, f"slot '{name}' contains the image placeholder {IMAGE_TOKEN}")
        labels = _mapping(entry["labels"], source, where, "labels")
        for name in labelings:
            if name not in labels:
                raise _fail(source, where, f"missing label '{name}'")
        for name in labels:
            if name not in labelings:
                raise _fail(source, where, f"unknown label {name!r}; declared: {', '.join(labelings)}")
        checked = {name: _label_value(labels[name], labelings[name], source, where) for name in labelings}
        provenance = _provenance(entry["provenance"], source, where)
        extra = _image_fields(entry, templates, base_dir, source, where) if image else {}
        slot_key = (extra.get("image", ""), *sorted(slots.items()))
        if slot_key in by_slots:
            raise _fail(source, where, f"same {'image and slots' if image else 'slots'} as item '{by_slots[slot_key]}'")
        by_slots[slot_key] = ident
        items.append(Item(ident, dict(slots), checked, provenance, **extra))
    return tuple(items)


def _check_template_slots(templates: tuple[Template, ...], items: tuple[Item, ...], source: str) -> None:
    """Every slot of every template must be filled by every item."""
    for template in templates:
        for slot in template.slots:
            missing = next((item.id for item in items if slot not in item.slots), None)
            if missing is not None:
                problem = f"unknown template slot '{slot}' (item '{missing}' has no such slot)"
                raise _fail(source, f"template '{template.id}'", problem)


def _check_label_statistics(labelings: Mapping[str, Labeling], items: tuple[Item, ...], source: str) -> None:
    """Categorical: >= 2 classes and min_per_class each. Ordinal: values 0..n-1 (per group)."""
    for labeling in labelings.values():
        where = f"labeling '{labeling.name}'"
        values = [item.labels[labeling.name] for item in items]
        if labeling.kind == "categorical":
            counts = Counter(values)
            if len(counts) < 2:
                raise _fail(source, where, f"only one class ({next(iter(counts))!r}); a labeling needs at least 2")
            for cls, count in sorted(counts.items()):
                if count < labeling.min_per_class:
                    noun = "item" if count == 1 else "items"
                    problem = f"class '{cls}' has {count} {noun}, fewer than min_per_class {labeling.min_per_class}"
                    raise _fail(source, where, problem)
        elif labeling.kind == "ordinal":
            groups: dict[Any, set[int]] = defaultdict(set)
            for item in items:
                group = item.labels[labeling.group_by] if labeling.group_by else None
                groups[group].add(int(item.labels[labeling.name]))
            for group, ranks in groups.items():
                if ranks != set(range(len(ranks))):
                    label = f" in group '{group}'" if group is not None else ""
                    raise _fail(source, where, f"ranks{label} must be 0..n-1 without gaps, got {sorted(ranks)}")


def _parse_pairs(value: Any, source: str) -> tuple[ContrastPair, ...]:
    """Pairs: all fields, unique ids, clean != corrupted, different answers."""
    seen: set[str] = set()
    pairs = []
    for i, entry in enumerate(_list(value, source, "", "pairs")):
        ident, where = _id(entry, i, "pair", seen, source)
        _keys(entry, PAIR_KEYS, PAIR_KEYS, source, where)
        fields = {key: _text(entry[key], source, where, key) for key in PAIR_KEYS[1:5]}
        if fields["clean"] == fields["corrupted"]:
            raise _fail(source, where, "clean and corrupted prompts are identical")
        if fields["clean_answer"] == fields["corrupted_answer"]:
            raise _fail(source, where, "clean_answer and corrupted_answer are identical")
        pairs.append(ContrastPair(id=ident, provenance=_provenance(entry["provenance"], source, where), **fields))
    return tuple(pairs)


def _parse_image_pairs(value: Any, templates: tuple[Template, ...], base_dir: Path,
                       source: str) -> tuple[ContrastPair, ...]:
    """Image pairs (module docstring): the template's question asked of two different, decodable images."""
    by_id = {t.id: t for t in templates}
    seen: set[str] = set()
    pairs = []
    for i, entry in enumerate(_list(value, source, "", "pairs")):
        ident, where = _id(entry, i, "pair", seen, source)
        _keys(entry, IMAGE_PAIR_KEYS, IMAGE_PAIR_KEYS, source, where)
        fields = {key: _text(entry[key], source, where, key) for key in IMAGE_PAIR_KEYS[1:6]}
        template = by_id.get(fields.pop("template"))
        if template is None:
            raise _fail(source, where, f"unknown template {entry['template']!r}; valid: {', '.join(by_id)}")
        if template.slots:
            raise _fail(source, where, f"template '{template.id}' has slots ({', '.join(template.slots)}); an image "
                                       "pair's question must have none")
        for key in ("clean_image", "corrupted_image"):
            fields[key] = str((base_dir / fields[key]).resolve())
            try:
                check_image(Path(fields[key]))
            except ValueError as err:
                raise _fail(source, where, f"{key}: {err}") from None
        if file_sha256(fields["clean_image"]) == file_sha256(fields["corrupted_image"]):
            raise _fail(source, where, "clean_image and corrupted_image are the same picture")
        if fields["clean_answer"] == fields["corrupted_answer"]:
            raise _fail(source, where, "clean_answer and corrupted_answer are identical")
        question, _ = render_image_question(template.text, {})
        pairs.append(ContrastPair(id=ident, clean=question, corrupted=question,
                                  provenance=_provenance(entry["provenance"], source, where), **fields))
    return tuple(pairs)


def _check_distinct_prompts(templates: tuple[Template, ...], items: tuple[Item, ...], term_slot: str, source: str,
                            modality: str = "text") -> None:
    """A template must not render two items to the same text (it would be missing a slot); in an image set,
    to the same text with the same image."""
    for template in templates:
        first: dict[tuple[str, str], str] = {}
        for item in items:
            if modality == "image":
                text, _ = render_image_question(template.text, item.slots)
            else:
                text, _ = render(template.text, item.slots, term_slot)
            if (text, item.image) in first:
                same = "prompt and image" if modality == "image" else "prompt"
                problem = f"renders items '{first[text, item.image]}' and '{item.id}' to the same {same}"
                raise _fail(source, f"template '{template.id}'", problem)
            first[text, item.image] = item.id


# --------------------------------------------------------------------------- public API


def parse_prompt_set(raw: bytes, source: str, stem: str, base_dir: Path | None = None) -> PromptSet:
    """Validate the bytes of a prompt-set file and build the :class:`PromptSet`.

    ``source`` names the file in error messages and in ``PromptSet.source``; ``stem`` is the name the
    ``domain`` field must equal; an image set's image paths are relative to ``base_dir`` (default: the folder
    of ``source``). Most callers want :func:`load_prompt_set` instead.
    """
    data = _read_yaml(raw, source)
    modality = _modality(data, source)
    _check_header(data, source, stem, modality)
    digest = hashlib.sha256(raw)
    if modality == "image":
        term_slot = ""
        labelings = _parse_labelings(data["labelings"], source)
        templates = _parse_templates(data["templates"], term_slot, source, modality)
        items = _parse_items(data["items"], labelings, source, modality, templates, base_dir or Path(source).parent)
        _check_template_slots(templates, items, source)
        _check_label_statistics(labelings, items, source)
        pairs = _parse_image_pairs(data.get("pairs", []), templates, base_dir or Path(source).parent, source)
        images = [item.image for item in items] + [path for p in pairs for path in (p.clean_image, p.corrupted_image)]
        for image in images:  # the key changes when an image does
            digest.update(file_sha256(image).encode())
    elif "items" in data:
        term_slot = data["term_slot"]
        labelings = _parse_labelings(data["labelings"], source)
        templates = _parse_templates(data["templates"], term_slot, source)
        items = _parse_items(data["items"], labelings, source)
        _check_template_slots(templates, items, source)
        _check_label_statistics(labelings, items, source)
    else:  # a patching-only file: pairs are whole prompts
        term_slot, labelings, templates, items = "", {}, (), ()
    if modality != "image":
        pairs = _parse_pairs(data.get("pairs", []), source)
    _check_distinct_prompts(templates, items, term_slot, source, modality)
    return PromptSet(
        domain=data["domain"],
        version=data["version"],
        description=data["description"].strip(),
        term_slot=term_slot,
        templates=templates,
        items=items,
        labelings=labelings,
        pairs=pairs,
        sha256=digest.hexdigest(),
        source=source,
        disclaimer=data.get("disclaimer", "").strip(),
        sources=tuple(dict(s) for s in data["sources"]),
        modality=modality,
    )


def available_prompt_sets() -> list[str]:
    """Names of the packaged prompt sets, sorted: the YAML file stems in ``medinterp/data/prompts`` and the
    generated sets (:data:`GENERATED`)."""
    shipped = [entry.name[: -len(".yaml")] for entry in files(PACKAGE).iterdir() if entry.name.endswith(".yaml")]
    return sorted(shipped + list(GENERATED))


def _is_path(name_or_path: str | os.PathLike[str]) -> bool:
    """A PathLike, or a string with a directory separator or a .yaml/.yml suffix, is a path."""
    if isinstance(name_or_path, os.PathLike):
        return True
    return "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def load_prompt_set(name_or_path: str | os.PathLike[str]) -> PromptSet:
    """Load and validate a prompt set: a packaged name such as ``"drugs"`` or a path to a YAML file.

    Raises :class:`PromptSetError` with one line naming the file and the problem if the file is
    missing or invalid, or listing the packaged names if ``name_or_path`` is an unknown name. A generated
    set (``"synthetic_xray"``) is built into the cache on first use and loaded from there.
    """
    if not _is_path(name_or_path) and name_or_path in GENERATED:
        name_or_path = GENERATED[name_or_path]()  # the path of its YAML file in the cache
    if _is_path(name_or_path):
        path = Path(name_or_path)
        if not path.is_file():
            raise PromptSetError(f"{path}: prompt set file not found")
        return parse_prompt_set(path.read_bytes(), source=str(path), stem=path.stem)
    names = available_prompt_sets()
    if name_or_path not in names:
        raise PromptSetError(str(unknown_choice("prompt set", name_or_path, names)))
    resource = files(PACKAGE).joinpath(f"{name_or_path}.yaml")
    return parse_prompt_set(resource.read_bytes(), source=f"{PACKAGE}/{name_or_path}.yaml", stem=name_or_path)
