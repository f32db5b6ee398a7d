"""The default map on random weights in a model's real shapes: what issue 15's GPU target (<= 45 s on one H200) is
measured with, on a machine that cannot hold or download the real weights.

    # here, where the model's package is installed: its config and tokenizer, no weights (Gemma-3-270M: 31.8 MiB)
    python scripts/bench_map_device.py export --model gemma3_270m --to .device/gemma3_270m
    # here: wheels of what a bare GPU image lacks, in the versions installed here (Python 3.12, manylinux; 13.5 MiB)
    python scripts/bench_map_device.py wheels --to .device/wheels
    # there (a GPU machine; .device/ is git-ignored, so it is carried): random weights in those shapes, then the map
    python3 -m pip install -q --no-index --no-deps --target .device/site .device/wheels/*.whl
    export PYTHONPATH=$PWD/.device/site
    python3 scripts/bench_map_device.py run --shape .device/gemma3_270m --device cuda --out <dir>

``run`` builds a seeded random-weight model from the exported config (the same layers, widths, vocabulary and
tokenizer, so every prompt has its real token length), saves it as a Hugging Face folder, and maps it with
``runners/map.py -m model=hf model.path=<that folder> domain=<domains> method=<methods> device=<device> logger=none``
in one process, as ``make map`` does (one Hydra multirun; reports and plots on), except patching: on random weights
every pair's logit difference is below its ``min_gap`` (1), so its cells run in a second multirun with
``method.min_gap=0`` (every pair patched: the most patching work the real map does). It prints the wall time and, per
method, the sum of the cells' ``timings.total_s``, and writes both to ``<out>/device_map.json``. The numbers of a
random-weight map mean nothing; its time is the real map's (same shapes, same kernels; patching at most). Dry-run
it on the CPU with ``--device cpu --domains dosage`` first (docs/benchmarks.md).

``wheels`` fetches what such an image lacks (Hydra, OmegaConf, its ANTLR runtime, UMAP, pynndescent, and this
project's transformers: its adapters follow the blocks' cache keyword of 5.24); nothing else is needed with
``logger=none``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import medinterp  # noqa: E402,F401  (first: pins the BLAS libraries; medinterp/__init__.py)

METHODS = "umap,saliency,ablation,patching"
DOMAINS = "age,symptoms,disease,progression,drugs,dosage"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "generation_config.json")


def export(model: str, to: Path) -> None:
    """Copy ``config.json`` and the tokenizer files of conf/model/<model>.yaml's cached folder to ``to``."""
    import yaml

    from medinterp.models import ModelSpec, default_cache_dir
    from medinterp.models.sources import materialize

    spec_file = ROOT / "conf" / "model" / f"{model}.yaml"
    if not spec_file.is_file():
        valid = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
        raise SystemExit(f"error: unknown model {model!r}; valid: {', '.join(valid)}")
    spec = ModelSpec.from_dict(yaml.safe_load(spec_file.read_text()))
    if spec.source not in ("gguf_package", "gguf_file"):
        raise SystemExit(f"error: model {model!r} has source {spec.source!r}; export reads a GGUF-backed model's "
                         "cached folder (an hf model's folder already has its config and tokenizer)")
    folder = materialize(spec, default_cache_dir())
    to.mkdir(parents=True, exist_ok=True)
    copied = [name for name in ("config.json", *TOKENIZER_FILES) if (folder / name).is_file()]
    for name in copied:
        shutil.copy2(folder / name, to / name)
    (to / "medinterp_shape.json").write_text(json.dumps({"model": model, "from": folder.name}, indent=2) + "\n")
    size = sum((to / n).stat().st_size for n in copied) / 2**20
    print(f"exported {', '.join(copied)} of {model} ({size:.1f} MiB, no weights) to {to}")


WHEELS = ("hydra-core", "omegaconf", "umap-learn", "pynndescent", "transformers")
SDIST_ONLY = ("antlr4-python3-runtime",)  # built into a pure-Python wheel here


def wheels(to: Path, python: str) -> None:
    """Download (or build) wheels of :data:`WHEELS` and :data:`SDIST_ONLY` in the versions installed here."""
    from importlib.metadata import version

    to.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    platforms = [a for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
                 for a in ("--platform", tag)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
                    "--implementation", "cp", *platforms, "-d", str(to), *pins], check=True)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(to),
                    *(f"{name}=={version(name)}" for name in SDIST_ONLY)], check=True)
    files = sorted(p.name for p in to.glob("*.whl"))
    size = sum((to / f).stat().st_size for f in files) / 2**20
    print(f"{len(files)} wheels ({size:.1f} MiB) in {to}: {', '.join(files)}")


def random_model(shape: Path, out: Path, seed: int) -> Path:
    """A Hugging Face folder with seeded random weights in the shapes of ``shape``'s config, and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(shape)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (shape / name).is_file():
            shutil.copy2(shape / name, out / name)
    n = sum(p.numel() for p in model.parameters())
    print(f"random {config.model_type} model, {n / 1e6:.1f} M parameters, seed {seed}: {out}", flush=True)
    return out


def run(shape: Path, device: str, methods: str, domains: str, out: Path, seed: int, extra: list[str]) -> dict:
    """Map the random-weight model (one Hydra multirun, patching in a second) and return the timings (also in
    ``out/device_map.json``)."""
    meta_file = shape / "medinterp_shape.json"
    if not (shape / "config.json").is_file() or not meta_file.is_file():
        raise SystemExit(f"error: {shape} holds no exported shape (config.json, medinterp_shape.json); "
                         "run `python scripts/bench_map_device.py export` first")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty; give a new --out folder (results are never overwritten)")
    meta = json.loads(meta_file.read_text())
    name = f"{meta['model']}_random"
    t0 = time.perf_counter()
    folder = random_model(shape, out / "model", seed)
    build_s = time.perf_counter() - t0
    base = [sys.executable, str(ROOT / "runners" / "map.py"), "-m", "model=hf", f"model.path={folder}",
            f"model.name={name}", "model.dtype=float32", f"domain={domains}", f"device={device}", "logger=none",
            f"cache_dir={out / 'cache'}", *extra]
    # Random weights give logit differences below patching's min_gap (1) on every pair, so it would patch nothing:
    # its cells run in a second multirun with min_gap=0, every pair patched (the most work the real model's map does).
    chosen = methods.split(",")
    runs = [(ms, more, sweep_dir) for ms, more, sweep_dir in (
        (",".join(m for m in chosen if m != "patching"), [], out / "map"),
        ("patching" if "patching" in chosen else "", ["method.min_gap=0"], out / "map_patching")) if ms]
    wall = 0.0
    for run_methods, more, sweep_dir in runs:
        cmd = [*base, f"method={run_methods}", *more, f"hydra.sweep.dir={sweep_dir}"]
        print("running:", " ".join(cmd), flush=True)
        t1 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True)
        wall += time.perf_counter() - t1
    per_method: dict[str, float] = {}
    cells = []
    for summary_file in sorted(f for _, _, sweep_dir in runs for f in sweep_dir.glob("*/summary.json")):
        summary = json.loads(summary_file.read_text())
        method, total = summary["method"], float(summary["timings"]["total_s"])
        per_method[method] = per_method.get(method, 0.0) + total
        cells.append({"cell": f"{summary_file.parent.parent.name}/{summary_file.parent.name}", "method": method,
                      "total_s": total})
    result = {"device": device, "model": name, "methods": methods, "domains": domains, "seed": seed,
              "build_s": build_s, "map_wall_s": wall, "cells_s": sum(per_method.values()), "per_method_s": per_method,
              "cells": cells, "torch": _torch_device(device)}
    (out / "device_map.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"map: {wall:.1f} s wall for {len(cells)} cells on {result['torch']} (model build {build_s:.1f} s, not "
          f"counted); per method: " + ", ".join(f"{m} {s:.1f} s" for m, s in sorted(per_method.items())))
    return result


def _torch_device(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="a model's config and tokenizer (no weights) into a folder")
    ex.add_argument("--model", default="gemma3_270m")
    ex.add_argument("--to", type=Path, required=True)
    wh = sub.add_parser("wheels", help="wheels of what a bare GPU image lacks, in the versions installed here")
    wh.add_argument("--to", type=Path, required=True)
    wh.add_argument("--python", default="3.12", help="the GPU image's Python version")
    rn = sub.add_parser("run", help="random weights in the exported shapes, then the map")
    rn.add_argument("--shape", type=Path, required=True)
    rn.add_argument("--device", default="cuda")
    rn.add_argument("--methods", default=METHODS)
    rn.add_argument("--domains", default=DOMAINS)
    rn.add_argument("--out", type=Path, required=True)
    rn.add_argument("--seed", type=int, default=0)
    rn.add_argument("overrides", nargs="*", help="more runners/map.py overrides (e.g. report=false)")
    args = parser.parse_args()
    if args.command == "export":
        export(args.model, args.to)
    elif args.command == "wheels":
        wheels(args.to, args.python)
    else:
        run(args.shape, args.device, args.methods, args.domains, args.out, args.seed, args.overrides)


if __name__ == "__main__":
    main()
