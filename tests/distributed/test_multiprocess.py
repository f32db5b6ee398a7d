"""2-rank ZeRO-3 and DDP runs (torchrun subprocesses, gloo, a free port) give the numbers of ``single``.

Each test launches ``runners/map.py`` under ``torchrun --nproc_per_node=2`` on one tiny family (llama, gemma3,
qwen2, qwen3, gpt_oss) and compares its ``per_layer.csv`` (and ``per_item.csv``) with a one-process run of the same
config: ≤ 1e-6 relative for saliency (per-prompt gradient sums from partitioned weights); exact for capture,
ablation, patching and geometry, which are forwards only: each batch runs the same kernels on the same shapes with
the same (gathered) weights in whichever rank, and rank 0 computes every statistic from the same arrays as one
process (geometry: the same seeded token and lens samples, which depend on the prompt lengths and the seed only, and
its logit lens through the final norm and head that ZeRO-3 gathers in their own forward). The batch counts are
chosen uneven (3 saliency batches, 2 ablation batches of 4 and 2 prompts, 5 geometry batches of 128 prompts at most,
...) so one rank runs a padding round. The UMAP metrics themselves are not compared: they differ between two
identical one-process runs at read-out 0 of these random models; the captured activations are compared bit for bit,
and every other metric of the cell exactly. Every test here launches torchrun: all are ``slow`` (`make test-full`,
CI); the fast tier (`make test`) keeps the in-process tests of sharding, resume keys and checkpoints
(test_sharding.py) and of device_map offload (test_device_map.py).
"""
from __future__ import annotations

import json
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import activations, make_cache, map_cmd, max_rel_diff, read_rows, run, torchrun_cmd
from medinterp.results import read_item_rows

pytestmark = pytest.mark.slow  # torchrun subprocesses

pytest.importorskip("deepspeed", reason="the zero3 strategy needs deepspeed (pip install deepspeed; see docs/distributed.md)")
pytest.importorskip("lightning", reason="ddp/zero3 run on Lightning Fabric (pip install lightning)")

COMMON = ["model=tiny_llama", "domain=disease", "plots=false", "resume=false"]
METHODS = {
    "umap": ["method=umap", "method.n_boot=20", "method.n_perm=2", "method.n_jobs=1", "templates=1"],
    "saliency": ["method=saliency", "method.max_prompts=10", "batch_size=4", "method.n_boot=20"],
    "ablation": ["method=ablation", "method.max_prompts=6", "batch_size=4", "method.max_new_tokens=4",
                 "method.n_boot=20"],
    "patching": ["method=patching", "method.n_boot=20", "method.on_length_mismatch=skip", "method.min_gap=0",
                 "batch_size=2"],
    # 3 templates (contextualization needs 3 contexts per term) x 192 terms = 576 prompts in 5 batches; a token
    # sample (1,500 of 5,871 tokens) and a lens sample (16 of 576 prompts), both seeded
    "geometry": ["method=geometry", "templates=3", "batch_size=128", "method.n_boot=20", "method.n_pairs=500",
                 "method.max_rows=1500", "method.lens_max_prompts=16", "method.n_jobs=1"],
}


def with_model(model: str) -> list[str]:
    """COMMON with another tiny model."""
    return [f"model={model}" if arg.startswith("model=") else arg for arg in COMMON]


TOLERANCE = {"saliency": 1e-6, "umap": 0.0, "ablation": 0.0, "patching": 0.0, "geometry": 0.0}
STRATEGIES = {
    "zero3": ["strategy=zero3", "strategy.param_persistence_threshold=0"],  # tiny tensors: shard every one
    "ddp": ["strategy=ddp"],
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """One-process runs (strategy single), built on first use and shared by the tests of this module."""
    root = tmp_path_factory.mktemp("single")
    done: dict[str, Path] = {}

    def get(method: str, model: str = "tiny_llama") -> Path:
        name = method if model == "tiny_llama" else f"{method}-{model}"
        if name not in done:
            cache = make_cache(root / f"cache-{name}", cache_dir)
            run(map_cmd(*with_model(model), *METHODS[method], f"cache_dir={cache}",
                        f"hydra.run.dir={root / name}"), root)
            done[name] = root / name
        return done[name]

    return get


FAMILIES = ["tiny_llama", "tiny_gemma3", "tiny_qwen2", "tiny_qwen3", "tiny_gpt_oss"]


# GPT-OSS's experts, router and attention sinks are neither Linear, norm nor embedding: their per-prompt
# gradient is a second backward over the retained graph, which ZeRO-3 cannot serve (see the test below).
REFUSED = {("tiny_gpt_oss", "saliency", "zero3")}


def matrix():
    for model in FAMILIES:
        for method in METHODS:
            for strategy in sorted(STRATEGIES):
                if (model, method, strategy) in REFUSED:
                    continue
                yield pytest.param(model, method, strategy, id=f"{model}-{method}-{strategy}")


@pytest.mark.parametrize(("model", "method", "strategy"), list(matrix()))
def test_two_ranks_match_single(model, method, strategy, reference, tmp_path, private_cache, record_property):
    out = tmp_path / "run"
    run(torchrun_cmd(2, *STRATEGIES[strategy], *with_model(model), *METHODS[method], f"cache_dir={private_cache}",
                     f"hydra.run.dir={out}"), tmp_path)
    ref = reference(method, model)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"]["name"] == strategy and summary["strategy"]["world_size"] == 2
    if strategy == "zero3":
        assert summary["model"]["placement"] == "zero3"
    is_umap_metric = (lambda key: "umap" in key[1]) if method == "umap" else (lambda key: False)
    diff = max_rel_diff(read_rows(ref / "per_layer.csv"), read_rows(out / "per_layer.csv"), is_umap_metric)
    record_property("max_rel_diff", diff)  # in --junitxml, for the table of docs/distributed.md
    assert diff <= TOLERANCE[method]
    if method == "umap":
        ours, theirs = activations(out), activations(ref)
        assert ours.keys() == theirs.keys() and ours
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
    if method != "umap":  # per-item values come out of finish on rank 0: the same rows as one process
        ours, theirs = read_item_rows(out / "per_item.csv"), read_item_rows(ref / "per_item.csv")
        assert [astuple(r)[:8] for r in ours] == [astuple(r)[:8] for r in theirs] and ours
        np.testing.assert_allclose([r.value for r in ours], [r.value for r in theirs], rtol=TOLERANCE[method], atol=0)
    if method == "ablation":  # the judge's score per block is a row too: compared above, and present
        assert any(key[1] == "judge_score" for key in read_rows(out / "per_layer.csv"))
    if method == "geometry":  # an odd number of batches (a padding round), both samples capped, a finite lens
        assert summary["strategy"]["batches"] == 5 + summary["model"]["n_layers"] + 1  # model + local units
        assert summary["method_summary"]["sampled_rows"] == 1500 < summary["method_summary"]["all_rows"]
        assert summary["method_summary"]["lens_prompts"] == 16
        rows = read_rows(out / "per_layer.csv")
        for metric in ("lens_kl", "linearity_heldout", "id_twonn", "self_similarity"):
            assert any(key[1] == metric and np.isfinite(float(row["value"] or "nan")) for key, row in rows.items())
    # rank 0 alone wrote the output folder; rank 1's private Hydra folder is gone
    names = {p.name for p in out.iterdir()}
    assert {".hydra", "map.log", "per_layer.csv", "summary.json", "config.json"} <= names <= {
        ".hydra", "map.log", "per_layer.csv", "per_item.csv", "summary.json", "config.json", "report.html"}
    assert "rank 1" not in (out / "map.log").read_text() and "rank 0 of 2" in (out / "map.log").read_text()
    assert not list((tmp_path / "tmp").glob("medinterp-rank*"))


@pytest.mark.parametrize("model", ["tiny_gemma3", "tiny_qwen3"])
def test_one_rank_zero3_saliency_with_qk_norms_matches_single(model, reference, tmp_path, private_cache):
    """Gemma-3 and Qwen3 have q/k norms inside attention, whose per-prompt gradient is a vjp on a copy of
    their weights taken in a forward hook. ZeRO-3 releases a module's weights in its own forward hook,
    which runs before ours: the copy used to be the (0,) placeholder (``size of tensor a (16) must match
    the size of tensor b (0)``). One rank with every tensor sharded gives the numbers of ``single`` (two
    ranks: test_two_ranks_match_single)."""
    out = tmp_path / "run"
    run(torchrun_cmd(1, *STRATEGIES["zero3"], *with_model(model), *METHODS["saliency"],
                     f"cache_dir={private_cache}", f"hydra.run.dir={out}"), tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["placement"] == "zero3" and summary["strategy"]["world_size"] == 1
    ours, ref = read_rows(out / "per_layer.csv"), read_rows(reference("saliency", model) / "per_layer.csv")
    assert any(key[1] == "grad_attn" for key in ref)  # the group that holds the q/k norms
    assert max_rel_diff(ref, ours) <= TOLERANCE["saliency"]


def test_zero3_saliency_refuses_parameters_without_a_per_prompt_path(tmp_path, private_cache):
    """tiny_gpt_oss (MoE experts, router, attention sinks) under ZeRO-3: one line naming the groups and the
    strategies that work, instead of ``The size of tensor a (64) must match the size of tensor b (0)`` from
    inside autograd (the second backward reads weight views freed when ZeRO-3 re-partitioned them)."""
    cmd = torchrun_cmd(2, *STRATEGIES["zero3"], *with_model("tiny_gpt_oss"), *METHODS["saliency"],
                       f"cache_dir={private_cache}", f"hydra.run.dir={tmp_path / 'run'}")
    with pytest.raises(AssertionError, match="exit 1") as failed:
        run(cmd, tmp_path)
    text = str(failed.value)
    assert ("error: saliency: parameters of groups attn.0, attn.1, attn.2, attn.3, mlp.0, mlp.1 and 2 more "
            "(not Linear, norm or embedding") in text
    assert "use strategy=single or ddp for this model" in text and "size of tensor" not in text
