"""``synthetic_xray``: a procedural, seeded image prompt set of chest-radiograph-like pictures.

**Not clinical data.** The pictures are drawn by this module from ellipses, curves and noise; they only
look like frontal chest radiographs so that plumbing and planted tests of vision-language methods have
an image whose right answer is known. Nothing measured on them says anything about real radiographs.

Each image (``size`` x ``size`` pixels, 8-bit grey PNG) shows a body outline, two dark lung fields, a
spine and mediastinum, a heart shadow and ten curved ribs, plus Gaussian noise. Four items in five carry
one planted *opacity*: a bright Gaussian blob (standard deviation s = 3.5-5.5 % of the image width, peak
+0.30 on a 0-1 scale) in one lung (side) and one half of it (lobe: upper or lower). The labels are

- ``presence``: ``present`` | ``absent``;
- ``side``: ``left`` | ``right`` | ``none`` -- the *patient's* side, in the radiological convention of a
  frontal (PA) radiograph: the patient's left lung is on the image's right;
- ``lobe``: ``upper`` | ``lower`` | ``none`` (two lobes per lung; a synthetic simplification),

and the item's box is the blob's centre +- 2 s in pixels, ``[floor(cx - 2s), floor(cy - 2s), ceil(cx + 2s),
ceil(cy + 2s)]`` clipped to the image. Classes cycle absent, left-upper, left-lower, right-upper, right-lower
over the items (64 items: 13, 13, 13, 13, 12), shuffled by the seed. The questions (templates) ask about
the opacity with closed (yes/no) and open answers; every item has a reference answer for every question.

Contrast pairs (for ``method=patching``): for every item with an opacity, its picture redrawn from the same
random numbers with the opacity in the *other* lung (same lobe, same body, ribs and noise:
``pairs/xray_<i>_<side>.png``) is the corrupted image of one pair; the question asks about the item's own lung
(``left_lung`` / ``right_lung``), so the clean answer is ``" yes"`` and the corrupted one ``" no"``. The two
images differ only in where the opacity is (51 pairs at the default 64 items).

:func:`synthetic_xray` writes the set once into
``<cache>/prompts/synthetic_xray/<VERSION>/n<items>-px<size>-seed<seed>/`` (``synthetic_xray.yaml``,
``images/xray_<i>.png``, ``pairs/xray_<i>_<side>.png`` and ``manifest.json`` with the version, the settings and the sha256 of every file)
and returns the YAML's path. Generation is deterministic: the same settings give byte-identical files
(with the same Pillow/zlib). At every use the files are checked against the manifest; a changed or
missing file logs one WARNING and the folder is regenerated. Other sizes:
``python -m medinterp.prompts.synthetic_xray --n-items 256 --size 336`` prints the YAML path to pass as
``domain=<path>``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from medinterp.errors import MedinterpError
from medinterp.prompts.images import file_sha256
from medinterp.validation import check_positive_int, check_seed

log = logging.getLogger(__name__)

NAME = "synthetic_xray"
VERSION = "1.1.0"  # bump when the drawing, the questions or the YAML change: a new cache folder
DEFAULT_ITEMS, DEFAULT_SIZE, DEFAULT_SEED = 64, 224, 0
MIN_ITEMS = 10  # two items per class at least (five classes)
MIN_SIZE = 32  # below this the lungs and the blob are a few pixels
MANIFEST = "manifest.json"
CLASSES = (("absent", "none", "none"), ("present", "left", "upper"), ("present", "left", "lower"),
           ("present", "right", "upper"), ("present", "right", "lower"))  # (presence, side, lobe), cycled
DISCLAIMER = ("Synthetic, procedurally drawn pictures that only resemble chest radiographs, for plumbing and "
              "planted tests of the vision-language methods. Not a clinical data set: no real patient, image or "
              "finding; nothing measured on it says anything about real radiographs or about clinical use.")
# (id, question, answer_type); the answers come from _answer().
QUESTIONS = (
    ("left_lung", "Is there an opacity in the left lung?", "closed"),
    ("right_lung", "Is there an opacity in the right lung?", "closed"),
    ("upper_lobe", "Is there an opacity in an upper lobe?", "closed"),
    ("any_opacity", "Is there a focal opacity on this chest radiograph?", "closed"),
    ("which_lung", "Which lung contains the opacity?", "open"),
    ("which_lobe", "In which lobe is the opacity?", "open"),
    ("finding", "What abnormality does this chest radiograph show?", "open"),
)


def _answer(question: str, side: str, lobe: str) -> str:
    """The reference answer of one question for an item with this side and lobe (``none``: no opacity)."""
    present = side != "none"
    closed = {"left_lung": side == "left", "right_lung": side == "right", "upper_lobe": lobe == "upper",
              "any_opacity": present}
    if question in closed:
        return "yes" if closed[question] else "no"
    if not present:
        return "no abnormality" if question == "finding" else "none"
    return {"which_lung": f"{side} lung", "which_lobe": f"{side} {lobe} lobe",
            "finding": f"opacity in the {side} {lobe} lobe"}[question]


# --------------------------------------------------------------------------- drawing


def _ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
    """Soft indicator of an ellipse (centre (cu, cv), radii (ru, rv)) on the grid: ~1 inside, ~0 outside."""
    d = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2
    return 1.0 / (1.0 + np.exp(np.clip((d - 1.0) * 12.0, -50, 50)))


def draw_radiograph(size: int, side: str, lobe: str, rng: np.random.Generator) -> tuple[np.ndarray, list[int] | None]:
    """One picture as a (size, size) uint8 array, and the opacity's box [x0, y0, x1, y1] in pixels (None: absent).

    Coordinates are fractions of the width: u grows to the image's right, v downwards. The patient's right
    lung is drawn on the image's left (radiological convention). Every random number is drawn whatever
    ``side`` is, so the same ``rng`` state with ``side="none"`` gives the same picture without the opacity.
    """
    v, u = (np.mgrid[0:size, 0:size] + 0.5) / size  # (size, size) each: pixel centres
    ju, jv = rng.uniform(-0.015, 0.015, size=2)  # the patient's position varies a little
    sigma, lateral, depth = rng.uniform(0.035, 0.055), rng.uniform(-0.1, 0.35), rng.uniform(0.35, 0.55)
    exposure, noise = rng.uniform(0.9, 1.1), rng.normal(0.0, 0.025, size=(size, size))
    lungs = {"right": (0.32 + ju, 0.47 + jv, 0.13, 0.27), "left": (0.68 + ju, 0.48 + jv, 0.12, 0.26)}
    body = _ellipse(u, v, 0.5 + ju, 0.62 + jv, 0.48, 0.62)  # the trunk, running off the bottom
    lung = np.maximum(_ellipse(u, v, *lungs["right"]), _ellipse(u, v, *lungs["left"]))
    image = 0.06 + 0.36 * body - 0.26 * lung  # air 0.06, soft tissue 0.42, lung field 0.16
    image += 0.13 * _ellipse(u, v, 0.55 + ju, 0.68 + jv, 0.13, 0.10)  # heart shadow at the left lung's base
    image += 0.12 * body * _ellipse(u, v, 0.5 + ju, 0.45 + jv, 0.07, 0.32)  # mediastinum
    image += 0.10 * body * np.exp(-(((u - 0.5 - ju) / 0.02) ** 2))  # spine
    for k in range(10):  # posterior ribs: curves bending down towards the sides
        rib = 0.19 + jv + 0.058 * k + 0.35 * (u - 0.5 - ju) ** 2
        image += 0.09 * body * (0.3 + 0.7 * lung) * np.exp(-(((v - rib) / 0.009) ** 2))
    box = None
    if side != "none":
        cu, cv, ru, rv = lungs[side]
        bu = cu + (1 if side == "left" else -1) * lateral * ru  # mostly lateral, away from the heart
        bv = cv + (-1 if lobe == "upper" else 1) * depth * rv
        image += 0.30 * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sigma**2))
        box = [max(0, int(np.floor((bu - 2 * sigma) * size))), max(0, int(np.floor((bv - 2 * sigma) * size))),
               min(size, int(np.ceil((bu + 2 * sigma) * size))), min(size, int(np.ceil((bv + 2 * sigma) * size)))]
    image = image * exposure + noise
    return np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), box


# --------------------------------------------------------------------------- the set on disk


def _check_settings(n_items: object, size: object, seed: object) -> None:
    check_positive_int("n_items", n_items)
    check_positive_int("size", size)
    check_seed(seed)
    if n_items < MIN_ITEMS or size < MIN_SIZE:  # type: ignore[operator]
        raise MedinterpError(f"synthetic_xray needs n_items >= {MIN_ITEMS} and size >= {MIN_SIZE}; "
                             f"got n_items={n_items}, size={size}")


def write_set(folder: Path, n_items: int = DEFAULT_ITEMS, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> Path:
    """Draw the set into ``folder`` (images, YAML, manifest) and return the YAML's path; deterministic."""
    _check_settings(n_items, size, seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "pairs").mkdir(exist_ok=True)
    classes = [CLASSES[i % len(CLASSES)] for i in range(n_items)]
    order = np.random.default_rng(seed).permutation(n_items)
    items, pairs = [], []
    for i, k in enumerate(order):
        presence, side, lobe = classes[k]
        pixels, box = draw_radiograph(size, side, lobe, np.random.default_rng([seed, i]))
        image = f"images/xray_{i:03d}.png"
        Image.fromarray(pixels).save(folder / image, format="PNG")
        item = {"id": f"xray_{i:03d}", "image": image, "labels": {"presence": presence, "side": side, "lobe": lobe},
                "provenance": {"system": "generated", "code": f"{NAME}={VERSION};seed={seed};index={i}"},
                "answers": {q: _answer(q, side, lobe) for q, _, _ in QUESTIONS}}
        items.append(item | ({"box": box} if box else {}))
        if side != "none":  # the same picture with the opacity in the other lung: a contrast pair
            other = "right" if side == "left" else "left"
            pixels, _ = draw_radiograph(size, other, lobe, np.random.default_rng([seed, i]))
            swapped = f"pairs/xray_{i:03d}_{other}.png"
            Image.fromarray(pixels).save(folder / swapped, format="PNG")
            code = item["provenance"]["code"]
            pairs.append({"id": f"xray_{i:03d}_{side}_vs_{other}", "template": f"{side}_lung", "clean_image": image,
                          "corrupted_image": swapped, "clean_answer": " yes", "corrupted_answer": " no",
                          "provenance": {"system": "generated", "code": code, "corrupted_code": f"{code};side={other}"}})
    data = {
        "domain": NAME, "version": VERSION, "modality": "image",
        "description": f"{n_items} synthetic chest-radiograph-like images ({size}x{size}, grey) with a planted "
                       f"opacity (presence, side, lobe) and its box; seed {seed}. For plumbing and planted tests.",
        "disclaimer": DISCLAIMER,
        "sources": [{"system": "generated", "note": f"medinterp.prompts.synthetic_xray {VERSION}, seed {seed}"}],
        "labelings": {name: {"kind": "categorical", "min_per_class": 2} for name in ("presence", "side", "lobe")},
        "templates": [{"id": q, "text": f"<image>\n{text}", "answer_type": kind} for q, text, kind in QUESTIONS],
        "items": items,
        "pairs": pairs,
    }
    path = folder / f"{NAME}.yaml"
    header = f"# GENERATED by medinterp.prompts.synthetic_xray ({VERSION}); edits are detected and regenerated.\n"
    path.write_text(header + yaml.safe_dump(data, sort_keys=False, width=120, allow_unicode=True), encoding="utf-8")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    manifest = {"name": NAME, "version": VERSION, "n_items": n_items, "size": size, "seed": seed,
                "sha256": {name: file_sha256(folder / name) for name in files}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path


def tampered(folder: Path) -> str:
    """"" when every file of the manifest is present with its recorded sha256 and nothing is missing from it;
    else the first problem (a file name and what is wrong with it)."""
    try:
        recorded = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{MANIFEST} missing or unreadable"
    for name, sha in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if file_sha256(path) != sha:
            return f"{name} does not match its recorded sha256"
    if not (folder / f"{NAME}.yaml").is_file() or f"{NAME}.yaml" not in recorded:
        return f"{NAME}.yaml is not in the manifest"
    return ""


def synthetic_xray(cache_dir: Path | None = None, n_items: int = DEFAULT_ITEMS, size: int = DEFAULT_SIZE,
                   seed: int = DEFAULT_SEED) -> Path:
    """The path of the set's YAML in the cache, generating (or, if a file was changed, regenerating) it first.

    ``cache_dir`` defaults to ``$MEDINTERP_CACHE`` or ``~/.cache/medinterp``; the set lives in
    ``<cache_dir>/prompts/synthetic_xray/<VERSION>/n<n_items>-px<size>-seed<seed>/``.
    """
    from medinterp.models.sources import cached_folder, default_cache_dir  # the models' cache and its lock

    _check_settings(n_items, size, seed)
    folder = Path(cache_dir or default_cache_dir()) / "prompts" / NAME / VERSION / f"n{n_items}-px{size}-seed{seed}"
    if folder.exists():
        problem = tampered(folder)
        if not problem:
            return folder / f"{NAME}.yaml"
        log.warning("synthetic_xray: %s in %s; regenerating the set", problem, folder)
        shutil.rmtree(folder)
    cached_folder(folder, lambda out: write_set(out, n_items, size, seed), f"{NAME} {VERSION} ({n_items} images)")
    return folder / f"{NAME}.yaml"


def main(argv: list[str] | None = None) -> None:
    """``python -m medinterp.prompts.synthetic_xray [--n-items N] [--size PX] [--seed S]``: print the YAML path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        print(synthetic_xray(args.cache_dir, args.n_items, args.size, args.seed))
    except MedinterpError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
