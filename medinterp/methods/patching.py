"""Activation patching (``method=patching``): which layers carry the fact that separates a contrast pair.

Per pair (methods.md 1.4; Marinescu et al. ICLR 2026; Zhang & Nanda 2023, arXiv 2309.16042;
Heimersheim & Nanda 2024, arXiv 2404.15255):

- LD = logit(r) − logit(r′) at the last prompt position, r = the clean answer's token, r′ = the
  corrupted answer's token (logit difference, not probability, which saturates);
- P = (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt), *denoising*: one clean activation is
  written into the corrupted run. P ≈ 1: that site restores the clean answer; P ≈ 0: it does nothing.
  P is reported raw, unclipped.

Pairs come from ``prompt_set.pairs`` (symmetric token replacement: the two prompts differ by one
swapped term). Each is checked with the model's tokenizer first:

- clean and corrupted must tokenize to the same length (else an error naming the pair, or, with
  ``on_length_mismatch="skip"``, a skipped pair);
- each answer must add exactly one token to its prompt, and the two tokens must differ (else skipped).

Skipped pairs are logged and listed with their reason in ``artifacts["summary"]["skipped_pairs"]``.
Pairs whose gap |LD_clean − LD_corrupt| is below ``min_gap`` are filtered (small denominators make P
explode; P far above 1 usually means exactly that) and counted in ``n_filtered`` / ``filtered_pairs``.
The filter runs before the patched forwards, which then run on the kept pairs only (the filtered
pairs' ``ld_patched`` artifact entries are NaN).

Rows (labeling ``pairs``): ``p_<site>`` per layer, the mean P over kept pairs with a bootstrap CI,
and at layer −1 ``ld_clean`` and ``ld_corrupt`` (means over the same pairs). The engine and the sites
are described in :mod:`medinterp.methods.patching_engine`.

Image prompt sets (a VLM; ``tokens=image|text|all``, medinterp/methods/tokens.py): their pairs ask one question of
two images (synthetic_xray: the opacity in one lung vs the other); each run gets its own image inputs, and
``tokens`` restricts every site to the image positions, the text positions or neither. The definitions
(read-out 0, resid_diff, what ``text`` covers) are in :mod:`medinterp.methods.patching_images`; rows and
summary.json carry ``tokens`` (empty for text sets, whose tables are unchanged). Templates and labelings do not apply:
pairs are complete prompts. The seed draws the bootstrap and, with ``pair_fraction < 1``, the random
subset of pairs used (:func:`sample_pairs`; the robustness experiment's seed axis).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from medinterp.capture import encode
from medinterp.capture.images import require_vision
from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, check_context, memory_errors, token_batches
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.patching_engine import (
    DEFAULT_SITES,
    ENGINES,
    SITES,
    PairBatch,
    _logit_diff,
    patch_pairs,
    reference_logit_diff,
    site_layers,
)
from medinterp.methods.patching_images import EMPTY_SITES, encode_side, image_pair_groups, token_positions
from medinterp.methods.tokens import MODALITIES as TOKEN_MODALITIES, check_token_setting, token_type
from medinterp.metrics import finite_mean_with_ci
from medinterp.models import ModelHandle
from medinterp.prompts import ContrastPair
from medinterp.validation import is_int, is_number

if TYPE_CHECKING:
    from medinterp.cell import Cell

log = logging.getLogger(__name__)

LENGTH_POLICIES = ("error", "skip")
LABELING = "pairs"


# --------------------------------------------------------------------------------------------------
# Pair checks (per tokenizer)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckedPair:
    """A pair that passed the tokenizer checks, with its two answer token ids."""

    pair: ContrastPair
    clean_token: int
    corrupt_token: int
    n_tokens: int  # prompt length in tokens (clean and corrupted alike)


def answer_token(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str) -> tuple[int | None, str]:
    """The single token ``answer`` adds to ``prompt``, or ``(None, reason)`` when it is not exactly one."""
    base = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + answer)["input_ids"]
    if full[:len(base)] != base:
        return None, f"appending {answer!r} re-tokenizes the end of the prompt"
    extra = len(full) - len(base)
    if extra != 1:
        return None, f"answer {answer!r} is {extra} tokens, not 1"
    return int(full[-1]), ""


def check_pairs(tokenizer: PreTrainedTokenizerBase, pairs: Sequence[ContrastPair],
                on_length_mismatch: str = "error") -> tuple[list[CheckedPair], list[dict[str, str]]]:
    """Split ``pairs`` into usable ones and skipped ``{"id", "reason"}`` entries (see the module docstring).

    A length mismatch raises a :class:`MedinterpError` naming the pair unless ``on_length_mismatch="skip"``.
    """
    if on_length_mismatch not in LENGTH_POLICIES:
        raise unknown_choice("on_length_mismatch", on_length_mismatch, LENGTH_POLICIES)
    kept, skipped = [], []
    for pair in pairs:  # an image pair's question is the same text twice: its checks are the answers'
        n_clean = len(tokenizer(pair.clean)["input_ids"])
        n_corrupt = len(tokenizer(pair.corrupted)["input_ids"])
        if n_clean != n_corrupt:
            reason = f"clean and corrupted prompts are {n_clean} and {n_corrupt} tokens long"
            if on_length_mismatch == "error":
                raise MedinterpError(f"pair {pair.id!r}: {reason}; patching needs equal lengths "
                                     f"(fix the pair, or set method.on_length_mismatch=skip)")
            skipped.append({"id": pair.id, "reason": reason})
            continue
        clean_tok, why_clean = answer_token(tokenizer, pair.clean, pair.clean_answer)
        corrupt_tok, why_corrupt = answer_token(tokenizer, pair.corrupted, pair.corrupted_answer)
        if clean_tok is None or corrupt_tok is None:
            reason = "; ".join(f"{which}: {why}" for which, why in (("clean", why_clean), ("corrupted", why_corrupt)) if why)
            skipped.append({"id": pair.id, "reason": reason})
        elif clean_tok == corrupt_tok:
            skipped.append({"id": pair.id, "reason": f"both answers are token {clean_tok}"})
        else:
            kept.append(CheckedPair(pair, clean_tok, corrupt_tok, n_clean))
    return kept, skipped


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------
def patching_score(ld_patched: np.ndarray, ld_clean: np.ndarray, ld_corrupt: np.ndarray) -> np.ndarray:
    """P = (LD_patched − LD_corrupt) / (LD_clean − LD_corrupt), raw and unclipped, broadcast over leading axes.

    1 = the patch restores the clean logit difference, 0 = no effect. Unbounded: a small denominator
    (filter it first) or an overshooting site gives |P| ≫ 1.
    """
    return (np.asarray(ld_patched) - ld_corrupt) / (np.asarray(ld_clean) - ld_corrupt)


def _check_logits(handle: ModelHandle, batch: PairBatch, ours: float) -> float:
    """|LD from our last-position head − LD from the model's own forward| for one prompt; warns if large."""
    ref = reference_logit_diff(handle, batch.clean, batch.answer_ids)
    diff = abs(ours - ref)
    if diff > 0.05 + 0.01 * abs(ref):
        log.warning("patching: logit difference %.4f from the backbone + LM head differs from the model's own %.4f; "
                    "this architecture may scale its logits in a way medinterp does not know", ours, ref)
    return diff


def sample_pairs(pairs: Sequence[CheckedPair], fraction: float, seed: int) -> list[CheckedPair]:
    """A seeded random ``fraction`` of ``pairs`` (at least 2, rounded to nearest), in their original order.

    The robustness experiment (conf/experiment/robustness.yaml) uses it so that each seed measures the
    patching curve on a different subset of pairs: how much the curve moves is how much it rests on
    particular pairs. ``fraction=1`` returns every pair.
    """
    if fraction >= 1 or len(pairs) <= 2:
        return list(pairs)
    k = min(len(pairs), max(2, round(fraction * len(pairs))))
    chosen = np.sort(np.random.default_rng(seed).choice(len(pairs), size=k, replace=False))
    return [pairs[i] for i in chosen]


def image_pair_batches(handle: ModelHandle, pairs: Sequence[CheckedPair], tokens: str, batch_size: int,
                       batch_tokens: int | None = DEFAULT_BATCH_TOKENS) -> list[tuple[list[int], PairBatch]]:
    """:func:`pair_batches` for image pairs: each side encoded by the processor with its own image, and the
    positions of ``tokens`` (:func:`~medinterp.methods.patching_images.token_positions`)."""
    out = []
    for idx in image_pair_groups(handle, [p.n_tokens for p in pairs], [p.pair.id for p in pairs], batch_size,
                                 batch_tokens):
        chosen = [pairs[i].pair for i in idx]
        clean = encode_side(handle, [(p.clean, p.clean_image) for p in chosen])
        corrupt = encode_side(handle, [(p.corrupted, p.corrupted_image) for p in chosen])
        answers = torch.tensor([[pairs[i].clean_token, pairs[i].corrupt_token] for i in idx])
        out.append((idx, PairBatch(clean, corrupt, answers, token_positions(clean, tokens))))
    return out


def pair_batches(handle: ModelHandle, pairs: Sequence[CheckedPair], batch_size: int,
                 batch_tokens: int | None = DEFAULT_BATCH_TOKENS) -> list[tuple[list[int], PairBatch]]:
    """Pairs batched by token length (less padding), at most ``batch_size`` pairs and ``batch_tokens``
    padded tokens per batch, each pair checked against the model's context (medinterp/capture/limits.py):
    ``(indices into pairs, PairBatch)`` per batch."""
    lengths = [p.n_tokens for p in pairs]
    name = lambda i: f"patching pair {pairs[i].pair.id!r}"  # noqa: E731
    check_context(lengths, handle.max_positions, name, handle.name)
    out = []
    for batch in token_batches(lengths, batch_size, batch_tokens, name=name):
        idx = [int(i) for i in batch]
        clean = encode(handle.tokenizer, [pairs[i].pair.clean for i in idx])
        corrupt = encode(handle.tokenizer, [pairs[i].pair.corrupted for i in idx])
        answers = torch.tensor([[pairs[i].clean_token, pairs[i].corrupt_token] for i in idx])
        out.append((idx, PairBatch(clean, corrupt, answers)))
    return out


@dataclass
class PatchingWork:
    """What :meth:`ActivationPatching.prepare` decides: the summary so far, the checked pairs, their batches."""

    summary: dict[str, Any]
    checked: list[CheckedPair]
    batches: list[tuple[list[int], PairBatch]]
    limits: tuple[int, int | None]  # the cell's (batch_size, batch_tokens), for the out-of-memory message
    tokens: str | None = None  # image sets: the token type patched (image | text | all); None: a text set

    @property
    def n_units(self) -> int:
        return len(self.batches)


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------
@register_method("patching")
@dataclass(frozen=True)
class ActivationPatching(Method):
    """Denoising activation patching per layer and site. Settings are fixed at construction."""

    needs_items: ClassVar[bool] = False  # pairs are whole prompts: a patching-only prompt set is enough

    sites: tuple[str, ...] = DEFAULT_SITES  # any of SITES; resid_all is a check, not a default
    min_gap: float = 1.0  # pairs with |LD_clean − LD_corrupt| below this (logits) are filtered
    n_boot: int = 200
    seed: int = 0
    engine: str = "fast"  # fast (prefix reuse) | naive (a full forward per site and layer)
    on_length_mismatch: str = "error"  # error | skip
    pair_fraction: float = 1.0  # < 1: a seeded random subset of the checked pairs (robustness across seeds)
    tokens: str | None = None  # image prompt sets: patch image | text | all positions (null: all); text sets: null

    modalities = TOKEN_MODALITIES  # text pairs and image pairs (patched by token type)

    def __post_init__(self) -> None:
        check_token_setting("patching", self.tokens)
        sites = (self.sites,) if isinstance(self.sites, str) else tuple(self.sites)
        if not sites:
            raise MedinterpError(f"patching method: sites must list at least one of {', '.join(SITES)}")
        for site in sites:
            if site not in SITES:
                raise unknown_choice("patching site", site, SITES)
        if len(set(sites)) != len(sites):
            raise MedinterpError(f"patching method: sites must not repeat; got {list(sites)}")
        object.__setattr__(self, "sites", sites)
        if not is_number(self.min_gap) or not 0 <= self.min_gap < math.inf:
            raise MedinterpError(f"patching method: min_gap must be a finite number >= 0; got {self.min_gap!r}")
        if not is_int(self.n_boot) or self.n_boot < 1:
            raise MedinterpError(f"patching method: n_boot must be a positive int; got {self.n_boot!r}")
        if self.engine not in ENGINES:
            raise unknown_choice("patching engine", self.engine, ENGINES)
        if self.on_length_mismatch not in LENGTH_POLICIES:
            raise unknown_choice("on_length_mismatch", self.on_length_mismatch, LENGTH_POLICIES)
        f = self.pair_fraction
        if not is_number(f) or not 0 < f <= 1:
            raise MedinterpError(f"patching method: pair_fraction must be a number in (0, 1]; got {f!r}")

    def prepare(self, cell: Cell) -> PatchingWork:
        """Check the pairs, batch them, and run the logit guard on the first batch (deterministic: every rank
        does the same, so every rank runs the same forward passes)."""
        handle, prompt_set, limits = cell.handle, cell.prompt_set, (cell.batch_size, cell.batch_tokens)
        tokens = token_type("patching", self.tokens, prompt_set)
        summary: dict[str, Any] = {"n_pairs": len(prompt_set.pairs), "engine": self.engine, "sites": list(self.sites),
                                   "min_gap": self.min_gap}
        if tokens is not None:
            require_vision(handle, "the prompt set")
            summary["tokens"] = tokens
        if not prompt_set.pairs:
            return PatchingWork({"n_pairs": 0, "note": "domain has no contrast pairs"}, [], [], limits, tokens)
        checked, skipped = check_pairs(handle.tokenizer, prompt_set.pairs, self.on_length_mismatch)
        for entry in skipped:
            log.warning("patching: skipping pair %r: %s", entry["id"], entry["reason"])
        summary.update(n_skipped=len(skipped), skipped_pairs=skipped)
        if not checked:
            summary.update(n_filtered=0, filtered_pairs=[], n_kept=0, note="no pair passed the tokenizer checks")
            return PatchingWork(summary, [], [], limits, tokens)
        if self.pair_fraction < 1:
            checked = sample_pairs(checked, self.pair_fraction, self.seed)
            summary.update(pair_fraction=self.pair_fraction, sampled_pairs=[c.pair.id for c in checked])
        batches = (pair_batches(handle, checked, *limits) if tokens is None else
                   image_pair_batches(handle, checked, tokens, *limits))
        _, first = batches[0]
        with torch.inference_mode():  # once per run: our two-row LM head against the model's own logits
            ours = float(_logit_diff(handle, first.clean.to(handle.device), first.answer_ids.to(handle.device))[0])
        summary["logit_check_abs_diff"] = _check_logits(handle, first, ours)
        return PatchingWork(summary, checked, batches, limits, tokens)

    def run_unit(self, handle: ModelHandle, work: PatchingWork, i: int) -> dict[str, Any]:
        """Batch ``i``: LDs of its pairs (clean, corrupted, patched per site), and forward counts."""
        idx, batch = work.batches[i]
        with memory_errors(*work.limits, handle.device, prefix="patching method: "):
            out = patch_pairs(handle, batch, self.sites, self.engine, min_gap=self.min_gap)
        return {"idx": list(idx), "ld_clean": out.ld_clean.cpu().numpy(), "ld_corrupt": out.ld_corrupt.cpu().numpy(),
                "ld_patched": {site: v.cpu().numpy() for site, v in out.ld_patched.items()},
                "n_forwards": out.n_forwards, "n_block_calls": out.n_block_calls}

    def finish(self, handle: ModelHandle, work: PatchingWork, results: Sequence[dict[str, Any]]) -> MethodResult:
        """Scores and rows from every batch's LDs (any order: each result carries its pair indices)."""
        summary, checked = dict(work.summary), work.checked
        tokens = work.tokens or ""
        if not checked:
            return MethodResult([], {"summary": summary}, tokens=tokens)
        n, n_layers = len(checked), handle.n_layers
        ld_clean, ld_corrupt = np.zeros(n), np.zeros(n)
        ld_patched = {s: np.zeros((len(site_layers(s, n_layers)), n)) for s in self.sites}
        for r in results:
            idx = r["idx"]
            ld_clean[idx], ld_corrupt[idx] = r["ld_clean"], r["ld_corrupt"]
            for site, values in r["ld_patched"].items():
                ld_patched[site][:, idx] = values
        check = summary.pop("logit_check_abs_diff", math.nan)
        counts = {"n_forwards": sum(r["n_forwards"] for r in results),
                  "n_block_calls": sum(r["n_block_calls"] for r in results), "logit_check_abs_diff": check}
        gap = ld_clean - ld_corrupt
        keep = (np.abs(gap) >= self.min_gap) & (gap != 0)
        ids = [c.pair.id for c in checked]
        filtered = [i for i, k in zip(ids, keep) if not k]
        if filtered:
            log.warning("patching: %d of %d pairs have |LD_clean - LD_corrupt| < %g and are filtered: %s",
                        len(filtered), len(ids), self.min_gap, ", ".join(filtered))
        # two different things (docs/patching.md): the corrupted prompt favours the clean answer more than the
        # clean prompt does (gap < 0: P's denominator is negative), and the model prefers the corrupted answer
        # on the clean prompt (LD_clean < 0: it gets the clean fact wrong)
        summary.update(n_filtered=len(filtered), filtered_pairs=filtered, n_kept=int(keep.sum()),
                       n_negative_gap=int((gap[keep] < 0).sum()),
                       n_clean_prefers_corrupted=int((ld_clean[keep] < 0).sum()), **counts)
        scores = {site: patching_score(ld_patched[site][:, keep], ld_clean[keep], ld_corrupt[keep]) for site in self.sites}
        artifacts = {"summary": summary, "pair_ids": ids, "kept": keep, "ld_clean": ld_clean, "ld_corrupt": ld_corrupt,
                     "ld_patched": ld_patched, "p": scores}
        items = self._item_values(n_layers, ids, keep, gap, ld_clean, ld_corrupt, scores)
        if not keep.any():
            summary["note"] = f"every pair has |LD_clean - LD_corrupt| < min_gap={self.min_gap}"
            return MethodResult([], artifacts, items, tokens)
        rows = self._measurements(n_layers, ld_clean[keep], ld_corrupt[keep], scores, work.tokens)
        return MethodResult(rows, artifacts, items, tokens)

    # -- pieces ----------------------------------------------------------------------------------------
    def _item_values(self, n_layers: int, ids: list[str], keep: np.ndarray, gap: np.ndarray, ld_clean: np.ndarray,
                     ld_corrupt: np.ndarray, scores: dict[str, np.ndarray]) -> list[ItemValue]:
        """Per pair: ``ld_clean``/``ld_corrupt`` at layer −1 (a filtered pair's with a note saying so), and P per
        site and layer for the kept pairs (the values the rows average)."""
        out = []
        for i, pair_id in enumerate(ids):
            note = "" if keep[i] else f"filtered: |LD_clean - LD_corrupt| = {abs(gap[i]):.3g} < min_gap={self.min_gap}"
            out.append(ItemValue(LABELING, "ld_clean", -1, pair_id, "", float(ld_clean[i]), note))
            out.append(ItemValue(LABELING, "ld_corrupt", -1, pair_id, "", float(ld_corrupt[i]), note))
        kept_ids = [pair_id for pair_id, k in zip(ids, keep) if k]
        for site, p in scores.items():
            for row, layer in enumerate(site_layers(site, n_layers)):
                out.extend(ItemValue(LABELING, f"p_{site}", layer, pair_id, "", float(p[row, j]))
                           for j, pair_id in enumerate(kept_ids))
        return out

    def _measurements(self, n_layers: int, ld_clean: np.ndarray, ld_corrupt: np.ndarray,
                      scores: dict[str, np.ndarray], tokens: str | None = None) -> list[Measurement]:
        """Rows: ld_clean / ld_corrupt at layer −1, then p_<site> per reported layer (a site with no position of
        the token type to patch says so in ``note``: its P is 0 by definition)."""
        out = [Measurement(LABELING, "ld_clean", -1, finite_mean_with_ci(ld_clean, n_boot=self.n_boot, seed=self.seed)),
               Measurement(LABELING, "ld_corrupt", -1, finite_mean_with_ci(ld_corrupt, n_boot=self.n_boot, seed=self.seed))]
        for site, p in scores.items():
            note = (f"patches nothing: an image pair's {site} has no {tokens} positions (P = 0)"
                    if (site, tokens) in EMPTY_SITES else "")
            for row, layer in enumerate(site_layers(site, n_layers)):
                out.append(Measurement(LABELING, f"p_{site}", layer,
                                       finite_mean_with_ci(p[row], n_boot=self.n_boot, seed=self.seed), note))
        return out
