"""The reports rendered in headless Chromium: every figure present and non-blank, no page errors, no
requests; and the checker itself catches a blank image, a missing image, a JS error and a fetch. Every test that
starts Chromium is ``slow``; the reports' HTML itself is checked in the fast tier (test_html.py, test_run.py, ...)."""
from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
from PIL import Image

from medinterp.errors import MedinterpError
from medinterp.report import write_map_report, write_run_report, write_summary_report
from report.browser import Chromium, require_chromium


@pytest.mark.slow  # starts Chromium
def test_reports_render_with_every_figure_and_no_errors(chromium, run_dir, map_dir, summary_dir, parse):
    for path in (write_run_report(run_dir), write_map_report(map_dir), write_summary_report(summary_dir)):
        page = parse(path)
        result = chromium.check(path)
        assert result.problems == [], f"{path}: {result.problems}"
        assert [f.kind for f in result.figures] == ["img"] * len(page.imgs) + ["svg"] * page.svgs
        assert len(result.figures) >= 2
        for f in result.figures:  # drawn at a real size, with real contrast (a plot, not a blank box)
            assert f.loaded and f.shown and f.width >= 100 and f.height >= 100 and f.std > 10, f


def _png(two_tone: bool) -> str:
    """A 60×40 PNG data URI: all white, or its left half navy."""
    img = Image.new("RGB", (60, 40), "white")
    if two_tone:
        img.paste((0, 0, 128), (0, 0, 30, 40))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


BROKEN = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>broken</title></head><body>
<img alt="blank" src="{_png(False)}">
<img alt="missing" src="no-such-figure.png">
<img alt="fine" src="{_png(True)}">
<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60" aria-label="blank-svg">
  <rect width="120" height="60" fill="#fff"/></svg>
<svg xmlns="http://www.w3.org/2000/svg" width="120" height="60" aria-label="line-svg">
  <rect width="120" height="60" fill="#fff"/><path d="M0,60 L120,0" stroke="#000" stroke-width="3"/></svg>
<script>console.error("bad thing"); undefinedFunction();</script>
</body></html>"""


@pytest.mark.slow  # starts Chromium
def test_checker_catches_blank_missing_erroring_pages(chromium, tmp_path):
    path = tmp_path / "broken.html"
    path.write_text(BROKEN)
    result = chromium.check(path)
    problems = result.problems
    by_name = {f.name: f for f in result.figures}
    assert list(by_name) == ["blank", "missing", "fine", "blank-svg", "line-svg"]
    assert by_name["blank"].problem == "img 'blank' is blank (luminance std 0.0)"
    assert by_name["missing"].problem.startswith("img 'missing' did not load")
    assert by_name["blank-svg"].problem == "svg 'blank-svg' is blank (luminance std 0.0)"
    assert by_name["fine"].problem is None and by_name["line-svg"].problem is None
    # half white (luminance 255), half navy (0.114 × 128 = 14.6): std = (255 − 14.6) / 2
    assert by_name["fine"].std == pytest.approx((255 - 0.114 * 128) / 2, abs=1.0)
    assert "page error: console.error: bad thing" in problems
    assert any(p.startswith("page error: uncaught ReferenceError: undefinedFunction is not defined") for p in problems)
    assert any(p.startswith("page error: network: Failed to load resource") for p in problems)
    missing_url = (tmp_path / "no-such-figure.png").as_uri()
    assert f"request outside the page: {missing_url}" in problems
    assert len(problems) == 7


@pytest.mark.slow  # starts Chromium
def test_an_external_fetch_is_refused_and_reported(chromium, tmp_path, run_dir):
    # a report's CSP blocks any fetch; the refusal is a page error
    html = write_run_report(run_dir).read_text()
    html = html.replace("</main>", '<img alt="remote" src="http://127.0.0.1:9/x.png"></main>')
    path = tmp_path / "remote.html"
    path.write_text(html)
    problems = chromium.check(path).problems
    assert "img 'remote' did not load (EncodingError: The source image cannot be decoded.)" in problems
    assert any("Content Security Policy" in p and "http://127.0.0.1:9/x.png" in p for p in problems), problems


def _alive(pgid: int) -> list[int]:
    """Processes of the group that are still running (zombies waiting to be reaped do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.slow  # starts Chromium
def test_chromium_is_killed_even_when_the_check_fails(tmp_path):
    if require_chromium() is None:
        pytest.skip("chromium is not installed")
    with pytest.raises(MedinterpError, match="could not open"):
        with Chromium(user_data_dir=tmp_path / "profile", timeout=20) as browser:
            pgid = browser.pid
            assert _alive(pgid)
            browser.check(tmp_path / "no-such-page.html")
    assert _alive(pgid) == []


def test_missing_chromium_skips_locally_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("MEDINTERP_REQUIRE_CHROMIUM", raising=False)
    assert require_chromium("/no/such/chromium") is None
    monkeypatch.setenv("MEDINTERP_REQUIRE_CHROMIUM", "1")
    with pytest.raises(MedinterpError, match=r"chromium is required .* apt-get install -y chromium"):
        require_chromium("/no/such/chromium")
    assert require_chromium("/bin/sh", required=True) == "/bin/sh"
    assert os.environ["MEDINTERP_REQUIRE_CHROMIUM"] == "1"


@pytest.mark.slow  # starts Chromium
def test_screenshot_is_the_whole_page(chromium, run_dir, tmp_path):
    shot = chromium.screenshot(write_run_report(run_dir), tmp_path / "page.png", width=1000)
    img = Image.open(shot)
    assert 980 <= img.width <= 1000 and img.height > 1500   # the page (less a scrollbar), beyond the 900 px viewport
    assert len(img.convert("L").getcolors(maxcolors=256 * 256) or []) > 10  # rendered content, not a blank capture
