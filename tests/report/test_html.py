"""Building blocks: secrets never shown, values formatted, tables capped, JSON readable, images embedded."""
from __future__ import annotations

import base64
import re

from medinterp.report import html as h

SECRET = "sk-test-0123456789abcdef"


def test_redact_replaces_secret_values_at_any_depth():
    cfg = {"judge": {"api_key": SECRET, "max_tokens": 200, "list": [{"password": "hunter2"}], "token": None}}
    assert h.redact(cfg) == {"judge": {"api_key": "[redacted]", "max_tokens": 200, "list": [{"password": "[redacted]"}],
                                       "token": None}}


def test_text_escapes_markup_and_scrubs_secret_environment_values(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("WANDB_API_KEY", "abc")  # shorter than 8 characters: not scrubbed (would garble text)
    assert h.text(f'<a href="x">url?key={SECRET}</a> abc') == \
        "&lt;a href=&quot;x&quot;&gt;url?key=[redacted]&lt;/a&gt; abc"


def test_numbers_ranges_and_intervals():
    assert [h.num(v) for v in (0.123456, 12, None, float("nan"), 1e-5, True, "a<b")] == \
        ["0.1235", "12", "—", "—", "1e-05", "yes", "a&lt;b"]
    assert h.ci(0.1, 0.25) == '<span class="nw">[0.1, 0.25]</span>' and h.ci(None, 1.0) == "—"
    assert h.layer_ranges([8, 0, 1, 2, 5, 7]) == "0–2, 5, 7–8"
    assert h.layer_ranges([3]) == "3" and h.layer_ranges([]) == "none"
    assert h.intervals([[4, 6], [9, 9]]) == "4–6, 9" and h.intervals([]) == "none"


def test_csv_table_caps_rows_with_a_note(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("layer,value,name,api_key\n" + "".join(f"{i},{i / 3},<x{i}>,k{i}\n" for i in range(5)))
    out = h.csv_table(path, max_rows=3)
    body = out.split("<tbody>")[1]
    assert body.count("<tr>") == 3
    assert "Showing the first 3 of 5 rows; the full table is t.csv." in out
    assert "<td>2</td><td>0.6667</td><td>&lt;x2&gt;</td><td>[redacted]</td>" in body  # numbers, escaping, secrets
    assert "k2" not in out
    assert "5 rows." in h.csv_table(path, max_rows=10)


def test_json_view_tables_records_shortens_lists_and_redacts():
    out = h.json_view({"n": 3, "series": list(range(20)),
                       "best": [{"layer": 2, "value": 0.5}, {"layer": 7, "value": 0.25, "token": SECRET}],
                       "nested": {"api_key": SECRET, "empty": {}}})
    assert out.startswith('<dl class="json"><dt>n</dt><dd>3</dd>')
    assert "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … (20 values)]" in out
    rows = re.findall(r"<tr>(.*?)</tr>", out.split("<tbody>")[1])
    assert rows == ["<td>2</td><td>0.5</td><td>—</td>", "<td>7</td><td>0.25</td><td>[redacted]</td>"]
    assert "<dt>api_key</dt><dd>[redacted]</dd>" in out and SECRET not in out


def test_figure_embeds_the_exact_bytes(tmp_path, make_png):
    png = make_png(tmp_path / "a&b.png")
    out = h.figure(png)
    src = re.search(r'src="data:image/png;base64,([^"]+)"', out).group(1)
    assert base64.b64decode(src) == png.read_bytes()
    assert "<figcaption>a&amp;b.png</figcaption>" in out


def test_page_is_self_contained():
    doc = h.page("t<", "<h1>x</h1>", [h.Section("a", "A & B", "<p>body</p>")], "foot")
    assert doc.startswith("<!DOCTYPE html>") and "<title>t&lt;</title>" in doc
    assert f'content="{h.CSP}"' in doc and "default-src 'none'" in h.CSP
    assert '<a href="#a">A &amp; B</a>' in doc and '<section id="a"><h2>A &amp; B</h2>' in doc
    assert not re.search(r"<script|<link|@import|url\(|src=\"http", doc)
