"""The sweep-summary report shows whatever the folder holds: every PNG, every CSV (capped), every JSON."""
from __future__ import annotations

import re

from medinterp.report import write_summary_report


def test_every_file_appears_once(summary_dir, parse, secret):
    page = parse(write_summary_report(summary_dir))
    assert page.sections == ["f-golden-knowledge-map-json", "figures", "f-stability-csv", "f-robustness-json",
                             "f-stability-json"]
    # figures: the map's PNG inside its section, then the other two (.hidden/ and wandb/ skipped)
    assert len(page.imgs) == 3 and page.svgs == 0
    assert re.findall(r"<figcaption>(.*?)</figcaption>", page.html) == ["knowledge_map.png", "robustness.png",
                                                                       "stability_map.png"]
    assert "Knowledge map (golden)" in page.text and "symptoms 2–4 silhouette_umap" in page.text


def test_csv_is_capped_and_json_is_readable(summary_dir, parse, secret):
    page = parse(write_summary_report(summary_dir))
    csv_section = page.html.split('id="f-stability-csv"')[1].split("</section>")[0]
    assert csv_section.split("<tbody>")[1].count("<tr>") == 200
    assert "Showing the first 200 of 250 rows; the full table is stability.csv." in csv_section
    assert "<td>golden</td><td>drugs</td><td>umap</td><td>1</td><td>0.1667</td><td>6</td>" in csv_section  # row 2
    rob = page.html.split('id="f-robustness-json"')[1].split("</section>")[0]
    assert re.findall(r"<th>(.*?)</th>", rob) == ["domain", "method", "best_layer_mode", "jaccard", "token"]
    assert "<td>age</td><td>umap</td><td>5</td><td>0.75</td><td>[redacted]</td>" in rob and secret not in page.html
    assert "<dt>grid</dt><dd><dl class=\"json\"><dt>sigma</dt><dd>[0.5, 1, 2]</dd></dl></dd>" in page.html
    assert "… (20 values)]" in page.html
