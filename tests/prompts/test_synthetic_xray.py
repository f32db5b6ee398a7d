"""synthetic_xray: deterministic generation, the sha check, labels that match the planted opacity."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medinterp.errors import MedinterpError
from medinterp.prompts import available_prompt_sets, load_prompt_set
from medinterp.prompts.synthetic_xray import QUESTIONS, VERSION, draw_radiograph, synthetic_xray, write_set

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"n_items": 10, "size": 64}  # fast; the default set (64 x 224 px) is loaded once below


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The packaged name, generated into a fresh cache (MEDINTERP_CACHE) as a user's first run does."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDINTERP_CACHE", str(cache))
        return load_prompt_set("synthetic_xray"), cache


def test_the_packaged_name_generates_into_the_cache(default_set):
    ps, cache = default_set
    folder = cache / "prompts" / "synthetic_xray" / VERSION / "n64-px224-seed0"
    assert ps.source == str(folder / "synthetic_xray.yaml") and ps.modality == "image"
    assert len(ps.items) == 64 and len(list((folder / "images").glob("*.png"))) == 64
    with Image.open(ps.items[0].image) as image:
        assert image.size == (224, 224) and image.mode == "L"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["version"], manifest["n_items"], manifest["size"], manifest["seed"]) == (VERSION, 64, 224, 0)
    swapped = {f"pairs/xray_{int(p.clean_image[-7:-4]):03d}_{p.corrupted_image.split('_')[-1]}" for p in ps.pairs}
    assert set(manifest["sha256"]) == ({"synthetic_xray.yaml"} | {f"images/xray_{i:03d}.png" for i in range(64)}
                                       | swapped)
    assert "synthetic_xray" in available_prompt_sets()


def test_classes_are_balanced_and_say_not_clinical(default_set):
    ps, _ = default_set
    combos = [(i.labels["presence"], i.labels["side"], i.labels["lobe"]) for i in ps.items]
    counts = {c: combos.count(c) for c in set(combos)}
    assert counts == {("absent", "none", "none"): 13, ("present", "left", "upper"): 13,
                      ("present", "left", "lower"): 13, ("present", "right", "upper"): 13,
                      ("present", "right", "lower"): 12}
    assert "Not a clinical data set" in ps.disclaimer
    assert [t.id for t in ps.templates] == [q for q, _, _ in QUESTIONS]


def test_answers_follow_the_labels(default_set):
    ps, _ = default_set
    for item in ps.items:
        side, lobe, a = item.labels["side"], item.labels["lobe"], item.answers
        assert a["left_lung"] == ("yes" if side == "left" else "no")
        assert a["right_lung"] == ("yes" if side == "right" else "no")
        assert a["upper_lobe"] == ("yes" if lobe == "upper" else "no")
        assert a["any_opacity"] == ("no" if side == "none" else "yes")
        assert a["which_lung"] == ("none" if side == "none" else f"{side} lung")
        assert a["finding"] == ("no abnormality" if side == "none" else f"opacity in the {side} {lobe} lobe")


def test_boxes_sit_where_the_labels_say(default_set):
    """Patient's left = image right (radiological convention); upper lobe boxes above lower ones in the same lung."""
    ps, _ = default_set
    centres = {}
    for item in ps.items:
        if item.labels["presence"] == "absent":
            assert item.box is None
            continue
        x0, y0, x1, y1 = item.box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        assert (cx > 112) == (item.labels["side"] == "left")
        centres.setdefault((item.labels["side"], item.labels["lobe"]), []).append(cy)
    for side in ("left", "right"):
        assert max(centres[side, "upper"]) < min(centres[side, "lower"])


@pytest.mark.parametrize(("side", "lobe"), [("left", "upper"), ("right", "lower")])
def test_the_opacity_is_inside_its_box(side, lobe):
    """Planted: the same random draws with and without the opacity differ only by the blob, inside the box."""
    plain, none_box = draw_radiograph(128, "none", "none", np.random.default_rng([7, 3]))
    with_blob, box = draw_radiograph(128, side, lobe, np.random.default_rng([7, 3]))
    assert none_box is None
    diff = with_blob.astype(float) - plain.astype(float)  # (128, 128)
    x0, y0, x1, y1 = box
    inside = diff[y0:y1, x0:x1].sum()
    assert inside / diff.sum() > 0.85  # a 2-D Gaussian holds 91 % of its mass within +-2 sigma
    row, col = np.unravel_index(np.argmax(diff), diff.shape)
    assert x0 <= col < x1 and y0 <= row < y1
    assert diff.max() > 50  # +0.30 of the range: visible


def test_regeneration_is_byte_identical(tmp_path):
    first, second = write_set(tmp_path / "a", **SMALL), write_set(tmp_path / "b", **SMALL)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 20  # YAML, manifest, 10 images, 8 swapped-side images (the 8 items with an opacity)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first.read_bytes() == second.read_bytes()
    other = write_set(tmp_path / "c", **SMALL, seed=1)
    assert (other.parent / "images" / "xray_000.png").read_bytes() != (first.parent / "images" / "xray_000.png").read_bytes()


def test_a_tampered_file_is_regenerated_with_one_warning(tmp_path, caplog):
    path = synthetic_xray(tmp_path, **SMALL)
    image = path.parent / "images" / "xray_004.png"
    original = image.read_bytes()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image, format="PNG")
    with caplog.at_level(logging.WARNING, logger="medinterp.prompts.synthetic_xray"):
        again = synthetic_xray(tmp_path, **SMALL)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "images/xray_004.png does not match its recorded sha256" in warnings[0].getMessage()
    assert again == path and image.read_bytes() == original
    caplog.clear()
    synthetic_xray(tmp_path, **SMALL)  # intact now: silent
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_edited_yaml_is_regenerated(tmp_path, caplog):
    path = synthetic_xray(tmp_path, **SMALL)
    original = path.read_bytes()
    path.write_text(path.read_text().replace("'yes'", "'no'"))
    with caplog.at_level(logging.WARNING, logger="medinterp.prompts.synthetic_xray"):
        synthetic_xray(tmp_path, **SMALL)
    assert "synthetic_xray.yaml does not match" in caplog.text and path.read_bytes() == original


@pytest.mark.parametrize(("settings", "message"), [
    ({"n_items": 3}, "synthetic_xray needs n_items >= 10 and size >= 32; got n_items=3, size=64"),
    ({"size": 0}, "The 'size' setting must be a positive integer; got 0."),
    ({"seed": -1}, "The 'seed' setting must be an integer in [0, 2**32); got -1."),
])
def test_bad_settings_are_one_line(tmp_path, settings, message):
    with pytest.raises(MedinterpError) as info:
        synthetic_xray(tmp_path, **(SMALL | settings))
    assert str(info.value) == message


def test_the_domain_config_names_the_packaged_set():
    config = yaml.safe_load((ROOT / "conf" / "domain" / "synthetic_xray.yaml").read_text())
    assert config == {"prompt_set": "synthetic_xray", "labelings": None}


def test_pairs_swap_only_the_opacity_side(default_set):
    """Each pair: the item's picture and the same picture with the opacity in the other lung, asked about the
    item's lung (yes vs no); the pixels differ only around the two opacities (not the body, ribs or noise)."""
    ps, _ = default_set
    items = {i.image: i for i in ps.items}
    present = [i for i in ps.items if i.labels["presence"] == "present"]
    assert len(ps.pairs) == len(present) == 51
    for pair in ps.pairs:
        item = items[pair.clean_image]
        side = item.labels["side"]
        assert pair.clean == pair.corrupted == f"<image>\nIs there an opacity in the {side} lung?"
        assert (pair.clean_answer, pair.corrupted_answer) == (" yes", " no") and pair.has_images
    pair = ps.pairs[0]
    with Image.open(pair.clean_image) as a, Image.open(pair.corrupted_image) as b:
        diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
    x0, y0, x1, y1 = items[pair.clean_image].box
    inside = np.zeros_like(diff, dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert diff[inside].max() > 50  # the clean opacity is gone
    changed = diff > 3  # beyond 8-bit rounding of the Gaussian tails
    left_half, right_half = changed[:, :112].sum(), changed[:, 112:].sum()
    assert left_half > 0 and right_half > 0  # one opacity removed on one side, one added on the other
    assert changed.mean() < 0.1  # the rest of the picture is the same
