"""runners/synthesize.py end to end on the golden folder, and one-line errors (real subprocesses)."""
from __future__ import annotations

import json

import pytest

from helpers import ROOT, run_runner

pytestmark = pytest.mark.slow  # runners/synthesize.py in subprocesses; its library is tested in test_synthesis.py

GOLDEN = ROOT / "tests" / "data" / "golden"


def synthesize(*args, check=True):
    return run_runner("synthesize.py", *args, check=check, timeout=60)


def test_golden_folder_end_to_end(tmp_path):
    out = tmp_path / "maps"
    proc = synthesize(f"runs={GOLDEN}", f"out_dir={out}", "map.findings.collapse_fraction=0.4")
    folder = out / "golden"
    kmap = json.loads((folder / "knowledge_map.json").read_text())
    expected = json.loads((GOLDEN / "knowledge_map.json").read_text())
    assert {d: {m: e["intervals"] for m, e in v.items() if m != "consensus"} for d, v in kmap["domains"].items()} == \
        {d: {m: e["intervals"] for m, e in v.items() if m != "consensus"} for d, v in expected["domains"].items()}
    assert kmap["domains"]["symptoms"]["consensus"] == [[2, 4]] and kmap["missing"] == expected["missing"]
    found = json.loads((folder / "findings.json").read_text())
    assert found["params"]["collapse_fraction"] == 0.4
    assert found["age_step"]["peak"]["layer"] == 5 and found["age_step"]["gender_difference"]["layers_excluding_null"] == [5]
    assert found["progression_circularity"]["diseases"]["parkinsons"]["best_layer"] == 7
    drugs = found["drugs_specialty_vs_mechanism"]["metrics"]["silhouette_umap_diff"]
    assert drugs["layers_excluding_null"] == list(range(5, 13)) and drugs["sign"] == "specialty > mechanism"
    (ep,) = found["collapse"]["curves"]["drugs/effective_rank"]["episodes"]
    assert (ep["collapse_layer"], ep["recovery_layer"]) == (6, 7)  # fraction 0.4: 10 < 12 at 6; 14 > 12 at 7
    for png in ("knowledge_map.png", "findings.png"):
        assert (folder / png).stat().st_size > 20_000, png
    assert str(out) in proc.stderr + proc.stdout
    assert not list(out.rglob(".*.tmp")) and not (out / ".hydra").exists()


@pytest.mark.parametrize("args, message", [
    ([], "error: runs= is required"),
    (["runs={tmp}/empty"], "error: no per_layer.csv under '{tmp}/empty'"),
    (["runs=[tests/data/golden,/no/such/run]"], "error: runs: no such file or folder '/no/such/run'"),
    ([f"runs={GOLDEN}", "map.methods=[umap,magic]"], "error: unknown method 'magic'; valid: ablation, geometry, patching, saliency, umap"),
    ([f"runs={GOLDEN}", "map.channels.umap.rule=steep"], "error: unknown map rule 'steep'; valid: segments, window"),
    ([f"runs={GOLDEN}", "map=nope"], "error: map=nope: map holds the knowledge-map settings (map.sigma=2.0, ...); a settings file is chosen with synthesis=<name>; valid: default"),
    ([f"runs={GOLDEN}", "synthesis=nope"], "error: unknown synthesis 'nope'; valid: default"),
    ([f"runs={GOLDEN}", "map.channels.ablation.metric=kl_div"],  # was: exit 0, the ablation lane silently gone
     "error: The 'map.channels.ablation.metric' setting names no metric of the ablation method: 'kl_div'; "
     "valid: dlogp, judge_*, kl."),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path) for a in args]
    proc = synthesize(*args, f"out_dir={tmp_path}/out", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message.format(tmp=tmp_path)), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
