"""Behavioural probes: a multiple-choice cloze per domain that an intervention can help or hurt.

A probe (``medinterp/data/probes.yaml``) turns each item of a prompt set into a question (a template over
the item's slots) and names one word per label. The model's next-token logits at the end of the question
are compared over the first tokens of those words; an item is right when its label's word wins (the
"cloze" scoring of multiple-choice benchmarks, restricted to the label set). Chance is 1 / #choices; the
majority class's share is reported beside it (the labels are unbalanced).

Items are split once, by a seeded stratified split: ``train`` (for what is trained, e.g. LoRA) and ``test``
(every accuracy; at most ``max_items``, spread over the labels). A non-finite logit makes that item's score
NaN, never a 0: a broken model is reported as broken (medinterp/validity/loop.py).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
import torch
import yaml

from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, output_tensor, record, skip_with_outputs
from medinterp.models.head import answer_logits
from medinterp.metrics import Estimate, mean_with_ci
from medinterp.models import ModelHandle
from medinterp.models.padding import padding_side
from medinterp.prompts import PromptSet
from medinterp.validation import is_int

DERIVATIONS = ("half",)


@dataclass(frozen=True)
class ProbeSpec:
    """One probes.yaml entry: the labeling, the question template, label -> word, and an optional derivation."""

    domain: str
    labeling: str
    template: str
    choices: Mapping[str, str]
    derive: str | None = None


def probe_specs() -> dict[str, ProbeSpec]:
    """Every packaged probe, by domain."""
    data = yaml.safe_load(files("medinterp.data").joinpath("probes.yaml").read_text())
    return {d: ProbeSpec(domain=d, **entry) for d, entry in data.items()}


def probe_spec(domain: str) -> ProbeSpec:
    """The packaged probe of ``domain``, or one line naming the domains that have one."""
    specs = probe_specs()
    if domain not in specs:
        raise MedinterpError(f"no behavioural probe for domain {domain!r}; domains with one: {sorted(specs)}")
    return specs[domain]


@dataclass(frozen=True)
class Probe:
    """A built probe: test questions and their right choice, the choices' first token ids, the train split."""

    name: str
    labels: tuple[str, ...]         # the choices' labels, in choice order
    choice_ids: tuple[int, ...]     # first token of each choice's word
    questions: tuple[str, ...]      # test split
    answers: np.ndarray             # (n_test,) index of the right choice
    train: tuple[tuple[str, str], ...]  # (question, " word") of the train split

    @property
    def chance(self) -> float:
        return 1.0 / len(self.labels)

    @property
    def majority(self) -> float:
        return float(np.bincount(self.answers, minlength=len(self.labels)).max() / len(self.answers))


def item_labels(spec: ProbeSpec, prompt_set: PromptSet) -> list[str]:
    """Each item's label for the probe (derived when the spec says so)."""
    if spec.labeling not in prompt_set.labelings:
        raise MedinterpError(f"probe {spec.domain!r}: prompt set {prompt_set.domain!r} has no labeling "
                             f"{spec.labeling!r}; valid: {sorted(prompt_set.labelings)}")
    if spec.derive is None:
        return [str(item.labels[spec.labeling]) for item in prompt_set.items]
    if spec.derive not in DERIVATIONS:
        raise MedinterpError(f"probe {spec.domain!r}: derive must be one of {list(DERIVATIONS)}; got {spec.derive!r}")
    group = prompt_set.labelings[spec.labeling].group_by
    size: dict[Any, int] = defaultdict(int)
    for item in prompt_set.items:
        size[item.labels[group] if group else None] += 1
    return ["early" if item.labels[spec.labeling] < size[item.labels[group] if group else None] / 2 else "late"
            for item in prompt_set.items]


def split(labels: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) item indices: per label, a seeded shuffle, the first ceil(f n) to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in sorted(set(labels)):
        idx = rng.permutation([i for i, v in enumerate(labels) if v == label])
        k = int(np.ceil(test_fraction * len(idx)))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(sorted(train), dtype=int), np.array(sorted(test), dtype=int)


def _spread(indices: np.ndarray, labels: Sequence[str], max_items: int | None, seed: int) -> np.ndarray:
    """At most ``max_items`` of ``indices``, taken round-robin over the labels in a seeded order."""
    if max_items is None or len(indices) <= max_items:
        return indices
    rng = np.random.default_rng(seed + 1)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i in rng.permutation(indices):
        by_label[labels[i]].append(int(i))
    queues = [by_label[k] for k in sorted(by_label)]
    out: list[int] = []
    while len(out) < max_items:
        for q in queues:
            if q and len(out) < max_items:
                out.append(q.pop())
    return np.array(sorted(out), dtype=int)


def build_probe(spec: ProbeSpec, prompt_set: PromptSet, tokenizer, max_items: int | None = 40,
                test_fraction: float = 0.5, seed: int = 0) -> Probe:
    """The probe of ``spec`` on ``prompt_set``: questions, choices checked against ``tokenizer``, the split."""
    if max_items is not None and (not is_int(max_items) or max_items < 2):
        raise MedinterpError(f"probe max_items must be an int >= 2 or null; got {max_items!r}")
    labels = item_labels(spec, prompt_set)
    missing = sorted(set(labels) - set(spec.choices))
    if missing:
        raise MedinterpError(f"probe {spec.domain!r}: labels {missing} have no choice word; add them to probes.yaml")
    names = tuple(sorted(set(labels)))
    ids = [tokenizer(" " + spec.choices[k], add_special_tokens=False)["input_ids"] for k in names]
    first = tuple(int(t[0]) for t in ids)
    if len(set(first)) < len(first):
        clash = [names[i] for i, t in enumerate(first) if first.count(t) > 1]
        raise MedinterpError(f"probe {spec.domain!r}: the choices of labels {clash} start with the same token; "
                             "choose words whose first tokens differ")
    try:
        questions = [spec.template.format(**item.slots) for item in prompt_set.items]
    except KeyError as err:
        raise MedinterpError(f"probe {spec.domain!r}: template slot {err} is not a slot of prompt set "
                             f"{prompt_set.domain!r}") from None
    train, test = split(labels, test_fraction, seed)
    test = _spread(test, labels, max_items, seed)
    return Probe(spec.domain, names, first, tuple(questions[i] for i in test),
                 np.array([names.index(labels[i]) for i in test]),
                 tuple((questions[i], " " + spec.choices[labels[i]]) for i in train))


Prefix = Sequence[Sequence[torch.Tensor]]  # per batch of choice_logits, every block's intact output (B, T, D)


def _batches(handle: ModelHandle, probe: Probe, batch_size: int):
    tok = handle.tokenizer
    with padding_side(tok, "left"):  # the question's last token is the last position
        for i in range(0, len(probe.questions), batch_size):
            yield tok(list(probe.questions[i:i + batch_size]), padding=True, return_tensors="pt").to(handle.device)


@torch.inference_mode()
def block_outputs(handle: ModelHandle, probe: Probe, batch_size: int = 32) -> list[list[torch.Tensor]]:
    """Per batch of :func:`choice_logits`, every block's output (B, T, D) in the model as it is now: the prefix
    that ``start_block`` replays (an intervention at blocks >= s leaves blocks 0..s-1 unchanged)."""
    layers, out = list(handle.parts.layers), []
    for enc in _batches(handle, probe, batch_size):
        store: dict[int, torch.Tensor] = {}
        with forward_hooks([(layer, record(store, b)) for b, layer in enumerate(layers)]):
            handle.parts.backbone(**enc, use_cache=False)
        out.append([store[b] for b in range(len(layers))])
    return out


@torch.inference_mode()
def choice_logits(handle: ModelHandle, probe: Probe, batch_size: int = 32, start_block: int = 0,
                  prefix: Prefix | None = None) -> torch.Tensor:
    """(n_test, n_choices) next-token logits of the choices' first tokens after each question (float32): the final
    normed hidden state at the last position times the LM head's rows of the choices only (soft-capped where the
    model caps; :func:`medinterp.models.head.answer_logits`), the model's own logits at those tokens
    without reading the whole vocabulary's head (Gemma: 262k rows, most of a probe forward's time on a CPU).

    With ``start_block = s > 0`` and ``prefix`` (:func:`block_outputs` of the intact model, same batch size), blocks
    0..s-1 are not computed: their recorded outputs are replayed (:func:`medinterp.hooks.skip_with_outputs`). The
    result is the same as the full forward when nothing changes those blocks (tested), at (n − s)/n of the cost.
    """
    if start_block and prefix is None:
        raise ValueError("choice_logits: start_block needs the prefix (block_outputs)")
    choice = torch.tensor(probe.choice_ids, device=handle.device)
    out = []
    for k, enc in enumerate(_batches(handle, probe, batch_size)):
        replay = skip_with_outputs(handle.parts, prefix[k][:start_block]) if start_block else nullcontext()
        with replay:
            hidden = output_tensor(handle.parts.backbone(**enc, use_cache=False).last_hidden_state)[:, -1]  # (B, D)
        out.append(answer_logits(handle, hidden, choice.expand(len(hidden), -1)))  # only the choices' head rows
    return torch.cat(out)


def score(handle: ModelHandle, probe: Probe, batch_size: int = 32, start_block: int = 0,
          prefix: Prefix | None = None) -> np.ndarray:
    """(n_test,) 1.0 where the right choice has the largest logit, 0.0 where not, NaN where a logit is not finite
    (``start_block``, ``prefix``: :func:`choice_logits`)."""
    logits = choice_logits(handle, probe, batch_size, start_block, prefix).cpu().numpy()
    right = (logits.argmax(1) == probe.answers).astype(float)
    right[~np.isfinite(logits).all(1)] = np.nan
    return right


def accuracy(scores: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Estimate:
    """The accuracy with a bootstrap CI over items (NaN with a NaN item: a broken model has no accuracy)."""
    if not np.isfinite(scores).all():
        return Estimate(float("nan"), float("nan"), float("nan"), len(scores))
    return mean_with_ci(scores, n_boot=n_boot, seed=seed)
