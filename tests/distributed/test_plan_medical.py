"""The medical LLMs' configs (conf/model/) against the memory plan's published architectures, counted by hand."""
from __future__ import annotations

import pytest
import yaml

from helpers import ROOT
from medinterp.distributed.plan import arch_for, plan

MEDICAL = ("openbiollm_70b", "pmc_llama_13b", "clinicalcamel_70b", "meditron_70b", "biomistral_7b")


def conf(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", MEDICAL)
def test_config_layers_and_size_match_the_architecture(name):
    model = conf(name)
    arch = arch_for(model)
    assert model["hub_id"] == model["path"] and model["n_layers"] == arch.layers
    assert model["params_b"] == pytest.approx(arch.params() / 1e9, abs=0.05)


def test_pmc_llama_and_biomistral_by_hand():
    d, i = 5120, 13824  # LLaMA-13B: 40 heads, no GQA; vocabulary 32,000 + [PAD]
    layer = 4 * d * d + 3 * d * i + 2 * d
    assert arch_for(conf("pmc_llama_13b")).params() == 40 * layer + 2 * 32001 * d + d == 13_015_874_560
    d, i = 4096, 14336  # Mistral-7B: 32 query heads, 8 key/value heads of 128
    layer = d * d + 2 * d * 1024 + d * d + 3 * d * i + 2 * d
    assert arch_for(conf("biomistral_7b")).params() == 32 * layer + 2 * 32000 * d + d == 7_241_732_096


@pytest.mark.parametrize("name,single,zero3", [("openbiollm_70b", 0, 3), ("clinicalcamel_70b", 0, 3),
                                               ("meditron_70b", 0, 3), ("pmc_llama_13b", 1, 1),
                                               ("biomistral_7b", 1, 1)])
def test_gpus_on_80gb(name, single, zero3):
    """The 70B models need ZeRO-3 over 3 GPUs of 80 GB (saliency and patching; 2 for umap), as Llama-3.3-70B;
    the 13B (26 GB in float16) and 7B (14.5 GB) fit one GPU whole."""
    assert {m.gpus for m in plan(conf(name), "single").methods} == {single}
    assert plan(conf(name), "zero3").world == zero3
