"""Steering with SAE latents: add α · (decoder row) to the residual stream and measure what it does.

For latent j with decoder row w_j (W_dec[j], (d,); unit norm for SAEs trained here), the residual stream at read-out
point ``layer`` (the SAE's layer: after ``layer`` blocks, medinterp/capture/residual.py) becomes

    h_t ← h_t + α w_j      for every position t (``positions="all"``), or for t ≥ the last prompt token
                           (``positions="from_last"``: the prompt is read unsteered, its continuation is steered)

(Templeton et al. 2024, *Scaling Monosemanticity*, Anthropic, "feature steering"; Turner et al. 2023,
activation addition). α is in the residual stream's units: pick the sweep relative to the typical residual norm
at that layer (or to the latent's largest activation, as Templeton et al. clamp a feature to multiples of it).

Measured per latent and α, against the unhooked model:

- **Δ log p(target)**: for each prompt p and target word w, Δ(p) = mean_w [log p_α(w | p) − log p_0(w | p)],
  log p(w | p) = Σ_i log p(w_i | p, w_<i) over the word's tokens (teacher-forced; a word is given with its leading
  space, " fever"). Reported on the latent's *target prompts* (where the concept belongs) and on *unrelated
  prompts* (a control: does steering push the words everywhere?), each as a mean with a percentile-bootstrap
  95 % CI (metrics/bootstrap.py), and their difference (target − unrelated, groups resampled independently).
- **Coherence**: a judge (medinterp/judges: ``deterministic``, ``openai``, ``local``) rates each steered
  continuation against the unsteered one on the ablation scale 1 (unchanged) .. 10 (gibberish). The
  deterministic judge maps the KL(unsteered ‖ steered) along the unsteered greedy continuation onto that scale
  (the fallback when no LLM judge is configured); an LLM judge reads the two greedy continuations. The rubric
  counts a change of topic as a departure, so it is a conservative coherence measure for steering, whose purpose
  is a change of topic: ``coherence_max`` (6, "a clear loss ... but readable") is the bar.
- **Success** at α: the target CI lies above 0 (``delta_target.ci_low > 0``) and the mean coherence score is
  ≤ ``coherence_max``. A latent succeeds if some α ≠ 0 of the sweep succeeds. A missing judge verdict leaves
  that α undecided (``note`` says why), never counted as coherent. The **success rate** is over the latents
  with a decision (the study this follows reported "mixed success": report the rate, not anecdotes).

Prompts are run one at a time (no padding in the steered prompt), the target words of a prompt in one batch.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from medinterp.capture.residual import readout_modules
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.hooks import add, forward_hooks
from medinterp.judges.base import Judge, JudgeItem
from medinterp.judges.deterministic import DeterministicJudge
from medinterp.metrics.bootstrap import Estimate, boot_index_tensor, finite_mean_with_ci, scored_from_replicates
from medinterp.models import ModelHandle
from medinterp.sae.model import SparseAutoencoder
from medinterp.validation import is_int, is_number

POSITIONS = ("all", "from_last")


@dataclass(frozen=True)
class SteeringTarget:
    """A latent to steer, the words it should make likelier and the prompts where they belong."""

    latent: int
    words: tuple[str, ...]
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class SteeringConfig:
    alphas: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0, 16.0)
    positions: str = "all"  # all | from_last
    n_new_tokens: int = 16  # greedy continuation judged for coherence
    coherence_max: float = 6.0  # judge score (1 unchanged .. 10 gibberish) at most this = coherence kept
    n_boot: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.alphas or not all(is_number(a) and math.isfinite(a) for a in self.alphas):
            raise MedinterpError(f"steering: alphas must be a non-empty list of finite numbers; got {self.alphas!r}")
        if self.positions not in POSITIONS:
            raise unknown_choice("steering positions", self.positions, POSITIONS)
        if not is_int(self.n_new_tokens) or self.n_new_tokens < 1:
            raise MedinterpError(f"steering: n_new_tokens must be an int >= 1; got {self.n_new_tokens!r}")


@dataclass(frozen=True)
class SteeringRow:
    """One (latent, α): effect sizes in nats with 95 % CIs, the judge's coherence, and the verdict."""

    latent: int
    alpha: float
    delta_target: Estimate  # mean Δ log p(target words) over the target prompts
    delta_unrelated: Estimate  # the same over the unrelated prompts
    specificity: Estimate  # delta_target − delta_unrelated
    coherence: Estimate  # mean judge score (1 unchanged .. 10 gibberish) over all prompts
    n_missing: int  # judge verdicts missing
    success: bool | None  # None: undecided (see note)
    note: str = ""


@dataclass(frozen=True)
class LatentSteering:
    latent: int
    success: bool | None
    best_alpha: float | None  # the smallest |α| that succeeded
    note: str = ""


@dataclass(frozen=True)
class SteeringResult:
    rows: list[SteeringRow]
    latents: list[LatentSteering] = field(default_factory=list)

    def success_rate(self, n_boot: int = 200, seed: int = 0) -> Estimate:
        """Share of the decided latents whose steering succeeded, with a bootstrap CI (n = decided latents)."""
        return finite_mean_with_ci([float(r.success) for r in self.latents if r.success is not None],
                                   n_boot=n_boot, seed=seed)

    def table(self) -> list[dict]:
        """Flat rows (one per latent and α) for a CSV or W&B table."""
        out = []
        for r in self.rows:
            row = {"latent": r.latent, "alpha": r.alpha}
            for name in ("delta_target", "delta_unrelated", "specificity", "coherence"):
                est = getattr(r, name)
                row.update({name: est.value, f"{name}_ci_low": est.ci_low, f"{name}_ci_high": est.ci_high})
            row.update(n_missing=r.n_missing, success=r.success, note=r.note)
            out.append(row)
        return out

    def summary(self) -> dict:
        rate = self.success_rate()
        return {"n_latents": len(self.latents), "n_decided": rate.n, "success_rate": rate.value,
                "success_rate_ci_low": rate.ci_low, "success_rate_ci_high": rate.ci_high,
                "undecided": [f"latent {r.latent}: {r.note}" for r in self.latents if r.success is None]}


# --------------------------------------------------------------------------------------------------
# Forward passes
# --------------------------------------------------------------------------------------------------
def _ids(handle: ModelHandle, text: str, special: bool) -> list[int]:
    return list(handle.tokenizer(text, add_special_tokens=special)["input_ids"])


@torch.no_grad()
def steered_logprobs(handle: ModelHandle, rows: Sequence[Sequence[int]], layer: int, vector: torch.Tensor | None,
                     start: int = 0) -> torch.Tensor:
    """Next-token log-probabilities (B, T, V) float32 of token rows (right-padded to one length T) with ``vector``
    added to read-out ``layer`` at positions >= ``start`` (no hook when ``vector`` is None)."""
    T = max(len(r) for r in rows)
    pad = handle.tokenizer.pad_token_id if handle.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([list(r) + [pad] * (T - len(r)) for r in rows], device=handle.device)
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows], device=handle.device)
    pairs = [] if vector is None else [(readout_modules(handle.parts)[layer], add(vector, start))]
    with forward_hooks(pairs):
        logits = handle.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return logits.float().log_softmax(-1)


@torch.no_grad()
def greedy(handle: ModelHandle, prompt: list[int], n_new: int, layer: int, vector: torch.Tensor | None,
           start: int) -> list[int]:
    """Greedy continuation (token ids, stops after EOS) with the same steering at every step."""
    ids, eos = list(prompt), handle.tokenizer.eos_token_id
    for _ in range(n_new):
        nxt = int(steered_logprobs(handle, [ids], layer, vector, start)[0, -1].argmax())
        ids.append(nxt)
        if nxt == eos:
            break
    return ids[len(prompt):]


@dataclass
class _Prompt:
    """A prompt's tokens, its target words' tokens, and the unsteered baseline."""

    text: str
    ids: list[int]
    words: list[list[int]]
    answer: list[int]
    clean_words: torch.Tensor  # (n_words,) log p_0(w | p)
    clean_answer: torch.Tensor  # (A, V) log p_0 along the unsteered answer


def _measure(handle: ModelHandle, p: _Prompt, layer: int, vector: torch.Tensor | None, start: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(word log-probs (n_words,), log-probs along the unsteered answer (A, V)) in one batch."""
    rows = [p.ids + w for w in p.words] + [p.ids + p.answer]
    logp = steered_logprobs(handle, rows, layer, vector, start)
    P = len(p.ids)
    words = torch.stack([logp[i, P - 1 + torch.arange(len(w)), torch.tensor(w)].sum() for i, w in enumerate(p.words)])
    return words, logp[-1, P - 1:P - 1 + len(p.answer)]


def _prepare(handle: ModelHandle, text: str, words: Sequence[str], layer: int, cfg: SteeringConfig) -> _Prompt:
    ids = _ids(handle, text, special=True)
    word_ids = [_ids(handle, w, special=False) for w in words]
    start = _start(ids, cfg)
    answer = greedy(handle, ids, cfg.n_new_tokens, layer, None, start)
    p = _Prompt(text, ids, word_ids, answer, torch.empty(0), torch.empty(0))
    p.clean_words, p.clean_answer = _measure(handle, p, layer, None, start)
    return p


def _start(ids: list[int], cfg: SteeringConfig) -> int:
    return 0 if cfg.positions == "all" else len(ids) - 1


def _difference(a: np.ndarray, b: np.ndarray, cfg: SteeringConfig) -> Estimate:
    """mean(a) − mean(b) with a percentile-bootstrap CI, the two groups resampled independently."""
    value = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return Estimate(value, math.nan, math.nan, len(a) + len(b))
    ia = boot_index_tensor(len(a), cfg.n_boot, cfg.seed)
    ib = boot_index_tensor(len(b), cfg.n_boot, cfg.seed + 1)
    reps = torch.from_numpy(a)[ia].mean(1) - torch.from_numpy(b)[ib].mean(1)
    return scored_from_replicates(value, reps, len(a) + len(b)).estimate


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------
def steer(handle: ModelHandle, sae: SparseAutoencoder, layer: int, targets: Sequence[SteeringTarget],
          unrelated_prompts: Sequence[str], judge: Judge | None = None,
          config: SteeringConfig = SteeringConfig()) -> SteeringResult:
    """Sweep α for each target latent; see the module docstring for what is measured and when steering succeeds.

    ``layer`` is the SAE's read-out point (0..n_layers); ``judge`` defaults to the deterministic judge."""
    _check(handle, sae, layer, targets, unrelated_prompts)
    judge = judge or DeterministicJudge()
    items: list[JudgeItem] = []
    pending: list[tuple[int, float, np.ndarray, np.ndarray, slice]] = []
    unrelated_cache: dict[tuple[str, tuple[str, ...]], _Prompt] = {}
    for target in tqdm(targets, desc="steering", unit="latent", leave=False):
        own = [_prepare(handle, t, target.words, layer, config) for t in target.prompts]
        other = []
        for text in unrelated_prompts:
            key = (text, tuple(target.words))
            if key not in unrelated_cache:
                unrelated_cache[key] = _prepare(handle, text, target.words, layer, config)
            other.append(unrelated_cache[key])
        w = sae.W_dec[target.latent].detach()
        for alpha in config.alphas:
            vector = alpha * w
            deltas = []
            first = len(items)
            for p in own + other:
                start = _start(p.ids, config)
                words, along = _measure(handle, p, layer, vector, start)
                deltas.append(float((words - p.clean_words).mean()))
                items.append(_judge_item(handle, p, along, layer, vector, start, judge.needs_text, config))
            d = np.asarray(deltas)
            pending.append((target.latent, float(alpha), d[:len(own)], d[len(own):], slice(first, len(items))))
    with judge:
        verdicts = judge.score(items)
    rows = [_row(latent, alpha, dt, du, verdicts[s], config) for latent, alpha, dt, du, s in pending]
    return SteeringResult(rows, [_latent(t.latent, [r for r in rows if r.latent == t.latent]) for t in targets])


def _judge_item(handle: ModelHandle, p: _Prompt, along: torch.Tensor, layer: int, vector: torch.Tensor, start: int,
                needs_text: bool, cfg: SteeringConfig) -> JudgeItem:
    """KL(unsteered ‖ steered) per answer token and Δlog p of the unsteered answer; the steered text if needed."""
    clean = p.clean_answer  # (A, V)
    if len(p.answer):
        kl = float((clean.exp() * (clean - along)).sum(-1).mean())
        idx = torch.tensor(p.answer)
        dlogp = float((clean[torch.arange(len(idx)), idx] - along[torch.arange(len(idx)), idx]).mean())
    else:
        kl = dlogp = 0.0
    tok = handle.tokenizer
    steered = tok.decode(greedy(handle, p.ids, cfg.n_new_tokens, layer, vector, start), skip_special_tokens=True) \
        if needs_text else None
    return JudgeItem(p.text, tok.decode(p.answer, skip_special_tokens=True), steered, kl, dlogp)


def _row(latent: int, alpha: float, dt: np.ndarray, du: np.ndarray, verdicts, cfg: SteeringConfig) -> SteeringRow:
    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    target, unrelated = finite_mean_with_ci(dt, **kw), finite_mean_with_ci(du, **kw)
    scores = np.array([v.value for v in verdicts])
    missing = [v for v in verdicts if v.missing]
    coherence = finite_mean_with_ci(scores, **kw)
    up = bool(target.ci_low > 0) if math.isfinite(target.ci_low) else None
    note = ""
    if missing:
        success, note = None, f"coherence: {len(missing)} of {len(verdicts)} judge verdicts missing " \
                              f"({missing[0].missing_reason})"
    elif up is None:
        success, note = None, "target: fewer than 2 prompts, no CI"
    else:
        success = up and coherence.value <= cfg.coherence_max
    return SteeringRow(latent, alpha, target, unrelated, _difference(dt, du, cfg), coherence, len(missing), success,
                       note)


def _latent(latent: int, rows: list[SteeringRow]) -> LatentSteering:
    """A latent succeeds at some α ≠ 0; if none succeeded and some α is undecided, it is undecided."""
    swept = [r for r in rows if r.alpha != 0]
    wins = sorted((abs(r.alpha), r.alpha) for r in swept if r.success)
    if wins:
        return LatentSteering(latent, True, wins[0][1])
    undecided = [r for r in swept if r.success is None]
    if undecided or not swept:
        why = undecided[0].note if undecided else "no alpha other than 0 in the sweep"
        return LatentSteering(latent, None, None, why)
    return LatentSteering(latent, False, None)


def _check(handle: ModelHandle, sae: SparseAutoencoder, layer: int, targets: Sequence[SteeringTarget],
           unrelated: Sequence[str]) -> None:
    n = handle.n_layers
    if not is_int(layer) or not 0 <= layer <= n:
        raise MedinterpError(f"steering: layer must be a read-out point in 0..{n} (after that many blocks); got {layer!r}")
    if sae.config.d != handle.d_model:
        raise MedinterpError(f"steering: the SAE reads width {sae.config.d}, the model's residual stream has width "
                             f"{handle.d_model}")
    if not targets:
        raise MedinterpError("steering: no target latents given")
    for t in targets:
        if not is_int(t.latent) or not 0 <= t.latent < sae.config.n_latents:
            raise MedinterpError(f"steering: latent {t.latent!r} outside the dictionary 0..{sae.config.n_latents - 1}")
        if not t.words or not all(w.strip() for w in t.words):
            raise MedinterpError(f"steering: latent {t.latent} needs at least one non-empty target word")
        if not t.prompts:
            raise MedinterpError(f"steering: latent {t.latent} needs at least one target prompt")
    if not unrelated:
        raise MedinterpError("steering: give at least one unrelated prompt (the control)")


__all__ = ["POSITIONS", "LatentSteering", "SteeringConfig", "SteeringResult", "SteeringRow", "SteeringTarget",
           "greedy", "steer", "steered_logprobs"]
