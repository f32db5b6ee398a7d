"""The tiny-model map equals its golden copy (made before the one-seam redesign; tests/golden_map.py): run in this
process (the fast tier), and through the CLI's two multiruns (``slow``: the same cells by subprocess)."""
import pytest
from golden_map import GOLDEN, ITEM_KEY, KEY, differences, make_map, tolerance


@pytest.fixture(scope="module", params=[pytest.param(False, marks=pytest.mark.slow, id="cli"),
                                        pytest.param(True, id="in_process")])
def fresh(request, tmp_path_factory):
    return make_map(tmp_path_factory.mktemp("golden_map"), in_process=request.param)


def test_every_golden_cell_is_reproduced(fresh):
    golden = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert len(golden) == 14 and sorted(fresh) == golden


@pytest.mark.parametrize("cell", sorted(p.name for p in GOLDEN.iterdir() if (p / "per_layer.csv").is_file()))
def test_cell_equals_golden(fresh, cell):
    # 1e-6 relative where torch runs the golden copy's kernels; else 1e-3 without UMAP-layout metrics (golden_map.py)
    rtol, skip = tolerance()
    diffs = differences(GOLDEN / cell / "per_layer.csv", fresh[cell] / "per_layer.csv", KEY, rtol, 1e-9, skip)
    if (GOLDEN / cell / "per_item.csv").is_file():
        diffs += differences(GOLDEN / cell / "per_item.csv", fresh[cell] / "per_item.csv", ITEM_KEY, rtol, 1e-9, skip)
    assert not diffs, f"{len(diffs)} differences, first: {diffs[:5]}"
