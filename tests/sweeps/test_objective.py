"""The numbers optimising sweepers read: best silhouette of a run, agreement of a map."""
from __future__ import annotations

import json
import math

from medinterp.results import Row
from medinterp.sweeps.objective import folders_agreement, run_objective


def test_run_objective_is_the_peak_of_the_labeling_mean():
    rows = [Row("m", "drugs", lab, "umap", "silhouette_umap", layer, v)
            for lab, values in (("mechanism", [0.1, 0.5, 0.3]), ("specialty", [0.3, 0.3, 0.5]))
            for layer, v in enumerate(values)]
    rows.append(Row("m", "drugs", "mechanism", "umap", "silhouette_surface", -1, 0.9))  # baseline: never the best
    rows.append(Row("m", "drugs", "mechanism", "umap", "silhouette_umap_null", 1, 5.0))
    assert run_objective(rows) == {"best/silhouette_umap": 0.4, "best/silhouette_umap_layer": 1}
    assert run_objective(rows, "r2_raw")["best/r2_raw_layer"] == -1 and math.isnan(run_objective(rows, "r2_raw")["best/r2_raw"])


def test_folders_agreement(tmp_path, kit):
    a = kit.write_map(tmp_path / "a", kit.kmap({"d": {"umap": [[1, 2]], "patching": [[2, 3]]}})).parent   # 1/3
    b = kit.write_map(tmp_path / "b", kit.kmap({"d": {"umap": [[1, 2]], "patching": [[1, 2]]}})).parent   # 1
    assert folders_agreement([a, b]) == (1 / 3 + 1) / 2
    (tmp_path / "c" / "toy").mkdir(parents=True)
    (tmp_path / "c" / "toy" / "knowledge_map.json").write_text(json.dumps(kit.kmap({"d": {"umap": [[1, 1]]}})))
    assert math.isnan(folders_agreement([tmp_path / "c" / "toy"]))
