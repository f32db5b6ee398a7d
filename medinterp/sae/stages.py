"""The inputs of auto-interpretation and steering built from an SAE run (runners/sae.py; docs/sae.md, "Stages").

- :func:`interpretation_contexts`: the held-out packed contexts' residual stream at the SAE's layer, captured
  whole (each token keeps its full left context) and cut into windows of ``window`` tokens (short contexts, as
  Paulo et al. 2024: a latent that fires once per 128 tokens is still absent from many 32-token windows, so
  detection has inactive contexts to score against); scaled by the run's ``scale`` (the SAE reads s·x).
- :func:`interpretation_latents`: the catalogue's latents (most selective first, distinct) and a few random
  live latents (a baseline for the catalogue's detection scores).
- :func:`steering_targets`: per catalogue label (most selective first, distinct latents) the latent, the label
  as the target word, that label's prompts as target prompts, another domain's prompts as unrelated prompts.
- :func:`merge_interpretation`: explanation, detection_score and status into the per-latent table and the
  catalogue rows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medinterp.errors import MedinterpError
from medinterp.models import ModelHandle
from medinterp.sae.autointerp import InterpResult
from medinterp.sae.contexts import Contexts, capture_contexts
from medinterp.sae.steering import SteeringTarget

NOT_INTERPRETED = "not interpreted"


def interpretation_contexts(handle: ModelHandle, ids, layer: int, window: int, scale: float,
                            batch_size: int = 8) -> Contexts:
    """Contexts (n·T/window, window) from packed token ids ``ids`` (n, T) with T a multiple of ``window``:
    activations (·, window, d) = ``scale`` · residual stream at read-out ``layer`` (captured on the whole
    context); the mask drops each packed context's position 0 and special tokens (capture_contexts)."""
    n, T = ids.shape
    if window < 2 or T % window:
        raise MedinterpError(f"sae.interpretation.window must divide sae.ctx_len ({T}) and be >= 2; got {window}")
    whole = capture_contexts(handle, ids, layer, batch_size)
    per = T // window
    acts = whole.activations.reshape(n * per, window, -1) * np.float32(scale)  # (n·per, window, d)
    mask = np.asarray(whole.mask).reshape(n * per, window)
    tokens = [row[a:a + window] for row in whole.tokens for a in range(0, T, window)]
    return Contexts(tokens, acts, mask)


def interpretation_latents(catalogue: list[dict], latents: list[dict], n_top: int, n_random: int, seed: int
                           ) -> dict[int, str]:
    """{latent: "catalogue" | "random"}: the ``n_top`` distinct catalogue latents of highest AUROC, then
    ``n_random`` random live latents (not dead in the per-latent table) not already chosen."""
    chosen: dict[int, str] = {}
    for row in sorted(catalogue, key=lambda r: -np.nan_to_num(r["auroc"], nan=-1.0)):
        if len(chosen) == n_top:
            break
        chosen.setdefault(int(row["latent"]), "catalogue")
    live = np.array([r["latent"] for r in latents if not r["dead"] and r["latent"] not in chosen], dtype=np.int64)
    rng = np.random.default_rng(seed)
    for j in rng.choice(live, min(n_random, len(live)), replace=False).tolist():
        chosen[int(j)] = "random"
    return chosen


def merge_interpretation(result: InterpResult, chosen: dict[int, str], tables: list[list[dict]]) -> list[dict]:
    """Write explanation, detection_score and status into every row of ``tables`` (``not interpreted`` for the
    latents left out); return the interpretation rows with ``chosen_by``."""
    found = {r.latent: r for r in result.latents}
    for table in tables:
        for row in table:
            r = found.get(int(row["latent"]))
            row.update(explanation=(r.explanation or "") if r else "",
                       detection_score=r.detection if r else float("nan"),
                       status=r.status if r else NOT_INTERPRETED)
    return [{"chosen_by": chosen[row["latent"]], **row} for row in result.rows()]


@dataclass(frozen=True)
class Target:
    """A steering target and where it came from in the catalogue."""

    target: SteeringTarget
    domain: str
    labeling: str
    label: str
    auroc: float
    unrelated: tuple[str, ...]


def label_word(label: str) -> str:
    """The target word of a catalogue label: ``once_daily`` -> `` once daily`` (leading space: a next word)."""
    return " " + str(label).replace("_", " ")


def steering_targets(catalogue: list[dict], prompts: dict[str, tuple[list[str], dict[str, np.ndarray]]],
                     n_latents: int, n_prompts: int) -> list[Target]:
    """Up to ``n_latents`` targets from the catalogue rows of highest AUROC, one per label and distinct latents.

    ``prompts`` maps each catalogued domain to (prompt texts, {labeling: label per prompt}). Target prompts: the
    first ``n_prompts`` prompts carrying the label; unrelated prompts: the first ``n_prompts`` of the next domain
    (cyclically), or with a single domain its prompts without the label."""
    domains = list(prompts)
    targets, used_latents, used_labels = [], set(), set()
    for row in sorted(catalogue, key=lambda r: -np.nan_to_num(r["auroc"], nan=-1.0)):
        key = (row["domain"], row["labeling"], row["label"])
        if len(targets) == n_latents:
            break
        if row["latent"] in used_latents or key in used_labels:
            continue
        texts, labels = prompts[row["domain"]]
        has = np.asarray(labels[row["labeling"]]).astype(str) == str(row["label"])
        own = [t for t, h in zip(texts, has) if h][:n_prompts]
        if len(domains) > 1:
            other = prompts[domains[(domains.index(row["domain"]) + 1) % len(domains)]][0][:n_prompts]
        else:
            other = [t for t, h in zip(texts, has) if not h][:n_prompts]
        if not own or not other:
            continue
        used_latents.add(row["latent"])
        used_labels.add(key)
        targets.append(Target(SteeringTarget(int(row["latent"]), (label_word(row["label"]),), tuple(own)),
                              row["domain"], row["labeling"], str(row["label"]), float(row["auroc"]), tuple(other)))
    return targets


__all__ = ["NOT_INTERPRETED", "Target", "interpretation_contexts", "interpretation_latents", "label_word",
           "merge_interpretation", "steering_targets"]
