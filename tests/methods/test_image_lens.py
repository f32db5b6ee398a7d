"""image_lens: equals a decode written out by hand from transformers' own hidden states, final norm applied once."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_tiny
from medinterp.methods.answer_inputs import AnswerExample, encode
from medinterp.methods.image_lens import decode_readouts, image_readouts

SIDES = {"llava": 48, "gemma3_vlm": 64}


@pytest.fixture(scope="module", params=list(SIDES))
def lens_case(request, cache_dir, tmp_path_factory):
    from PIL import Image

    family = request.param
    handle = load_tiny(family, cache_dir)
    with torch.no_grad():  # a final norm with unit gains is idempotent: give it gains, so twice differs from once
        weight = handle.parts.final_norm.weight
        weight.copy_(torch.rand(weight.shape, generator=torch.Generator().manual_seed(0)) + 0.5)
    folder = tmp_path_factory.mktemp("lens")
    paths = []
    for k in range(2):
        path = folder / f"{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (SIDES[family],) * 2 + (3,), dtype=np.uint8)).save(path)
        paths.append(str(path))
    examples = [AnswerExample("a", "t", "Is there an opacity?", "", paths[0]),
                AnswerExample("b", "t", "Which lung contains the opacity, if any?", "", paths[1])]
    return handle, encode(handle, examples, teacher_force=False)


def hand_decode(handle, batch):
    """transformers' hidden_states: [0] the input of block 0, [l] the output of block l - 1 for l < L, [L] the last
    block's output *after* the final norm. So: norm then head for l < L, the head alone at L."""
    with torch.no_grad():
        out = handle.parts.vision.backbone(**batch.inputs, output_hidden_states=True, use_cache=False)
        model_logits = handle.model(**batch.inputs, use_cache=False).logits.float()
    rows = torch.arange(2)[:, None]
    pos = batch.image_positions
    head, norm = handle.parts.lm_head, handle.parts.final_norm
    logits = [head(norm(hs[rows, pos])).float() for hs in out.hidden_states[:-1]]
    logits.append(head(out.hidden_states[-1][rows, pos]).float())
    logits = torch.stack(logits, 1)  # (B, L + 1, n, V)
    cap = handle.parts.logit_softcap
    logits = torch.tanh(logits / cap) * cap if cap else logits
    torch.testing.assert_close(logits[:, -1], model_logits[rows, pos])  # the last read-out: the model's own logits
    return logits, out.hidden_states


def test_the_lens_equals_the_hand_decode(lens_case):
    handle, batch = lens_case
    logits, _ = hand_decode(handle, batch)
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    ent, top = decode_readouts(handle, image_readouts(handle, batch))
    assert ent.shape == (2, handle.n_layers + 1, handle.parts.vision.grid.n_tokens)
    torch.testing.assert_close(ent, entropy, atol=1e-4, rtol=1e-5)
    assert torch.equal(top, logp.topk(5, -1).indices)


def test_the_final_norm_is_applied_once(lens_case):
    """Normalising transformers' last hidden state again (a known mistake) gives other numbers, which the lens
    does not; and read-out L is the raw last-block output, not the normed one."""
    handle, batch = lens_case
    logits, hidden = hand_decode(handle, batch)
    readouts = image_readouts(handle, batch)
    rows, pos = torch.arange(2)[:, None], batch.image_positions
    with torch.no_grad():
        twice = handle.parts.lm_head(handle.parts.final_norm(hidden[-1][rows, pos])).float()
        torch.testing.assert_close(handle.parts.final_norm(readouts[:, -1]), hidden[-1][rows, pos])
    assert not torch.allclose(twice, logits[:, -1], atol=1e-3)
    assert not torch.allclose(readouts[:, -1], hidden[-1][rows, pos], atol=1e-3)
