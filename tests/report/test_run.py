"""The run report: every figure embedded, one curve panel per (labeling, metric), the numbers of the run,
no secrets, escaped names, written atomically."""
from __future__ import annotations

import base64
import re

import pytest

from medinterp.errors import MedinterpError
from medinterp.report import write_run_report


def test_run_report_holds_every_figure_curve_and_number(run_dir, parse):
    path = write_run_report(run_dir)
    assert path == run_dir / "report.html"
    page = parse(path)
    # both PNGs, in summary.json's order, byte for byte
    assert [base64.b64decode(src.split(",", 1)[1]) for src in page.imgs] == \
        [(run_dir / n).read_bytes() for n in ("umap_grid_mechanism.png", "curves_categorical.png")]
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    # panels: mechanism/silhouette_umap (+null, +surface), all/effective_rank, specialty-mechanism/diff, <b>bold</b>
    labels = re.findall(r'<svg [^>]*aria-label="([^"]+)"', page.html)
    assert labels == ["mechanism · silhouette_umap", "all · effective_rank", "specialty-mechanism · silhouette_umap_diff",
                      "&lt;b&gt;bold&lt;/b&gt; · silhouette_raw"]
    assert page.svgs == 4
    assert page.sections == ["key-numbers", "curves", "figures", "findings", "labels", "setup"]
    text = page.text
    assert text.startswith("tiny · drugs · umap run tiny-drugs-umap")
    assert "prompt set drugs-v1.0.0-abc" in text and "templates started, prescribed" in text
    assert "versions medinterp 0.1.0, torch 2.13.0+cpu" in text
    assert "40 points (prompts) 23 per-layer rows 4 blocks 12 s total time" in text
    assert "mechanism silhouette_umap 3 0.5 [0.45, 0.55]" in text          # best layer: max 0.5 at layer 3
    assert "silhouette_umap_null" not in text.split("Layer-independent")[0]  # nulls left out of best layers
    assert "mechanism silhouette_surface 0.25 [0.2, 0.3] 40" in text         # the baseline table
    # the drugs finding from this run's rows: peak 0.3 at layer 3, CI excludes 0 at layers 2..4
    assert "silhouette_umap_diff (largest |difference|) 3 0.3 [0.25, 0.35] 0 specialty > mechanism; " \
           "CI excludes 0 at layers 2–4" in text
    assert "mechanism statin (20), ssri (20)" in text


def test_run_report_redacts_secrets_and_escapes_markup(run_dir, parse, secret, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    page = parse(write_run_report(run_dir))
    assert secret not in page.html
    config = re.search(r"<details><summary>Resolved config \(secrets redacted\)</summary><pre>(.*?)</pre>",
                       page.html, re.S).group(1)
    assert "api_key: &#x27;[redacted]&#x27;" in config and "hf_token: &#x27;[redacted]&#x27;" in config
    assert "max_tokens: 200" in config and "key=[redacted]" in config   # env value scrubbed inside a URL
    assert "<b>bold</b>" not in page.html and "&lt;b&gt;bold&lt;/b&gt;" in page.html
    assert not re.search(r"<script|<link|@import|url\(|(src|href)=\"(https?:|//)", page.html)


def test_empty_run_says_why_and_rewrites_atomically(run_dir, parse):
    (run_dir / "per_layer.csv").write_text("model,domain,labeling,method,metric,layer,value,ci_low,ci_high,n\n")
    summary = (run_dir / "summary.json").read_text().replace('"method_summary": {}',
                                                             '"method_summary": {"note": "domain has no contrast pairs"}')
    (run_dir / "summary.json").write_text(summary)
    for png in run_dir.glob("*.png"):
        png.unlink()
    write_run_report(run_dir)
    page = parse(write_run_report(run_dir))  # twice: replaces the old report
    assert "No per-layer rows: domain has no contrast pairs" in page.text
    assert page.imgs == [] and page.svgs == 0 and "figures" not in page.sections
    assert sorted(p.name for p in run_dir.iterdir()) == ["per_layer.csv", "report.html", "summary.json"]


def test_bad_run_folders_are_one_line_errors(run_dir):
    (run_dir / "summary.json").write_text("{not json")
    with pytest.raises(MedinterpError, match=r"summary.json is not valid JSON"):
        write_run_report(run_dir)
    (run_dir / "summary.json").unlink()
    with pytest.raises(MedinterpError, match=r"^report: no summary.json in '.*tiny-drugs-umap'$"):
        write_run_report(run_dir)
