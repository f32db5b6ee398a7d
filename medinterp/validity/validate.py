"""One domain's validity run: probes, the intact scores, then every map lane under one intervention.

:func:`validate` is what runners/validate.py calls. Interventions (``INTERVENTIONS``), each at a block set:

- ``ablation``: the blocks replaced by the identity (sign −1: the effect is the accuracy drop);
- ``mean``: the blocks' updates replaced by their means over the probes' questions (sign −1);
- ``steer``: ``alpha · v_b`` added at each block, ``v_b`` the domain direction at read-out ``b + 1``: the mean
  last-token residual of the domain's training questions minus that of every other probe's questions
  (a difference of class means); one validity per ``alpha`` (sign +1: the effect is the accuracy gain);
- ``lora``: LoRA on the blocks trained on the domain probe's training split (:mod:`medinterp.validity.lora`;
  sign +1).

The result (``validity.json``) holds the settings, each probe's intact accuracy with its CI, chance and
majority share, and per lane (and per alpha) the entry of :func:`medinterp.validity.loop.lane_validity`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medinterp.errors import MedinterpError, unknown_choice
from medinterp.hooks import forward_hooks, record
from medinterp.models import ModelHandle
from medinterp.models.padding import padding_side
from medinterp.prompts import load_prompt_set
from medinterp.validation import is_int, is_number
from medinterp.validity.interventions import class_mean_direction, identity, mean_update, mean_updates, steer
from medinterp.validity.lanes import map_lanes
from medinterp.validity.lora import LoraBudget, LoraSteps, lora
from medinterp.validity.loop import lane_validity
from medinterp.validity.probe import Probe, accuracy, block_outputs, build_probe, probe_spec, probe_specs, score

log = logging.getLogger(__name__)

INTERVENTIONS = ("ablation", "mean", "steer", "lora")
SIGN = {"ablation": -1.0, "mean": -1.0, "steer": 1.0, "lora": 1.0}


@dataclass(frozen=True)
class ValidateSettings:
    """Draws, probes and intervention settings of a validity run (conf/validate.yaml)."""

    n_draws: int = 10
    n_bands: int = 3
    seed: int = 0
    max_items: int | None = 32
    alphas: tuple[float, ...] = (1.0,)
    lanes: tuple[str, ...] | None = None
    n_boot: int = 1000
    batch_size: int = 32
    lora: LoraBudget = field(default_factory=LoraBudget)

    def __post_init__(self) -> None:
        for name, low in (("n_draws", 2), ("n_bands", 1), ("n_boot", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise MedinterpError(f"validate: {name} must be an int >= {low}; got {value!r}")
        if not self.alphas or not all(is_number(a) and a != 0 for a in self.alphas):
            raise MedinterpError(f"validate: alphas must be a non-empty list of non-zero numbers; got {self.alphas!r}")


def _last_token_readouts(handle: ModelHandle, texts: Sequence[str], batch_size: int) -> torch.Tensor:
    """(n_layers, n_texts, D) residual stream after each block at each text's last token (float64)."""
    parts, tok, rows = handle.parts, handle.tokenizer, []
    with padding_side(tok, "left"):
        for i in range(0, len(texts), batch_size):
            enc = tok(list(texts[i:i + batch_size]), padding=True, return_tensors="pt").to(handle.device)
            store: dict[int, torch.Tensor] = {}
            hooks = [(block, record(store, b, reduce=lambda h: h[:, -1].double())) for b, block in enumerate(parts.layers)]
            with torch.inference_mode(), forward_hooks(hooks):
                parts.backbone(**enc)
            rows.append(torch.stack([store[b] for b in range(handle.n_layers)]))
    return torch.cat(rows, dim=1)


def steering_directions(handle: ModelHandle, probes: Mapping[str, Probe], domain: str, batch_size: int
                        ) -> dict[int, torch.Tensor]:
    """v_b per block: mean read-out b+1 of the domain's training questions minus that of the other probes'."""
    own = [q for q, _ in probes[domain].train]
    others = [q for name, p in probes.items() if name != domain for q in p.questions]
    if not own or not others:
        raise MedinterpError("steer: needs the domain's training questions and at least one other probe's")
    a, b = _last_token_readouts(handle, own, batch_size), _last_token_readouts(handle, others, batch_size)
    return {blk: class_mean_direction(a[blk], b[blk]) for blk in range(handle.n_layers)}


def _intact(probes: Mapping[str, Probe], scores: Mapping[str, np.ndarray], n_boot: int, seed: int) -> dict[str, Any]:
    out = {}
    for name, p in probes.items():
        est = accuracy(scores[name], n_boot=n_boot, seed=seed)
        out[name] = {"accuracy": est.value, "ci_low": est.ci_low, "ci_high": est.ci_high, "n": est.n,
                     "chance": p.chance, "majority": p.majority, "n_train": len(p.train)}
    return out


def validate(handle: ModelHandle, kmap: Mapping[str, Any], domain: str, intervention: str,
             settings: ValidateSettings = ValidateSettings(), damage_domains: Sequence[str] | None = None
             ) -> dict[str, Any]:
    """Run one domain's validity under ``intervention`` against the knowledge map ``kmap`` (module docstring)."""
    if intervention not in INTERVENTIONS:
        raise unknown_choice("intervention", intervention, INTERVENTIONS)
    probe_spec(domain)  # one line when the domain has no probe
    lanes = map_lanes(kmap, domain, handle.name, handle.n_layers)
    if settings.lanes is not None:
        known = [lane.name for lane in lanes]
        bad = [name for name in settings.lanes if name not in known]
        if bad:
            raise MedinterpError(f"validate: lanes {bad} are not in the map's {domain!r} entry; valid: {known}")
        lanes = [lane for lane in lanes if lane.name in settings.lanes]
    others = [d for d in (damage_domains if damage_domains is not None else probe_specs()) if d != domain]
    probes = {}
    for d in [domain, *others]:
        probes[d] = build_probe(probe_spec(d), load_prompt_set(d), handle.tokenizer, settings.max_items,
                                seed=settings.seed)

    prefixes = {d: block_outputs(handle, p, settings.batch_size) for d, p in probes.items()}

    def evaluate(names: Sequence[str] | None, blocks: Sequence[int] = ()) -> dict[str, np.ndarray]:
        """The probes' scores; blocks below the first intervened one are replayed from the intact model."""
        start = min(blocks, default=0)
        return {n: score(handle, probes[n], settings.batch_size, start, prefixes[n]) for n in (names or probes)}

    intact_scores = evaluate(None)
    result: dict[str, Any] = {
        "model": handle.name, "n_layers": handle.n_layers, "domain": domain, "intervention": intervention,
        "settings": {**asdict(settings), "lora": asdict(settings.lora)},
        "probes": _intact(probes, intact_scores, settings.n_boot, settings.seed),
    }
    sign = SIGN[intervention]
    runs: list[tuple[str, Any]] = []
    if intervention == "ablation":
        runs.append(("", lambda blocks: identity(handle.parts, blocks)))
    elif intervention == "mean":
        updates = mean_updates(handle, [q for p in probes.values() for q in p.questions], range(handle.n_layers),
                               settings.batch_size)
        runs.append(("", lambda blocks: mean_update(handle.parts, {b: updates[b] for b in blocks})))
    elif intervention == "steer":
        directions = steering_directions(handle, probes, domain, settings.batch_size)
        for alpha in settings.alphas:
            runs.append((f"alpha={alpha:g}",
                         lambda blocks, a=alpha: steer(handle.parts, {b: directions[b] for b in blocks}, a)))
    else:
        training: list[dict[str, Any]] = []
        steps = LoraSteps(handle, probes[domain].train, settings.lora, probes[domain].choice_ids)  # shared batches

        @contextmanager
        def trained(blocks):
            with lora(handle, blocks, steps) as report:
                training.append({"blocks": list(report.blocks), "n_params": report.n_params, "steps": len(report.losses),
                                 "first_loss": report.losses[0], "last_loss": report.losses[-1],
                                 "tokens": report.tokens, "tokens_per_s": report.tokens_per_s})
                yield

        runs.append(("", trained))
        result["lora_training"] = training
    entries = []
    for variant, intervene in runs:
        memo: dict = {}
        for lane in lanes:
            entry = lane_validity(lane, domain, handle.n_layers, intact_scores, evaluate, intervene, sign,
                                  settings.n_draws, settings.n_bands, settings.seed, settings.n_boot, memo)
            if variant:
                entry["variant"] = variant
            entries.append(entry)
            v = entry.get("validity", {})
            log.info("%s %s %s%s: effect %.3f, validity %.2f (beats %.2f of %d draws)%s", domain, intervention,
                     lane.name, f" {variant}" if variant else "", entry.get("effect", {}).get("value", math.nan),
                     v.get("score", math.nan), v.get("beats", math.nan), v.get("n_draws", 0),
                     f" ({entry['note']})" if entry.get("note") else "")
    result["lanes"] = entries
    return result
