"""SVG curves: which panels, and where every line, band and baseline lands (hand-computed pixels)."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

from medinterp.report.svg import HEIGHT, WIDTH, Panel, Series, panel_svg, panels
from medinterp.results import Row

NAN = math.nan
SVG = "{http://www.w3.org/2000/svg}"


def r(labeling, metric, layer, value, lo=NAN, hi=NAN):
    return Row("m", "d", labeling, "umap", metric, layer, value, lo, hi, 10)


def test_nulls_join_their_metric_and_baselines_join_their_family():
    rows = [r("mech", "silhouette_umap", 0, 0.1), r("mech", "silhouette_umap_null", 0, 0.0),
            r("mech", "silhouette_raw", 0, 0.2), r("mech", "silhouette_surface", -1, 0.3),
            r("age/pooled", "anisotropy", 0, 0.5), r("age/pooled", "anisotropy_null", -1, 0.37),
            r("all", "loss", -1, 6.6),                       # no panel of its family: table only
            r("other", "circular_corr_null", 0, 0.2)]         # a null without its metric: its own panel
    got = [(p.labeling, p.metric, p.null is not None, p.baselines) for p in panels(rows)]
    assert got == [("mech", "silhouette_umap", True, (("silhouette_surface", 0.3),)),
                   ("mech", "silhouette_raw", False, (("silhouette_surface", 0.3),)),
                   ("age/pooled", "anisotropy", False, (("anisotropy_null", 0.37),)),
                   ("other", "circular_corr_null", False, ())]


def test_pixels_of_line_band_and_baseline():
    # x: layers 0..2 over the plot area 46..290 px -> 46, 168, 290.
    # y: data -0.1..1.1 (CI ends), padded 5 % of 1.2 each side -> -0.16..1.16 over 160..26 px (134 px):
    #    y(v) = 160 - (v + 0.16) / 1.32 * 134:  y(0) = 143.76, y(0.5) = 93.0, y(1) = 42.24, y(1.1) = 32.09,
    #    y(-0.1) = 153.91, y(0.1) = 133.61, y(0.4) = 103.15, y(0.6) = 82.85, y(0.9) = 52.39, y(0.25) = 118.38
    p = Panel("mech", "silhouette_umap", Series((0, 1, 2), (0.0, 0.5, 1.0), (-0.1, 0.4, 0.9), (0.1, 0.6, 1.1)),
              baselines=(("silhouette_surface", 0.25),))
    svg = panel_svg(p)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("width") == str(WIDTH) and root.get("height") == str(HEIGHT)
    (line,) = [e for e in root.iter(f"{SVG}path")]
    assert line.get("d") == "M46.0,143.8 L168.0,93.0 L290.0,42.2"
    (band,) = root.iter(f"{SVG}polygon")
    assert band.get("points") == "46.0,133.6 168.0,82.8 290.0,32.1 290.0,52.4 168.0,103.2 46.0,153.9"
    dashed = [e for e in root.iter(f"{SVG}line") if e.get("stroke-dasharray")]
    assert [(e.get("y1"), e.get("y2")) for e in dashed] == [("118.4", "118.4")]
    assert len(list(root.iter(f"{SVG}circle"))) == 3
    assert root.find(f"{SVG}title").text == "mech · silhouette_umap"


def test_nan_breaks_the_line_and_the_band():
    s = Series((0, 1, 2, 3), (0.0, NAN, 1.0, 2.0), (-0.1, NAN, 0.9, NAN), (0.1, NAN, 1.1, NAN))
    root = ET.fromstring(panel_svg(Panel("l", "m", s)))
    assert [p.get("d").count("L") for p in root.iter(f"{SVG}path")] == [0, 1]   # runs [0] and [2, 3]
    assert len(list(root.iter(f"{SVG}circle"))) == 3
    # CI finite at layers 0 and 2 only, not adjacent: two single-point error bars, no polygon
    assert not list(root.iter(f"{SVG}polygon"))
    bars = [e for e in root.iter(f"{SVG}line") if e.get("stroke-width") == "2"]
    assert len(bars) == 2 and bars[0].get("x1") == bars[0].get("x2") == "46.0"


def test_null_is_dotted_grey_and_flat_or_empty_panels_still_draw():
    main = Series((0, 1), (0.5, 0.5), (NAN, NAN), (NAN, NAN))
    null = Series((0, 1), (0.0, 0.0), (-0.1, -0.1), (0.1, 0.1))
    svg = panel_svg(Panel("l", "m", main, null))
    assert re.search(r'<path d="M[^"]+" fill="none" stroke="#8a8f98" stroke-width="1.2" stroke-dasharray="2 2"/>', svg)
    flat = panel_svg(Panel("l", "m", Series((3,), (0.7,), (NAN,), (NAN,))))
    ET.fromstring(flat)
    assert "<circle" in flat                     # one point, one dot (x range opened to 2..4)
    empty = panel_svg(Panel("l", "closure_ratio", Series((0, 1), (NAN, NAN), (NAN, NAN), (NAN, NAN))))
    assert "no finite values" in empty and "<path" not in empty


def test_labels_are_escaped():
    svg = panel_svg(Panel("<b>&", 'm"x', Series((0, 1), (0.0, 1.0), (NAN, NAN), (NAN, NAN))))
    ET.fromstring(svg)
    assert 'aria-label="&lt;b&gt;&amp; · m&quot;x"' in svg
