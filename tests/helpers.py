"""Constants and helpers shared by tests (importable because pytest's ``pythonpath`` includes tests/)."""
from __future__ import annotations

import functools
import importlib.util
import copy
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
TINY_FAMILIES = ("llama", "gemma3", "qwen2", "qwen3", "gpt_oss")
TINY_VLM_FAMILIES = ("llava", "gemma3_vlm")  # tiny_llava, tiny_gemma3_vlm (conf/model/)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
XDIST_THREADS: dict[str, str] = {}  # what share_cores_with_xdist_workers set in this process


def share_cores_with_xdist_workers() -> dict[str, str]:
    """In a pytest-xdist worker (`make test` runs ``-n auto``), give torch/MKL, OpenBLAS and numba this worker's
    share of the cores (cores // workers, at least 1) unless the user set a count; returns what it set.

    Without it every worker's OpenMP pool spans all cores: on the 2-core machine the fast tier took 465 s with two
    workers against 311 s in one process (docs/benchmarks.md). Call before torch, numpy or numba load.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = str(max(1, cores // int(workers)))
    for name in THREAD_VARIABLES:
        if name not in os.environ:
            os.environ[name] = XDIST_THREADS[name] = share
    return dict(XDIST_THREADS)


def torchrun_runner(nproc: int, script: str, *args: str) -> list[str]:
    """The command ``torchrun --nproc_per_node=<nproc> runners/<script> *args`` on a free local port (slow tests)."""
    from medinterp.judges.local_server import free_port

    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
            f"--master_port={free_port()}", str(ROOT / "runners" / script), *args]


def run_runner(script: str, *args: str, cwd: Path = ROOT, env: dict | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python runners/<script> *args`` in a subprocess (one-line Hydra errors, unbuffered); with ``check``,
    a non-zero exit raises with the tails of stdout and stderr. Tests that use it are ``slow``."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, str(ROOT / "runners" / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT\n{proc.stdout[-3000:]}\nSTDERR\n{proc.stderr[-3000:]}")
    return proc


# ------------------------------------------------------------------------------------------ in-process cells
@functools.cache
def runner(name: str) -> ModuleType:
    """runners/<name>.py imported as a module, not run (``runner("map").run_map`` maps one cell in this process).
    runners/ goes on sys.path for the runners' ``_common``, which registers the ``medinterp.domain`` resolver
    that conf/map.yaml uses; ``runner("_common")`` is that module."""
    folder = str(ROOT / "runners")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name == "_common":
        return importlib.import_module("_common")
    spec = importlib.util.spec_from_file_location(f"medinterp_runners_{name}", ROOT / "runners" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_map(overrides: list[str] | tuple[str, ...], config_name: str = "map"):
    """The real conf/map.yaml (or conf/<config_name>.yaml, e.g. vqa) composed with ``overrides`` (Hydra's compose
    API), ``hydra`` node included (its ``runtime.choices`` name the model, method and judge chosen)."""
    from hydra import compose, initialize_config_dir

    runner("_common")  # the medinterp.domain resolver
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3", job_name=config_name):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def run_cell_in_process(overrides: list[str] | tuple[str, ...], out_dir: Path) -> Path:
    """Map one cell like ``python runners/map.py *overrides hydra.run.dir=out_dir``, in this process (no
    subprocess): the same composed config (``domain=<file>.yaml`` too) and ``run_map``, without the CLI's
    report and W&B steps (``publish``), which their own tests cover. Returns the folder of per_layer.csv."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose_map(runner("_common").prompt_file_choices(list(overrides)))
    task = cfg.copy()
    with open_dict(task):  # what hydra.main hands the task function: the config without its hydra node
        del task["hydra"]
    HydraConfig.instance().set_config(cfg)  # as hydra.main does: HydraConfig.get() works inside the run
    try:
        out = runner("map").run_map(task, Path(out_dir))
    finally:
        HydraConfig.instance().cfg = None
    assert out == Path(out_dir), out
    return out


def load_tiny(family: str, cache_dir: Path):
    """A freshly loaded tiny random model of ``family`` (4 blocks; text or VLM), for fixtures that may change it."""
    from medinterp.models import ModelSpec, load_model

    return load_model(ModelSpec(name=f"tiny_{family}", source="tiny", family=family, n_layers=4), "cpu", cache_dir)


def without_block(model, block):
    """A copy of the model with decoder block ``block`` deleted: the reference for the identity."""
    cut = copy.deepcopy(model)
    del cut.model.layers[block]
    cut.config.num_hidden_layers -= 1
    if getattr(cut.config, "layer_types", None):
        cut.config.layer_types = cut.config.layer_types[:block] + cut.config.layer_types[block + 1:]
    return cut


def prompt_set_error(path: Path) -> str:
    """Load a prompt-set file that must be invalid; return the one-line message, checking it names the file."""
    import pytest

    from medinterp.prompts import PromptSetError, load_prompt_set

    with pytest.raises(PromptSetError) as info:
        load_prompt_set(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


def json_numbers(obj, path=""):
    """Every number in a JSON-like value, by its path."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in json_numbers(value, f"{path}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in json_numbers(value, f"{path}[{i}]").items()}
    return {path: obj} if isinstance(obj, (int, float)) and not isinstance(obj, bool) else {}
