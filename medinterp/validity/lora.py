"""LoRA (the ``peft`` library) trained on a probe's training items, restricted to a set of decoder blocks.

The intervention the validity loop compares across block sets must cost the same everywhere: a fixed
:class:`LoraBudget` (rank, steps, learning rate, batch) on every ``nn.Linear`` inside the chosen blocks, so
two sets of N blocks of one model train the same number of parameters for the same number of steps
(``LoraReport.n_params`` records it). Loss: the mean cross-entropy of the answer tokens given the prompt
(teacher forcing; :func:`answer_loss`) or of the right choice (:func:`choice_loss`), AdamW, a fixed seed, the
model in eval mode (no dropout). Inside :func:`lora` the model carries the trained adapters; on exit they are
removed (``PeftModel.unload``) and every parameter's ``requires_grad`` and the train/eval mode are restored, so the
next intervention sees the intact model.

Speed: the budget's seed fixes the batches, so every block set trains on the same ``steps`` batches
(:class:`LoraSteps`, built once per validity run). Blocks below a set's lowest block carry no adapter, so their
outputs are the intact model's: every block's output at every step is recorded in one pass and replayed
(:func:`medinterp.hooks.start_at`) — the same losses (tested), at (n - s)/n of the forward for lowest block s.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from medinterp.capture.tokens import position_ids
from medinterp.errors import MedinterpError, unknown_choice
from medinterp.hooks import forward_hooks, output_tensor, record, start_at
from medinterp.models.head import answer_logits, head_logits
from medinterp.models import ModelHandle
from medinterp.validation import is_int, is_number
from medinterp.validity.draws import check_blocks

log = logging.getLogger(__name__)
OBJECTIVES = ("choice", "tokens")


@dataclass(frozen=True)
class LoraBudget:
    """What every LoRA intervention gets: adapter ``rank`` (and ``alpha`` scaling), ``steps`` of AdamW at ``lr``
    on batches of ``batch_size`` training items, ``seed`` for the adapters' initialisation and the batches, and the
    ``objective``: ``choice`` (cross-entropy over the probe's choices at the question's last token: the task the
    probe scores) or ``tokens`` (the answer word's tokens over the whole vocabulary: plain fine-tuning)."""

    rank: int = 4
    alpha: float = 8.0
    steps: int = 30
    lr: float = 1e-3
    batch_size: int = 8
    seed: int = 0
    objective: str = "choice"

    def __post_init__(self) -> None:
        for name in ("rank", "steps", "batch_size"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise MedinterpError(f"lora budget: {name} must be an int >= 1; got {value!r}")
        for name in ("alpha", "lr"):
            value = getattr(self, name)
            if not is_number(value) or value <= 0:
                raise MedinterpError(f"lora budget: {name} must be a number > 0; got {value!r}")
        if self.objective not in OBJECTIVES:
            raise unknown_choice("lora.objective", self.objective, OBJECTIVES)


@dataclass
class LoraReport:
    """What training did: blocks, trainable parameters, the loss per step, tokens seen and tokens per second."""

    blocks: tuple[int, ...]
    n_params: int = 0
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def linear_names(handle: ModelHandle, blocks: Sequence[int]) -> list[str]:
    """Full module names of every ``nn.Linear`` inside the given decoder blocks."""
    inside = {id(m) for b in blocks for m in handle.parts.layers[b].modules()}
    return [name for name, m in handle.model.named_modules() if isinstance(m, nn.Linear) and id(m) in inside]


def _shuffled_left_padded(rows: Sequence[tuple[list[int], Any]], pad: int, budget: LoraBudget, targets):
    """Endless (input_ids, attention_mask, targets) batches of ``rows`` ((token ids, target) pairs), reshuffled each
    epoch with ``budget.seed``, LEFT padded with ``pad``; ``targets(chunk)`` builds the batch's targets."""
    gen = torch.Generator().manual_seed(budget.seed)
    while True:
        for idx in torch.randperm(len(rows), generator=gen).split(budget.batch_size):
            chunk = [rows[i] for i in idx.tolist()]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (x, _) in enumerate(chunk):
                ids[r, width - len(x):], mask[r, width - len(x):] = torch.tensor(x), 1
            yield ids, mask, targets(chunk)


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0


def _answer_targets(chunk) -> torch.Tensor:
    """(B, K): each row's last K = longest answer tokens, -100 where a shorter answer or the prompt is."""
    k = max(n for _, n in chunk)
    targets = torch.full((len(chunk), k), -100)
    for r, (x, n) in enumerate(chunk):
        targets[r, k - n:] = torch.tensor(x[len(x) - n:])
    return targets


def _batches(handle: ModelHandle, examples: Sequence[tuple[str, str]], budget: LoraBudget):
    """Endless (input_ids, attention_mask, targets) batches of prompt + answer, LEFT padded so every row's answer
    ends at the last position; ``targets`` (B, K) are the last K = longest answer tokens (-100 where a shorter
    answer or the prompt is), predicted by the logits at positions −K−1..−2."""
    tok = handle.tokenizer
    rows = []
    for prompt, answer in examples:
        p = tok(prompt)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        if not a:
            raise MedinterpError(f"lora: the answer {answer!r} of prompt {prompt!r} has no tokens")
        rows.append((p + a, len(a)))
    return _shuffled_left_padded(rows, _pad_id(tok), budget, _answer_targets)


def _choice_batches(handle: ModelHandle, examples: Sequence[tuple[str, str]], choice_ids: Sequence[int],
                    budget: LoraBudget):
    """Endless (input_ids, attention_mask, targets) batches of the questions alone, LEFT padded; ``targets`` (B,)
    the index in ``choice_ids`` of each answer word's first token."""
    tok, rows = handle.tokenizer, []
    for prompt, answer in examples:
        first = tok(answer, add_special_tokens=False)["input_ids"][:1]
        if not first or first[0] not in choice_ids:
            raise MedinterpError(f"lora: the answer {answer!r} of prompt {prompt!r} is not one of the probe's choices")
        rows.append((tok(prompt)["input_ids"], list(choice_ids).index(first[0])))
    return _shuffled_left_padded(rows, _pad_id(tok), budget, lambda chunk: torch.tensor([t for _, t in chunk]))


class LoraSteps:
    """The ``budget.steps`` training batches of ``examples`` (left padded; :func:`_batches` / :func:`_choice_batches`),
    built once and shared by every block set of a validity run, with every block's output in the intact model at
    every step, recorded in one pass on the first :meth:`entering` (steps x n_layers x (B, T, D): 0.2 GB for
    Gemma-3-270M's drugs probe; ``replay=False`` records nothing and every step runs every block)."""

    def __init__(self, handle: ModelHandle, examples: Sequence[tuple[str, str]], budget: LoraBudget,
                 choice_ids: Sequence[int] | None = None, replay: bool = True):
        if budget.objective == "choice" and not choice_ids:
            raise MedinterpError("lora: objective 'choice' needs the probe's choice_ids")
        if not examples:
            raise MedinterpError("lora: no training examples (the probe's training split is empty)")
        stream = (_choice_batches(handle, examples, choice_ids, budget) if budget.objective == "choice"
                  else _batches(handle, examples, budget))
        self.handle, self.budget, self.replay = handle, budget, replay
        self.choices = torch.tensor(list(choice_ids or ()), dtype=torch.long, device=handle.device)
        self.batches = [tuple(t.to(handle.device) for t in next(stream)) for _ in range(budget.steps)]
        self._outputs: list[list[torch.Tensor]] | None = None  # per step, per block: the intact output (B, T, D)

    @torch.no_grad()  # not inference_mode: the tensors enter the autograd graph of the training steps
    def entering(self, block: int) -> list[torch.Tensor] | None:
        """Per step, the intact model's residual stream (B, T, D) entering ``block`` (None for block 0 or without
        replay). The first call records it for every block: call it while the model is intact (before the
        adapters are attached)."""
        if block == 0 or not self.replay:
            return None
        if self._outputs is None:
            layers, self._outputs = list(self.handle.parts.layers), []
            for ids, mask, _ in tqdm(self.batches, desc="lora: the intact blocks' outputs", leave=False):
                store: dict[int, torch.Tensor] = {}
                with forward_hooks([(layer, record(store, b)) for b, layer in enumerate(layers)]):
                    self.handle.parts.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                                               use_cache=False)
                self._outputs.append([store[b] for b in range(len(layers))])
        return [outputs[block - 1] for outputs in self._outputs]

    def loss(self, k: int) -> tuple[torch.Tensor, int]:
        """The training loss of step ``k`` in the model as it is now, and the step's number of real tokens."""
        ids, mask, targets = self.batches[k]
        if self.budget.objective == "choice":
            return choice_loss(self.handle, ids, mask, targets, self.choices), int(mask.sum())
        return answer_loss(self.handle, ids, mask, targets), int(mask.sum())


def choice_loss(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor,
                choice_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the right choice among ``choice_ids`` (K,) from the logits at the question's last token:
    exactly what the probe scores (:func:`medinterp.validity.probe.choice_logits`), differentiable."""
    out = handle.parts.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    hidden = output_tensor(out.last_hidden_state)[:, -1]  # (B, D)
    logits = answer_logits(handle, hidden, choice_ids.expand(len(hidden), -1))  # (B, K)
    return nn.functional.cross_entropy(logits, targets)


def answer_loss(handle: ModelHandle, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens given the prompt (teacher forcing): the backbone's final normed
    hidden states at the K positions before the last (position −K−1+i predicts answer token i), one (B·K, D) ×
    (D, V) product through the LM head, the model's logit soft-cap, then cross-entropy over the whole vocabulary.
    The same loss as ``labels=`` on the whole sequence, without the prompt's (B, T, V) logits (and without the
    batched product a sliced 3-D input sends ``nn.Linear`` to, 4x slower on a CPU). Position ids follow the real
    tokens (left padding)."""
    k = targets.shape[1]
    out = handle.parts.backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    hidden = output_tensor(out.last_hidden_state)[:, -k - 1:-1]  # (B, K, D)
    logits = head_logits(handle.parts, hidden.reshape(-1, hidden.shape[-1]))  # (B·K, V)
    return nn.functional.cross_entropy(logits, targets.flatten(), ignore_index=-100)


@contextmanager
def lora(handle: ModelHandle, blocks: Sequence[int], steps: LoraSteps) -> Iterator[LoraReport]:
    """Train LoRA adapters on every Linear of ``blocks`` with ``steps``' budget on its batches (a
    :class:`LoraSteps` of the training examples, shared by every block set of a run); inside the ``with`` block
    the model carries them; on exit they are removed."""
    from peft import LoraConfig, get_peft_model

    chosen = check_blocks(blocks, handle.n_layers)
    budget = steps.budget
    start = min(chosen)
    entering = steps.entering(start)  # while the model is intact
    model = handle.model
    targets = linear_names(handle, chosen)
    if not targets:
        raise MedinterpError(f"lora: blocks {list(chosen)} hold no nn.Linear modules to adapt")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    torch.manual_seed(budget.seed)
    peft_model = get_peft_model(model, LoraConfig(r=budget.rank, lora_alpha=budget.alpha, lora_dropout=0.0,
                                                  target_modules=targets))
    report = LoraReport(chosen)
    try:
        params = [p for p in peft_model.parameters() if p.requires_grad]
        report.n_params = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=budget.lr)
        model.eval()  # no dropout: a run is a function of the budget's seed
        began = time.perf_counter()
        for k in tqdm(range(budget.steps), desc=f"lora on blocks {list(chosen)}", unit="step", leave=False):
            with start_at(handle.parts, start, entering[k]) if entering else nullcontext():
                loss, n_tokens = steps.loss(k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            report.losses.append(float(loss.detach()))
            report.tokens += n_tokens
        report.seconds = time.perf_counter() - began
        yield report
    finally:
        peft_model.unload()  # the original Linear modules back in place, adapters gone
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
        for name in ("peft_config", "_hf_peft_config_loaded"):
            if name in model.__dict__:
                delattr(model, name)
