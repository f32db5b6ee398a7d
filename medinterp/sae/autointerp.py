"""Auto-interpretation of SAE latents: an explanation per latent and its detection score.

Procedure (Bills et al. 2023, *Language models can explain neurons in language models*, OpenAI; Paulo et al.
2024, *Automatically Interpreting Millions of Features in Large Language Models*, arXiv 2410.13928):

1. Encode every context with the SAE's inference rule (:func:`encode_contexts`; only the tokens in
   ``Contexts.mask`` count). A context's activation for latent j is its largest activation over the context.
2. The contexts where j is active are ranked by that activation and cut into ``n_quantiles`` quantile bins;
   ``n_explain`` of them, spread evenly over the bins (so weak activations are seen, not only the top ones;
   Paulo et al. §3.1), go to the explainer with their activating tokens marked.
3. **Detection scoring** (Paulo et al. §3.3): held-out active contexts (disjoint from the explained ones, again
   spread over the quantiles) and as many contexts where j never fires, drawn at random, are shuffled and shown
   without marks with the explanation; the interpreter labels each one active or not. The score is the
   **balanced accuracy** ½ (TPR + TNR): 0.5 = chance, 1 = the explanation tells the contexts apart perfectly.

Sampling is seeded per latent (``seed``, latent index), so a latent's contexts do not depend on which other
latents are interpreted. Outcome per latent (``status``): ``ok``; ``skipped: <why>`` when the data cannot score
it (never active, too few active contexts, active in every context); ``failed: <step>: <why>`` when the
interpreter failed (a missing explanation, or any missing detection label). Only ``ok`` latents have a
score; the summary reports their mean with its CI and counts the others, so a failing judge is visible and
never averaged away.

Shapes: contexts (n_ctx, ctx_len) tokens, residual activations (n_ctx, ctx_len, d), codes (n_ctx, ctx_len, m)
stored sparse (:class:`LatentCodes`: an L0 of k per token keeps k·n_ctx·ctx_len entries, not m·n_ctx·ctx_len).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.errors import MedinterpError
from medinterp.metrics.bootstrap import Estimate, finite_mean_with_ci
from medinterp.sae.contexts import Contexts
from medinterp.sae.interpreters import DetectItem, Example, ExplainItem, Interpreter, top_tokens
from medinterp.sae.model import SparseAutoencoder
from medinterp.validation import is_int


@dataclass(frozen=True)
class LatentCodes:
    """Sparse latent activations of (n_ctx, ctx_len) contexts: the nonzero entries, sorted by latent.

    ``starts[j]:starts[j + 1]`` are latent j's entries (``ctx``, ``pos``, ``value``)."""

    n_ctx: int
    ctx_len: int
    n_latents: int
    ctx: np.ndarray  # (nnz,) int64
    pos: np.ndarray  # (nnz,) int64
    latent: np.ndarray  # (nnz,) int64
    value: np.ndarray  # (nnz,) float32
    starts: np.ndarray = field(init=False)  # (n_latents + 1,)

    def __post_init__(self) -> None:
        order = np.lexsort((self.pos, self.ctx, self.latent))
        for name in ("ctx", "pos", "latent", "value"):
            object.__setattr__(self, name, np.asarray(getattr(self, name))[order])
        object.__setattr__(self, "starts", np.searchsorted(self.latent, np.arange(self.n_latents + 1)))

    @classmethod
    def from_dense(cls, codes: Any) -> LatentCodes:
        """From dense (n_ctx, ctx_len, m) activations (zeros dropped)."""
        codes = np.asarray(codes, dtype=np.float32)
        if codes.ndim != 3:
            raise MedinterpError(f"LatentCodes.from_dense: codes must be (n_ctx, ctx_len, m); got shape {codes.shape}")
        c, p, j = np.nonzero(codes)
        return cls(*codes.shape, c, p, j, codes[c, p, j])

    def dense(self, j: int) -> np.ndarray:
        """Latent j's activations (n_ctx, ctx_len) float32."""
        out = np.zeros((self.n_ctx, self.ctx_len), dtype=np.float32)
        a, b = self.starts[j], self.starts[j + 1]
        out[self.ctx[a:b], self.pos[a:b]] = self.value[a:b]
        return out


@torch.no_grad()
def encode_contexts(sae: SparseAutoencoder, contexts: Contexts, batch_contexts: int = 32) -> LatentCodes:
    """The SAE's inference codes of every context, stored sparse; tokens outside ``contexts.mask`` are zero."""
    n_ctx, ctx_len = contexts.shape
    d = sae.config.d
    if contexts.activations.shape[2] != d:
        raise MedinterpError(f"encode_contexts: activations have width {contexts.activations.shape[2]}, the SAE reads "
                             f"width {d}")
    parts: list[tuple[np.ndarray, ...]] = []
    device = sae.W_enc.device
    for a in tqdm(range(0, n_ctx, batch_contexts), desc="SAE codes", unit="batch", leave=False):
        b = min(a + batch_contexts, n_ctx)
        x = torch.as_tensor(np.asarray(contexts.activations[a:b]) if not torch.is_tensor(contexts.activations)
                            else contexts.activations[a:b]).to(device)
        f = sae.encode(x.reshape(-1, d)).reshape(b - a, ctx_len, -1)  # (B, T, m)
        if contexts.mask is not None:
            f = f * torch.as_tensor(np.asarray(contexts.mask[a:b]), device=device)[..., None].to(f.dtype)
        c, p, j = torch.nonzero(f, as_tuple=True)
        parts.append(((c + a).cpu().numpy(), p.cpu().numpy(), j.cpu().numpy(), f[c, p, j].float().cpu().numpy()))
    ctx, pos, lat, val = (np.concatenate([part[i] for part in parts]) if parts else np.zeros(0) for i in range(4))
    return LatentCodes(n_ctx, ctx_len, sae.config.n_latents, ctx.astype(np.int64), pos.astype(np.int64),
                       lat.astype(np.int64), val.astype(np.float32))


@dataclass(frozen=True)
class InterpConfig:
    """Sampling settings (defaults after Paulo et al. 2024: 10 quantiles, balanced held-out sets)."""

    n_quantiles: int = 10
    n_explain: int = 20  # active contexts shown to the explainer
    n_detect: int = 20  # held-out active contexts scored; as many never-active contexts are added
    detect_batch: int = 10  # contexts per detection request
    top_tokens: int = 5  # tokens listed per latent in the table (all its active contexts)
    seed: int = 0
    batch_contexts: int = 32  # contexts encoded at once

    def __post_init__(self) -> None:
        for name in ("n_quantiles", "n_explain", "n_detect", "detect_batch", "top_tokens", "batch_contexts"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise MedinterpError(f"InterpConfig: {name} must be an int >= 1; got {value!r}")


def stratified(order: np.ndarray, n: int, n_quantiles: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` items of ``order`` (ranked by activation, strongest first) spread over ``n_quantiles`` bins of equal
    size: each bin gives its share (``np.array_split`` of n), at random within the bin; a bin too small to give
    its share leaves the rest to be drawn at random from the other items."""
    n = min(n, len(order))
    bins = [b for b in np.array_split(order, min(n_quantiles, len(order))) if len(b)]
    quotas = [len(q) for q in np.array_split(np.arange(n), len(bins))] if bins else []
    picked = [rng.permutation(b)[:q] for b, q in zip(bins, quotas)]
    chosen = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    short = n - len(chosen)
    if short:
        rest = np.setdiff1d(order, chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, short, replace=False)])
    return chosen.astype(np.int64)


@dataclass
class _Plan:
    """One latent's samples: explained contexts, held-out contexts in shown order with their true labels."""

    latent: int
    acts: np.ndarray  # (n_ctx, ctx_len)
    explain: np.ndarray
    heldout: np.ndarray
    truth: np.ndarray  # (len(heldout),) 1 = active


@dataclass(frozen=True)
class LatentInterpretation:
    """One latent's row: explanation, detection score (balanced accuracy) and the data behind it."""

    latent: int
    status: str  # ok | skipped: <why> | failed: <step>: <why>
    explanation: str | None
    detection: float  # balanced accuracy ½(TPR + TNR); NaN unless status is ok
    tpr: float
    tnr: float
    n_active: int  # contexts where the latent fires
    frequency: float  # n_active / n_ctx
    max_activation: float
    top_tokens: str  # by summed activation over all its active contexts, " | "-joined
    n_explain: int
    n_detect_active: int
    n_detect_inactive: int
    cached: bool = False  # every interpreter answer for it came from the cache

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class InterpResult:
    """Per-latent interpretations and the summary (the mean detection score over ``ok`` latents only)."""

    interpreter: str
    latents: list[LatentInterpretation]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(row) for row in self.latents]

    def detection(self, n_boot: int = 200, seed: int = 0) -> Estimate:
        """Mean detection score of the ``ok`` latents with a bootstrap CI (n = their count)."""
        return finite_mean_with_ci([r.detection for r in self.latents if r.ok], n_boot=n_boot, seed=seed)

    def summary(self) -> dict[str, Any]:
        est = self.detection()
        kinds = Counter(r.status.split(":")[0] for r in self.latents)
        return {"interpreter": self.interpreter, "n_latents": len(self.latents), "n_ok": kinds["ok"],
                "n_skipped": kinds["skipped"], "n_failed": kinds["failed"], "detection": est.value,
                "detection_ci_low": est.ci_low, "detection_ci_high": est.ci_high,
                "failures": [f"latent {r.latent}: {r.status}" for r in self.latents if r.status.startswith("failed")]}


def _plan(codes: LatentCodes, j: int, cfg: InterpConfig) -> _Plan | str:
    """The samples of latent j, or why it cannot be scored."""
    acts = codes.dense(j)
    ctx_max = acts.max(axis=1)  # (n_ctx,)
    active = np.flatnonzero(ctx_max > 0)
    if len(active) == 0:
        return "skipped: never active"
    if len(active) < 2:
        return "skipped: active in 1 context (needs 2: one explained, one held out)"
    inactive = np.flatnonzero(ctx_max <= 0)
    if len(inactive) == 0:
        return "skipped: active in every context (no inactive context to score against)"
    rng = np.random.default_rng([cfg.seed, j])
    order = active[np.argsort(-ctx_max[active], kind="stable")]  # strongest first
    n_detect = min(cfg.n_detect, len(active) // 2, len(inactive))
    explain = stratified(order, min(cfg.n_explain, len(active) - n_detect), cfg.n_quantiles, rng)
    remaining = order[~np.isin(order, explain)]
    positives = stratified(remaining, n_detect, cfg.n_quantiles, rng)
    negatives = rng.choice(inactive, n_detect, replace=False)
    heldout = np.concatenate([positives, negatives])
    truth = np.r_[np.ones(len(positives), dtype=np.int64), np.zeros(len(negatives), dtype=np.int64)]
    shown = rng.permutation(len(heldout))  # no position tells the label
    return _Plan(j, acts, np.sort(explain), heldout[shown], truth[shown])


def _example(contexts: Contexts, acts: np.ndarray, c: int) -> Example:
    return Example(tuple(contexts.tokens[c]), tuple(float(a) for a in acts[c]))


def interpret(sae: SparseAutoencoder, contexts: Contexts, interpreter: Interpreter, latents: Sequence[int] | None = None,
              config: InterpConfig = InterpConfig()) -> InterpResult:
    """Explain and detection-score ``latents`` (default: all) of ``sae`` on ``contexts`` with ``interpreter``."""
    return interpret_codes(encode_contexts(sae, contexts, config.batch_contexts), contexts, interpreter, latents, config)


def interpret_codes(codes: LatentCodes, contexts: Contexts, interpreter: Interpreter,
                    latents: Sequence[int] | None = None, config: InterpConfig = InterpConfig()) -> InterpResult:
    """:func:`interpret` from codes already computed (:func:`encode_contexts` or :meth:`LatentCodes.from_dense`)."""
    if (codes.n_ctx, codes.ctx_len) != contexts.shape:
        raise MedinterpError(f"interpret: codes are for {(codes.n_ctx, codes.ctx_len)} contexts, the contexts are "
                             f"{contexts.shape}")
    chosen = list(range(codes.n_latents)) if latents is None else [int(j) for j in latents]
    bad = [j for j in chosen if not 0 <= j < codes.n_latents]
    if bad:
        raise MedinterpError(f"interpret: latent(s) {bad[:5]} outside the dictionary 0..{codes.n_latents - 1}")
    plans = {j: _plan(codes, j, config) for j in tqdm(chosen, desc="interp samples", unit="latent", leave=False)}
    ready = [p for p in plans.values() if isinstance(p, _Plan)]
    with interpreter:
        explained = interpreter.explain([ExplainItem(p.latent, tuple(_example(contexts, p.acts, c) for c in p.explain))
                                         for p in ready])
        explanation = {p.latent: a for p, a in zip(ready, explained)}
        items, owners = [], []
        for p in ready:
            if explanation[p.latent].missing:
                continue
            for a in range(0, len(p.heldout), config.detect_batch):
                chunk = p.heldout[a:a + config.detect_batch]
                items.append(DetectItem(p.latent, str(explanation[p.latent].value),
                                        tuple(tuple(contexts.tokens[c]) for c in chunk)))
                owners.append(p.latent)
        detected = interpreter.detect(items) if items else []
    labels: dict[int, list] = {j: [] for j in explanation}
    for j, answer in zip(owners, detected):
        labels[j].append(answer)
    rows = [_row(codes, contexts, j, plans[j], explanation.get(j), labels.get(j, []), config) for j in chosen]
    return InterpResult(interpreter.name, rows)


def _row(codes: LatentCodes, contexts: Contexts, j: int, plan: _Plan | str, explained, answers: list,
         cfg: InterpConfig) -> LatentInterpretation:
    """Latent j's table row: the data columns always; the score only when every answer came back."""
    acts = plan.acts if isinstance(plan, _Plan) else codes.dense(j)
    active = np.flatnonzero(acts.max(axis=1) > 0)
    tops = top_tokens([_example(contexts, acts, c) for c in active], cfg.top_tokens)
    base = dict(latent=j, n_active=len(active), frequency=len(active) / max(codes.n_ctx, 1),
                max_activation=float(acts.max()) if acts.size else 0.0, top_tokens=" | ".join(tops))
    nan = float("nan")
    if not isinstance(plan, _Plan):
        return LatentInterpretation(status=plan, explanation=None, detection=nan, tpr=nan, tnr=nan, n_explain=0,
                                    n_detect_active=0, n_detect_inactive=0, **base)
    n_pos = int(plan.truth.sum())
    counts = dict(n_explain=len(plan.explain), n_detect_active=n_pos, n_detect_inactive=len(plan.truth) - n_pos)
    if explained.missing:
        return LatentInterpretation(status=f"failed: explanation: {explained.missing_reason}", explanation=None,
                                    detection=nan, tpr=nan, tnr=nan, **counts, **base)
    missing = [a for a in answers if a.missing]
    if missing:
        n_lost = sum(len(plan.heldout[i * cfg.detect_batch:(i + 1) * cfg.detect_batch])
                     for i, a in enumerate(answers) if a.missing)
        return LatentInterpretation(status=f"failed: detection: {n_lost} of {len(plan.truth)} labels missing "
                                           f"({missing[0].missing_reason})", explanation=str(explained.value),
                                    detection=nan, tpr=nan, tnr=nan, **counts, **base)
    pred = np.concatenate([np.asarray(a.value, dtype=np.int64) for a in answers])
    tpr = float((pred[plan.truth == 1] == 1).mean())
    tnr = float((pred[plan.truth == 0] == 0).mean())
    cached = bool(explained.cached and all(a.cached for a in answers))
    return LatentInterpretation(status="ok", explanation=str(explained.value), detection=0.5 * (tpr + tnr), tpr=tpr,
                                tnr=tnr, cached=cached, **counts, **base)


__all__ = ["Contexts", "InterpConfig", "InterpResult", "LatentCodes", "LatentInterpretation", "encode_contexts",
           "interpret", "interpret_codes", "stratified"]
