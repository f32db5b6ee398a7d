"""Result folders to report on, built offline in tmp_path, and one headless Chromium per session.

- ``run_dir``: a method run (per_layer.csv, summary.json with a secret in its config, two PNGs) whose
  rows give three curve panels and one finding;
- ``map_dir``: the golden table's knowledge map and findings (tests/data/golden), plus a PNG;
- ``summary_dir``: a sweep summary with a CSV longer than the cap, JSON files, PNGs and a map in a
  sub-folder;
- ``chromium``: skips when /usr/bin/chromium is missing, fails instead when MEDINTERP_REQUIRE_CHROMIUM=1.
"""
from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from helpers import ROOT
from medinterp.io import write_json
from medinterp.results import Row, best_layers, write_rows

GOLDEN = ROOT / "tests" / "data" / "golden"
SECRET = "sk-test-0123456789abcdef"    # planted in configs; must never reach a report
NAN = float("nan")


def plot_png(path: Path, size=(240, 160)) -> Path:
    """A small PNG with a frame and a diagonal line (clearly not blank)."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([5, 5, size[0] - 6, size[1] - 6], outline="black")
    draw.line([10, size[1] - 10, size[0] - 10, 10], fill=(31, 111, 180), width=3)
    img.save(path)
    return path


def run_rows() -> list[Row]:
    """tiny/drugs/umap: silhouette_umap (+ null, + surface baseline) on mechanism, effective_rank on all,
    silhouette_umap_diff on specialty-mechanism (the drugs finding: CI excludes 0 at layers 2..4), and a
    labeling whose name is markup (must be escaped)."""
    rows = []
    sil = [0.0, 0.1, 0.3, 0.5, 0.2]  # max 0.5 at layer 3
    for layer, v in enumerate(sil):
        rows.append(Row("tiny", "drugs", "mechanism", "umap", "silhouette_umap", layer, v, v - 0.05, v + 0.05, 40))
        rows.append(Row("tiny", "drugs", "mechanism", "umap", "silhouette_umap_null", layer, 0.0, -0.02, 0.02, 40))
        rows.append(Row("tiny", "drugs", "all", "umap", "effective_rank", layer, 10.0 + layer, 9.0 + layer, 11.0 + layer, 40))
        diff = [0.0, 0.01, 0.2, 0.3, 0.1][layer]
        rows.append(Row("tiny", "drugs", "specialty-mechanism", "umap", "silhouette_umap_diff", layer, diff,
                        diff - 0.05, diff + 0.05, 40))
    rows.append(Row("tiny", "drugs", "mechanism", "umap", "silhouette_surface", -1, 0.25, 0.2, 0.3, 40))
    rows.append(Row("tiny", "drugs", "<b>bold</b>", "umap", "silhouette_raw", 0, 0.1, NAN, NAN, 40))
    rows.append(Row("tiny", "drugs", "<b>bold</b>", "umap", "silhouette_raw", 1, 0.2, NAN, NAN, 40))
    return rows


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "tiny-drugs-umap"
    folder.mkdir()
    rows = run_rows()
    write_rows(folder / "per_layer.csv", rows)
    plot_png(folder / "umap_grid_mechanism.png")
    plot_png(folder / "curves_categorical.png")
    config = {"model": {"name": "tiny"}, "method": {"n_boot": 200},
              "judge": {"model": "gpt-4o", "api_key": SECRET, "max_tokens": 200, "hf_token": SECRET,
                        "base_url": f"https://example.invalid/v1?key={SECRET}"},
              "device": "cpu"}
    summary = {"model": {"name": "tiny", "n_layers": 4, "device": "cpu"}, "domain": "drugs",
               "prompt_set": {"key": "drugs-v1.0.0-abc", "version": "1.0.0", "sha256": "abc"},
               "method": "umap", "templates": ["started", "prescribed"], "reduction": "last", "n_points": 40,
               "label_counts": {"mechanism": {"statin": 20, "ssri": 20}},
               "timings": {"capture_s": 1.5, "total_s": 12.25},
               "versions": {"python": "3.11.7", "medinterp": "0.1.0", "torch": "2.13.0+cpu"},
               "method_summary": {}, "config": config, "best_layers": best_layers(rows), "n_rows": len(rows),
               "figures": ["umap_grid_mechanism.png", "curves_categorical.png"]}
    write_json(folder / "summary.json", summary)
    return folder


@pytest.fixture
def map_dir(tmp_path) -> Path:
    """<out>/golden/ as runners/synthesize.py writes it (figures replaced by a small PNG each)."""
    from medinterp.maps.findings import findings
    from medinterp.maps.synthesis import MapParams, build_map, load_table

    rows = load_table(GOLDEN).of("golden")
    kmap = build_map(rows, MapParams())
    silhouettes = {d: e["umap"]["raw"] for d, e in kmap["domains"].items() if "umap" in e and e["umap"]["rule"] == "window"}
    folder = tmp_path / "synthesis" / "golden"
    write_json(folder / "knowledge_map.json", kmap)
    write_json(folder / "findings.json", findings([r for r, _ in rows], silhouettes))
    plot_png(folder / "knowledge_map.png")
    plot_png(folder / "findings.png")
    return folder


@pytest.fixture
def summary_dir(tmp_path, map_dir) -> Path:
    """stability.csv (250 rows), stability.json, robustness.json, two PNGs, and the default map in golden/."""
    folder = tmp_path / "summary"
    folder.mkdir()
    with open(folder / "stability.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "domain", "method", "layer", "fraction_selected", "n_settings"])
        for i in range(250):
            w.writerow(["golden", ["age", "drugs"][i % 2], "umap", i % 13, round((i % 7) / 6, 6), 6])
    (folder / "stability.json").write_text(json.dumps(
        {"n_settings": 6, "grid": {"sigma": [0.5, 1.0, 2.0]}, "curve": [i / 20 for i in range(20)]}))
    (folder / "robustness.json").write_text(json.dumps(
        [{"domain": "age", "method": "umap", "best_layer_mode": 5, "jaccard": 0.75, "token": SECRET},
         {"domain": "drugs", "method": "umap", "best_layer_mode": 4, "jaccard": 0.5, "token": SECRET}]))
    plot_png(folder / "stability_map.png")
    plot_png(folder / "robustness.png")
    (folder / "golden").mkdir()
    for name in ("knowledge_map.json", "knowledge_map.png"):
        (folder / "golden" / name).write_bytes((map_dir / name).read_bytes())
    for skipped in (".hidden", "wandb"):
        (folder / skipped).mkdir()
        plot_png(folder / skipped / "ignored.png")
    return folder


class Page(HTMLParser):
    """What a report holds: image sources, outermost <svg>s, section ids, and the text of the body
    outside <svg>s (tags stripped, entities decoded, whitespace collapsed)."""

    def __init__(self, path: Path):
        super().__init__()
        self.html = path.read_text(encoding="utf-8")
        self.imgs, self.svgs, self.sections, self.tags = [], 0, [], []
        self._svg_depth, self._skip, self._chunks = 0, 0, []
        self.feed(self.html)
        self.text = " ".join(" ".join(self._chunks).split())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag in ("head", "svg"):
            self._skip += 1
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "svg":
            self.svgs += self._svg_depth == 0
            self._svg_depth += 1
        elif tag == "section":
            self.sections.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg_depth -= 1
        if tag in ("head", "svg"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self._chunks.append(data)


@pytest.fixture(scope="session")
def parse():
    return Page


@pytest.fixture(scope="session")
def secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def make_png():
    return plot_png


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    """One headless Chromium for the session (killed at the end)."""
    from medinterp.errors import MedinterpError
    from report.browser import CHROMIUM, Chromium, require_chromium

    try:
        executable = require_chromium(CHROMIUM)
    except MedinterpError as err:
        pytest.fail(str(err))
    if executable is None:
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); "
                    "MEDINTERP_REQUIRE_CHROMIUM=1 makes this a failure")
    with Chromium(executable, user_data_dir=tmp_path_factory.mktemp("chromium-profile"), timeout=20) as browser:
        yield browser
