"""The memory plan against hand-computed numbers."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import ROOT
from medinterp.distributed.plan import KNOWN, Arch, Workload, arch_for, plan, work_bytes
from medinterp.errors import MedinterpError

LLAMA70 = {"name": "llama33_70b", "source": "hf", "hub_id": "meta-llama/Llama-3.3-70B-Instruct", "dtype": "bfloat16"}


def test_llama_70b_parameters_by_hand():
    a = KNOWN["meta-llama/Llama-3.3-70B-Instruct"]
    attn = 8192 * 8192 + 2 * 8192 * 1024 + 8192 * 8192  # q, k, v (8 kv heads × 128), o
    mlp = 3 * 8192 * 28672  # gate, up, down
    layer = attn + mlp + 2 * 8192
    total = 80 * layer + 2 * 128256 * 8192 + 8192  # untied embedding and head, final norm
    assert a.params() == total == 70_553_706_496  # the published 70.6 B
    p = plan(LLAMA70, "zero3", world=8)
    assert p.weights_gb == pytest.approx(total * 2 / 1e9) and round(p.weights_gb) == 141
    umap = next(m for m in p.methods if m.method == "umap")
    assert umap.weights_gb == pytest.approx((total * 2 / 8 + layer * 2) / 1e9)  # 1/8 + one gathered layer


def test_gpus_needed_for_70b_on_80gb():
    p = plan(LLAMA70, "zero3")
    gpus = {m.method: m.gpus for m in p.methods}
    # issue: 2×80 GB, more for saliency; patching's 32 pairs per forward (the map's batch_size) hold the clean run's
    # four sites per layer
    assert gpus == {"umap": 2, "ablation": 2, "patching": 3, "saliency": 3, "geometry": 2}  # geometry: 1.5 GB of logits
    assert p.world == 3
    assert {m.gpus for m in plan(LLAMA70, "single").methods} == {0}  # does not fit one GPU


def test_the_batch_is_the_maps_cut():
    """Rows per batch as the map cuts them: batch_size prompts, fewer where a token budget binds (saliency's own)."""
    w = Workload()  # the defaults of conf/map.yaml and conf/method/saliency.yaml, 32-token prompts
    assert {m: w.rows(m) for m in ("umap", "patching", "ablation", "saliency")} == {
        "umap": 32, "patching": 32, "ablation": 32, "saliency": 8}  # saliency: 256 // 32
    w = Workload(batch_size=64, tokens=100, answer_tokens=28, batch_tokens=1000, saliency_batch_tokens=None)
    assert (w.rows("umap"), w.rows("ablation"), w.rows("saliency")) == (10, 7, 10)  # 1000 // 100, 1000 // 128
    assert Workload(tokens=5000, batch_tokens=1000).rows("umap") == 1  # one prompt over the budget: never 0 rows


def test_activation_cache_and_work_sizes():
    a = Arch(hidden=64, layers=4, vocab=100, intermediate=128, heads=4, kv_heads=2, head_dim=16)
    w = Workload(batch_size=2, tokens=5, answer_tokens=3, prompts=10)
    p = plan({"name": "t", "source": "tiny", "family": "llama", "dtype": "float32"}, "single", workload=w)
    assert p.activation_cache_gb == pytest.approx(10 * 5 * 64 * 4 / 1e9)  # prompts × (L + 1) × d × 4
    assert work_bytes(a, "umap", w, 4) == 2 * 5 * 64 * 4 * 2 + 2 * 5 * 64 * 4
    assert work_bytes(a, "patching", w, 2) == 2 * 5 * 64 * 2 * 20
    # geometry: capture's (above, in fp16 here) + float32 logits of the output and the lens of L + 1 read-outs
    assert work_bytes(a, "geometry", w, 2) == 2 * 5 * 64 * 2 * 2 + 2 * (a.layers + 1) * 64 * 4 + (a.layers + 2) * 2 * a.vocab * 4


def test_tiny_model_matches_its_real_parameter_count(tiny_handles):
    for family, handle in tiny_handles.items():
        arch = arch_for({"source": "tiny", "family": family})
        real = sum(p.numel() for p in handle.model.parameters())
        norms = sum(p.numel() for n, p in handle.model.named_parameters() if "q_norm" in n or "k_norm" in n
                    or "pre_feedforward" in n or "post_feedforward" in n)
        assert arch.params() + norms == real, family  # the plan leaves out Gemma/Qwen3's small extra norms


def test_local_config_json_wins(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 10, "num_hidden_layers": 2, "vocab_size": 7,
                                                      "intermediate_size": 20, "num_attention_heads": 2}))
    a = arch_for({"name": "x", "path": str(tmp_path)})
    assert (a.kv_heads, a.head_dim) == (2, 5)
    assert a.params() == 2 * (4 * 10 * 10 + 3 * 10 * 20 + 20) + 2 * 7 * 10 + 10


def test_unknown_model_and_strategy_are_named():
    with pytest.raises(MedinterpError, match="no architecture numbers for model 'x'"):
        arch_for({"name": "x", "path": "org/unknown"})
    with pytest.raises(MedinterpError, match="unknown strategy 'zero4'; valid: ddp, device_map, single, zero3"):
        plan(LLAMA70, "zero4")


@pytest.mark.slow  # runners/plan.py in a subprocess; plan() itself is tested above
def test_plan_runner_prints_the_table():
    proc = subprocess.run([sys.executable, str(ROOT / "runners" / "plan.py"), "model=llama33_70b", "strategy=zero3",
                           "devices=8"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "70.55 B parameters, 141.1 GB" in proc.stdout and "8 rank(s)" in proc.stdout
    assert "saliency" in proc.stdout.splitlines()[4]
