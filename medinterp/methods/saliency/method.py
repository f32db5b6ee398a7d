"""The saliency method (``method=saliency``): prompts, batches, gradient statistics and the rows.

See :mod:`medinterp.methods.saliency` for the loss, the groups and the two modes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medinterp.capture.limits import check_context, check_positive_int, memory_errors, token_batches
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.saliency.grads import MODES, REDUCTIONS, GradPlan, batch_stats, grad_plan
from medinterp.methods.saliency.images import encode_image_targets, image_examples, image_pixels
from medinterp.methods.targets import encode_targets, saliency_examples, select_examples
from medinterp.methods.tokens import MODALITIES as TOKEN_MODALITIES, check_token_setting, token_type
from medinterp.metrics import finite_mean_with_ci
from medinterp.models import ModelHandle
from medinterp.validation import check_int_settings

if TYPE_CHECKING:
    from medinterp.cell import Cell

log = logging.getLogger(__name__)

# Saliency's own padded-token budget per forward + backward pass (within the run's batch_tokens): a backward pass
# keeps every block's activations, ~L x (10 d + 4 I) values per token (medinterp/distributed/plan.py), where the
# other methods' forwards keep one block's output at a time. 256 tokens are 8 prompts of 32 tokens (its old batch).
SALIENCY_BATCH_TOKENS = 256


@dataclass
class SaliencyWork:
    """What :meth:`WeightSaliency.prepare` decides: the prompts, the parameter groups, the batch starts."""

    chosen: list
    skipped: list[str]
    plan: GradPlan
    starts: list[int]
    ends: list[int]  # batch i is chosen[starts[i]:ends[i]]
    limits: tuple[int, int | None, str]  # (batch_size, token budget, its setting), for the out-of-memory message
    tokens: str | None = None  # image prompt sets: the token type whose gradients count; None: a text set

    @property
    def n_units(self) -> int:
        return len(self.starts)


@register_method("saliency")
@dataclass(frozen=True)
class WeightSaliency(Method):
    """Per-block weight-gradient saliency of the medical term's log-likelihood (see :mod:`medinterp.methods.saliency`)."""

    reduction: str = "abs"  # "abs": mean |∂L/∂w|; "abs_wxg": mean |w·∂L/∂w|
    max_prompts: int | None = 48  # per run, spread evenly over items and templates; None = all
    n_boot: int = 200
    seed: int = 0
    mode: str = "exact"  # "exact": per-prompt gradients; "batch_approx": |gradient of the batch-mean loss|
    batch_tokens: int | None = SALIENCY_BATCH_TOKENS  # its own padded-token budget, within the run's (None: the run's)
    tokens: str | None = None  # image prompt sets: image | text | all (None: all); text sets: None, text or all
    modalities = TOKEN_MODALITIES  # image sets: the answer's loss (medinterp/methods/saliency/images.py)

    def __post_init__(self) -> None:
        check_token_setting("saliency", self.tokens)
        if self.reduction not in REDUCTIONS:
            raise unknown_choice("saliency reduction", self.reduction, REDUCTIONS)
        if self.mode not in MODES:
            raise unknown_choice("saliency mode", self.mode, MODES)
        check_int_settings("saliency method", self, {"n_boot": 1, "max_prompts": 1}, nullable={"max_prompts": "all"})
        check_positive_int("method.batch_tokens", self.batch_tokens, allow_none=True)

    def prepare(self, cell: Cell) -> SaliencyWork:
        """The chosen prompts, cut into batches (deterministic: the same on every rank)."""
        handle, prompt_set, templates = cell.handle, cell.prompt_set, cell.templates
        tokens = token_type("saliency", self.tokens, prompt_set)
        if tokens is None:
            per_template = {t: encode_targets(handle.tokenizer, saliency_examples(prompt_set, t)) for t in templates}
        else:  # an image set: the reference answer's loss after image + question
            per_template = {t: encode_image_targets(handle, image_examples(prompt_set, t)) for t in templates}
        skipped = [t for t, ex in per_template.items() if not ex]
        chosen = select_examples(per_template, self.max_prompts, self.seed)
        if len(chosen) == 0:
            why = "every term slot starts its template?" if tokens is None else "no item has a reference answer?"
            raise MedinterpError(f"saliency: no usable prompts in domain {prompt_set.domain!r} for templates "
                                 f"{list(templates)} ({why})")
        # batches in the chosen order (not length-sorted: batch_approx averages within a batch) within the cell's
        # batch_size and the smaller token budget (its own or the run's); every prompt + target must fit the context
        lengths = [len(tok.ids) - 1 for _, tok in chosen]  # the last target token is predicted, never fed
        name = lambda i: f"item {chosen[i][0].item_id!r}, template {chosen[i][0].template_id!r}"  # noqa: E731
        check_context(lengths, handle.max_positions, name, handle.name)
        own = self.batch_tokens is not None and (cell.batch_tokens is None or self.batch_tokens <= cell.batch_tokens)
        limits = ((cell.batch_size, self.batch_tokens, "method.batch_tokens") if own
                  else (cell.batch_size, cell.batch_tokens, "batch_tokens"))
        batches = token_batches(lengths, *limits[:2], sort=False, name=name, tokens_setting=limits[2])
        return SaliencyWork(chosen, skipped, grad_plan(handle.parts), [int(b[0]) for b in batches],
                            [int(b[-1]) + 1 for b in batches], limits, tokens)

    def run_unit(self, handle: ModelHandle, work: SaliencyWork, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Batch ``i``: per-prompt losses (B,) and per-group (units, 2) gradient sums."""
        part = work.chosen[work.starts[i]:work.ends[i]]
        batch_size, batch_tokens, setting = work.limits
        pixels = None if work.tokens is None else image_pixels(handle, [ex for ex, _ in part])
        with memory_errors(batch_size, batch_tokens, handle.device, prefix="saliency method: ", tokens_setting=setting):
            return batch_stats(handle, work.plan, [tok for _, tok in part], self.reduction, self.mode, pixels,
                               work.tokens)

    def finish(self, handle: ModelHandle, work: SaliencyWork,
               results: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]]) -> MethodResult:
        """Statistics over every batch's result (in batch order)."""
        loss = np.concatenate([r[0] for r in results])
        sums = {g: np.concatenate([r[1][g] for r in results]) for g in results[0][1]}  # group → (n_units, 2)
        result = self._result(handle, work.plan, work.chosen, loss, sums, work.skipped)
        if work.tokens is not None:
            result.tokens = result.artifacts["summary"]["tokens"] = work.tokens
        return result

    def _result(self, handle: ModelHandle, plan: GradPlan, chosen, loss: np.ndarray, sums: dict[str, np.ndarray],
                skipped: list[str]) -> MethodResult:
        """Rows, per-prompt artifacts and the run summary from the accumulated sums."""
        n_layers = handle.n_layers
        mean = {g: sums[g][:, 0] / plan.n_params[g] for g in sums}
        series: dict[tuple[str, int], np.ndarray] = {}
        norms = []
        for b in range(n_layers):
            a, m = f"attn.{b}", f"mlp.{b}"
            series[("grad_attn", b + 1)] = mean[a]
            series[("grad_mlp", b + 1)] = mean[m]
            series[("grad_block", b + 1)] = (sums[a][:, 0] + sums[m][:, 0]) / (plan.n_params[a] + plan.n_params[m])
            norms.append(float(np.sqrt(sums[a][:, 1] + sums[m][:, 1]).mean()))
        series[("grad_embed", 0)] = mean["embed"]
        if not plan.tied:
            series[("grad_unembed", n_layers + 1)] = mean["unembed"]
        measurements = [Measurement("all", metric, layer, finite_mean_with_ci(v, n_boot=self.n_boot, seed=self.seed))
                        for (metric, layer), v in series.items()]
        measurements.append(Measurement("all", "loss", -1, finite_mean_with_ci(loss, n_boot=self.n_boot, seed=self.seed)))
        log.info("saliency %s: gradient L2 norm of attention+MLP weights by block (mean over %s): first %.3g, "
                 "last %.3g, max at block %d", handle.name, "prompts" if self.mode == "exact" else "batches",
                 norms[0], norms[-1], int(np.argmax(norms)))
        summary = {"tied_embeddings": plan.tied, "mode": self.mode, "reduction": self.reduction,
                   "n_prompts": len(chosen), "n_units": int(len(mean["embed"])),
                   "skipped_templates": skipped, "mean_target_tokens": float(np.mean([t.n_target for _, t in chosen])),
                   "n_params": plan.n_params, "n_loop_params": len(plan.loop), "grad_norm_by_block": norms}
        per_prompt = {"item_id": [e.item_id for e, _ in chosen], "template_id": [e.template_id for e, _ in chosen],
                      "loss": loss.tolist()}
        if self.mode == "exact":
            per_prompt.update({f"{metric}@{layer}": v.tolist() for (metric, layer), v in series.items()})
        return MethodResult(measurements, artifacts={"summary": summary, "per_prompt": per_prompt},
                            items=self._item_values(chosen, loss, series))

    def _item_values(self, chosen, loss: np.ndarray, series: dict[tuple[str, int], np.ndarray]) -> list[ItemValue]:
        """Per prompt: ``loss`` (layer −1) and, in exact mode, every group's saliency per layer. In
        ``batch_approx`` mode the group values are per batch, not per prompt, and are not written."""
        keys = [(e.item_id, e.template_id) for e, _ in chosen]
        out = [ItemValue("all", "loss", -1, item, template, float(v)) for (item, template), v in zip(keys, loss)]
        if self.mode == "exact":
            for (metric, layer), values in series.items():
                out.extend(ItemValue("all", metric, layer, item, template, float(v))
                           for (item, template), v in zip(keys, values))
        return out
