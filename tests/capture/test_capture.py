"""Hook capture against transformers' own hidden states, for every tiny architecture and padding side."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.capture import capture, capture_batch, encode
from medinterp.capture.tokens import position_ids
from medinterp.hooks import forward_hooks
from medinterp.errors import MedinterpError

from helpers import TINY_FAMILIES

TEXTS = ["The patient was started on metoprolol for angina.", "Fever.", "A 17-year-old female patient arrives at the clinic."]
TERMS = ["metoprolol", "Fever", "17"]


def spans(texts=TEXTS, terms=TERMS):
    return [(t.index(term), t.index(term) + len(term)) for t, term in zip(texts, terms)]


@pytest.fixture(autouse=True)
def _restore_padding_side(tiny_handles):
    """These tests flip the shared tiny models' padding side; put it back for other test files."""
    before = {f: h.tokenizer.padding_side for f, h in tiny_handles.items()}
    yield
    for f, h in tiny_handles.items():
        h.tokenizer.padding_side = before[f]


def reference_hidden_states(handle, batch):
    with torch.inference_mode():
        return handle.model(**batch.model_inputs(), output_hidden_states=True).hidden_states


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_hooks_equal_output_hidden_states(tiny_handles, family, side):
    h = tiny_handles[family]
    h.tokenizer.padding_side = side
    batch = encode(h.tokenizer, TEXTS)
    ours = capture_batch(h, batch, list(range(h.n_layers + 1)), reduction=None)
    ref = reference_hidden_states(h, batch)
    real = batch.attention_mask.bool()
    assert len(ours) == len(ref) == h.n_layers + 1
    for layer in range(h.n_layers):  # every entry but the last is the raw residual stream
        assert (ours[layer][real] - ref[layer][real]).abs().max() < 1e-5, layer
    # transformers normalises the last entry; we keep the raw block output, so final_norm(ours) == ref.
    assert (h.parts.final_norm(ours[-1])[real] - ref[-1][real]).abs().max() < 1e-5
    assert (ours[-1][real] - ref[-1][real]).abs().max() > 1e-3


@pytest.mark.parametrize("reduction", ["last", "mean", "term"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_reductions_match_a_direct_computation(tiny_handles, reduction, side):
    h = tiny_handles["gemma3"]
    h.tokenizer.padding_side = side
    got = capture(h, TEXTS, reduction, batch_size=3, term_spans=spans())
    enc = h.tokenizer(TEXTS, return_offsets_mapping=True, return_special_tokens_mask=True)
    for i, text in enumerate(TEXTS):  # one prompt at a time: no padding at all
        ids = torch.tensor([enc["input_ids"][i]])
        with torch.inference_mode():
            hs = h.model(input_ids=ids, output_hidden_states=True).hidden_states
        if reduction == "last":
            keep = [len(enc["input_ids"][i]) - 1]
        elif reduction == "mean":
            keep = [j for j, s in enumerate(enc["special_tokens_mask"][i]) if not s]
        else:
            a, b = spans()[i]
            keep = [j for j, (s, e) in enumerate(enc["offset_mapping"][i]) if s < b and e > a and e > s]
        for layer in range(h.n_layers):
            want = hs[layer][0, keep].mean(0).numpy()
            np.testing.assert_allclose(got[layer, i], want, atol=2e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_batching_does_not_change_a_prompt_activation(tiny_handles, family):
    h = tiny_handles[family]
    h.tokenizer.padding_side = "left"
    batched = capture(h, TEXTS * 3, batch_size=4)
    for i, text in enumerate(TEXTS):
        alone = capture(h, [text], batch_size=1)[:, 0]
        assert np.abs(batched[:, i] - alone).max() < 1e-5


def test_term_tokens_are_the_terms_tokens(tiny_handles):
    h = tiny_handles["llama"]
    batch = encode(h.tokenizer, TEXTS, "term", spans())
    for i, term in enumerate(TERMS):
        ids = batch.input_ids[i][batch.pool_weight[i] > 0]
        assert h.tokenizer.decode(ids).strip() == term


def test_no_lm_head_no_final_norm_and_early_stop(tiny_handles):
    h = tiny_handles["qwen2"]
    calls = {"lm_head": 0, "norm": 0, "layer3": 0}

    def count(name):
        def hook(*_):
            calls[name] += 1
        return hook

    with forward_hooks([(h.parts.lm_head, count("lm_head")), (h.parts.final_norm, count("norm")),
                        (h.parts.layers[3], count("layer3"))]):
        capture(h, TEXTS, batch_size=8)  # all layers: stops after the last block
        assert calls == {"lm_head": 0, "norm": 0, "layer3": 1}
        capture(h, TEXTS, batch_size=8, layers=[0, 2])  # stops after block 1 (read-out 2)
        assert calls["layer3"] == 1


def test_out_of_memory_suggests_a_smaller_batch(tiny_handles, monkeypatch):
    import medinterp.capture.residual as cap

    def oom(*_a, **_k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(cap, "capture_batch", oom)
    with pytest.raises(MedinterpError, match=r"out of memory at batch_size=32, batch_tokens=16384 .* batch_size=8 or "
                                             r"batch_tokens=4096$"):
        cap.capture(tiny_handles["llama"], TEXTS, batch_size=32)


def test_bad_arguments_are_named(tiny_handles):
    h = tiny_handles["llama"]
    with pytest.raises(MedinterpError, match="unknown reduction 'first'; valid: last, mean, term"):
        capture(h, TEXTS, "first")
    with pytest.raises(MedinterpError, match=r"layer\(s\) \[9\] out of range"):
        capture(h, TEXTS, layers=[9])
    with pytest.raises(MedinterpError, match="The .batch_size. setting must be a positive integer; got 0"):
        capture(h, TEXTS, batch_size=0)


def test_position_ids_count_real_tokens_whatever_the_padding_side():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2], [0, 1, 2, 3, 4]]
