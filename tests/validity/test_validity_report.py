"""report.html of a validity run: detected as its own kind, the numbers of validity.json in the lanes table."""
from __future__ import annotations

import json
import re

import pytest
from omegaconf import open_dict

from helpers import compose_map, runner
from medinterp.report import find_report_folders, write_report, write_reports
from medinterp.results import folder_kind

KMAP = {"model": "tiny_llama", "n_layers": 4, "domains": {"drugs": {
    "ablation": {"intervals": [[2, 3]]}, "umap": {"intervals": []}}}}


@pytest.fixture(scope="module")
def validity_run(tmp_path_factory):
    """runners/validate.py in process on tiny_llama: ablation, 4 draws, the drugs and disease probes."""
    tmp = tmp_path_factory.mktemp("validity")
    (tmp / "map").mkdir()
    (tmp / "map" / "knowledge_map.json").write_text(json.dumps(KMAP))
    cfg = compose_map(["model=tiny_llama", "domain=drugs", f"map={tmp / 'map'}", "logger=none", "device=cpu",
                       "n_draws=4", "n_bands=1", "max_items=12", "n_boot=50", "damage=[disease]"], "validate")
    with open_dict(cfg):
        del cfg["hydra"]
    out = runner("validate").run_validate(cfg, tmp / "multirun" / "0_tiny_llama_drugs_ablation")
    return out, json.loads((out / "validity.json").read_text())


def _cells(html: str, first: str) -> list[str]:
    """The cells (tags stripped) of the first table row whose first cell starts with ``first``."""
    for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td>(.*?)</td>", row, flags=re.S)]
        if cells and cells[0] and cells[0][0] == first:
            return [" ".join(c) for c in cells]
    raise AssertionError(f"no row for {first!r}")


def test_a_validate_folder_is_a_validity_report(validity_run):
    out, result = validity_run
    assert folder_kind(out) == "validity"
    assert find_report_folders(out.parent) == [(out, "validity")]  # found in a multirun
    html = write_report(out).read_text()
    lane = result["lanes"][0]
    eff, v = lane["effect"], lane["validity"]
    assert lane["lane"] == "ablation" and lane["blocks"] == [1, 2]
    cells = _cells(html, "ablation")
    assert cells[1] == "1–2"
    assert cells[2] == f"{eff['value']:.3g} [{eff['ci_low']:.4g}, {eff['ci_high']:.4g}]"
    assert cells[3] == f"{v['random_mean']:.3g} ± {v['random_sd']:.3g} (n=4)"
    score = "—" if v["score"] != v["score"] else f"{v['score']:.3g}"  # NaN when the draws tie
    assert cells[4].startswith(score) and cells[5] == f"{v['beats']:.3g}"
    b = lane["baselines"]
    assert cells[6] == (f"first_n (0–1) {b['first_n']['effect']:.3g} last_n (2–3) {b['last_n']['effect']:.3g} "
                        f"complement (0, 3) {b['complement']['effect']:.3g}")
    assert cells[7] == f"disease {lane['damage']['disease']:.3g}"
    assert cells[8] == f"{eff['broken']} of 12 items {v['n_broken']} of 4 draws"
    umap = _cells(html, "umap")  # a lane with no block: its note, dashes
    assert "selects no block" in umap[0] and umap[1:] == ["—"] * 8
    assert f"{result['probes']['drugs']['accuracy']:.3g}" in _cells(html, "drugs")[1]
    assert html.count('<img src="data:image/png;base64,') == 1  # validity.png embedded
    assert len(re.findall(r"<tr><td>ablation</td><td>\d</td>", html)) == 4  # every random draw listed


def test_the_report_runner_writes_it(validity_run):
    out, _ = validity_run
    (out / "report.html").unlink(missing_ok=True)
    cfg = compose_map([f"path={out.parent}"], "report")
    assert runner("report").run_report(cfg) == [out / "report.html"]
    assert "Validity · tiny_llama · drugs · ablation" in (out / "report.html").read_text()
    assert write_reports(out) == [out / "report.html"]
