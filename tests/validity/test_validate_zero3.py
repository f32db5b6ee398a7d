"""runners/validate.py under 2-rank ZeRO-3 (torchrun, gloo, every tensor sharded) gives the validity.json of
``single``: the validity loop is forwards only, every rank runs the same probes on weights its layers gather, and
rank 0 alone writes. Slow: torchrun subprocesses (~20 s of CPU each)."""
from __future__ import annotations

import json
import math
import subprocess

import pytest
from omegaconf import open_dict

from helpers import ROOT, compose_map, json_numbers, runner, torchrun_runner

pytestmark = pytest.mark.slow
pytest.importorskip("deepspeed", reason="the zero3 strategy needs deepspeed (docs/distributed.md)")
pytest.importorskip("lightning", reason="zero3 runs on Lightning Fabric")

KMAP = {"model": "tiny_llama", "n_layers": 4, "domains": {"drugs": {"ablation": {"intervals": [[2, 2]]}}}}


@pytest.mark.parametrize("intervention", ["ablation", "steer"])
def test_zero3_gives_the_numbers_of_single(tmp_path, intervention):
    (tmp_path / "map").mkdir()
    (tmp_path / "map" / "knowledge_map.json").write_text(json.dumps(KMAP))
    args = ["model=tiny_llama", "domain=drugs", f"map={tmp_path / 'map'}", "logger=none", "report=false", "device=cpu",
            "n_draws=3", "n_bands=1", "max_items=12", "n_boot=20", "damage=[disease]", f"intervention={intervention}",
            "alphas=[-1.0]"]  # steer: at alpha -1 the block sets differ in effect on this random model
    cfg = compose_map(args, "validate")
    with open_dict(cfg):
        del cfg["hydra"]
    single = json.loads((runner("validate").run_validate(cfg, tmp_path / "single") / "validity.json").read_text())
    cmd = torchrun_runner(2, "validate.py", *args, "strategy=zero3", "strategy.param_persistence_threshold=0",
                          f"hydra.run.dir={tmp_path / 'zero3'}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ZeRO-3 partitioned" in proc.stdout + proc.stderr
    zero3 = json.loads((tmp_path / "zero3" / "validity.json").read_text())
    a, b = json_numbers(single), json_numbers(zero3)
    assert a.keys() == b.keys() and len(a) > 40
    assert [k for k in a if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))] == []
    lane = single["lanes"][0]  # not vacuous: the block sets differ in effect
    assert lane["blocks"] == [1] and len({r["effect"] for r in lane["random"]} | {lane["effect"]["value"]}) > 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map", "single", "zero3"]  # rank 1 wrote nothing here
