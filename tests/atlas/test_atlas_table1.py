"""Table 1 on a golden pair of tables (tests/data/atlas/: alpha, 4 blocks; beta, 8 blocks), every cell derived by hand."""
from __future__ import annotations

import csv
import math

import pytest

from helpers import ROOT
from medinterp.atlas import compare, concepts_from, parse_concept
from medinterp.errors import MedinterpError

DATA = ROOT / "tests" / "data" / "atlas"
EXTRA = "dosage:patching:p_resid_diff:pairs:min"
NAN = float("nan")
# (concept, model): (value, layer, depth, labeling, note); every CI is value ± 0.05, patching ± 0.1
EXPECTED = {
    ("age R²", "alpha"): (0.9, 2, 0.5, "age/pooled", ""),  # the layer −1 row (5.0) is a baseline, never a best layer
    ("age R²", "beta"): (0.95, 6, 0.75, "age/pooled", ""),
    ("symptoms silhouette", "alpha"): (NAN, None, NAN, "", "no rows: symptoms/umap/silhouette_umap on system"),
    ("symptoms silhouette", "beta"): (0.4, 2, 0.25, "system", ""),
    ("disease silhouette", "alpha"): (NAN, None, NAN, "", "all 5 rows NaN (degenerate: 1 distinct rows)"),
    ("disease silhouette", "beta"): (NAN, None, NAN, "", "no rows: disease/umap/silhouette_umap on chapter"),
    ("drugs silhouette by mechanism", "alpha"): (0.2, 1, 0.25, "mechanism", ""),  # L2 is NaN: skipped
    ("drugs silhouette by mechanism", "beta"): (0.25, 4, 0.5, "mechanism", ""),
    # 0.3 at L1 and L2: the shallower wins, with its row's note
    ("drugs silhouette by specialty", "alpha"): (0.3, 1, 0.25, "specialty",
                                                 "explained_by_spelling: surface 0.2 >= 0.5 x 0.3"),
    ("drugs silhouette by specialty", "beta"): (0.35, 5, 0.625, "specialty", ""),
    ("progression circularity", "alpha"): (0.7, 1, 0.25, "stage/ckd", ""),  # best over stage/*: ckd's 0.7 > 0.6
    ("progression circularity", "beta"): (NAN, None, NAN, "", "no rows: progression/umap/circular_corr on stage/*"),
    ("dosage patching P", "alpha"): (0.9, 0, 0.0, "pairs", ""),
    ("dosage patching P", "beta"): (1.2, 8, 1.0, "pairs", ""),
    (EXTRA, "alpha"): (0.1, 4, 1.0, "pairs", ""),  # direction min
    (EXTRA, "beta"): (0.1, 0, 0.0, "pairs", ""),
}


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas")
    return compare([DATA / "alpha", DATA / "beta"], out, concepts=concepts_from([EXTRA]), figures=False)


def read_table(path):
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["concept"], r["model"]): r for r in csv.DictReader(f)}


def num(cell: str) -> float:
    return float(cell) if cell else NAN


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_every_cell_by_hand(result):
    table = read_table(result.out_dir / "table1.csv")
    assert set(table) == set(EXPECTED)
    for key, (value, layer, depth, labeling, note) in EXPECTED.items():
        row = table[key]
        width = 0.1 if "patching" in key[0] else 0.05
        assert same(num(row["value"]), value), key
        assert same(num(row["ci_low"]), value - width) and same(num(row["ci_high"]), value + width), key
        assert row["layer"] == ("" if layer is None else str(layer)), key
        assert same(num(row["depth"]), depth) and row["labeling"] == labeling and row["note"] == note, key
        assert row["n_layers"] == {"alpha": "4", "beta": "8"}[key[1]]


def test_the_markdown_table(result):
    md = (result.out_dir / "table1.md").read_text(encoding="utf-8").splitlines()
    assert md[0] == "| concept | alpha (4 layers) | beta (8 layers) |"
    assert "| age R² | 0.9 [0.85, 0.95] L2 (0.50) | 0.95 [0.9, 1] L6 (0.75) |" in md
    assert ("| progression circularity | 0.7 [0.65, 0.75] L1 (0.25) stage/ckd | "
            "— (no rows: progression/umap/circular_corr on stage/*) |") in md
    assert any(line.startswith("| drugs silhouette by specialty | 0.3 [0.25, 0.35] L1 (0.25) ⚠ explained_by_spelling")
               for line in md)


def test_findings_per_model_by_hand(result):
    rows = {r["finding"]: r for r in result.agreement["findings"]["rows"]}
    drugs = rows["specialty > mechanism"]
    # alpha: CI above 0 at L0, L1, L3 and below nowhere; beta: above at L2, L4-6, below at L3 ([-0.12, -0.08])
    assert drugs["alpha"]["holds"] == "yes" and (drugs["alpha"]["value"], drugs["alpha"]["layer"]) == (0.1, 1)
    assert drugs["beta"]["holds"] == "partial"
    age = rows["age step"]  # alpha: 3.0 [2.5, 3.5] at L2 (> 1); beta: 1.3 [0.8, 1.8] at L5 (reaches 1)
    assert (age["alpha"]["holds"], age["alpha"]["value"], age["alpha"]["depth"]) == ("yes", 3.0, 0.5)
    assert (age["beta"]["holds"], age["beta"]["layer"], age["beta"]["depth"]) == ("no", 5, 0.625)
    assert rows["progression circularity"]["alpha"]["holds"] == "n/a"  # no circular_corr_null rows
    assert rows["progression circularity"]["beta"]["holds"] == "n/a"


def test_concept_specs():
    c = parse_concept("age:umap:anisotropy:age/pooled:min")
    assert (c.domain, c.method, c.metric, c.labeling, c.best) == ("age", "umap", "anisotropy", "age/pooled", "min")
    assert parse_concept("drugs:umap:silhouette_raw").labeling == "*"
    with pytest.raises(MedinterpError, match="domain:method:metric"):
        parse_concept("age:umap")
    with pytest.raises(MedinterpError, match="max, min"):
        parse_concept("age:umap:r2_raw:age/pooled:best")
    with pytest.raises(MedinterpError, match="twice"):
        concepts_from(["age:umap:r2_raw", "age:umap:r2_raw"])
