"""Benchmark: activation patching, naive engine against the fast (prefix-reuse) engine, in one run.

    python runners/bench_patching.py [--model gemma3_270m|smollm2_135m|tiny_llama] [--domain dosage]
                                     [--n-pairs 8] [--min-gap 1.0] [--batch-size 32] [--repeats 2] [--device auto]
                                     [--threads 1]

Runs ``method=patching`` with every default site (resid_diff, resid_last, attn, mlp) on the same
pairs with ``engine=naive`` and ``engine=fast``, alternating after a short warm-up so drifting machine
load hits both alike, and prints the best wall time (and CPU time) of each, the ratio fast/naive
(target <= 0.6), the ratio of decoder-block calls (what prefix reuse saves in theory) and the largest
|ΔP| between the engines over every site and layer (must be <= 1e-4), over the kept pairs and over
every pair with a nonzero gap. Gemma-3-270M, 8 dosage pairs, 2 repeats: about 1.5 minutes on one CPU
thread (all 25 pairs take ~3x as long). One thread is the default because it gives steady timings on a
shared CPU: with two threads, each waits whenever other jobs deschedule its sibling, and single runs
varied 3-7x (best-of-2 ratios of 0.19-0.46 against 0.536 with one thread).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from _common import CONF, user_errors

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from medinterp.methods.patching import ActivationPatching, patching_score  # noqa: E402
from medinterp.capture import encode  # noqa: E402
from medinterp.models import ModelSpec, default_cache_dir, load_model  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.run import run_method  # noqa: E402


def run(method: ActivationPatching, handle, prompt_set, batch_size: int):
    """One run of the method: (wall seconds, CPU seconds of this process, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = run_method(method, handle, prompt_set, [], batch_size=batch_size)
    return time.perf_counter() - w0, time.process_time() - c0, result


def max_dp(naive: dict, fast: dict, all_pairs: bool) -> float:
    """Largest |P_fast − P_naive| over sites and layers, over kept pairs or over every pair with a nonzero gap."""
    if not all_pairs:
        return max(float(np.abs(fast["p"][s] - naive["p"][s]).max(initial=0.0)) for s in fast["p"])
    gap = fast["ld_clean"] - fast["ld_corrupt"]
    ok = gap != 0
    return max(float(np.abs(patching_score(fast["ld_patched"][s][:, ok], fast["ld_clean"][ok], fast["ld_corrupt"][ok])
                            - patching_score(naive["ld_patched"][s][:, ok], naive["ld_clean"][ok], naive["ld_corrupt"][ok])
                            ).max(initial=0.0)) for s in fast["ld_patched"])


def bench_patching(model: str, domain: str, n_pairs: int | None, min_gap: float, batch_size: int, repeats: int,
                   device: str) -> None:
    spec = ModelSpec.from_dict(yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text()))
    handle = load_model(spec, device, default_cache_dir())
    prompt_set = load_prompt_set(domain)
    if n_pairs and n_pairs < len(prompt_set.pairs):  # spread over the set: every kind of fact, not only the first
        idx = np.unique(np.linspace(0, len(prompt_set.pairs) - 1, n_pairs).round().astype(int))
        prompt_set = dataclasses.replace(prompt_set, pairs=tuple(prompt_set.pairs[i] for i in idx))
    engines = {e: ActivationPatching(engine=e, min_gap=min_gap) for e in ("naive", "fast")}
    warm_up = encode(handle.tokenizer, [p.clean for p in prompt_set.pairs]).to(handle.device)
    with torch.inference_mode():  # first touch of the weights, kernel selection
        handle.parts.backbone(**warm_up.model_inputs())
    results, wall, cpu = {}, {e: [] for e in engines}, {e: [] for e in engines}
    for _ in range(repeats):  # alternate, so drifting machine load hits both engines alike
        for e, method in engines.items():
            w, c, results[e] = run(method, handle, prompt_set, batch_size)
            wall[e].append(w)
            cpu[e].append(c)
    naive, fast = (results[e].artifacts for e in ("naive", "fast"))
    summary = fast["summary"]
    dld = max(float(np.abs(fast["ld_patched"][s] - naive["ld_patched"][s]).max()) for s in fast["ld_patched"])
    (tn, tf), (cn, cf) = (min(wall[e]) for e in engines), (min(cpu[e]) for e in engines)
    print(f"model={model} device={handle.device} threads={torch.get_num_threads()} domain={domain} "
          f"layers={handle.n_layers} sites={','.join(summary['sites'])}")
    print(f"pairs: {summary['n_pairs']} in set, {summary['n_skipped']} skipped, {summary['n_filtered']} filtered "
          f"(|gap| < {summary['min_gap']}), {summary['n_kept']} kept; batch_size={batch_size}; best of {repeats}")
    for name, t, c, art in (("naive", tn, cn, naive), ("fast", tf, cf, fast)):
        print(f"{name + ':':6s} wall {t:8.2f} s  cpu {c:8.2f} s  ({art['summary']['n_forwards']} forwards, "
              f"{art['summary']['n_block_calls']} block calls)  all wall times: {', '.join(f'{x:.2f}' for x in wall[name])}")
    blocks = summary["n_block_calls"] / naive["summary"]["n_block_calls"]
    print(f"ratio fast/naive = {tf / tn:.3f} wall, {cf / cn:.3f} cpu  (target <= 0.6; block calls {blocks:.3f})")
    print(f"max |dP| = {max_dp(naive, fast, False):.2e} over kept pairs, {max_dp(naive, fast, True):.2e} over all pairs "
          f"(target <= 1e-4); max |dLD_patched| = {dld:.2e}")


@user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gemma3_270m")
    parser.add_argument("--domain", default="dosage")
    parser.add_argument("--n-pairs", type=int, default=8, help="N pairs spread over the set (0: all; 25 in dosage)")
    parser.add_argument("--min-gap", type=float, default=1.0, help="method.min_gap (tiny random models need ~0.01)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:  # 1 thread is steadier on a shared CPU: no thread waits on a descheduled sibling
        torch.set_num_threads(args.threads)
    bench_patching(args.model, args.domain, args.n_pairs, args.min_gap, args.batch_size, args.repeats, args.device)


if __name__ == "__main__":
    main()
