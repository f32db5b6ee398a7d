"""Benchmarks that print ratios measured within one run (never timed tests).

    python runners/bench.py capture [--model gemma3_270m] [--batch-size 32] [--repeats 7]

``capture``: all-layer hook capture (last-token reduction, copied to host) against a bare forward of the
same batch through the backbone (no LM head). Prints the median wall time of each and the ratio
bare / capture (target ≥ 0.95: capture costs at most ~5 % over the forward pass it rides on).
"""
from __future__ import annotations

import argparse
import statistics
import time

from _common import CONF, user_errors

import torch  # noqa: E402
import yaml  # noqa: E402

from medinterp.capture import capture_batch, encode  # noqa: E402
from medinterp.models import ModelSpec, default_cache_dir, load_model  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_capture(model: str, batch_size: int, repeats: int, device: str) -> None:
    spec = ModelSpec.from_dict(yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text()))
    handle = load_model(spec, device, default_cache_dir())
    prompts = load_prompt_set("drugs").prompts("started")[:batch_size]
    batch = encode(handle.tokenizer, [p.text for p in prompts]).to(handle.device)
    layers = list(range(handle.n_layers + 1))

    @torch.inference_mode()
    def bare():
        handle.parts.backbone(**batch.model_inputs(), use_cache=False)

    def hooked():
        [a.cpu() for a in capture_batch(handle, batch, layers, "last")]

    # Interleave the two so drifting machine load hits both alike.
    t_bare, t_capture = [], []
    for _ in range(3):
        t_bare.append(timed(bare, repeats))
        t_capture.append(timed(hooked, repeats))
    tb, tc = min(t_bare), min(t_capture)
    print(f"model={model} device={handle.device} batch={batch_size}x{batch.input_ids.shape[1]} tokens "
          f"threads={torch.get_num_threads()} layers={len(layers)}")
    print(f"bare forward (backbone, no LM head): {tb * 1e3:8.1f} ms")
    print(f"capture all layers (last token):     {tc * 1e3:8.1f} ms")
    print(f"ratio bare/capture = {tb / tc:.3f}  (target >= 0.95)")


@user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["capture"])
    parser.add_argument("--model", default="gemma3_270m")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    bench_capture(args.model, args.batch_size, args.repeats, args.device)


if __name__ == "__main__":
    main()
