"""Benchmark: layer ablation, plain lesioned forwards against the fast scorer (prefix reuse, one
vocabulary pass for all the blocks of a batch), on the same batch in one run.

    python runners/bench_ablation.py [--model gemma3_270m] [--domain disease] [--n-prompts 8]
                                     [--max-new-tokens 16] [--repeats 2]

The intact model answers ``n_prompts`` prompts greedily once; then, alternating so that machine load
hits both alike, every block is ablated in turn and scored by :class:`LesionScorer` with ``fast=True``
and ``fast=False``. Prints the best wall time of each, the ratio fast/plain and the largest relative
KL difference between the two (tests bound it; see tests/methods/test_ablation.py).
"""
from __future__ import annotations

import argparse
import time

from _common import CONF, user_errors

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from medinterp.hooks import replace_by_identity  # noqa: E402
from medinterp.methods.ablation import (LesionScorer, greedy_generate, lesion_head, padding_side,  # noqa: E402
                                        select_prompts)
from medinterp.models import ModelSpec, default_cache_dir, load_model  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402


def score_all_blocks(handle, batch, fast: bool) -> tuple[float, np.ndarray]:
    """Wall seconds and the (blocks, prompts) KL of one pass over every block."""
    t0 = time.perf_counter()
    scorer = LesionScorer(handle, *batch, lesion_head(handle) if fast else None, fast=fast)
    for block in range(handle.n_layers):
        with replace_by_identity(handle.parts, block):
            scorer.lesion(block)
    return time.perf_counter() - t0, scorer.results()[0]


@user_errors
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3_270m")
    ap.add_argument("--domain", default="disease")
    ap.add_argument("--n-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    spec = ModelSpec.from_dict(yaml.safe_load((CONF / "model" / f"{args.model}.yaml").read_text()))
    handle = load_model(spec, "cpu", default_cache_dir())
    prompt_set = load_prompt_set(args.domain)
    prompts = select_prompts(prompt_set, [t.id for t in prompt_set.templates], args.n_prompts, 0)
    with padding_side(handle.tokenizer, "left"):
        enc = handle.tokenizer([p.text for p in prompts], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    answers, answer_mask = greedy_generate(handle, ids, mask, args.max_new_tokens)
    batch = (ids, mask, answers, answer_mask)
    times: dict[bool, list[float]] = {True: [], False: []}
    kl: dict[bool, np.ndarray] = {}
    for _ in range(args.repeats):
        for fast in (True, False):
            seconds, kl[fast] = score_all_blocks(handle, batch, fast)
            times[fast].append(seconds)
    fast, plain = min(times[True]), min(times[False])
    print(f"model={spec.name} domain={args.domain} prompts={len(prompts)} answer tokens={answers.shape[1]} "
          f"blocks={handle.n_layers}")
    print(f"plain: {plain:.1f} s   fast: {fast:.1f} s   fast/plain = {fast / plain:.3f}")
    print(f"max relative KL difference: {np.max(np.abs(kl[True] - kl[False]) / np.abs(kl[False])):.1e}")


if __name__ == "__main__":
    main()
