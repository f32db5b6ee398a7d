"""method=neurons: a planted neuron ranked first under both attributions, its planted output tokens, IG completeness.

Planting: one neuron ``n`` of block ``l`` gets gate and up rows along the MLP's input direction at the planted
positions (so it fires there, strongly), and an output row ``c * (W_U[a] + W_U[b])``: it writes the unembedding
rows of the answer token ``a`` and a second token ``b``. The rest of the model stays random. A tiny random model's
attention carries almost nothing between positions (its weights are ~0.02), so for the image case (the neuron
fires on image tokens, the answer is read at the question position) the next block's attention is planted too:
uniform (zero queries), values reading the neuron's output direction, output writing the answer's unembedding
row: the image signal reaches the answer only through the neuron.
"""
from __future__ import annotations

import pytest
import torch

from helpers import load_tiny
from medinterp.hooks import forward_pre_hooks
from medinterp.methods.answer_inputs import AnswerExample, encode
from medinterp.methods.neuron_attribution import (_scaled, decode_rows, down_projections, grad_x_act,
                                                  integrated_gradients, intervened_prob, target_logit)

NEURON, BLOCK = 7, 1


def fresh(family: str, cache_dir):
    return load_tiny(family, cache_dir)


def block_inputs(handle, batch, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) each: block ``block``'s residual-stream input and its MLP's input."""
    from medinterp.methods.answer_inputs import forward

    seen = {}
    pairs = [(handle.parts.layers[block], lambda _m, args: seen.setdefault("h", args[0])),
             (handle.parts.mlp(block), lambda _m, args: seen.setdefault("x", args[0]))]
    with torch.no_grad(), forward_pre_hooks(pairs):
        forward(handle, batch)
    return seen["h"], seen["x"]


def plant(handle, batch, mask: torch.Tensor, other: int, scale: float = 2.0) -> int:
    """Plant neuron NEURON of block BLOCK (module docstring) on the ``mask`` positions of ``batch``; its output
    there is as long as the residual stream it is added to (large, but no norm saturates). Returns the answer id."""
    h, x = block_inputs(handle, batch, BLOCK)
    x = x[mask]  # (P, D)
    v = x.mean(0)
    v = v / v.norm()
    mlp = handle.parts.mlp(BLOCK)
    answer = int(batch.first_answer()[0])
    w_u = handle.parts.lm_head.weight
    with torch.no_grad():
        mlp.gate_proj.weight[NEURON] = scale * v
        mlp.up_proj.weight[NEURON] = scale * v
        act = (mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))[:, NEURON].mean()  # the neuron's mean activation
        row = w_u[answer] / w_u[answer].norm() + w_u[other] / w_u[other].norm()
        mlp.down_proj.weight[:, NEURON] = row / row.norm() * h[mask].norm(dim=-1).mean() / act
    return answer


def route(handle, block: int, read: torch.Tensor, write: torch.Tensor, scale: float = 50.0) -> None:
    """Block ``block``'s attention: uniform, reading direction ``read`` at every position, writing ``write``."""
    attn = handle.parts.attn(block)
    with torch.no_grad():
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.copy_(torch.ones(attn.v_proj.weight.shape[0], 1) * (read / read.norm())[None, :])
        n_in = attn.o_proj.weight.shape[1]
        attn.o_proj.weight.copy_((write / write.norm())[:, None] * torch.ones(1, n_in) * scale / n_in)


CASES = {  # family, question, answer, tokens, image ("": a text prompt)
    "text_fact": ("llama", "The patient was started on", " metoprolol", "all", ""),
    "image_signal": ("llava", "Is there an opacity?", "yes", "image", "image"),
}


@pytest.fixture(scope="module", params=list(CASES))
def planted(request, cache_dir, tmp_path_factory):
    family, question, answer, tokens, image = CASES[request.param]
    handle = fresh(family, cache_dir)
    path = ""
    if image:
        import numpy as np
        from PIL import Image

        path = str(tmp_path_factory.mktemp("img") / "x.png")
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path)
    batch = encode(handle, [AnswerExample("i", "t", question, answer, path)])
    mask = batch.mask(tokens)
    other = handle.tokenizer(" cardiology", add_special_tokens=False)["input_ids"][0]
    answer_id = plant(handle, batch, mask, other)
    if image:
        route(handle, BLOCK + 1, handle.parts.mlp(BLOCK).down_proj.weight[:, NEURON].detach().clone(),
              handle.parts.lm_head.weight[answer_id].detach().clone())
    return handle, batch, mask, answer_id, other


@pytest.mark.parametrize("attribution", ["grad_x_act", "integrated_gradients"])
def test_the_planted_neuron_ranks_first(planted, attribution):
    handle, batch, mask, answer, _ = planted
    target = batch.first_answer()
    if attribution == "grad_x_act":
        scores = grad_x_act(handle, batch, mask, target)
    else:
        scores = integrated_gradients(handle, batch, mask, target, steps=20)
    assert scores.shape == (1, handle.n_layers, handle.parts.mlp(0).down_proj.in_features)
    assert int(scores[0, BLOCK].argmax()) == NEURON
    assert float(scores[0, BLOCK, NEURON]) > 2 * float(scores[0].flatten().topk(2).values[1])  # clearly first


def test_decoded_tokens_are_the_planted_ones(planted):
    handle, _, _, answer, other = planted
    (tokens,) = decode_rows(handle, BLOCK, [NEURON], 2)
    assert set(tokens) == {handle.tokenizer.decode([answer]), handle.tokenizer.decode([other])}


@pytest.mark.parametrize("family,tokens", [("llama", "all"), ("gemma3_vlm", "image"), ("gemma3_vlm", "text")])
def test_integrated_gradients_are_complete(family, tokens, cache_dir, tmp_path):
    """Per prompt and block: the attributions sum to f(a) - f(block's neurons at the positions = 0), to 1e-3."""
    handle = fresh(family, cache_dir)
    path = ""
    if family == "gemma3_vlm":
        import numpy as np
        from PIL import Image

        path = str(tmp_path / "x.png")
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    examples = [AnswerExample("a", "t", "Is there an opacity in the left lung?", "yes", path),
                AnswerExample("b", "t", "Which lung?", "right lung", path)]
    if not path:
        examples = [AnswerExample("a", "t", "The patient was started on", " metoprolol"),
                    AnswerExample("b", "t", "Aspirin is used for", " pain")]
    batch = encode(handle, examples)
    mask, target = batch.mask(tokens), batch.first_answer()
    scores = integrated_gradients(handle, batch, mask, target, steps=20)  # (B, L, F)
    gaps = []
    with torch.no_grad():
        full = target_logit(handle, batch, target)
        for layer, down in enumerate(down_projections(handle)):
            with forward_pre_hooks([(down, _scaled(mask, 0.0, []))]):
                zero = target_logit(handle, batch, target)
            torch.testing.assert_close(scores[:, layer].sum(-1), full - zero, atol=1e-3, rtol=0)
            gaps.append(float((full - zero).abs().max()))
    assert max(gaps) > 1e-2  # the check is not vacuous


def test_interventions_change_the_answer_probability(planted):
    handle, batch, mask, _, _ = planted
    target = batch.first_answer()
    intact = intervened_prob(handle, batch, mask, target, BLOCK, None, 1.0)
    same = intervened_prob(handle, batch, mask, target, BLOCK, torch.tensor([NEURON]), 1.0)
    torch.testing.assert_close(same, intact)
    suppressed = intervened_prob(handle, batch, mask, target, BLOCK, torch.tensor([NEURON]), 0.0)
    amplified = intervened_prob(handle, batch, mask, target, BLOCK, torch.tensor([NEURON]), 2.0)
    assert float(suppressed) < float(intact) < float(amplified)  # the planted neuron carries the answer
