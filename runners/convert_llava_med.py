"""Convert an original-layout LLaVA checkpoint (LLaVA-Med v1.5) into the transformers Llava layout.

    python runners/convert_llava_med.py SRC DST [--vision-tower CLIP_FOLDER] [--max-shard-size 5GB]

SRC: the released checkpoint folder (config.json with mm_vision_tower, mm_projector_type mlp2x_gelu, ...;
*.safetensors or pytorch_model*.bin; its tokenizer). DST: a new folder, then usable as
``model=llava_med_v15_mistral_7b model.path=DST``. --vision-tower: a Hugging Face CLIP folder
(openai/clip-vit-large-patch14-336), needed only when SRC holds no vision-tower weights; its config.json
also gives the tower's shape. The mapping: medinterp/models/llava_convert.py and docs/multimodal.md. A
folder that is not such a checkpoint, or an unknown projector type, stops with one line (exit status 2).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _common import user_errors

from medinterp.models.llava_convert import convert  # noqa: E402


@user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, help="original-layout LLaVA checkpoint folder")
    parser.add_argument("dst", type=Path, help="new folder for the transformers-layout copy")
    parser.add_argument("--vision-tower", type=Path, default=None, help="Hugging Face CLIP folder (if SRC has no tower)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    args = parser.parse_args()
    done = convert(args.src, args.dst, args.vision_tower, args.max_shard_size)
    print(f"wrote {done.folder}: {done.n_tensors} tensors, <image> token id {done.image_token_id}, vocabulary "
          f"{done.vocab_size} rows, vision tower from {done.tower_from}")


if __name__ == "__main__":
    main()
