"""Knowledge and multimodal neurons (``method=neurons``): which MLP neurons of each block carry the answer.

Per prompt (image sets: the question and its reference answer; text sets: the template before the term and the
term, medinterp/methods/answer_inputs.py) every neuron of every block is scored for the answer's first token
(medinterp/methods/neuron_attribution.py: ``attribution=grad_x_act | integrated_gradients``, over the
``tokens=image|text|all`` positions). A block's neurons are ranked by their mean score over the prompts; the
``top_k`` first are reported in summary.json (``top_neurons``: neuron, mean score, its output row's
``decode_k`` top tokens through the unembedding). Rows (block ``b`` at layer ``b + 1``, labeling ``all``):

- ``topk_mass``: per prompt, ``sum_{top-k} max(s_i, 0) / sum_i |s_i|`` (share of the block's absolute
  attribution that the top-k carry in the answer's favour; [0, 1]), mean over prompts with a bootstrap CI;
- ``label_hit_fraction``: the fraction of the top-k neurons whose decoded tokens hold a label word of the
  cell (answer_inputs.token_hits; n = k, no CI);
- ``suppress_rel`` / ``amplify_rel``: the relative change ``(p' - p) / p`` of the answer token's probability
  when the block's top-k neurons are set to 0 / multiplied by ``amplify`` at the selected positions
  (Dai et al. 2022 report both), mean over prompts with a bootstrap CI;
- ``answer_prob`` (layer -1): the intact model's probability of the answer token.

The interventions need the ranking over all prompts, so they run in ``finish`` (``finish_runs_model``): with
``strategy=ddp`` the scores' batches are split over the ranks and the interventions are rank 0's alone; under
``strategy=zero3`` every forward is a collective, so every rank runs ``finish`` on the same broadcast scores and
rank 0 keeps the result (medinterp/run.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.methods.answer_inputs import TOKEN_SETS, AnswerExample, cell_examples, encode, token_hits
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.neuron_attribution import (ATTRIBUTIONS, decode_rows, down_projections, grad_x_act,
                                                  integrated_gradients, intervened_prob)
from medinterp.metrics import Estimate, finite_mean_with_ci
from medinterp.models import ModelHandle
from medinterp.validation import check_int_settings

if TYPE_CHECKING:
    from medinterp.cell import Cell


@dataclass
class NeuronWork:
    """The prompts with an answer, cut into batches of ``batch_size``."""

    examples: list[AnswerExample]
    batch_size: int
    dropped: int  # prompts without a reference answer

    @property
    def n_units(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def batch(self, i: int) -> list[AnswerExample]:
        return self.examples[i * self.batch_size:(i + 1) * self.batch_size]


@register_method("neurons")
@dataclass(frozen=True)
class Neurons(Method):
    """MLP neurons scored for the answer token (module docstring)."""

    finish_runs_model = True  # the interventions (class attribute, not a setting)
    attribution: str = "grad_x_act"
    steps: int = 20  # integrated gradients: Gauss-Legendre nodes
    tokens: str = "all"
    top_k: int = 10
    decode_k: int = 5
    amplify: float = 2.0
    max_prompts: int | None = 32
    n_boot: int = 200
    seed: int = 0
    modalities = ("text", "image")

    def __post_init__(self) -> None:
        if self.attribution not in ATTRIBUTIONS:
            raise unknown_choice("neurons attribution", self.attribution, ATTRIBUTIONS)
        if self.tokens not in TOKEN_SETS:
            raise unknown_choice("neurons tokens", self.tokens, TOKEN_SETS)
        check_int_settings("neurons method", self, {"steps": 1, "top_k": 1, "decode_k": 1, "n_boot": 1, "max_prompts": 1},
                           nullable={"max_prompts": "all"})

    def prepare(self, cell: Cell) -> NeuronWork:
        if self.tokens == "image" and cell.prompt_set.modality != "image":
            raise MedinterpError(f"neurons: tokens=image needs an image prompt set; {cell.prompt_set.domain!r} is text "
                                 f"(valid here: text, all)")
        down_projections(cell.handle)
        chosen = cell_examples(cell.prompt_set, cell.templates, None, self.seed)
        usable = [ex for ex in chosen if ex.answer]
        if not usable:
            raise MedinterpError(f"neurons: no prompt of {cell.prompt_set.domain!r} has a reference answer")
        usable = usable if self.max_prompts is None else usable[:self.max_prompts]
        return NeuronWork(usable, cell.batch_size, len(chosen) - len([ex for ex in chosen if ex.answer]))

    def _inputs(self, handle: ModelHandle, examples: Sequence[AnswerExample]):
        batch = encode(handle, examples).to(handle.device, handle.model.dtype)
        return batch, batch.mask(self.tokens), batch.first_answer()

    def run_unit(self, handle: ModelHandle, work: NeuronWork, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``i``: scores (B, L, F) and the intact answer probabilities (B,)."""
        batch, mask, target = self._inputs(handle, work.batch(i))
        if self.attribution == "grad_x_act":
            scores = grad_x_act(handle, batch, mask, target)
        else:
            scores = integrated_gradients(handle, batch, mask, target, self.steps)
        prob = intervened_prob(handle, batch, mask, target, 0, None, 1.0)
        return scores.cpu().numpy(), prob.float().cpu().numpy()

    def finish(self, handle: ModelHandle, work: NeuronWork, results: Sequence[tuple[np.ndarray, np.ndarray]]) -> MethodResult:
        scores = np.concatenate([r[0] for r in results])  # (N, L, F)
        prob = np.concatenate([r[1] for r in results])  # (N,)
        n, n_layers, _ = scores.shape
        k = min(self.top_k, scores.shape[2])
        top = np.argsort(-scores.mean(0), axis=1, kind="stable")[:, :k]  # (L, k)
        words = frozenset().union(*(ex.words for ex in work.examples))
        changes = self._interventions(handle, work, top)  # {"suppress_rel": (N, L), "amplify_rel": (N, L)}
        ci = dict(n_boot=self.n_boot, seed=self.seed)
        measurements, items, table = [], [], {}
        measurements.append(Measurement("all", "answer_prob", -1, finite_mean_with_ci(prob, **ci)))
        for b in range(n_layers):
            layer = b + 1
            s = scores[:, b]  # (N, F)
            mass = np.clip(np.take_along_axis(s, np.broadcast_to(top[b], (n, k)), 1), 0, None).sum(1) / \
                np.maximum(np.abs(s).sum(1), np.finfo(np.float64).tiny)
            decoded = decode_rows(handle, b, top[b].tolist(), self.decode_k)
            hits = [any(token_hits(t, words) for t in row) for row in decoded]
            note = "" if words else "no label words"
            measurements.append(Measurement("all", "topk_mass", layer, finite_mean_with_ci(mass, **ci)))
            measurements.append(Measurement("all", "label_hit_fraction", layer,
                                            Estimate(float(np.mean(hits)) if words else np.nan, np.nan, np.nan, k), note))
            for metric, values in changes.items():
                measurements.append(Measurement("all", metric, layer, finite_mean_with_ci(values[:, b], **ci)))
            for j, ex in enumerate(work.examples):
                items.append(ItemValue("all", "topk_mass", layer, ex.item_id, ex.template_id, float(mass[j])))
            mean = scores[:, b].mean(0)
            table[str(layer)] = [{"neuron": int(i), "score": float(mean[i]), "tokens": row, "label_hit": hit}
                                 for i, row, hit in zip(top[b], decoded, hits)]
        summary = {"attribution": self.attribution, "tokens": self.tokens, "n_prompts": n, "top_k": k,
                   "dropped_without_answer": work.dropped, "top_neurons": table,
                   "steps": self.steps if self.attribution == "integrated_gradients" else None}
        return MethodResult(measurements, artifacts={"summary": summary}, items=items)

    def _interventions(self, handle: ModelHandle, work: NeuronWork, top: np.ndarray) -> dict[str, np.ndarray]:
        """Relative answer-probability changes (N, L) with each block's top neurons suppressed / amplified."""
        out: dict[str, list[np.ndarray]] = {"suppress_rel": [], "amplify_rel": []}
        for i in range(work.n_units):
            batch, mask, target = self._inputs(handle, work.batch(i))
            p = intervened_prob(handle, batch, mask, target, 0, None, 1.0)
            for metric, factor in (("suppress_rel", 0.0), ("amplify_rel", self.amplify)):
                per_layer = [intervened_prob(handle, batch, mask, target, b, torch.as_tensor(top[b]), factor)
                             for b in range(handle.n_layers)]
                out[metric].append(((torch.stack(per_layer, 1) - p[:, None]) / p[:, None]).float().cpu().numpy())
        return {m: np.concatenate(v) for m, v in out.items()}
