"""medinterp.hooks on tiny models: record, patch, replace-by-identity (with the KV placeholder),
skip-with-cached-output, stop, add and record_update, each against a plain forward; every hook and forward restored."""
from __future__ import annotations


import pytest
import torch
from torch import nn
from transformers import DynamicCache

from medinterp.errors import MedinterpError
from medinterp.hooks import (StopForward, forward_hooks, output_tensor, patch, record, record_update,
                             replace_by_identity, add, skip_with_outputs)
from medinterp.models.arch import ArchAdapter, BoundModel

from helpers import TINY_FAMILIES, without_block

TEXTS = ["The patient takes metformin 500 mg", "Aspirin", "Discharge medications: lisinopril, 10 mg once daily, and"]


def batch(h):
    enc = h.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def hidden_states(h, ids, mask) -> tuple[torch.Tensor, ...]:
    with torch.inference_mode():
        return h.model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True).hidden_states


def logits(model, ids, mask) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=mask, use_cache=False).logits


def hook_state(h) -> list:
    """Every module's forward hooks and instance-level forward (transformers keeps recorder hooks of its own)."""
    return [(sorted(m._forward_hooks), "forward" in m.__dict__) for m in h.model.modules()]


# -- forward_hooks and stop -------------------------------------------------------------------------------
def test_hooks_are_removed_even_when_the_forward_fails(tiny_handles):
    h = tiny_handles["llama"]
    before = hook_state(h)

    def boom(*_):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with forward_hooks([(h.parts.layers[1], boom)]):
            h.parts.backbone(input_ids=torch.tensor([[1, 2, 3]]))
    assert hook_state(h) == before


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_record_with_stop_gives_the_read_out_ends_the_forward_quietly_and_leaves_no_hook(tiny_handles, family):
    h = tiny_handles[family]
    ids, mask = batch(h)
    want = hidden_states(h, ids, mask)
    before = hook_state(h)
    store, later = {}, []
    with forward_hooks([(h.parts.layers[1], record(store, "b1", stop=True)),
                        (h.parts.layers[2], lambda *_: later.append(1))]):
        with torch.inference_mode():
            h.parts.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
        raise AssertionError("not reached: StopForward leaves the with block")  # pragma: no cover
    assert later == []  # block 2 never ran
    assert torch.equal(store["b1"], want[2])  # block 1's output is hidden_states[2]
    assert hook_state(h) == before


def test_record_reduces_and_stop_is_swallowed_only_by_forward_hooks(tiny_handles):
    h = tiny_handles["qwen2"]
    ids, mask = batch(h)
    store = {}
    with forward_hooks([(h.parts.embed, record(store, 0, reduce=lambda x: x.sum(-1)))]):
        with torch.inference_mode():
            h.parts.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    assert torch.equal(store[0], hidden_states(h, ids, mask)[0].sum(-1))
    with pytest.raises(StopForward):  # a bare StopForward outside forward_hooks is an error like any other
        record({}, 0, stop=True)(None, (), torch.zeros(1))


# -- patch -----------------------------------------------------------------------------------------------
def test_patch_replaces_only_the_masked_positions_and_keeps_tuple_tails(tiny_handles):
    h = tiny_handles["llama"]
    ids, mask = batch(h)
    clean = hidden_states(h, ids, mask)
    source = torch.full_like(clean[2], 7.0)
    where = torch.zeros(mask.shape, dtype=torch.bool)
    where[:, 1] = True
    store = {}
    with forward_hooks([(h.parts.layers[1], patch(source, where)), (h.parts.layers[2], record(store, "in"))]):
        with torch.inference_mode():
            h.parts.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    # hook on block 1: block 2 saw the patched read-out; check it through a second recording of block 1
    got = {}
    with forward_hooks([(h.parts.layers[1], patch(source, where)), (h.parts.layers[1], record(got, "out"))]):
        with torch.inference_mode():
            h.parts.backbone(input_ids=ids, attention_mask=mask, use_cache=False)
    assert torch.equal(got["out"][:, 1], source[:, 1]) and torch.equal(got["out"][:, 0], clean[2][:, 0])
    assert not torch.equal(store["in"], clean[3])  # the patch changed what follows
    out = patch(source, where)(None, (), (clean[2], "tail"))
    assert out[1] == "tail" and torch.equal(output_tensor(out)[:, 1], source[:, 1])


@pytest.mark.parametrize("family", ["llama", "gpt_oss"])
def test_add_from_a_position_on_and_record_update_sums_output_minus_input(tiny_handles, family):
    h = tiny_handles[family]
    ids, mask = batch(h)
    want = hidden_states(h, ids, mask)  # want[1] is block 1's input, want[2] its output
    d = h.model.config.hidden_size
    v = torch.linspace(-1, 1, d)
    at = torch.zeros_like(mask, dtype=torch.bool)
    at[:, -2:] = True
    store, sums = {}, {}
    with forward_hooks([(h.parts.layers[1], add(v, start=ids.shape[1] - 2)), (h.parts.layers[1], record(store, "out"))]):
        hidden_states(h, ids, mask)
    torch.testing.assert_close(store["out"], want[2] + at[..., None] * v, rtol=0, atol=0)
    with forward_hooks([(h.parts.layers[1], record_update(sums, 1, mask.bool()))]):
        hidden_states(h, ids, mask)
        hidden_states(h, ids, mask)  # a second forward adds to the same sum
    expected = 2 * ((want[2] - want[1]).double() * mask[..., None]).sum((0, 1))
    torch.testing.assert_close(sums[1], expected, rtol=1e-12, atol=1e-9)


def test_patching_the_whole_embedding_from_another_run_gives_that_run_exactly(tiny_handles):
    h = tiny_handles["gemma3"]
    ids, mask = batch(h)
    other = ids.clone()
    other[:, 1] = 42  # a different token at one position
    other_embed = hidden_states(h, other, mask)[0]
    with forward_hooks([(h.parts.embed, patch(other_embed, mask.bool()))]):
        got = logits(h.model, ids, mask)
    assert torch.equal(got, logits(h.model, other, mask))


# -- replace by identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("block", [0, 2])
def test_identity_block_passes_its_input_through(tiny_handles, family, block):
    h = tiny_handles[family]
    ids, mask = batch(h)
    with replace_by_identity(h.parts, block):
        states = hidden_states(h, ids, mask)
    assert torch.equal(states[block + 1], states[block])
    assert not torch.equal(hidden_states(h, ids, mask)[block + 1], states[block + 1])  # restored: the block computes


@pytest.mark.parametrize("block", [0, 1, 3])
def test_identity_block_equals_deleting_the_block(tiny_handles, block):
    h = tiny_handles["llama"]
    ids, mask = batch(h)
    want = logits(without_block(h.model, block), ids, mask)
    with replace_by_identity(h.parts, block):
        got = logits(h.model, ids, mask)
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    assert (got - logits(h.model, ids, mask)).abs().max() > 1e-2  # the ablation really changed something


def test_outputs_are_bit_identical_after_the_identity_and_after_an_exception(tiny_handles):
    h = tiny_handles["qwen3"]
    ids, mask = batch(h)
    before, state = logits(h.model, ids, mask), hook_state(h)
    with replace_by_identity(h.parts, 2):
        assert "forward" in h.parts.layers[2].__dict__
    assert torch.equal(logits(h.model, ids, mask), before)
    with pytest.raises(RuntimeError, match="boom"):
        with replace_by_identity(h.parts, 2):
            raise RuntimeError("boom")
    assert hook_state(h) == state and torch.equal(logits(h.model, ids, mask), before)
    with pytest.raises(MedinterpError, match=r"block index in 0\.\.3; got 4"):
        with replace_by_identity(h.parts, 4):
            pass


@pytest.mark.parametrize("family, block", [("llama", 0), ("gemma3", 1), ("gpt_oss", 0), ("qwen3", 3)])
def test_identity_appends_zero_placeholder_keys_so_every_cache_layer_keeps_one_length(tiny_handles, family, block):
    h = tiny_handles[family]
    ids, mask = batch(h)

    def run() -> DynamicCache:  # one forward that fills a KV cache (the model takes it under the blocks' keyword)
        cache = DynamicCache(config=h.model.config)
        with torch.inference_mode():
            h.model(input_ids=ids, attention_mask=mask, use_cache=True, **{h.parts.cache_kwarg: cache})
        return cache

    intact = run()
    with replace_by_identity(h.parts, block):
        cache = run()
    assert [cache.get_seq_length(i) for i in range(h.n_layers)] == [ids.shape[1]] * h.n_layers
    keys, values = cache.layers[block].keys, cache.layers[block].values
    attn = h.parts.attn(block)
    assert keys.shape == values.shape == intact.layers[block].keys.shape  # sliding layers keep only their window
    assert keys.shape[:2] == (len(TEXTS), attn.config.num_key_value_heads) and keys.shape[3] == attn.head_dim
    assert not keys.any() and not values.any()  # placeholders: zeros, never read
    assert cache.layers[(block + 1) % h.n_layers].keys.abs().sum() > 0  # the other layers hold real keys


class OldBlock(nn.Module):
    """A transformers-4.x style block: returns a tuple."""

    def forward(self, hidden_states, attention_mask=None, output_attentions=False) -> tuple[torch.Tensor]:
        return (hidden_states * 2,)


def tuple_parts() -> BoundModel:
    adapter = ArchAdapter(family="old", model_types=(), block_output="tuple")
    return BoundModel(adapter=adapter, embed=nn.Identity(), layers=nn.ModuleList([OldBlock(), OldBlock()]),
                      final_norm=nn.Identity(), lm_head=nn.Identity(), backbone=nn.Identity())


def test_tuple_blocks_get_tuples_and_an_instance_level_forward_is_restored():
    parts = tuple_parts()
    x = torch.ones(1, 2, 3)
    marker = parts.layers[1].forward
    parts.layers[1].forward = marker  # someone else's instance-level forward (accelerate leaves one)
    with replace_by_identity(parts, 1):
        out = parts.layers[1](x)
        assert isinstance(out, tuple) and len(out) == 1 and out[0] is x
        out = parts.layers[1](hidden_states=x, output_attentions=True)
        assert out[0] is x and out[1] is None
    assert parts.layers[1].__dict__["forward"] is marker
    with skip_with_outputs(parts, [x + 5]):
        assert torch.equal(parts.layers[0](x)[0], x + 5)
    assert torch.equal(parts.layers[0](x)[0], 2 * x) and "forward" not in parts.layers[0].__dict__


# -- skip with cached output ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_skipping_blocks_with_their_recorded_outputs_reproduces_the_forward_bit_for_bit(tiny_handles, family):
    h = tiny_handles[family]
    ids, mask = batch(h)
    outputs: dict[int, torch.Tensor] = {}
    with forward_hooks([(b, record(outputs, j)) for j, b in enumerate(h.parts.layers)]):
        want = logits(h.model, ids, mask)
    calls = []
    counters = [(b, lambda *_, j=j: calls.append(j)) for j, b in enumerate(h.parts.layers)]
    for k in (1, h.n_layers - 1, h.n_layers):
        calls.clear()
        with skip_with_outputs(h.parts, [outputs[j] for j in range(k)]), forward_hooks(counters):
            got = logits(h.model, ids, mask)
        assert torch.equal(got, want)
        assert calls == list(range(h.n_layers))  # hooks of skipped blocks still run
    # what the skipped blocks return is really the cached tensor: garbage in block 0 changes the logits
    with skip_with_outputs(h.parts, [torch.zeros_like(outputs[0])]):
        assert not torch.equal(logits(h.model, ids, mask), want)
    assert all("forward" not in b.__dict__ for b in h.parts.layers)


def test_skip_restores_an_existing_instance_forward(tiny_handles):
    """Wrappers such as accelerate's set ``block.forward`` on the instance; it must come back."""
    parts = tiny_handles["qwen2"].parts
    block = parts.layers[0]
    wrapper = block.forward
    block.forward = wrapper
    try:
        with skip_with_outputs(parts, [torch.zeros(1)]):
            assert torch.equal(block(torch.ones(3)), torch.zeros(1))
        assert block.__dict__["forward"] is wrapper
    finally:
        block.__dict__.pop("forward", None)
