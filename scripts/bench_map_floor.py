"""The default map's arithmetic floor on this machine: matmul FLOPs of each cell against this host's fp32 GEMM rate.

    python scripts/bench_map_floor.py [--model gemma3_270m] [--methods saliency,ablation,patching]
                                      [--domains age,symptoms,disease,progression,drugs,dosage,control]

Each (method, domain) cell of ``make map`` runs twice in this process with the real conf/ (the Hydra config
``runners/map.py`` composes; plots, report, W&B and resume off): once timed, once under a dispatch mode that
counts, with the per-operator formulas of torch's ``FlopCounterMode``, the floating-point operations of every
matrix product (linear layers, the LM head, attention, their backward passes). The host's fp32 GEMM rate is
measured on the shapes these cells multiply (the vocabulary slice of ablation's log-sum-exp, a decoder block's
projections). ``floor = FLOPs / rate`` is the time the cell's matrix products alone need at that rate, whatever
the code around them does; the printed ratio ``floor / time`` is the share of the cell's wall time that is
unavoidable arithmetic for the cell's experiment (its prompts, answers, lesions and pairs). UMAP's cells
multiply no matrices in torch (numba's SGD layout and LAPACK), so they have no floor here. ``--count-only``
skips the timed runs (a busy machine).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import run_cell_in_process  # noqa: E402  (the real conf/ composed, runners/map.py's run_map)

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils.flop_counter import flop_registry  # noqa: E402

GEMM_SHAPES = {  # (rows, inner, cols): x (rows, inner) @ W.T (inner, cols), float32
    "lse slice (4608 x 640 x 8192)": (4608, 640, 8192),
    "block MLP (1200 x 640 x 2048)": (1200, 640, 2048),
    "block o-proj (1200 x 1024 x 640)": (1200, 1024, 640),
}


def _cpu_attention_flops(query: torch.Tensor, key: torch.Tensor, *_: object, **__: object) -> int:
    """QKᵀ and PV of torch's CPU flash-attention kernel (absent from ``flop_registry``): 2 × 2·B·H·Tq·Tk·d."""
    *batch, t_q, d = query.shape
    return 4 * math.prod(batch) * t_q * key.shape[-2] * d


CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: 1,  # forward
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: 2}  # dQ, dK, dV, dP: twice


class FlopCount(TorchDispatchMode):
    """Counts the FLOPs of every matrix product dispatched while active (torch's own per-op formulas, those of
    ``FlopCounterMode``, and the CPU attention kernel; that mode's module tracker breaks ``autograd.grad`` on a
    leaf, which saliency calls). Under ``torch.inference_mode`` composite operators (``aten.linear``,
    ``aten.matmul``) reach this mode undecomposed: they are decomposed here, into the products counted."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None and func._overloadpacket not in CPU_ATTENTION:
            with self:  # (the mode is off inside its own handler: on again, so the parts are counted)
                out = func.decompose(*args, **kwargs)  # NotImplemented unless a composite
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        elif func._overloadpacket in CPU_ATTENTION:
            self.total += CPU_ATTENTION[func._overloadpacket] * _cpu_attention_flops(*args[:2])
        return out


def gemm_rate(rows: int, inner: int, cols: int, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of ``F.linear`` on one shape over ``repeats`` timed runs (after one warm-up)."""
    x, w = torch.randn(rows, inner), torch.randn(cols, inner)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return 2 * rows * inner * cols / best / 1e9


def _line(label: str, seconds: float, flops: float, rate: float) -> str:
    """One printed row: wall time, matmul FLOPs, the floor at ``rate`` GFLOP/s and floor / time."""
    floor = flops / rate / 1e9
    return (f"{label:22s} {seconds:7.1f} s  {flops / 1e12:7.2f} TFLOP  floor {floor:6.1f} s  "
            f"floor/time {floor / seconds:5.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3_270m")
    parser.add_argument("--methods", default="saliency,ablation,patching")
    parser.add_argument("--domains", default="age,symptoms,disease,progression,drugs,dosage,control")
    parser.add_argument("--count-only", action="store_true", help="count FLOPs without the timed runs (a busy machine)")
    args = parser.parse_args()
    rates = {name: gemm_rate(*shape) for name, shape in GEMM_SHAPES.items()}
    rate = max(rates.values())
    print(f"threads={torch.get_num_threads()} fp32 GEMM: "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            for domain in args.domains.split(","):
                overrides = [f"model={args.model}", f"domain={domain}", f"method={method}", "logger=none",
                             "plots=false", "report=false", "resume=false"]
                cell_s = float("nan")
                if not args.count_only:
                    out = run_cell_in_process(overrides, Path(tmp) / f"{method}-{domain}-timed")
                    cell_s = json.loads((out / "summary.json").read_text())["timings"]["total_s"]
                with FlopCount() as counter:
                    run_cell_in_process(overrides, Path(tmp) / f"{method}-{domain}-counted")
                flops = counter.total
                rows.append((method, domain, cell_s, flops))
                print(_line(f"{method} {domain}", cell_s, flops, rate), flush=True)
    print("\nper method (sum over domains):")
    for method in [*args.methods.split(","), "all"]:
        sel = [r for r in rows if method in (r[0], "all")]
        print(_line(method, sum(r[2] for r in sel), sum(r[3] for r in sel), rate))
    print(f"(at {rate:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
