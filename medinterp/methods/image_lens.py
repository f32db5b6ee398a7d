"""The logit lens on image tokens (``method=image_lens``): what each image patch's residual stream decodes to.

For every image prompt (an image set's question; medinterp/methods/answer_inputs.py) and every read-out ``l``
(0 = the input of block 0, where the projected image features enter; ``l`` = the output of block ``l - 1``,
read-out ``n_layers`` the raw last-block output, before the final norm), each image token's read-out is
decoded as the model decodes its last one (medinterp/capture/lens.py ``lens_logits``: final norm **once**,
the unembedding, the family's soft cap). Rows (labeling ``all``, layer = read-out, mean over prompts with a
bootstrap CI; nostalgebraist 2020, applied to image tokens as in the LLaVA-Med interpretation study):

- ``entropy``: the mean entropy (nats) of the decoded distributions over the image's patches;
- ``inbox_hit_rate`` / ``outbox_hit_rate``: among the patches whose centre lies inside / outside the item's
  box (medinterp/metrics/localization.py), the fraction whose top-5 tokens hold one of the item's label words
  (answer_inputs.token_hits); items without a box are left out (the row's ``n`` says how many count).

summary.json (``top_tokens``): per read-out, the most frequent top-1 tokens over all image tokens of all
prompts with their counts (the study saw early image tokens decode to junk this way). Figures: one grid per
item for the first ``n_figures`` prompts, a panel per read-out (the patches' entropy; the top-1 token written
in each patch when the grid is at most 8 x 8).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from medinterp.capture.lens import lens_logits
from medinterp.errors import MedinterpError
from medinterp.hooks import StopForward, forward_hooks, forward_pre_hooks, output_tensor
from medinterp.methods.answer_inputs import AnswerExample, cell_examples, encode, forward, token_hits
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.metrics import finite_mean_with_ci
from medinterp.metrics.localization import patches_in_box
from medinterp.models import ModelHandle
from medinterp.prompts import load_image
from medinterp.validation import check_int_settings

if TYPE_CHECKING:
    from medinterp.cell import Cell

TOP = 5  # tokens per patch checked for a label word
ROW_CHUNK = 512  # patch read-outs decoded at once (the (rows, vocabulary) logits are the memory cost)


@dataclass
class LensWork:
    examples: list[AnswerExample]
    batch_size: int

    @property
    def n_units(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def batch(self, i: int) -> list[AnswerExample]:
        return self.examples[i * self.batch_size:(i + 1) * self.batch_size]


def image_readouts(handle: ModelHandle, batch) -> torch.Tensor:
    """(B, n_layers + 1, n_tokens, D): every read-out at each row's image tokens (grid order), no final norm."""
    parts, pos = handle.parts, batch.image_positions  # pos (B, n_tokens)
    rows = torch.arange(pos.shape[0], device=pos.device)[:, None]
    seen: dict[int, torch.Tensor] = {}

    def entering(_module, args, kwargs):
        seen[0] = (args[0] if args else kwargs["hidden_states"])[rows, pos]

    def leaving(layer: int):
        def hook(_module, _inputs, output):
            seen[layer + 1] = output_tensor(output)[rows, pos]
            if layer + 1 == parts.n_layers:
                raise StopForward  # the final norm and head run on the image tokens only, below
        return hook

    with torch.no_grad(), forward_pre_hooks([(parts.layers[0], entering)], with_kwargs=True), \
            forward_hooks([(block, leaving(b)) for b, block in enumerate(parts.layers)]):
        forward(handle, batch)
    return torch.stack([seen[l] for l in range(parts.n_layers + 1)], 1)


def n_chunks(rows: int) -> int:
    """The lens calls that decode ``rows`` read-outs, :data:`ROW_CHUNK` at a time."""
    return -(-rows // ROW_CHUNK)


@torch.no_grad()
def decode_readouts(handle: ModelHandle, readouts: torch.Tensor, k: int = TOP,
                    chunks: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (..., ) float32 and top-``k`` ids (..., k) of the lens distributions of ``readouts`` (..., D).

    The rows are decoded :data:`ROW_CHUNK` at a time, in at least ``chunks`` calls of the final norm and head (empty
    ones after the last row): under ZeRO-3 each call gathers those modules' weights from every rank, so every
    rank makes as many calls per batch as the largest batch needs, whatever the size of its own."""
    flat = readouts.reshape(-1, readouts.shape[-1])
    pieces = list(flat.split(ROW_CHUNK))
    ent, top = [], []
    for chunk in pieces + [flat[:0]] * (chunks - len(pieces)):
        logp = torch.log_softmax(lens_logits(handle.parts, chunk), -1)  # (n, V) float32
        ent.append(-(logp.exp() * logp).sum(-1))
        top.append(logp.topk(k, -1).indices)
    shape = readouts.shape[:-1]
    return torch.cat(ent).reshape(shape), torch.cat(top).reshape(*shape, k)


@register_method("image_lens")
@dataclass(frozen=True)
class ImageLens(Method):
    """The logit lens on image-token positions (module docstring)."""

    max_prompts: int | None = 32
    n_figures: int = 3
    n_top_tokens: int = 10
    n_boot: int = 200
    seed: int = 0
    modalities = ("image",)

    def __post_init__(self) -> None:
        check_int_settings("image_lens method", self, {"n_figures": 0, "n_top_tokens": 1, "n_boot": 1, "max_prompts": 1},
                           nullable={"max_prompts": "all"})

    def prepare(self, cell: Cell) -> LensWork:
        if cell.handle.parts.vision is None:
            raise MedinterpError(f"method=image_lens needs a vision-language model; {cell.handle.name!r} has no vision "
                                 f"tower (tiny_llava, tiny_gemma3_vlm, llava15_7b, llava_med_v15_mistral_7b, medgemma_4b)")
        return LensWork(cell_examples(cell.prompt_set, cell.templates, self.max_prompts, self.seed), cell.batch_size)

    def run_unit(self, handle: ModelHandle, work: LensWork, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i``: entropy (B, L + 1, n_tokens) and top-5 ids (B, L + 1, n_tokens, 5)."""
        batch = encode(handle, work.batch(i), teacher_force=False).to(handle.device, handle.model.dtype)
        rows = min(work.batch_size, len(work.examples)) * (handle.n_layers + 1) * handle.parts.vision.grid.n_tokens
        ent, top = decode_readouts(handle, image_readouts(handle, batch), chunks=n_chunks(rows))
        return ent.cpu().numpy(), top.cpu().numpy().astype(np.int64)

    def finish(self, handle: ModelHandle, work: LensWork, results: Sequence[tuple[np.ndarray, np.ndarray]]) -> MethodResult:
        ent = np.concatenate([r[0] for r in results])  # (N, L + 1, n)
        top = np.concatenate([r[1] for r in results])  # (N, L + 1, n, 5)
        grid = handle.parts.vision.grid
        names: dict[int, str] = {}

        def name(t: int) -> str:
            if t not in names:
                names[t] = handle.tokenizer.decode([int(t)])
            return names[t]

        n, n_read = ent.shape[:2]
        hit = np.zeros(top.shape[:3], dtype=bool)  # (N, L + 1, n): a label word among the patch's top 5
        inside = np.zeros((n, grid.rows * grid.cols), dtype=bool)
        boxed = np.zeros(n, dtype=bool)
        for j, ex in enumerate(work.examples):
            hit[j] = np.vectorize(lambda t: token_hits(name(int(t)), ex.words))(top[j]).any(-1)
            if ex.box is not None:
                width, height = load_image(ex.image).size
                inside[j] = patches_in_box(grid.rows, grid.cols, ex.box, width, height).numpy().ravel()
                boxed[j] = True
        patch_hit = hit[:, :, grid.prefix:]  # (N, L + 1, rows * cols)
        ci = dict(n_boot=self.n_boot, seed=self.seed)
        measurements, items, table = [], [], {}
        for l in range(n_read):
            per_item = {"entropy": ent[:, l].mean(-1)}
            with np.errstate(invalid="ignore", divide="ignore"):
                per_item["inbox_hit_rate"] = np.where(boxed, (patch_hit[:, l] & inside).sum(-1) / inside.sum(-1), np.nan)
                per_item["outbox_hit_rate"] = np.where(boxed, (patch_hit[:, l] & ~inside).sum(-1) / (~inside).sum(-1),
                                                       np.nan)
            for metric, values in per_item.items():
                note = "no item has a box" if metric != "entropy" and not boxed.any() else ""
                measurements.append(Measurement("all", metric, l, finite_mean_with_ci(values, **ci), note))
                items += [ItemValue("all", metric, l, ex.item_id, ex.template_id, float(v),
                                    "" if np.isfinite(v) else "no box" if not has else "no patch centre on this side")
                          for ex, v, has in zip(work.examples, values, boxed)]
            counts = Counter(top[:, l, :, 0].ravel().tolist()).most_common(self.n_top_tokens)
            table[str(l)] = [[name(t), c] for t, c in counts]
        figures = {f"lens_grid_{ex.item_id}_{ex.template_id}": _figure(ent[j], top[j, :, :, 0], grid, name,
                                                                       f"{handle.name} · {ex.item_id} · {ex.template_id}")
                   for j, ex in enumerate(work.examples[:self.n_figures])}
        summary = {"n_prompts": n, "n_with_box": int(boxed.sum()), "grid": [grid.rows, grid.cols, grid.prefix],
                   "top_tokens": table}
        return MethodResult(measurements, artifacts={"summary": summary, "figures": figures}, items=items)


def _figure(ent, top1, grid, name, title):
    """A zero-argument callable drawing one item's panels: per read-out the patches' entropy (and top-1 token)."""
    def draw():
        import matplotlib.pyplot as plt

        n = ent.shape[0]
        cols = min(n, 6)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
        for l, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if l >= n:
                continue
            ax.imshow(grid.to_grid(torch.as_tensor(ent[l])).numpy(), cmap="viridis")
            ax.set_title(f"read-out {l}", fontsize=8)
            if grid.rows <= 8 and grid.cols <= 8:
                tokens = grid.to_grid(torch.as_tensor(top1[l])).numpy()
                for r in range(grid.rows):
                    for c in range(grid.cols):
                        ax.text(c, r, name(int(tokens[r, c])).strip()[:6], ha="center", va="center", fontsize=5,
                                color="white")
        fig.suptitle(f"{title}: lens entropy per patch (nats)", fontsize=9)
        fig.tight_layout()
        return fig
    return draw
