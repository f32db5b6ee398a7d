"""The knowledge-map report of the golden table: the map table and findings table state the hand-derived
layers of tests/data/golden (README there), with both figures embedded."""
from __future__ import annotations

import base64
import re

from medinterp.report import write_map_report


def cells(html: str, first: str) -> list[str]:
    """The cells (tags stripped) of the table row whose first cell contains ``first``."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        tds = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
        if tds and first in tds[0]:
            return tds
    raise AssertionError(f"no row starting with {first!r}")


def test_map_table_states_each_methods_layers_and_the_consensus(map_dir, parse):
    page = parse(write_map_report(map_dir))
    headers = re.findall(r"<th>(.*?)</th>", page.html.split('id="map"')[1].split("</thead>")[0])
    assert headers == ["domain", "umap", "saliency", "ablation", "patching", "consensus"]
    assert cells(page.html, "symptoms") == ["symptoms", "2–4 silhouette_umap", "3–5 grad_block", "3–4 kl",
                                            "2–4 p_resid_diff", "2–4"]
    assert cells(page.html, "age") == ["age", "5, 8–9 r2_raw", "— no rows", "5–6 kl", "— no rows", "5"]
    assert cells(page.html, "progression")[-1] == "none"
    assert cells(page.html, "disease") == ["disease", "— no rows", "— no rows", "— no rows", "— no rows", "none"]
    assert "Consensus: layers selected by at least 2 methods" in page.text


def test_findings_table_states_the_golden_findings(map_dir, parse):
    page = parse(write_map_report(map_dir))
    assert cells(page.html, "age 17→18 step") == ["age 17→18 step", "age/pooled (peak)", "5", "3", "[2.2, 3.8]", "1",
                                                 "CI excludes 1", "— no robustness sweep"]
    assert cells(page.html, "age step: female − male")[-2:] == ["CI excludes 0 at layers 5", "— no robustness sweep"]
    assert "parkinsons: circular_corr (higher = more circular) 7 0.9 [0.8, 0.95] 0.1 [0, 0.3] beats the null" in page.text
    assert "specialty > mechanism; CI excludes 0 at layers 5–12" in page.text
    assert "collapse at layer 5 (max 30 at layer 2), recovered at layer 8; trough CI below threshold" in page.text
    # figures: the map's, then the findings'
    assert [base64.b64decode(s.split(",", 1)[1]) for s in page.imgs] == \
        [(map_dir / n).read_bytes() for n in ("knowledge_map.png", "findings.png")]
    assert page.sections == ["map", "findings", "setup"]
    assert "<summary>Map parameters</summary>" in page.html and "sigma: 1.0" in page.html
    assert "symptoms umap per_layer.csv" in page.text   # the sources table


def test_map_without_findings_or_figures(map_dir, parse):
    for name in ("findings.json", "findings.png", "knowledge_map.png"):
        (map_dir / name).unlink()
    page = parse(write_map_report(map_dir))
    assert page.sections == ["map", "setup"] and page.imgs == []
