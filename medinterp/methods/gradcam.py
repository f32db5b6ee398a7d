"""Grad-CAM on image patches per language-model layer (``method=gradcam``): where the model looks.

Each image prompt's map per block (medinterp/methods/gradcam_maps.py: attention to the image tokens times the
clamped gradient of the target logit, mean over heads, on the architecture's grid) is upsampled bilinearly onto
the item's image (medinterp/metrics/localization.py). Rows (block ``b`` at layer ``b + 1``, labeling ``all``, mean
over the prompts whose item has a box, bootstrap CI):

- ``energy_in_box``: the share of the upsampled map's mass inside the box, [0, 1] (a uniform map scores the
  box's share of the image);
- ``pointing_hit``: 1 when the map's maximum lies inside the box (the pointing game's hit rate).

A layer whose map is all zero for a prompt (no positive gradient) gives NaN there, noted in per_item.csv.
Figures: for the first ``n_figures`` prompts, the image with the map of up to 12 evenly spaced layers overlaid
and the box drawn. summary.json: the target, prompts, prompts with a box, the grid.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.methods.answer_inputs import AnswerExample, answer_lengths, cell_examples, encode
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.gradcam_maps import TARGETS, gradcam_tokens
from medinterp.metrics import finite_mean_with_ci
from medinterp.metrics.localization import energy_in_box, pointing_hit, upsample
from medinterp.models import ModelHandle
from medinterp.prompts import load_image
from medinterp.validation import check_int_settings

if TYPE_CHECKING:
    from medinterp.cell import Cell

MAX_PANELS = 12  # layers drawn per overlay figure


@dataclass
class CamWork:
    examples: list[AnswerExample]
    batch_size: int
    dropped: int
    passes: int  # backward passes per batch, the same for every batch (gradcam_maps.gradcam_tokens)

    @property
    def n_units(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def batch(self, i: int) -> list[AnswerExample]:
        return self.examples[i * self.batch_size:(i + 1) * self.batch_size]


@register_method("gradcam")
@dataclass(frozen=True)
class GradCam(Method):
    """Grad-CAM over image patches per layer (module docstring)."""

    target: str = "answer"
    max_answer_tokens: int = 8
    max_prompts: int | None = 32
    n_figures: int = 3
    n_boot: int = 200
    seed: int = 0
    modalities = ("image",)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise unknown_choice("gradcam target", self.target, TARGETS)
        check_int_settings("gradcam method", self, {"max_answer_tokens": 1, "n_figures": 0, "n_boot": 1, "max_prompts": 1},
                           nullable={"max_prompts": "all"})

    def prepare(self, cell: Cell) -> CamWork:
        if cell.handle.parts.vision is None:
            raise MedinterpError(f"method=gradcam needs a vision-language model; {cell.handle.name!r} has no vision "
                                 f"tower (tiny_llava, tiny_gemma3_vlm, llava15_7b, llava_med_v15_mistral_7b, medgemma_4b)")
        chosen = cell_examples(cell.prompt_set, cell.templates, None, self.seed)
        usable = [ex for ex in chosen if ex.answer or self.target == "question"]
        if not usable:
            raise MedinterpError(f"gradcam: no prompt of {cell.prompt_set.domain!r} has a reference answer "
                                 f"(target=answer); use target=question")
        usable = usable if self.max_prompts is None else usable[:self.max_prompts]
        longest = max(answer_lengths(cell.handle, usable)) if self.target == "answer" else 1
        passes = min(self.max_answer_tokens, longest)
        return CamWork(usable, cell.batch_size, len(chosen) - len([ex for ex in chosen if ex.answer or
                                                                    self.target == "question"]), passes)

    def run_unit(self, handle: ModelHandle, work: CamWork, i: int) -> np.ndarray:
        """Batch ``i``: maps (B, L, rows, cols) float32."""
        batch = encode(handle, work.batch(i), teacher_force=self.target == "answer").to(handle.device, handle.model.dtype)
        cams = gradcam_tokens(handle, batch, self.target, work.passes)
        return handle.parts.vision.grid.to_grid(cams.cpu()).numpy()

    def finish(self, handle: ModelHandle, work: CamWork, results: Sequence[np.ndarray]) -> MethodResult:
        maps = np.concatenate(results)  # (N, L, rows, cols)
        n, n_layers = maps.shape[:2]
        scores = {"energy_in_box": np.full((n, n_layers), np.nan), "pointing_hit": np.full((n, n_layers), np.nan)}
        notes = np.full((n, n_layers), "", dtype=object)
        for j, ex in enumerate(work.examples):
            if ex.box is None:
                notes[j] = "no box"
                continue
            width, height = load_image(ex.image).size
            for b in range(n_layers):
                pixels = upsample(torch.as_tensor(maps[j, b]), width, height)
                scores["energy_in_box"][j, b] = energy_in_box(pixels, ex.box)
                scores["pointing_hit"][j, b] = pointing_hit(pixels, ex.box)
                notes[j, b] = "" if math.isfinite(scores["pointing_hit"][j, b]) else "all-zero map"
        ci = dict(n_boot=self.n_boot, seed=self.seed)
        measurements, items = [], []
        boxed = sum(ex.box is not None for ex in work.examples)
        for metric, values in scores.items():
            for b in range(n_layers):
                note = "no item has a box" if not boxed else ""
                measurements.append(Measurement("all", metric, b + 1, finite_mean_with_ci(values[:, b], **ci), note))
                items += [ItemValue("all", metric, b + 1, ex.item_id, ex.template_id, float(values[j, b]), notes[j, b])
                          for j, ex in enumerate(work.examples)]
        grid = handle.parts.vision.grid
        figures = {f"gradcam_{ex.item_id}_{ex.template_id}": _overlay(ex, maps[j], f"{handle.name} · {ex.item_id} · "
                                                                                    f"{ex.template_id} · target={self.target}")
                   for j, ex in enumerate(work.examples[:self.n_figures])}
        summary = {"target": self.target, "n_prompts": n, "n_with_box": boxed, "dropped_without_answer": work.dropped,
                   "grid": [grid.rows, grid.cols, grid.prefix]}
        return MethodResult(measurements, artifacts={"summary": summary, "figures": figures}, items=items)


def _overlay(example: AnswerExample, maps: np.ndarray, title: str):
    """A zero-argument callable drawing the image with the maps (L, rows, cols) of evenly spaced layers overlaid."""
    def draw():
        import matplotlib.pyplot as plt
        from matplotlib.patches import Rectangle

        image = load_image(example.image)
        width, height = image.size
        layers = sorted(set(np.linspace(0, maps.shape[0] - 1, min(MAX_PANELS, maps.shape[0])).round().astype(int)))
        cols = min(len(layers), 4)
        rows = -(-len(layers) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, b in zip(axes.ravel(), layers):
            ax.imshow(image, cmap="gray")
            ax.imshow(upsample(torch.as_tensor(maps[b]), width, height).numpy(), cmap="jet", alpha=0.45)
            if example.box is not None:
                x0, y0, x1, y1 = example.box
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1))
            ax.set_title(f"layer {b + 1}", fontsize=8)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return fig
    return draw
