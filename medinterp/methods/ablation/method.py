"""The ablation method (``method=ablation``): prompts, per-batch lesions, the judge and the rows.

See :mod:`medinterp.methods.ablation` for the procedure and the rows.
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.images import encode_images, image_texts, require_vision
from medinterp.capture.limits import memory_errors, prompt_batches, prompt_names
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, identity_at, replace_by_identity
from medinterp.judges import DeterministicJudge, JudgeItem, Verdict
from medinterp.methods.ablation.generate import decode_answers, greedy_generate
from medinterp.models.padding import padding_side
from medinterp.methods.ablation.judging import JudgeCoverage, constant, spearman, unsent_note
from medinterp.methods.ablation.lesion import LesionScorer, lesion_head
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.tokens import MODALITIES as TOKEN_MODALITIES, check_token_setting, token_type
from medinterp.metrics import Estimate, finite_mean_with_ci
from medinterp.models import ModelHandle
from medinterp.prompts import PromptSet
from medinterp.prompts.schema import Prompt
from medinterp.validation import is_int, is_number

if TYPE_CHECKING:
    from medinterp.cell import Cell

log = logging.getLogger(__name__)


def select_prompts(prompt_set: PromptSet, templates: Sequence[str], max_prompts: int | None, seed: int) -> list[Prompt]:
    """Up to ``max_prompts`` prompts (items × templates), spread evenly over the items.

    Items are visited in a seeded random order, round after round; each visit takes one of the item's
    not yet used templates (also in seeded order), so every item gets floor(m/n) or ceil(m/n) prompts.
    ``None`` (or a number >= all prompts) keeps every prompt. Returned template-major, in item order.
    """
    per_item: dict[str, list[Prompt]] = {item.id: [] for item in prompt_set.items}
    for template in templates:
        for prompt in prompt_set.prompts(template):
            per_item[prompt.item_id].append(prompt)
    everything = [p for t in templates for p in prompt_set.prompts(t)]
    if max_prompts is None or max_prompts >= len(everything):
        return everything
    rng = np.random.default_rng(seed)
    ids = [prompt_set.items[i].id for i in rng.permutation(len(prompt_set.items))]
    order = {i: rng.permutation(len(per_item[i])).tolist() for i in ids}
    chosen: set[tuple[str, str]] = set()
    for round_ in range(len(templates)):
        for i in ids:
            if len(chosen) < max_prompts and round_ < len(order[i]):
                p = per_item[i][order[i][round_]]
                chosen.add((p.item_id, p.template_id))
    return [p for p in everything if (p.item_id, p.template_id) in chosen]


def _not_rank_zero() -> bool:
    """True on the ranks other than 0 of a process group (their progress bars stay off)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0


# ---------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------
@dataclass
class AblationWork:
    """What :meth:`LayerAblation.prepare` decides: the prompts, the blocks, the batches and the LM head."""

    prompts: list[Prompt]
    texts: list[str]
    blocks: list[int]
    batches: list[np.ndarray]  # prompt indices per batch, length-sorted
    head: tuple[torch.Tensor, torch.Tensor | None] | None  # the fast scorer's (W, b); None: the model's own head
    limits: tuple[int, int | None]  # the cell's (batch_size, batch_tokens), for the out-of-memory message
    tokens: str | None = None  # image sets: the positions lesioned (image | text | all); None: a text set

    @property
    def n_units(self) -> int:
        return len(self.batches)


@register_method("ablation")
@dataclass(frozen=True)
class LayerAblation(Method):
    """Per-block ablation with KL, Δlog p and a judge. Settings are fixed at construction.

    ``max_new_tokens`` defaults to 8 to keep the CPU default map short; the paper generated 64 tokens on GPUs.
    ``fast`` turns on the exact shortcuts of :class:`LesionScorer` (False: the plain reference computation).
    ``judge`` is an object from :func:`medinterp.judges.make_judge` (the runner builds it from
    ``conf/judge/<name>.yaml``); None means the deterministic judge. ``layers`` are block indices
    (0..n_layers-1, negatives count from the end); None ablates every block.

    ``tokens`` (image prompt sets; medinterp/methods/tokens.py) chooses the positions at which a block is
    lesioned: ``image`` (the image's grid tokens), ``text`` (every other position: the prompt's text and
    special tokens and the answer, prompt and generated) or ``all`` (null: every position, the plain block
    ablation). A restricted lesion keeps the block running and sets its output to its input only at those
    positions (:func:`medinterp.hooks.identity_at`); the other positions still attend to every position's
    keys/values of the block (computed from the block's input, which is unchanged). ``image`` and ``text``
    partition the sequence, so ``all`` is exactly the unrestricted ablation. KL, Δlog p and the judge score
    the answer as for text sets; the intact answer is generated from the image and its prompt (the template's
    text, the processor's placeholder in place of ``<image>``, no chat template: the prompts umap reads).
    """

    max_prompts: int | None = 32
    max_new_tokens: int = 8
    n_boot: int = 200
    seed: int = 0
    layers: tuple[int, ...] | None = None
    judge: Any = None
    fast: bool = True
    min_judge_coverage: float = 0.8  # a block's judge_score is NaN when the judge answered less of what it was sent
    tokens: str | None = None  # image prompt sets: the positions lesioned, image | text | all (null: all)

    modalities = TOKEN_MODALITIES  # text and image prompt sets (an image set lesioned by token type)

    def __post_init__(self) -> None:
        check_token_setting("ablation", self.tokens)
        for name, low, optional in (("max_prompts", 1, True), ("max_new_tokens", 1, False), ("n_boot", 1, False)):
            value = getattr(self, name)
            if optional and value is None:
                continue
            if not is_int(value) or value < low:
                raise MedinterpError(f"ablation method: {name} must be an int >= {low}"
                                     f"{' or null' if optional else ''}; got {value!r}")
        if self.layers is not None:
            layers = [self.layers] if is_int(self.layers) else list(self.layers)
            if not layers or not all(map(is_int, layers)):
                raise MedinterpError(f"ablation method: layers must be null or a non-empty list of block indices; "
                                     f"got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(int(v) for v in layers))  # numpy ints as plain ints
        cover = self.min_judge_coverage
        if not is_number(cover) or not 0 <= cover <= 1:
            raise MedinterpError(f"ablation method: min_judge_coverage must be a number in [0, 1]; got {cover!r}")
        if self.judge is None:
            object.__setattr__(self, "judge", DeterministicJudge())
        elif not (hasattr(self.judge, "score") and hasattr(self.judge, "needs_text")):
            raise MedinterpError(f"ablation method: judge must be a judge object (medinterp.judges.make_judge); "
                                 f"got {type(self.judge).__name__} {self.judge!r}")

    def blocks(self, n_layers: int) -> list[int]:
        """The block indices to ablate for a model with ``n_layers`` blocks (checked, de-duplicated, sorted)."""
        if self.layers is None:
            return list(range(n_layers))
        bad = [v for v in self.layers if not -n_layers <= v < n_layers]
        if bad:
            raise MedinterpError(f"ablation method: layers {bad} out of range for a model with {n_layers} blocks; "
                                 f"valid: 0..{n_layers - 1}")
        return sorted({v % n_layers for v in self.layers})

    def prepare(self, cell: Cell) -> AblationWork:
        """The prompts, cut into length-sorted batches, and the LM head the fast scorer reads (every rank)."""
        handle, prompt_set, templates = cell.handle, cell.prompt_set, cell.templates
        tokens = token_type("ablation", self.tokens, prompt_set)
        blocks = self.blocks(handle.n_layers)
        prompts = select_prompts(prompt_set, templates, self.max_prompts, self.seed)
        if not prompts:
            raise MedinterpError(f"ablation method: no prompts for domain {prompt_set.domain!r} "
                                 f"and templates {list(templates)}")
        texts = [p.text for p in prompts]
        # similar lengths share a batch (less padding); every prompt plus its answer (and its image's tokens) must fit
        # the context and the cell's batch limits
        extra_tokens = self.max_new_tokens
        if tokens is not None:
            require_vision(handle, "the prompt set")
            extra_tokens += handle.parts.vision.grid.n_tokens
        batches = prompt_batches(handle, texts if tokens is None else image_texts(handle.processor, prompts),
                                 cell.batch_size, cell.batch_tokens, prompt_names(prompts), extra_tokens=extra_tokens)
        return AblationWork(prompts, texts, blocks, batches, lesion_head(handle) if self.fast else None,
                            (cell.batch_size, cell.batch_tokens), tokens)

    @staticmethod
    def _inputs(handle: ModelHandle, work: AblationWork, idx: np.ndarray
                ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor | None]:
        """A LEFT-padded batch: input_ids, attention_mask (B, T), the other model inputs (image prompts:
        pixel_values [, token_type_ids]) and the (B, T) image-token mask (None for text prompts)."""
        if work.tokens is None:
            enc = handle.tokenizer([work.texts[j] for j in idx], padding=True, return_tensors="pt").to(handle.device)
            return enc["input_ids"], enc["attention_mask"], {}, None
        with padding_side(handle.processor.tokenizer, "left"):
            batch = encode_images(handle, [work.prompts[j] for j in idx]).to(handle.device, handle.model.dtype)
        extra = {k: v for k, v in batch.inputs.items() if k not in ("input_ids", "attention_mask")}
        return batch.inputs["input_ids"], batch.inputs["attention_mask"], extra, batch.token_types == 1

    @staticmethod
    def _lesioned(handle: ModelHandle, block: int, tokens: str | None, image_mask: torch.Tensor | None):
        """The context in which ``block`` is lesioned at the positions of ``tokens`` (class docstring)."""
        if tokens in (None, "all"):
            return replace_by_identity(handle.parts, block)
        positions = image_mask if tokens == "image" else ~image_mask  # (B, T): the prompt's positions lesioned
        return forward_hooks([(handle.parts.layers[block], identity_at(positions, tail=tokens == "text"))])

    def run_unit(self, handle: ModelHandle, work: AblationWork, i: int) -> dict[str, Any]:
        """Batch ``i``: its intact answers and, per block, each prompt's KL, Δlog p (and lesioned answer)."""
        idx, blocks = work.batches[i], work.blocks
        needs_text = bool(self.judge.needs_text)
        ablated: list[list[str | None]] = [[None] * len(idx) for _ in blocks]
        with memory_errors(*work.limits, handle.device, prefix="ablation method: ",
                           detail="; the log-probs are (batch, answer, vocab) float32"), \
                padding_side(handle.tokenizer, "left"):
            ids, mask, extra, image_mask = self._inputs(handle, work, idx)
            ans, ans_mask = greedy_generate(handle, ids, mask, self.max_new_tokens, extra=extra)
            scorer = LesionScorer(handle, ids, mask, ans, ans_mask, work.head, self.fast, extra)
            bar = tqdm(blocks, desc=f"ablation batch {i + 1}/{work.n_units}", unit="block", leave=False,
                       disable=_not_rank_zero())
            for k, block in enumerate(bar):
                with self._lesioned(handle, block, work.tokens, image_mask):
                    scorer.lesion(block)
                    if needs_text:
                        a_ids, a_mask = greedy_generate(handle, ids, mask, self.max_new_tokens, extra=extra)
                        ablated[k] = decode_answers(handle.tokenizer, a_ids, a_mask)
            kl, dlogp = scorer.results()
        return {"idx": np.asarray(idx), "kl": kl, "dlogp": dlogp, "ablated": ablated,
                "clean": decode_answers(handle.tokenizer, ans, ans_mask), "answer_tokens": ans_mask.sum(1).cpu().numpy()}

    def finish(self, handle: ModelHandle, work: AblationWork, results: Sequence[dict[str, Any]]) -> MethodResult:
        """The judge's verdicts and the statistics over every batch's result (rank 0)."""
        prompts, blocks, texts, n = work.prompts, work.blocks, work.texts, len(work.prompts)
        kl, dlogp = np.full((len(blocks), n), np.nan), np.full((len(blocks), n), np.nan)
        clean: list[str] = [""] * n
        ablated: list[list[str | None]] = [[None] * n for _ in blocks]
        answer_tokens = np.zeros(n, dtype=int)
        for r in results:
            idx = r["idx"]
            kl[:, idx], dlogp[:, idx], answer_tokens[idx] = r["kl"], r["dlogp"], r["answer_tokens"]
            for j, i in enumerate(idx):
                clean[i] = r["clean"][j]
                for k in range(len(blocks)):
                    ablated[k][i] = r["ablated"][k][j]
        items = [JudgeItem(texts[i], clean[i], ablated[k][i], float(kl[k, i]), float(dlogp[k, i]))
                 for k in range(len(blocks)) for i in range(n)]
        verdicts = self.judge.score(items)
        assert len(verdicts) == len(items), (len(verdicts), len(items))
        scores = np.array([v.value for v in verdicts]).reshape(len(blocks), n)
        cover = JudgeCoverage.of(verdicts, blocks, n)
        summary = self._summary(prompts, blocks, kl, scores, verdicts, answer_tokens, cover)
        if work.tokens is not None:
            summary["tokens"] = work.tokens
        return MethodResult(self._measurements(blocks, kl, dlogp, scores, cover, bool(self.judge.needs_text)),
                            artifacts={"summary": summary,
                                       "ablation_items": self._item_records(prompts, blocks, items, verdicts)},
                            items=self._item_values(prompts, blocks, kl, dlogp, scores, verdicts),
                            tokens=work.tokens or "")

    # -- pieces ----------------------------------------------------------------------------------------
    def _judge_score(self, scores: np.ndarray, cover: JudgeCoverage, k: int) -> Measurement:
        """Block ``k``'s judge_score: the mean with CI, or NaN when the judge answered too little of it."""
        layer, sent, answered = cover.layers[k], int(cover.sent[k]), int(cover.answered[k])
        if cover.withheld(self.min_judge_coverage)[k]:
            note = (f"judge coverage {cover.fraction[k]:.2f} < {self.min_judge_coverage:.2f} "
                    f"({answered} of {sent} sent items answered)")
            return Measurement("all", "judge_score", layer, Estimate(math.nan, math.nan, math.nan, answered), note)
        return Measurement("all", "judge_score", layer, finite_mean_with_ci(scores[k], n_boot=self.n_boot, seed=self.seed),
                           "" if sent else unsent_note(scores.shape[1]))

    def _measurements(self, blocks: list[int], kl: np.ndarray, dlogp: np.ndarray, scores: np.ndarray,
                      cover: JudgeCoverage, llm: bool) -> list[Measurement]:
        out = []
        n = kl.shape[1]
        for k, block in enumerate(blocks):
            layer = block + 1  # block b is reported at read-out b + 1 (methods/base.py)
            out.append(Measurement("all", "kl", layer, finite_mean_with_ci(kl[k], n_boot=self.n_boot, seed=self.seed)))
            out.append(Measurement("all", "dlogp", layer, finite_mean_with_ci(dlogp[k], n_boot=self.n_boot, seed=self.seed)))
            out.append(self._judge_score(scores, cover, k))
            if llm:
                out.append(Measurement("all", "judge_missing", layer, constant(np.isnan(scores[k]).sum(), n)))
                out.append(Measurement("all", "judge_coverage", layer, constant(cover.fraction[k], cover.sent[k]),
                                       "" if cover.sent[k] else unsent_note(n)))
                rho, pairs = spearman(kl[k], scores[k])
                out.append(Measurement("all", "judge_agreement", layer, constant(rho, pairs)))
        return out

    def _summary(self, prompts: list[Prompt], blocks: list[int], kl: np.ndarray, scores: np.ndarray,
                 verdicts: list[Verdict], answer_tokens: np.ndarray, cover: JudgeCoverage) -> dict[str, Any]:
        judge = self.judge
        missing = [v.missing_reason or "" for v in verdicts if v.missing]
        withheld = cover.layers[cover.withheld(self.min_judge_coverage)].tolist()
        sent, answered = int(cover.sent.sum()), int(cover.answered.sum())
        degraded = answered < sent
        summary: dict[str, Any] = {
            "n_prompts": len(prompts), "blocks": blocks, "max_new_tokens": self.max_new_tokens,
            "mean_answer_tokens": float(answer_tokens.mean()), "judge": getattr(judge, "name", type(judge).__name__),
            "judge_items": len(verdicts), "judge_missing": len(missing),
            "judge_missing_reasons": dict(Counter(missing).most_common(5)),
            "judge_cached": sum(v.cached for v in verdicts),
            "judge_sent": sent, "judge_answered": answered,
            "judge_coverage": {str(layer): float(f) for layer, f in zip(cover.layers, cover.fraction)},
            "min_judge_coverage": float(self.min_judge_coverage), "judge_withheld_layers": withheld,
            "degraded": degraded,
            "generation": "greedy, KV cache (the skipped block's layer gets placeholder keys/values)",
        }
        if degraded:  # the runner logs these last (runners/map.py)
            summary["warnings"] = [f"judge answered {answered}/{sent} items (coverage {answered / sent:.2f}); "
                                   f"judge_score is NaN for {len(withheld)} of {len(blocks)} layers"]
        if judge.needs_text:
            rho, pairs = spearman(kl, scores)
            summary.update(rubric_version=getattr(judge, "rubric_version", None),
                           judge_model=getattr(judge, "cache_model", None), judge_agreement=rho,
                           judge_agreement_pairs=pairs)
        return summary

    @staticmethod
    def _item_values(prompts: list[Prompt], blocks: list[int], kl: np.ndarray, dlogp: np.ndarray, scores: np.ndarray,
                     verdicts: list[Verdict]) -> list[ItemValue]:
        """Per (ablated block, prompt): ``kl``, ``dlogp`` and ``judge_score`` (per_item.csv). A prompt the judge
        gave no score carries the verdict's reason as its note (the row's mean is over the scored prompts)."""
        out, n = [], len(prompts)
        for k, block in enumerate(blocks):
            for i, p in enumerate(prompts):
                layer, verdict = block + 1, verdicts[k * n + i]
                note = "" if np.isfinite(scores[k, i]) else f"no judge score: {verdict.missing_reason or 'missing'}"
                out += [ItemValue("all", "kl", layer, p.item_id, p.template_id, float(kl[k, i])),
                        ItemValue("all", "dlogp", layer, p.item_id, p.template_id, float(dlogp[k, i])),
                        ItemValue("all", "judge_score", layer, p.item_id, p.template_id, float(scores[k, i]), note)]
        return out

    @staticmethod
    def _item_records(prompts: list[Prompt], blocks: list[int], items: list[JudgeItem],
                      verdicts: list[Verdict]) -> list[dict[str, Any]]:
        """One JSON-able record per (block, prompt): answers, metrics and the verdict (for inspection)."""
        n = len(prompts)
        return [{"layer": blocks[k // n] + 1, "item_id": prompts[k % n].item_id, "template_id": prompts[k % n].template_id,
                 "clean_answer": it.clean_answer, "ablated_answer": it.ablated_answer, "kl": it.kl, "dlogp": it.dlogp,
                 "score": v.score, "rationale": v.rationale, "missing_reason": v.missing_reason}
                for k, (it, v) in enumerate(zip(items, verdicts))]
