"""Vision-language models under 2-rank ZeRO-3 and DDP (torchrun, gloo) give the numbers of ``single``.

Each test runs ``runners/map.py`` on ``domain=synthetic_xray`` with a tiny VLM (``tiny_llava``: CLIP tower, 6 x 6
grid; ``tiny_gemma3_vlm``: SigLIP tower pooled to 4 x 4, ``token_type_ids``) under ``torchrun --nproc_per_node=2``
and compares ``per_layer.csv`` and ``per_item.csv`` with a one-process run of the same config. Image inputs travel
with their prompts: a unit is a batch of prompts, and each rank encodes its own batches' images
(``pixel_values``, ``token_type_ids``) through the processor, so no image tensor crosses ranks; rank 0 gets each
batch's results and puts them in unit order. The cuts are uneven (10 prompts in batches of 3: 4 batches, so rank 1
runs a padding round; image_lens' last batch needs fewer lens calls than the others: it makes empty ones).

Tolerances: 0 (exact) for the forward-only methods ``umap`` (the activations bit for bit; the UMAP metrics
themselves are skipped, as in test_multiprocess.py) and ``image_lens``; ``ddp`` is exact for every method (whole
replicas, the same kernels on the same batches). ``gradcam`` (and ``saliency``, in the cells run by hand) under
ZeRO-3 take gradients through DeepSpeed's own Linear backward on gathered weights, whose float32 sums are ordered
otherwise: saliency <= 1e-6 relative (as for text models); gradcam <= 1e-5 (measured 2026-12-05: per_layer.csv 1.5e-7 on tiny_llava, per-item
``energy_in_box`` 8.4e-6 on tiny_gemma3_vlm, values near 0.005 summed from attention x gradient products); neurons
<= 1e-5 (its scores are activation x gradient too; under ZeRO-3 every rank runs its interventions in ``finish``,
``Method.finish_runs_model``). All tests launch torchrun: ``slow``.

CI keeps 10 (model, method, strategy) cells (:data:`CELLS`; the first 7 with their 5 reference runs and the
refusal test: 225 CPU-seconds, docs/distributed.md; the last 3 about 135 s): each family's image capture (``umap``) under ``zero3``, tiny Gemma 3's under ``ddp`` too, the
gradient method with its own ZeRO-3 code (``gradcam``: attention probabilities read before ZeRO-3's hook, the
same backward passes on every batch) on tiny Gemma 3 (``token_type_ids``, the loosest tolerance), ``image_lens``
(the same lens calls per batch) under ``zero3`` and ``neurons`` under ``ddp`` and ``zero3`` (every rank joins
the interventions of ``finish``) on tiny LLaVA, and the text methods' image-token paths under ``zero3`` on tiny
LLaVA: ablation lesioning image positions (<= 1e-5; 2.1e-6 when checked by hand), patching image pairs and geometry
on image tokens (exact). The other 12 (each
passed when run on 2026-12-06, docs/distributed.md) repeat code paths these cover: ``ddp`` holds whole replicas,
so a second method under it adds only its own batching, which ``single`` tests already check; ``saliency``
under ``zero3`` is the text models' path (test_multiprocess.py) with image inputs that umap's cells already shard.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from launch_helpers import activations, make_cache, map_cmd, max_rel_diff, read_rows, run, torchrun_cmd
from medinterp.results import read_item_rows

pytestmark = pytest.mark.slow  # torchrun subprocesses

pytest.importorskip("deepspeed", reason="the zero3 strategy needs deepspeed (docs/distributed.md)")
pytest.importorskip("lightning", reason="ddp/zero3 run on Lightning Fabric (pip install lightning)")

COMMON = ["domain=synthetic_xray", "plots=false", "resume=false", "logger=none", "report=false"]
ANSWERED = ["templates=2", "batch_size=3", "method.max_prompts=10", "method.n_boot=20"]
METHODS = {
    "umap": ["method=umap", "method.tokens=image", "templates=1", "batch_size=24", "method.n_boot=20",
             "method.n_perm=2", "method.n_jobs=1"],  # 64 images in 3 batches
    "gradcam": ["method=gradcam", *ANSWERED],
    "image_lens": ["method=image_lens", *ANSWERED],
    "neurons": ["method=neurons", *ANSWERED],
    # the text methods' image-token paths (docs/multimodal.md "Token types"): lesion, patch, measure image tokens
    "ablation": ["method=ablation", "method.tokens=image", *ANSWERED, "method.max_new_tokens=4"],
    "patching": ["method=patching", "method.tokens=image", "method.n_boot=20", "method.min_gap=0", "batch_size=2"],
    "geometry": ["method=geometry", "method.tokens=image", "templates=1", "batch_size=24", "method.n_boot=20",
                 "method.max_rows=1500", "method.lens_max_prompts=16", "method.n_jobs=1"],
}
ZERO3_TOLERANCE = {"umap": 0.0, "image_lens": 0.0, "gradcam": 1e-5, "neurons": 1e-5, "ablation": 1e-5, "patching": 0.0,
                   "geometry": 0.0}
STRATEGIES = {"zero3": ["strategy=zero3", "strategy.param_persistence_threshold=0"], "ddp": ["strategy=ddp"]}
# (model, method, strategy): the cells CI runs (module docstring says why these)
CELLS = [("tiny_llava", "umap", "zero3"), ("tiny_gemma3_vlm", "umap", "zero3"), ("tiny_gemma3_vlm", "umap", "ddp"),
         ("tiny_gemma3_vlm", "gradcam", "zero3"), ("tiny_llava", "image_lens", "zero3"),
         ("tiny_llava", "neurons", "ddp"), ("tiny_llava", "neurons", "zero3"),
         ("tiny_llava", "ablation", "zero3"), ("tiny_llava", "patching", "zero3"), ("tiny_llava", "geometry", "zero3")]


def tolerance(method: str, strategy: str) -> float:
    return 0.0 if strategy == "ddp" else ZERO3_TOLERANCE[method]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    """One-process runs, built on first use and shared by the module's tests."""
    root = tmp_path_factory.mktemp("single")
    done: dict[str, Path] = {}

    def get(method: str, model: str) -> Path:
        name = f"{method}-{model}"
        if name not in done:
            cache = make_cache(root / f"cache-{name}", cache_dir)
            run(map_cmd(f"model={model}", *COMMON, *METHODS[method], f"cache_dir={cache}",
                        f"hydra.run.dir={root / name}"), root)
            done[name] = root / name
        return done[name]

    return get


@pytest.mark.parametrize(("model", "method", "strategy"), CELLS, ids=["-".join(cell) for cell in CELLS])
def test_two_ranks_match_single_on_images(model, method, strategy, reference, tmp_path, private_cache,
                                          record_property):
    out = tmp_path / "run"
    run(torchrun_cmd(2, *STRATEGIES[strategy], f"model={model}", *COMMON, *METHODS[method],
                     f"cache_dir={private_cache}", f"hydra.run.dir={out}"), tmp_path)
    ref = reference(method, model)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"]["name"] == strategy and summary["strategy"]["world_size"] == 2
    is_umap_metric = (lambda key: "umap" in key[1]) if method == "umap" else (lambda key: False)
    ours_rows, ref_rows = read_rows(out / "per_layer.csv"), read_rows(ref / "per_layer.csv")
    assert {r.get("tokens") for r in ours_rows.values()} == {r.get("tokens") for r in ref_rows.values()}
    diff = max_rel_diff(ref_rows, ours_rows, is_umap_metric)
    record_property("max_rel_diff", diff)
    assert diff <= tolerance(method, strategy)
    if method == "umap":
        ours, theirs = activations(out), activations(ref)
        assert list(ours) == list(theirs) and ours and all(k.endswith("tokens-image.npy") for k in ours)
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
    else:
        ours, theirs = read_item_rows(out / "per_item.csv"), read_item_rows(ref / "per_item.csv")
        assert [(r.metric, r.layer, r.item, r.template) for r in ours] == [
            (r.metric, r.layer, r.item, r.template) for r in theirs] and ours
        np.testing.assert_allclose([r.value for r in ours], [r.value for r in theirs],
                                   rtol=tolerance(method, strategy), atol=0)
    if method in ("gradcam", "image_lens", "neurons"):  # the summaries (neurons' top neurons, lens top tokens) too
        ms, rs = summary["method_summary"], json.loads((ref / "summary.json").read_text())["method_summary"]
        if method == "neurons":  # the top neurons' mean scores: the same neurons and tokens, scores to the tolerance
            ours_top, ref_top = ms.pop("top_neurons"), rs.pop("top_neurons")
            assert {layer: [(n["neuron"], n["tokens"], n["label_hit"]) for n in rows] for layer, rows in ours_top.items()} \
                == {layer: [(n["neuron"], n["tokens"], n["label_hit"]) for n in rows] for layer, rows in ref_top.items()}
            np.testing.assert_allclose([n["score"] for rows in ours_top.values() for n in rows],
                                       [n["score"] for rows in ref_top.values() for n in rows],
                                       rtol=tolerance(method, strategy), atol=0)
        assert ms == rs and ms["n_prompts"] == 10
