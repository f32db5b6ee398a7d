"""`make test` is the fast tier and `make test-full` every test; CI (.ci/run) runs the command the README names."""
import re
import subprocess

from helpers import ROOT


def recipe(target: str) -> list[str]:
    """The command lines of a Makefile target."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M).group(1)
    return [line.strip() for line in body.splitlines()]


def test_test_is_the_fast_tier_and_test_full_runs_everything():
    assert recipe("test") == ['$(BIN)/python -m pytest -m "not slow" -n $(TEST_WORKERS) --maxprocesses 4 '
                             '--dist loadfile $(PYTEST_ARGS)']
    assert recipe("test-full") == ["$(BIN)/python -m pytest $(PYTEST_ARGS)"]
    assert "TEST_WORKERS ?= auto" in (ROOT / "Makefile").read_text()


def test_a_pytest_xdist_worker_takes_its_share_of_the_cores():
    """Under ``pytest -n N`` (make test) each worker's torch, MKL, OpenBLAS and numba get cores // N threads
    (tests/conftest.py), so N workers do not run N x cores OpenMP threads; in one process nothing is set."""
    import os

    import pytest
    import torch
    from helpers import THREAD_VARIABLES, XDIST_THREADS

    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        assert XDIST_THREADS == {}
        pytest.skip("not a pytest-xdist worker (make test-full runs in one process)")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = str(max(1, cores // int(workers)))
    assert XDIST_THREADS == {n: share for n in THREAD_VARIABLES if n in XDIST_THREADS}  # a user's counts are kept
    if "OMP_NUM_THREADS" in XDIST_THREADS:
        assert torch.get_num_threads() == int(share)


def test_ci_runs_the_command_the_readme_names_for_ci():
    commands = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert [c for c in commands if c.startswith("make")] == ["make test-full"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`make test-full` runs every test, `slow` included. CI (`.ci/run`) runs `make test-full`." in readme
    assert "`make test` is the fast tier (every test but the `slow` ones, <= 5 min on a 2-core machine)" in readme


def test_make_sae_runs_the_sae_runner_with_its_defaults():
    assert recipe("sae")[0] == "$(BIN)/python runners/sae.py hydra.run.dir=$(SAE_DIR) $(SAE_ARGS)"


def test_atlas_maps_both_embedded_models_then_compares_them():
    lines = recipe("atlas")
    assert lines[0].startswith("$(foreach m,$(ATLAS_MODELS),$(BIN)/python runners/map.py -m model=$(m)")
    assert lines[2].startswith('$(BIN)/python runners/compare.py "runs=[')
    text = (ROOT / "Makefile").read_text()
    assert "ATLAS_MODELS  ?= gemma3_270m smollm2_135m" in text and "ATLAS_METHODS ?= umap,saliency,patching" in text


def test_map_runs_the_control_for_the_methods_with_a_specificity_view():
    lines = recipe("map")
    control = [line for line in lines if "domain=$(MAP_CONTROL)" in line]
    assert control and "method=$(CONTROL_METHODS)" in lines[lines.index(control[0]) + 1]
    out = subprocess.run(["make", "-n", "map", "MAP_DIR=out/x", "MAP_METHODS=umap,ablation,patching"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert "domain=control method=ablation,patching hydra.sweep.dir=out/x/control" in out
    out = subprocess.run(["make", "-n", "map", "MAP_DIR=out/x", "MAP_METHODS=umap"], cwd=ROOT,
                         capture_output=True, text=True).stdout
    assert "domain=control" not in out
