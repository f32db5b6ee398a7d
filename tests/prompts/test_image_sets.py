"""Image prompt sets (modality: image): loading, rendering, hashing, and one-line errors for bad files."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medinterp.prompts import IMAGE_TOKEN, load_image, load_prompt_set

from helpers import prompt_set_error as error_for

WIDTH, HEIGHT = 16, 12


def png(path: Path, value: int) -> Path:
    """A WIDTH x HEIGHT grey PNG of one value, with one brighter pixel so no two images are alike by accident."""
    pixels = np.full((HEIGHT, WIDTH), value, dtype=np.uint8)
    pixels[0, 0] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def scans() -> dict:
    """A small valid image set (file stem 'scans'); images under img/, written by :func:`write`."""
    return {
        "domain": "scans",
        "version": "1.0.0",
        "modality": "image",
        "description": "Four toy images.",
        "sources": [{"system": "test"}],
        "labelings": {"finding": {"kind": "categorical", "min_per_class": 2}},
        "templates": [
            {"id": "any", "text": "<image>\nIs there a finding?", "answer_type": "closed"},
            {"id": "where", "text": "Look: <image> Where is the {organ} finding?"},
        ],
        "items": [
            {"id": "a", "image": "img/a.png", "slots": {"organ": "lung"}, "labels": {"finding": "yes"},
             "provenance": {"system": "T", "code": "1"}, "answers": {"any": "yes", "where": "left lung"},
             "box": [1, 2, 9, 10]},
            {"id": "b", "image": "img/b.png", "slots": {"organ": "lung"}, "labels": {"finding": "yes"},
             "provenance": {"system": "T", "code": "2"}, "answers": "yes", "box": [0, 0, WIDTH, HEIGHT]},
            {"id": "c", "image": "img/c.png", "slots": {"organ": "heart"}, "labels": {"finding": "no"},
             "provenance": {"system": "T", "code": "3"}},
            {"id": "d", "image": "img/d.png", "slots": {"organ": "heart"}, "labels": {"finding": "no"},
             "provenance": {"system": "T", "code": "4"}, "answers": {"any": "no"}},
        ],
    }


PAIR = {"id": "a_vs_c", "template": "any", "clean_image": "img/a.png", "corrupted_image": "img/c.png",
        "clean_answer": " yes", "corrupted_answer": " no", "provenance": {"system": "T", "code": "1"}}  # an image pair


def write(tmp_path: Path, data: dict, stem: str = "scans") -> Path:
    for value, name in enumerate("abcd"):
        if not (tmp_path / "img" / f"{name}.png").exists():
            png(tmp_path / "img" / f"{name}.png", 40 * value)
    path = tmp_path / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def changed(edit) -> dict:
    data = copy.deepcopy(scans())
    edit(data)
    return data


# --------------------------------------------------------------------------- good files


def test_an_image_set_loads_with_absolute_images_boxes_and_answers(tmp_path):
    ps = load_prompt_set(write(tmp_path, scans()))
    assert (ps.modality, ps.term_slot, ps.pairs) == ("image", "", ())
    a, b, c, d = ps.items
    assert a.image == str((tmp_path / "img" / "a.png").resolve()) and Path(a.image).is_absolute()
    assert a.box == (1, 2, 9, 10) and b.box == (0, 0, WIDTH, HEIGHT) and c.box is None
    assert a.answers == {"any": "yes", "where": "left lung"}
    assert b.answers == {"any": "yes", "where": "yes"}  # one string: the answer to every template
    assert c.answers == {} and d.answers == {"any": "no"}
    assert [t.answer_type for t in ps.templates] == ["closed", ""]
    assert list(ps.label_array("finding")) == ["yes", "yes", "no", "no"]


def test_prompts_carry_the_image_and_the_placeholder_span(tmp_path):
    ps = load_prompt_set(write(tmp_path, scans()))
    prompts = ps.prompts("where")
    assert [p.text for p in prompts] == ["Look: <image> Where is the lung finding?"] * 2 + \
                                        ["Look: <image> Where is the heart finding?"] * 2
    for prompt, item in zip(prompts, ps.items):
        assert prompt.term_span == (6, 6 + len(IMAGE_TOKEN)) and prompt.text[slice(*prompt.term_span)] == IMAGE_TOKEN
        assert prompt.image == item.image
    assert ps.prompts("any")[0].term_span == (0, len(IMAGE_TOKEN))
    assert [p.question for p in prompts][:1] == ["Look:  Where is the lung finding?"]  # the placeholder removed
    assert ps.prompts("any")[0].question == "Is there a finding?"


def test_the_key_changes_when_an_image_changes(tmp_path):
    path = write(tmp_path, scans())
    before = load_prompt_set(path).sha256
    assert load_prompt_set(path).sha256 == before
    png(tmp_path / "img" / "c.png", 41)  # one grey level in one image; the YAML is untouched
    assert load_prompt_set(path).sha256 != before


def test_a_question_per_item_maps_a_vqa_folder(tmp_path):
    """One template '<image>\\n{question}' with each item's question in a slot: VQA-RAD-style data."""
    data = scans()
    data["templates"] = [{"id": "vqa", "text": "<image>\n{question}"}]
    for item, question in zip(data["items"], ("Is it big?", "Is it small?", "Where?", "Which side?")):
        item["slots"] = {"question": question}
        item["answers"] = "yes"
        item.pop("box", None)
    ps = load_prompt_set(write(tmp_path, data))
    assert [p.text for p in ps.prompts("vqa")][2] == "<image>\nWhere?"


def test_load_image_gives_rgb(tmp_path):
    image = load_image(png(tmp_path / "x.png", 90))
    assert image.mode == "RGB" and image.size == (WIDTH, HEIGHT) and image.getpixel((3, 3)) == (90, 90, 90)


def test_image_pairs_ask_one_question_of_two_images_and_key_the_set(tmp_path):
    ps = load_prompt_set(write(tmp_path, changed(lambda d: d.update(pairs=[PAIR]))))
    (pair,) = ps.pairs
    assert pair.clean == pair.corrupted == "<image>\nIs there a finding?" and pair.has_images
    assert (pair.clean_image, pair.corrupted_image) == (str((tmp_path / "img/a.png").resolve()),
                                                        str((tmp_path / "img/c.png").resolve()))
    png(tmp_path / "img" / "e.png", 7)  # a picture only a pair uses: changing it changes the set's key
    path = write(tmp_path, changed(lambda d: d.update(pairs=[{**PAIR, "corrupted_image": "img/e.png"}])))
    before = load_prompt_set(path).sha256
    png(tmp_path / "img" / "e.png", 8)
    assert load_prompt_set(path).sha256 != before


def test_an_absolute_image_path_is_kept(tmp_path):
    other = png(tmp_path / "elsewhere" / "z.png", 200)
    data = changed(lambda d: d["items"][0].update(image=str(other)))
    assert load_prompt_set(write(tmp_path / "set", data)).items[0].image == str(other.resolve())


# --------------------------------------------------------------------------- bad files: one line each


BAD = [
    ("missing image", lambda d: d["items"][1].update(image="img/nope.png"),
     "item 'b': image file not found: "),
    ("box outside", lambda d: d["items"][0].update(box=[0, 0, WIDTH + 1, 5]),
     f"item 'a': box [0, 0, {WIDTH + 1}, 5] lies outside the {WIDTH}x{HEIGHT} image"),
    ("negative box", lambda d: d["items"][0].update(box=[-1, 0, 4, 5]), "item 'a': box [-1, 0, 4, 5] lies outside"),
    ("inverted box", lambda d: d["items"][0].update(box=[5, 5, 2, 8]), "item 'a': box [5, 5, 2, 8] is inverted or empty"),
    ("empty box", lambda d: d["items"][0].update(box=[5, 5, 5, 8]), "item 'a': box [5, 5, 5, 8] is inverted or empty"),
    ("three numbers", lambda d: d["items"][0].update(box=[1, 2, 3]), "item 'a': box must be four finite numbers"),
    ("text box", lambda d: d["items"][0].update(box="1 2 3 4"), "item 'a': box must be four finite numbers"),
    ("no placeholder", lambda d: d["templates"][1].update(text="Where is the {organ} finding?"),
     "template 'where': image placeholder <image> must appear exactly once, found 0"),
    ("two placeholders", lambda d: d["templates"][0].update(text="<image> <image> Same?"),
     "template 'any': image placeholder <image> must appear exactly once, found 2"),
    ("bad answer type", lambda d: d["templates"][0].update(answer_type="yes_no"),
     "template 'any': answer_type must be one of closed, open, got 'yes_no'"),
    ("answer for no template", lambda d: d["items"][0].update(answers={"anything": "yes"}),
     "item 'a': answers name unknown template 'anything'; valid: any, where"),
    ("unquoted yes", lambda d: d["items"][0].update(answers={"any": True}),
     "item 'a': answer for template 'any' must be a non-empty string (quote yes/no and numbers in YAML), got True"),
    ("no image field", lambda d: d["items"][2].pop("image"), "item 'c': missing field 'image'"),
    ("same image", lambda d: d["items"][1].update(image="img/a.png"), "item 'b': same image and slots as item 'a'"),
    ("placeholder in a slot", lambda d: d["items"][0]["slots"].update(organ="<image>"),
     "item 'a': slot 'organ' contains the image placeholder <image>"),
    ("term slot", lambda d: d.update(term_slot="organ"), "'term_slot' is not allowed in an image set (modality: image)"),
    ("pair with a text pair's fields", lambda d: d.update(pairs=[{**PAIR, "clean": "x"}]), "pair 'a_vs_c': "),
    ("pair unknown template", lambda d: d.update(pairs=[{**PAIR, "template": "nope"}]),
     "pair 'a_vs_c': unknown template 'nope'; valid: any, where"),
    ("pair template with slots", lambda d: d.update(pairs=[{**PAIR, "template": "where"}]),
     "pair 'a_vs_c': template 'where' has slots (organ); an image pair's question must have none"),
    ("pair missing image", lambda d: d.update(pairs=[{**PAIR, "corrupted_image": "img/nope.png"}]),
     "pair 'a_vs_c': corrupted_image: image file not found: "),
    ("pair same picture", lambda d: d.update(pairs=[{**PAIR, "corrupted_image": "img/a.png"}]),
     "pair 'a_vs_c': clean_image and corrupted_image are the same picture"),
    ("pair same answers", lambda d: d.update(pairs=[{**PAIR, "corrupted_answer": " yes"}]),
     "pair 'a_vs_c': clean_answer and corrupted_answer are identical"),
    ("modality", lambda d: d.update(modality="audio"), "modality must be one of text, image, got 'audio'"),
    ("no templates", lambda d: d.update(templates=[]), "needs at least 1 templates, found 0"),
    ("same prompt and image", lambda d: d["items"][1].update(image="img/a.png", slots={"organ": "lung", "x": "1"}),
     "template 'any': renders items 'a' and 'b' to the same prompt and image"),
]


@pytest.mark.parametrize(("case", "edit", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_image_sets_are_one_line(tmp_path, case, edit, expected):
    assert expected in error_for(write(tmp_path, changed(edit)))


def test_a_file_that_is_not_an_image_is_one_line(tmp_path):
    path = write(tmp_path, scans())
    (tmp_path / "img" / "c.png").write_bytes(b"hello, I am text")
    assert "item 'c': not an image Pillow can read: " in error_for(path)


def cut(n: int):
    return lambda data: data[:-n]


def flip(data: bytes) -> bytes:
    """One byte of the compressed pixel data inverted (the IDAT checksum no longer matches)."""
    start = data.index(b"IDAT") + 6
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]


@pytest.mark.parametrize("damage", [cut(13), cut(20), cut(30), flip], ids=["cut13", "cut20", "cut30", "flip"])
def test_a_damaged_image_is_one_line(tmp_path, damage):
    """cut13/cut20/flip still decode to pixels (Image.load alone passes them); the checksums give them away."""
    path = write(tmp_path, scans())
    image = tmp_path / "img" / "d.png"
    image.write_bytes(damage(image.read_bytes()))
    assert f"item 'd': corrupt image {image.resolve()}: " in error_for(path)


def test_a_text_set_with_image_fields_is_refused(tmp_path):
    """Without modality: image an item's image field is an unknown field, as before."""
    data = scans()
    del data["modality"]
    data["term_slot"] = "organ"
    data["templates"] = [{"id": f"t{i}", "text": f"The {{organ}} {i}."} for i in range(3)]
    data["items"] = [{k: v for k, v in item.items() if k not in ("answers", "box")} for item in data["items"]]
    assert "item 'a': unknown field 'image'" in error_for(write(tmp_path, data))


def test_domain_equals_an_image_set_path_as_for_text_sets(tmp_path):
    """``domain=<file.yaml>`` on the command line: the composed config names the file, its folder name is the
    file's domain key, and the file loads as an image set; ``domain=synthetic_xray`` names the generated set."""
    from helpers import compose_map, runner

    path = write(tmp_path, scans())
    common = runner("_common")
    cfg = compose_map(common.prompt_file_choices([f"domain={path}"]))
    assert cfg.domain.prompt_set == str(path) and common.prompt_set_domain(cfg.domain.prompt_set) == "scans"
    assert load_prompt_set(cfg.domain.prompt_set).modality == "image"
    assert compose_map(["domain=synthetic_xray"]).domain.prompt_set == "synthetic_xray"
