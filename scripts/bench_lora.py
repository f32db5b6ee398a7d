"""Time the validity loop's LoRA training with and without replaying the intact blocks below a set (issue 11).

    python scripts/bench_lora.py [--model gemma3_270m] [--domain drugs] [--sets 0,1,2,3 13,14,15,16 4,5,6,7]

Trains the default budget (medinterp/validity/lora.py ``LoraBudget``) on the probe's training items, for each
block set, once with ``LoraSteps(replay=False)`` (every step runs every block) and once with replay (blocks below
the set's lowest one read the recorded residual stream), interleaved, and prints the seconds of each, their ratio
and the largest loss difference between the two (they train the same model: it should be ~1e-6); the one
recording pass of the intact blocks' outputs is timed apart (a validity run pays it once for all its trainings).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medinterp.models import ModelSpec, default_cache_dir, load_model  # noqa: E402
from medinterp.prompts import load_prompt_set  # noqa: E402
from medinterp.validity.lora import LoraBudget, LoraSteps, lora  # noqa: E402
from medinterp.validity.probe import build_probe, probe_spec  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3_270m")
    parser.add_argument("--domain", default="drugs")
    parser.add_argument("--sets", nargs="+", default=["0,1,2,3", "13,14,15,16", "4,5,6,7"])
    args = parser.parse_args()
    spec = ModelSpec.from_dict(yaml.safe_load((CONF / "model" / f"{args.model}.yaml").read_text()))
    handle = load_model(spec, "cpu", default_cache_dir())
    probe = build_probe(probe_spec(args.domain), load_prompt_set(args.domain), handle.tokenizer, 32)
    budget = LoraBudget()
    shared = {replay: LoraSteps(handle, probe.train, budget, probe.choice_ids, replay=replay) for replay in (False, True)}
    total = {False: 0.0, True: 0.0}
    t0 = time.perf_counter()
    shared[True].entering(1)  # the one recording pass, timed apart from the trainings
    record = time.perf_counter() - t0
    print(f"{args.model} {args.domain}: {len(probe.train)} training items, {budget}")
    for text in args.sets:
        blocks = [int(b) for b in text.split(",")]
        seconds, losses = {}, {}
        for replay in (False, True):
            t0 = time.perf_counter()
            with lora(handle, blocks, shared[replay]) as report:
                pass
            seconds[replay], losses[replay] = time.perf_counter() - t0, report.losses
            total[replay] += seconds[replay]
        diff = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
        print(f"blocks {blocks}: full {seconds[False]:.1f} s, replay {seconds[True]:.1f} s, "
              f"ratio {seconds[False] / seconds[True]:.2f}, max loss difference {diff:.1e}")
    print(f"all sets: full {total[False]:.1f} s, replay {total[True]:.1f} s (+ {record:.1f} s recording once per "
          f"run), ratio {total[False] / total[True]:.2f}")


if __name__ == "__main__":
    main()
