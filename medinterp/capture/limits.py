"""Limits of one forward pass: the model's context, the batch limits every method cuts by, and memory errors.

Every method cuts its prompts into batches with :func:`token_batches` (the activation capture, ablation,
patching and saliency alike), under the two run-level limits of conf/map.yaml (``batch_size``,
``batch_tokens``; :class:`medinterp.cell.Cell` carries them to every method):

- each prompt's token length is checked against the model's context (``max_position_embeddings`` of its
  text config, :attr:`medinterp.models.ModelHandle.max_positions`): a longer prompt stops the run with one
  line naming the item, the template, its length and the limit (no silent truncation by position
  embeddings that were never trained that far);
- a batch holds at most ``batch_size`` prompts *and* at most ``batch_tokens`` padded tokens
  (``len(batch) × longest row``, a row being a prompt plus the tokens it grows by, e.g. ablation's answer).
  The token budget only splits batches that would exceed it: with prompts of a few dozen tokens, as in the
  shipped prompt sets, the batches are exactly the ``batch_size`` chunks of the length-sorted order, while a
  12k-token prompt never shares a forward with 31 others. A prompt longer than ``batch_tokens`` on its own
  is one line naming the setting, never a forward pass larger than the budget the user set.

Why two limits and not a token budget alone: the prompt count is the cut that decides the numbers. A
forward's float sums depend on which prompts share it (padding length, batch shape): cutting the golden
tiny-model map's capture into one batch per template instead of 32-prompt chunks moves its UMAP metrics by
up to 0.01 (tests/golden_map.py), and ablation's and patching's by about 1e-6 relative; a token budget alone
cannot reproduce 32-prompt chunks of prompts whose lengths differ (issue 15). ``batch_tokens`` is the memory
limit, ``batch_size`` the cut.

:func:`memory_errors` turns an out-of-memory failure (CUDA's ``OutOfMemoryError``, Python's
``MemoryError``, or the CPU allocator's ``RuntimeError: DefaultCPUAllocator: can't allocate memory``)
into one :class:`~medinterp.errors.MedinterpError` line naming the settings to lower.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.validation import check_positive_int

DEFAULT_BATCH_TOKENS = 16384  # padded tokens per forward (conf/map.yaml); the shipped prompt sets stay far below it


def token_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
                  sort: bool = True, extra_tokens: int = 0, name: Callable[[int], str] | None = None,
                  tokens_setting: str = "batch_tokens") -> list[np.ndarray]:
    """Indices into ``lengths`` per batch: at most ``batch_size`` prompts and ``batch_tokens`` padded tokens.

    With ``sort`` the prompts are visited in stable order of length (similar lengths share a batch: less
    padding); without, in their given order (batches are then contiguous runs). A batch is closed when
    it holds ``batch_size`` prompts or when adding the next prompt would make ``n × (longest +
    extra_tokens)`` exceed the budget (``extra_tokens``: tokens each row grows by, e.g. generated
    answers). A row longer than the budget on its own stops with one line naming it (``name(i)``, e.g.
    ``item 'x', template 't'``) and the setting (``tokens_setting``). ``batch_tokens=None``: no budget.
    Deterministic, so every rank of a data-parallel run cuts the same batches.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("batch_tokens", batch_tokens, allow_none=True)
    for i, n in enumerate(lengths):
        if batch_tokens is not None and n + extra_tokens > batch_tokens:
            plus = f" + {extra_tokens} generated" if extra_tokens else ""
            raise MedinterpError(f"prompt of {name(i) if name else f'index {i}'} is {n}{plus} tokens long, more than "
                                 f"{tokens_setting}={batch_tokens} (padded tokens per forward pass): "
                                 f"raise {tokens_setting}")
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable") if sort else np.arange(len(lengths))
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for pos, i in enumerate(order):
        longest_with = max(longest, int(lengths[i]) + extra_tokens)
        n = pos - start
        over = batch_tokens is not None and n > 0 and (n + 1) * longest_with > batch_tokens
        if n == batch_size or over:
            batches.append(order[start:pos])
            start, longest_with = pos, int(lengths[i]) + extra_tokens
        longest = longest_with
    if start < len(order):
        batches.append(order[start:])
    return batches


def check_context(lengths: Sequence[int], limit: int | None, name: Callable[[int], str], model: str,
                  extra_tokens: int = 0) -> None:
    """Stop with one line at the first prompt whose ``length + extra_tokens`` exceeds the model's context.

    ``name(i)`` says which prompt ``i`` is (e.g. ``item 'metoprolol', template 't1'``); ``limit`` None: unknown
    context, nothing to check.
    """
    if limit is None:
        return
    for i, n in enumerate(lengths):
        if n + extra_tokens > limit:
            plus = f" + {extra_tokens} generated" if extra_tokens else ""
            raise MedinterpError(f"prompt of {name(i)} is {n}{plus} tokens long; model {model!r} has a context of "
                                 f"{limit} tokens (max_position_embeddings): shorten or remove this prompt")


def prompt_batches(handle: Any, texts: Sequence[str], batch_size: int,
                   batch_tokens: int | None = DEFAULT_BATCH_TOKENS, names: Sequence[str] | None = None,
                   sort: bool = True, extra_tokens: int = 0) -> list[np.ndarray]:
    """Tokenize ``texts`` with ``handle``'s tokenizer, check them against its context, and cut :func:`token_batches`.

    ``names[i]`` names prompt ``i`` in the too-long error (default: its first characters).
    """
    lengths = [len(ids) for ids in handle.tokenizer(list(texts))["input_ids"]] if len(texts) else []
    label = (lambda i: names[i]) if names is not None else (lambda i: repr(texts[i][:60]))
    check_context(lengths, handle.max_positions, label, handle.name, extra_tokens)
    return token_batches(lengths, batch_size, batch_tokens, sort, extra_tokens, label)


def prompt_names(prompts: Sequence[Any]) -> list[str]:
    """``item 'x', template 't'`` for each prompt (anything with ``item_id`` and ``template_id``), for errors."""
    return [f"item {p.item_id!r}, template {p.template_id!r}" for p in prompts]


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA/Python out-of-memory errors, and the CPU allocator's ``RuntimeError`` (``can't allocate memory``)."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("DefaultCPUAllocator" in text or "can't allocate memory" in text
                                              or "out of memory" in text)


def memory_error(err: BaseException, batch_size: int, batch_tokens: int | None, device: Any, prefix: str = "",
                 detail: str = "", tokens_setting: str = "batch_tokens") -> MedinterpError:
    """The one-line error for an out-of-memory failure ``err``: where, at which batch limits, what to retry with.

    ``batch_size`` and ``batch_tokens`` are the limits the batch was cut by (conf/map.yaml; ``tokens_setting``
    names the setting of the token budget when a method has its own, ``method.batch_tokens``); ``prefix``
    starts the line (``"ablation method: "``); ``detail`` goes before the advice.
    """
    allocator = isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError)
    kind = "CPU allocator: can't allocate memory" if allocator else type(err).__name__
    tokens = (f" or {tokens_setting}={max(1, batch_tokens // 4)}" if batch_tokens is not None
              else f" or a {tokens_setting} cap")
    return MedinterpError(f"{prefix}out of memory at batch_size={batch_size}, {tokens_setting}={batch_tokens} on "
                          f"{device} ({kind}){detail}; retry with smaller batches, e.g. "
                          f"batch_size={max(1, batch_size // 4)}{tokens}")


@contextmanager
def memory_errors(batch_size: int, batch_tokens: int | None, device: Any, prefix: str = "", detail: str = "",
                  tokens_setting: str = "batch_tokens") -> Iterator[None]:
    """Raise :func:`memory_error` for an out-of-memory failure inside the block; other errors pass unchanged."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise memory_error(err, batch_size, batch_tokens, device, prefix, detail, tokens_setting) from None


__all__ = ["DEFAULT_BATCH_TOKENS", "check_context", "check_positive_int", "is_out_of_memory", "memory_error",
           "memory_errors", "prompt_batches", "prompt_names", "token_batches"]
