"""Atomic writes: complete or absent, never partial; readable like any other file."""
from __future__ import annotations

import os

import pytest

from medinterp.io import atomic_write, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "per_layer.csv"
    path.write_text("old\n")

    def boom(f):
        f.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["per_layer.csv"]


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "summary.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o644


def test_per_layer_note_round_trips_and_old_tables_read_with_an_empty_note(tmp_path):
    import math

    from medinterp.results import Row, read_rows, write_rows

    rows = [Row("m", "d", "lab", "umap", "s", 0, math.nan, math.nan, math.nan, 3, "degenerate: 1 distinct row"),
            Row("m", "d", "lab", "umap", "s", 1, 0.25, 0.1, 0.4, 3)]
    back = read_rows(write_rows(tmp_path / "per_layer.csv", rows))
    assert [r.note for r in back] == ["degenerate: 1 distinct row", ""] and math.isnan(back[0].value)
    old = tmp_path / "old.csv"
    old.write_text("model,domain,labeling,method,metric,layer,value,ci_low,ci_high,n\nm,d,lab,umap,s,1,0.5,,,3\n")
    (r,) = read_rows(old)
    assert (r.layer, r.value, r.n, r.note) == (1, 0.5, 3, "") and math.isnan(r.ci_low)


def test_read_csv_cells_types_cells_and_squares_ragged_lines(tmp_path):
    import math

    from medinterp.io import read_csv_cells

    path = tmp_path / "t.csv"
    path.write_text("name,layer,value,note\ndrugs,3,0.25,ok\nage,4,nan\nage,x,-inf,a,extra\nage,5,1e-3,\n")
    header, rows, total = read_csv_cells(path, max_rows=3)
    assert header == ["name", "layer", "value", "note"] and total == 4 and len(rows) == 3
    assert rows[0] == ["drugs", 3, 0.25, "ok"] and rows[2] == ["age", "x", -math.inf, "a"]
    assert rows[1][:2] == ["age", 4] and math.isnan(rows[1][2]) and rows[1][3] is None


def test_save_png_writes_a_png_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medinterp.io import save_png

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_png(fig, tmp_path / "sub" / "f.png")
    assert path == tmp_path / "sub" / "f.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number) and not list(path.parent.glob(".*.tmp"))
