"""Limits of one forward pass: the model's context, a padded-token budget per batch, and memory errors.

Every method cuts its prompts into batches with :func:`token_batches` (the activation capture, ablation,
patching and saliency alike):

- each prompt's token length is checked against the model's context (``max_position_embeddings`` of its
  text config, :attr:`medinterp.models.ModelHandle.max_positions`): a longer prompt stops the run with one
  line naming the item, the template, its length and the limit (no silent truncation by position
  embeddings that were never trained that far);
- a batch holds at most ``batch_size`` prompts *and* at most ``max_batch_tokens`` padded tokens
  (``len(batch) × longest prompt``). The budget only splits batches that would exceed it: with prompts
  of a few dozen tokens, as in the shipped prompt sets, the batches are exactly the ``batch_size``
  chunks of the length-sorted order, while a 12k-token prompt never shares a forward with 31 others.

:func:`memory_errors` turns an out-of-memory failure (CUDA's ``OutOfMemoryError``, Python's
``MemoryError``, or the CPU allocator's ``RuntimeError: DefaultCPUAllocator: can't allocate memory``)
into one :class:`~medinterp.errors.MedinterpError` line naming the setting to lower.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from medinterp.errors import MedinterpError
from medinterp.validation import check_positive_int

DEFAULT_MAX_BATCH_TOKENS = 16384  # padded tokens per forward; the shipped prompt sets stay far below it


def token_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS,
                  sort: bool = True, extra_tokens: int = 0) -> list[np.ndarray]:
    """Indices into ``lengths`` per batch: at most ``batch_size`` prompts and ``max_batch_tokens`` padded tokens.

    With ``sort`` the prompts are visited in stable order of length (similar lengths share a batch: less
    padding); without, in their given order (batches are then contiguous runs). A batch is closed when
    it holds ``batch_size`` prompts or when adding the next prompt would make ``n × (longest +
    extra_tokens)`` exceed the budget (``extra_tokens``: tokens each row grows by, e.g. generated
    answers). A prompt over the budget on its own gets a batch of its own. ``max_batch_tokens=None``:
    no budget. Deterministic, so every rank of a data-parallel run cuts the same batches.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_batch_tokens", max_batch_tokens, allow_none=True)
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable") if sort else np.arange(len(lengths))
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for pos, i in enumerate(order):
        longest_with = max(longest, int(lengths[i]) + extra_tokens)
        n = pos - start
        over = max_batch_tokens is not None and n > 0 and (n + 1) * longest_with > max_batch_tokens
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
                   max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS, names: Sequence[str] | None = None,
                   sort: bool = True, extra_tokens: int = 0) -> list[np.ndarray]:
    """Tokenize ``texts`` with ``handle``'s tokenizer, check them against its context, and cut :func:`token_batches`.

    ``names[i]`` names prompt ``i`` in the too-long error (default: its first characters).
    """
    lengths = [len(ids) for ids in handle.tokenizer(list(texts))["input_ids"]] if len(texts) else []
    label = (lambda i: names[i]) if names is not None else (lambda i: repr(texts[i][:60]))
    check_context(lengths, handle.max_positions, label, handle.name, extra_tokens)
    return token_batches(lengths, batch_size, max_batch_tokens, sort, extra_tokens)


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


def memory_error(err: BaseException, setting: str, value: int, device: Any, prefix: str = "",
                 detail: str = "") -> MedinterpError:
    """The one-line error for an out-of-memory failure ``err``: where, at which ``setting``, what to retry with.

    ``setting`` is the name the user sets (``batch_size``, ``method.batch_size``); ``prefix`` starts the
    line (``"ablation method: "``); ``detail`` goes before the advice.
    """
    allocator = isinstance(err, RuntimeError) and not isinstance(err, torch.OutOfMemoryError)
    kind = "CPU allocator: can't allocate memory" if allocator else type(err).__name__
    return MedinterpError(f"{prefix}out of memory at {setting}={value} on {device} ({kind}){detail}; retry with a "
                          f"smaller {setting}, e.g. {setting}={max(1, value // 4)}, or a smaller max_batch_tokens")


@contextmanager
def memory_errors(setting: str, value: int, device: Any, prefix: str = "", detail: str = "") -> Iterator[None]:
    """Raise :func:`memory_error` for an out-of-memory failure inside the block; other errors pass unchanged."""
    try:
        yield
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise memory_error(err, setting, value, device, prefix, detail) from None


__all__ = ["DEFAULT_MAX_BATCH_TOKENS", "check_context", "check_positive_int", "is_out_of_memory", "memory_error",
           "memory_errors", "prompt_batches", "prompt_names", "token_batches"]
