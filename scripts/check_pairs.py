"""Check the contrast pairs of packaged prompt sets against a model's tokenizer (authoring aid, no forward pass).

For each pair: clean and corrupted prompts of equal token length, and answers that each add exactly one token
to their own prompt, differing from each other — the checks `method=patching` itself makes
(`medinterp.methods.patching.check_pairs`). The gap filter needs the model's logits: run the patching cell
(docs/patching.md) for that. Prints one line per failing pair and the counts per set; exit 1 if any pair fails::

    python scripts/check_pairs.py                              # every packaged set with pairs, gemma3_270m
    python scripts/check_pairs.py age drugs --model smollm2_135m
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def tokenizer_for(model: str):
    """The tokenizer of ``conf/model/<model>.yaml``, from the model's cache folder (built on first use)."""
    from transformers import AutoTokenizer

    from medinterp.models import ModelSpec
    from medinterp.models.sources import materialize, smollm2_tokenizer_dir

    spec = ModelSpec.from_dict(yaml.safe_load((ROOT / "conf" / "model" / f"{model}.yaml").read_text()))
    folder = smollm2_tokenizer_dir() if spec.source == "tiny" else materialize(spec)
    return AutoTokenizer.from_pretrained(str(folder))


def main(argv: list[str] | None = None) -> int:
    from medinterp.methods.patching import check_pairs
    from medinterp.prompts import available_prompt_sets, load_prompt_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="*", help="packaged set names or paths (default: every packaged set)")
    parser.add_argument("--model", default="gemma3_270m", help="a conf/model name (default: gemma3_270m)")
    args = parser.parse_args(argv)
    tokenizer = tokenizer_for(args.model)
    failed = 0
    for name in args.sets or available_prompt_sets():
        ps = load_prompt_set(name)
        if not ps.pairs:
            continue
        kept, skipped = check_pairs(tokenizer, ps.pairs, on_length_mismatch="skip")
        for entry in skipped:
            print(f"  {ps.domain}/{entry['id']}: {entry['reason']}")
        print(f"{ps.domain}: {len(ps.pairs)} pairs, {len(kept)} pass, {len(skipped)} fail ({args.model})")
        failed += len(skipped)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
