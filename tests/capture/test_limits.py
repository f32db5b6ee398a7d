"""Context length, the batch limits (batch_size, batch_tokens) and one-line memory errors (medinterp/capture/limits.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.capture import capture
from medinterp.errors import MedinterpError
from medinterp.prompts import load_prompt_set
from medinterp.prompts.schema import Prompt


def old_batches(lengths, batch_size):
    """The length-sorted batching every method used before the budget (the reference for 'unchanged')."""
    order = np.argsort(lengths, kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_the_budget_splits_only_a_batch_that_would_exceed_it():
    from medinterp.capture.limits import token_batches

    lengths = [20] * 31 + [12_000]  # a 12k-token prompt among 31 short ones
    assert same(token_batches(lengths, 32, None), old_batches(lengths, 32))  # no budget: one batch of 32
    batches = token_batches(lengths, 32, 16384)
    assert [len(b) for b in batches] == [31, 1] and batches[1].tolist() == [31]
    # padded tokens per batch = n x longest, all within the budget
    assert [len(b) * max(lengths[i] for i in b) for b in batches] == [620, 12_000]
    lengths = [100, 300, 200, 400, 250]
    # sorted 100, 200, 250 (3 x 250 = 750) | + 300 would be 4 x 300 = 1200 > 900: 300, 400 (2 x 400 = 800)
    assert [b.tolist() for b in token_batches(lengths, 8, 900)] == [[0, 2, 4], [1, 3]]
    # in given order: 100, 300, 200 (3 x 300 = 900) | + 400 would be 1600: 400, 250 (800)
    assert [b.tolist() for b in token_batches(lengths, 8, 900, sort=False)] == [[0, 1, 2], [3, 4]]
    assert [b.tolist() for b in token_batches(lengths, 2, 900)] == [[0, 2], [4, 1], [3]]  # the count cap still holds
    assert [b.tolist() for b in token_batches([10, 10, 10], 8, 40, extra_tokens=10)] == [[0, 1], [2]]  # (10 + 10) x 2


def test_a_prompt_over_the_token_budget_alone_is_one_line_naming_it_and_the_setting():
    """Before: it got a forward of its own, larger than the budget the user set."""
    from medinterp.capture.limits import token_batches

    with pytest.raises(MedinterpError) as err:
        token_batches([10, 30, 10], 8, 25, name=lambda i: f"item 'x{i}', template 't'")
    assert str(err.value) == ("prompt of item 'x1', template 't' is 30 tokens long, more than batch_tokens=25 (padded "
                              "tokens per forward pass): raise batch_tokens")
    with pytest.raises(MedinterpError, match=r"^prompt of index 0 is 20 \+ 8 generated tokens long, more than "
                                             r"method.batch_tokens=27 .*raise method.batch_tokens$"):
        token_batches([20], 8, 27, extra_tokens=8, tokens_setting="method.batch_tokens")
    assert [b.tolist() for b in token_batches([20], 8, 28, extra_tokens=8)] == [[0]]  # exactly the budget fits


@pytest.mark.parametrize("domain", ["drugs", "age", "dosage", "symptoms", "disease"])
def test_default_budget_keeps_the_shipped_prompt_sets_batches(tiny_handles, domain):
    """With the default settings every shipped prompt set is cut exactly as before (same per_layer.csv)."""
    from medinterp.capture.limits import DEFAULT_BATCH_TOKENS, token_batches

    tok = tiny_handles["llama"].tokenizer
    ps = load_prompt_set(domain)
    for t in [t.id for t in ps.templates][:3]:
        lengths = [len(ids) for ids in tok([p.text for p in ps.prompts(t)])["input_ids"]]
        for batch_size in (8, 32):
            assert same(token_batches(lengths, batch_size), old_batches(lengths, batch_size))
    for pair in ps.pairs:
        assert len(tok(pair.clean)["input_ids"]) * 32 < DEFAULT_BATCH_TOKENS


def test_a_prompt_longer_than_the_context_is_one_line_naming_it(tiny_handles):
    h = tiny_handles["llama"]
    long = "A patient with " + "a persistent cough and " * 200 + "most likely has"
    prompts = [Prompt("aspirin", "t1", "Aspirin treats", (0, 7)), Prompt("cough", "t2", long, (0, 1))]
    with pytest.raises(MedinterpError, match="tokens long"):  # before: captured silently past the trained positions
        capture(h, [p.text for p in prompts])
    from medinterp.capture.limits import prompt_names

    with pytest.raises(MedinterpError) as err:
        capture(h, [p.text for p in prompts], names=prompt_names(prompts))
    assert h.max_positions == 512  # medinterp/models/tiny.py
    n = len(h.tokenizer(long)["input_ids"])
    assert str(err.value).startswith(f"prompt of item 'cough', template 't2' is {n} tokens long; model 'tiny_llama' "
                                     f"has a context of 512 tokens")
    assert "\n" not in str(err.value) and n > 512


def test_a_cpu_allocation_failure_is_the_one_line_memory_error(tiny_handles, monkeypatch):
    import medinterp.capture.residual as cap

    def no_memory(*_a, **_k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 412316860416 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(cap, "capture_batch", no_memory)
    with pytest.raises(MedinterpError) as err:
        cap.capture(tiny_handles["llama"], ["Aspirin treats", "Metoprolol treats"], batch_size=32)
    assert str(err.value) == ("out of memory at batch_size=32, batch_tokens=16384 on cpu (CPU allocator: can't "
                              "allocate memory); retry with smaller batches, e.g. batch_size=8 or batch_tokens=4096")


def test_memory_errors_let_other_errors_through():
    from medinterp.capture.limits import memory_errors

    with pytest.raises(RuntimeError, match="shape mismatch"):
        with memory_errors(8, None, "cpu"):
            raise RuntimeError("shape mismatch")
    with pytest.raises(MedinterpError) as err:
        with memory_errors(8, None, "cuda:0", prefix="ablation method: "):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert str(err.value) == ("ablation method: out of memory at batch_size=8, batch_tokens=None on cuda:0 "
                              "(OutOfMemoryError); retry with smaller batches, e.g. batch_size=2 or a batch_tokens cap")


def test_ablation_and_patching_batches_turn_allocation_failures_into_the_memory_line(tiny_handles, monkeypatch):
    """The model methods' run_unit goes through the same memory_errors helper as the capture."""
    import medinterp.methods.ablation.method as abl
    import medinterp.methods.patching as pat
    from medinterp.cell import Cell

    def no_memory(*_a, **_k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 412316860416 bytes")

    h, ps = tiny_handles["llama"], load_prompt_set("dosage")
    method = pat.ActivationPatching(sites=("resid_last",), min_gap=0.0, n_boot=10)
    work = method.prepare(Cell(h, ps, method, (), batch_size=8, batch_tokens=1000))
    monkeypatch.setattr(pat, "patch_pairs", no_memory)
    with pytest.raises(MedinterpError) as err:
        method.run_unit(h, work, 0)
    assert str(err.value) == ("patching method: out of memory at batch_size=8, batch_tokens=1000 on cpu (CPU allocator: "
                              "can't allocate memory); retry with smaller batches, e.g. batch_size=2 or batch_tokens=250")
    method = abl.LayerAblation(max_prompts=4, max_new_tokens=2, n_boot=10)
    work = method.prepare(Cell(h, ps, method, ("reads",), batch_size=4))
    side = h.tokenizer.padding_side  # run_unit pads on the left while it runs
    monkeypatch.setattr(abl, "greedy_generate", no_memory)
    with pytest.raises(MedinterpError) as err:
        method.run_unit(h, work, 0)
    assert str(err.value).startswith("ablation method: out of memory at batch_size=4, batch_tokens=16384 on cpu (CPU "
                                     "allocator: can't allocate memory); the log-probs are (batch, answer, vocab) "
                                     "float32; retry")
    assert h.tokenizer.padding_side == side  # restored on the way out, error or not


def test_saliency_memory_error_names_its_own_token_budget(tiny_handles, monkeypatch):
    """Saliency cuts by its own method.batch_tokens where that is the smaller budget, and its memory line says so."""
    import medinterp.methods.saliency.method as sal
    from medinterp.cell import Cell

    def no_memory(*_a, **_k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 412316860416 bytes")

    h = tiny_handles["llama"]
    method = sal.WeightSaliency(max_prompts=4, n_boot=10)
    work = method.prepare(Cell(h, load_prompt_set("drugs"), method, ("started",), batch_size=4))
    monkeypatch.setattr(sal, "batch_stats", no_memory)
    with pytest.raises(MedinterpError) as err:
        method.run_unit(h, work, 0)
    assert str(err.value) == ("saliency method: out of memory at batch_size=4, method.batch_tokens=256 on cpu (CPU "
                              "allocator: can't allocate memory); retry with smaller batches, e.g. batch_size=1 or "
                              "method.batch_tokens=64")
