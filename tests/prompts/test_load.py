"""Tests for medinterp.prompts: validation of good and bad files, rendering, and the six shipped sets."""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import pickle
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from medinterp.errors import MedinterpError
from medinterp.prompts import PromptSet, PromptSetError, available_prompt_sets, load_prompt_set

from helpers import prompt_set_error as error_for

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("age", "symptoms", "disease", "progression", "drugs", "dosage", "control")


# --------------------------------------------------------------------------- helpers


def toy() -> dict:
    """A small valid prompt set (file stem must be 'toy')."""
    return {
        "domain": "toy",
        "version": "1.0.0",
        "description": "A toy set for tests.",
        "term_slot": "drug",
        "sources": [{"system": "test", "note": "made up"}],
        "labelings": {
            "cls": {"kind": "categorical", "min_per_class": 2},
            "score": {"kind": "numeric"},
        },
        "templates": [
            {"id": "t1", "text": "Take {drug} now."},
            {"id": "t2", "text": "The patient uses {drug}."},
            {"id": "t3", "text": "Prescribed: {drug}."},
        ],
        "items": [
            {"id": "a", "slots": {"drug": "alpha"}, "labels": {"cls": "x", "score": 1}, "provenance": {"system": "T", "code": "1"}},
            {"id": "b", "slots": {"drug": "beta"}, "labels": {"cls": "x", "score": 2.5}, "provenance": {"system": "T", "code": "2"}},
            {"id": "c", "slots": {"drug": "gamma"}, "labels": {"cls": "y", "score": 3}, "provenance": {"system": "T", "code": "3"}},
            {"id": "d", "slots": {"drug": "delta"}, "labels": {"cls": "y", "score": 4}, "provenance": {"system": "T", "code": "4"}},
        ],
        "pairs": [
            {"id": "p1", "clean": "Alpha is taken", "corrupted": "Gamma is taken", "clean_answer": " once",
             "corrupted_answer": " twice", "provenance": {"system": "T", "code": "1"}},
        ],
    }


def write(tmp_path: Path, data: dict, stem: str = "toy") -> Path:
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- good files


def test_good_file_loads(tmp_path):
    path = write(tmp_path, toy())
    ps = load_prompt_set(path)
    assert isinstance(ps, PromptSet)
    assert (ps.domain, ps.version, ps.term_slot, ps.source) == ("toy", "1.0.0", "drug", str(path))
    assert [t.id for t in ps.templates] == ["t1", "t2", "t3"]
    assert ps.templates[0].slots == ("drug",)
    assert [i.id for i in ps.items] == ["a", "b", "c", "d"]
    assert ps.items[0].provenance["code"] == "1"
    assert ps.pairs[0].clean_answer == " once"
    assert ps.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ps.key == f"toy-v1.0.0-{ps.sha256[:12]}"
    assert load_prompt_set(str(path)).key == ps.key  # str path and PathLike agree


def test_prompt_set_pickles(tmp_path):
    ps = load_prompt_set(write(tmp_path, toy()))
    clone = pickle.loads(pickle.dumps(ps))  # worker processes (joblib) receive prompt sets by pickle
    assert clone == ps and clone.key == ps.key


def test_key_changes_with_content(tmp_path):
    first = load_prompt_set(write(tmp_path, toy())).key
    data = toy()
    data["items"][0]["slots"]["drug"] = "alphazine"
    second = load_prompt_set(write(tmp_path, data)).key
    assert first != second
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0] == "toy-v1.0.0"


def test_label_array_dtype_and_order(tmp_path):
    ps = load_prompt_set(write(tmp_path, toy()))
    cls = ps.label_array("cls")
    assert cls.dtype == object and cls.shape == (4,)
    assert cls.tolist() == ["x", "x", "y", "y"]
    score = ps.label_array("score")
    assert score.dtype == np.float64
    np.testing.assert_array_equal(score, [1.0, 2.5, 3.0, 4.0])
    with pytest.raises(MedinterpError, match=r"unknown labeling 'nope'; valid: cls, score"):
        ps.label_array("nope")


def test_prompts_and_term_span(tmp_path):
    ps = load_prompt_set(write(tmp_path, toy()))
    prompts = ps.prompts("t2")
    assert [p.item_id for p in prompts] == ["a", "b", "c", "d"]
    assert prompts[1].text == "The patient uses beta."
    start, end = prompts[1].term_span
    assert prompts[1].text[start:end] == "beta"
    with pytest.raises(MedinterpError, match=r"unknown template 'zz'; valid: t1, t2, t3"):
        ps.prompts("zz")


def test_term_span_exact_when_term_text_repeats(tmp_path):
    data = toy()
    data["templates"][0]["text"] = "Not alpha or {drug}, says alpha."
    ps = load_prompt_set(write(tmp_path, data))
    prompt = ps.prompts("t1")[0]
    assert prompt.text == "Not alpha or alpha, says alpha."
    assert prompt.term_span == (len("Not alpha or "), len("Not alpha or alpha"))


def test_term_span_with_other_slots_and_literal_braces(tmp_path):
    data = toy()
    for item, dose in zip(data["items"], ["1 mg", "2 mg", "3 mg", "4 mg"]):
        item["slots"]["dose"] = dose
    data["templates"][0]["text"] = "{{Rx}} {dose} of {drug}."
    ps = load_prompt_set(write(tmp_path, data))
    prompt = ps.prompts("t1")[2]
    assert prompt.text == "{Rx} 3 mg of gamma."
    assert prompt.text[slice(*prompt.term_span)] == "gamma"


def test_ordinal_group_by_ok(tmp_path):
    data = toy()
    data["labelings"]["stage"] = {"kind": "ordinal", "group_by": "cls"}
    for item, stage in zip(data["items"], [0, 1, 1, 0]):
        item["labels"]["stage"] = stage
    ps = load_prompt_set(write(tmp_path, data))
    assert ps.labelings["stage"].group_by == "cls"
    np.testing.assert_array_equal(ps.label_array("stage"), [0.0, 1.0, 1.0, 0.0])


# --------------------------------------------------------------------------- bad files, one rule each


def _set(path: str, value):
    """Mutator: set data[path...] = value, where path is 'a.0.b'."""
    def mutate(data):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        target = data
        for key in parents:
            target = target[key]
        target[last] = value
    return mutate


def _delete(path: str):
    def mutate(data):
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        target = data
        for key in parents:
            target = target[key]
        del target[last]
    return mutate


def _dup_item(data):
    data["items"][1]["id"] = "a"


def _dup_template(data):
    data["templates"][1]["id"] = "t1"


def _dup_pair(data):
    data["pairs"].append(copy.deepcopy(data["pairs"][0]))


def _same_slots(data):
    data["items"][1]["slots"] = {"drug": "alpha"}


def _one_class(data):
    for item in data["items"]:
        item["labels"]["cls"] = "x"


def _few_templates(data):
    data["templates"] = data["templates"][:2]


def _bad_group_by(data):
    data["labelings"]["stage"] = {"kind": "ordinal", "group_by": "nope"}
    for item in data["items"]:
        item["labels"]["stage"] = 0


def _ordinal_gap(data):
    data["labelings"]["stage"] = {"kind": "ordinal", "group_by": "cls"}
    for item, stage in zip(data["items"], [0, 1, 0, 2]):
        item["labels"]["stage"] = stage


def _same_prompt(data):
    # two items differ only in 'dose', which t2 does not use -> t2 renders them identically
    for item, dose in zip(data["items"], ["1 mg", "2 mg", "3 mg", "4 mg"]):
        item["slots"]["dose"] = dose
    data["items"][1]["slots"]["drug"] = "alpha"
    for template in data["templates"]:
        if template["id"] != "t2":
            template["text"] = template["text"].replace("{drug}", "{drug} {dose}")


BAD_CASES = {
    "missing top-level key": (_delete("items"), "missing top-level key 'items'"),
    "extra top-level key": (_set("colour", "red"), "unknown top-level key 'colour'"),
    "domain not stem": (_set("domain", "other"), "domain 'other' must equal the file stem 'toy'"),
    "version unquoted": (_set("version", 1.0), 'version must be a quoted string like "1.0.0"'),
    "duplicate item id": (_dup_item, "item 'a': duplicate item id"),
    "duplicate template id": (_dup_template, "template 't1': duplicate template id"),
    "duplicate pair id": (_dup_pair, "pair 'p1': duplicate pair id"),
    "duplicate slots": (_same_slots, "item 'b': same slots as item 'a'"),
    "bad item id": (_set("items.0.id", "Alpha!"), "item #1: id must match [a-z0-9_]+"),
    "missing label": (_delete("items.2.labels.score"), "item 'c': missing label 'score'"),
    "unknown label": (_set("items.0.labels.colour", "red"), "item 'a': unknown label 'colour'"),
    "numeric not a number": (_set("items.1.labels.score", "high"), "item 'b': label 'score' must be a finite number"),
    "categorical not a string": (_set("items.1.labels.cls", 3), "item 'b': label 'cls' must be a class name"),
    "slot not a string": (_set("items.3.slots.drug", 17), "item 'd': slot 'drug' must be a non-empty string"),
    "provenance without code": (_delete("items.0.provenance.code"), "item 'a': provenance needs a non-empty string 'code'"),
    "provenance without system": (_delete("items.3.provenance.system"), "item 'd': provenance needs a non-empty string 'system'"),
    "no provenance": (_delete("items.1.provenance"), "item 'b': missing field 'provenance'"),
    "unknown template slot": (_set("templates.1.text", "Give {drug} at {dose}."), "template 't2': unknown template slot 'dose'"),
    "malformed template": (_set("templates.0.text", "Take {drug now."), "template 't1': bad template text"),
    "format spec in template": (_set("templates.0.text", "Take {drug!r} now."), "template 't1': bad template text"),
    "too few templates": (_few_templates, "needs at least 3 templates, found 2"),
    "term slot missing": (_set("templates.2.text", "Prescribed today."), "template 't3': term slot 'drug' must appear exactly once, found 0"),
    "term slot twice": (_set("templates.2.text", "{drug} and {drug}."), "template 't3': term slot 'drug' must appear exactly once, found 2"),
    "class below min": (_set("items.3.labels.cls", "z"), "labeling 'cls': class 'y' has 1 item, fewer than min_per_class 2"),
    "one class": (_one_class, "labeling 'cls': only one class ('x')"),
    "unknown kind": (_set("labelings.cls.kind", "fuzzy"), "labeling 'cls': kind must be one of categorical, numeric, ordinal"),
    "bad min_per_class": (_set("labelings.cls.min_per_class", 0), "labeling 'cls': min_per_class must be a positive integer"),
    "group_by unknown": (_bad_group_by, "labeling 'stage': group_by names unknown label 'nope'"),
    "group_by on categorical": (_set("labelings.cls.group_by", "score"), "labeling 'cls': group_by is only allowed for ordinal"),
    "ordinal gap": (_ordinal_gap, "labeling 'stage': ranks in group 'y' must be 0..n-1 without gaps, got [0, 2]"),
    "pair missing field": (_delete("pairs.0.corrupted_answer"), "pair 'p1': missing field 'corrupted_answer'"),
    "pair clean equals corrupted": (_set("pairs.0.corrupted", "Alpha is taken"), "pair 'p1': clean and corrupted prompts are identical"),
    "pair same answers": (_set("pairs.0.corrupted_answer", " once"), "pair 'p1': clean_answer and corrupted_answer are identical"),
    "pair without provenance code": (_delete("pairs.0.provenance.code"), "pair 'p1': provenance needs a non-empty string 'code'"),
    "template renders duplicates": (_same_prompt, "template 't2': renders items 'a' and 'b' to the same prompt"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file(tmp_path, case):
    mutate, expected = BAD_CASES[case]
    data = toy()
    mutate(data)
    message = error_for(write(tmp_path, data))
    assert expected in message, message


def test_yaml_syntax_error(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("domain: toy\nitems: [a, b\n", encoding="utf-8")
    assert "invalid YAML at line" in error_for(path)


def test_yaml_duplicate_key(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(toy(), sort_keys=False) + "domain: toy\n", encoding="utf-8")
    assert "duplicate key 'domain'" in error_for(path)


def test_top_level_not_a_mapping(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    assert "expected a mapping of top-level keys" in error_for(path)


def test_disclaimer_required_for_drugs(tmp_path):
    data = toy()
    data["domain"] = "drugs"
    assert "domain 'drugs' needs a 'disclaimer'" in error_for(write(tmp_path, data, stem="drugs"))
    data["disclaimer"] = "Illustrative research labels, not clinical advice."
    assert load_prompt_set(write(tmp_path, data, stem="drugs")).disclaimer.startswith("Illustrative")


def test_unknown_packaged_name():
    with pytest.raises(PromptSetError, match=r"unknown prompt set 'drugz'; valid: age, control, disease, dosage, drugs, progression, symptoms, synthetic_xray"):
        load_prompt_set("drugz")


def test_missing_file(tmp_path):
    with pytest.raises(PromptSetError, match="prompt set file not found"):
        load_prompt_set(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- the shipped sets


@pytest.fixture(scope="module")
def sets() -> dict[str, PromptSet]:
    return {name: load_prompt_set(name) for name in SHIPPED}


def test_available_prompt_sets():
    assert available_prompt_sets() == sorted(SHIPPED + ("synthetic_xray",))  # generated: tests/prompts/test_synthetic_xray.py


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_set_is_sound(sets, name):
    ps = sets[name]
    assert ps.domain == name and ps.source == f"medinterp.data.prompts/{name}.yaml"
    assert re.fullmatch(r"\d+\.\d+\.\d+", ps.version)
    assert len(ps.templates) >= 3
    texts_by_item = defaultdict(set)
    for template in ps.templates:
        prompts = ps.prompts(template.id)
        assert len(prompts) == len(ps.items)
        texts = [p.text for p in prompts]
        assert all(t.strip() for t in texts)
        assert len(set(texts)) == len(texts), f"{name}/{template.id} repeats a prompt"
        for item, prompt in zip(ps.items, prompts):
            assert prompt.text[slice(*prompt.term_span)] == item.slots[ps.term_slot]
            texts_by_item[item.id].add(prompt.text)
    # every template gives each item a different wording
    assert all(len(texts) == len(ps.templates) for texts in texts_by_item.values())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_pairs_swap_one_short_span(sets, name):
    for pair in sets[name].pairs:
        assert re.fullmatch(r" [a-z]+", pair.clean_answer) and re.fullmatch(r" [a-z]+", pair.corrupted_answer)
        a, b = pair.clean, pair.corrupted
        prefix = len(os.path.commonprefix([a, b]))
        suffix = len(os.path.commonprefix([a[prefix:][::-1], b[prefix:][::-1]]))
        for text in (a, b):
            changed = text[prefix:len(text) - suffix]
            assert len(changed.split()) <= 2, f"{pair.id}: swapped span {changed!r} is too long"


def test_disclaimers(sets):
    for name in ("drugs", "dosage"):
        assert "not clinical advice" in sets[name].disclaimer


def test_age_counts(sets):
    ps = sets["age"]
    ages, genders, bands = ps.label_array("age"), ps.label_array("gender"), ps.label_array("band")
    assert len(ps.items) == 200
    assert {(int(a), g) for a, g in zip(ages, genders)} == {(a, g) for a in range(1, 101) for g in ("female", "male")}
    band_of = {int(a): b for a, b in zip(ages, bands)}
    assert (band_of[12], band_of[13], band_of[17], band_of[18], band_of[64], band_of[65]) == (
        "child", "adolescent", "adolescent", "adult", "adult", "older_adult")
    by_id = {item.id: item for item in ps.items}
    assert by_id["age_017_female"].slots["age"] == "17"
    assert by_id["age_018_male"].provenance["code"] == "age=18;gender=male"
    assert ps.labelings["age"].kind == "numeric" and ps.term_slot == "age"


def test_age_file_matches_generator():
    spec = importlib.util.spec_from_file_location("build_age_prompts", ROOT / "scripts" / "build_age_prompts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = (ROOT / "medinterp" / "data" / "prompts" / "age.yaml").read_text(encoding="utf-8")
    assert module.build() == shipped, "age.yaml is stale: run python scripts/build_age_prompts.py"


@pytest.mark.parametrize(("name", "label"), [("symptoms", "system"), ("disease", "chapter")])
def test_categories_and_pairs(sets, name, label):
    ps = sets[name]
    counts = Counter(ps.label_array(label))
    assert len(counts) >= 8 and min(counts.values()) >= 10, counts
    assert len(ps.pairs) >= 8
    for item in ps.items:  # ICD-10-CM code shape: letter, digit, digit/letter, optional .x{1,4}
        assert item.provenance["system"] == "ICD-10-CM"
        assert re.fullmatch(r"[A-Z]\d[0-9A-Z](\.[0-9A-Z]{1,4})?", item.provenance["code"]), item.id


def test_disease_codes_fall_in_their_chapter(sets):
    ranges = {  # chapter -> first and last three-character category
        "infectious": ("A00", "B99"), "neoplasms": ("C00", "D49"), "blood_immune": ("D50", "D89"),
        "endocrine": ("E00", "E89"), "mental": ("F01", "F99"), "nervous": ("G00", "G99"), "eye": ("H00", "H59"),
        "circulatory": ("I00", "I99"), "respiratory": ("J00", "J99"), "digestive": ("K00", "K95"),
        "skin": ("L00", "L99"), "musculoskeletal": ("M00", "M99"), "genitourinary": ("N00", "N99"),
    }
    for item in sets["disease"].items:
        low, high = ranges[item.labels["chapter"]]
        assert low <= item.provenance["code"][:3] <= high, item.id


def test_progression_stages(sets):
    ps = sets["progression"]
    stage = ps.labelings["stage"]
    assert stage.kind == "ordinal" and stage.group_by == "disease"
    ranks = defaultdict(list)
    for item in ps.items:
        ranks[item.labels["disease"]].append(item.labels["stage"])
    assert len(ranks) >= 4
    for disease, values in ranks.items():
        assert len(values) >= 5, disease
        assert sorted(values) == list(range(len(values))), disease
    names = {item.labels["stage_name"] for item in ps.items if item.labels["disease"] == "parkinsons"}
    assert {"H&Y 0", "H&Y 1.5", "H&Y 2.5", "H&Y 5"} <= names
    assert ps.term_slot == "stage"


def test_drugs_labelings(sets):
    from sklearn.metrics import adjusted_rand_score

    ps = sets["drugs"]
    assert len(ps.items) >= 80
    mechanism, specialty = ps.label_array("mechanism"), ps.label_array("specialty")
    assert len(set(mechanism)) >= 6 and len(set(specialty)) >= 6
    assert min(Counter(mechanism).values()) >= 5 and min(Counter(specialty).values()) >= 5
    assert adjusted_rand_score(mechanism, specialty) < 1.0
    mechanisms_per_specialty = defaultdict(set)
    specialties_per_mechanism = defaultdict(set)
    for m, s in zip(mechanism, specialty):
        mechanisms_per_specialty[s].add(m)
        specialties_per_mechanism[m].add(s)
    assert sum(len(ms) >= 2 for ms in mechanisms_per_specialty.values()) >= 5
    assert {"beta_blocker", "ace_inhibitor", "statin", "anticoagulant"} <= mechanisms_per_specialty["cardiology"]
    assert sum(len(ss) >= 2 for ss in specialties_per_mechanism.values()) >= 3
    assert {"apixaban", "empagliflozin", "semaglutide"} <= {item.id for item in ps.items}
    for item in ps.items:
        assert item.provenance["system"] == "ATC"
        assert re.fullmatch(r"[A-Z]\d\d[A-Z]{2}\d\d", item.provenance["code"]), item.id


def test_dosage_counts(sets):
    ps = sets["dosage"]
    assert len(ps.items) >= 30 and len(ps.pairs) >= 20
    assert ps.term_slot == "drug"
    for name in ("frequency", "dose_level"):
        counts = Counter(ps.label_array(name))
        assert len(counts) >= 2 and min(counts.values()) >= 3, counts
    for pair in ps.pairs:  # answers never start with a digit (tokenizers split numbers)
        assert not pair.clean_answer.strip()[0].isdigit() and not pair.corrupted_answer.strip()[0].isdigit()


# --------------------------------------------------------------------------- patching-only files


def pairs_only() -> dict:
    data = toy()
    for key in ("term_slot", "labelings", "templates", "items"):
        del data[key]
    return data


def test_a_pairs_only_file_loads_with_no_items_templates_or_labelings(tmp_path):
    ps = load_prompt_set(write(tmp_path, pairs_only()))
    assert [p.id for p in ps.pairs] == ["p1"] and ps.pairs[0].clean_answer == " once"
    assert (ps.items, ps.templates, dict(ps.labelings), ps.term_slot) == ((), (), {}, "")
    with pytest.raises(MedinterpError, match=r"toy\.yaml: prompt set 'toy' has only contrast pairs \(no items, templates "
                                             r"or labelings\); method=umap needs labelled items: use method=patching"):
        ps.require_items("method=umap")
    (tmp_path / "f").mkdir()
    load_prompt_set(write(tmp_path / "f", toy())).require_items("method=umap")  # a file with items passes


@pytest.mark.parametrize("drop, message", [
    (("items",), "missing top-level key 'items'"),  # item sections are all or none
    (("templates", "items"), "missing top-level key 'templates'"),
])
def test_a_file_with_some_item_sections_names_the_missing_one(tmp_path, drop, message):
    data = toy()
    for key in drop:
        del data[key]
    assert message in error_for(write(tmp_path, data))


def test_a_file_with_neither_items_nor_pairs_says_what_it_needs(tmp_path):
    data = pairs_only()
    data["pairs"] = []
    assert "no items and no pairs: give term_slot, labelings, templates, items" in error_for(write(tmp_path, data))
    del data["pairs"]
    assert "no items and no pairs" in error_for(write(tmp_path, data))
