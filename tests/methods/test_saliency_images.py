"""Saliency on image prompt sets (medinterp/methods/saliency/images.py): the answer's loss after image + question,
weight gradients restricted to one token type, against plain autograd on one prompt at a time, where the
restriction is made by detaching each Linear's output at the other positions (so only the chosen positions'
δ_t x_tᵀ reach the weight)."""
import numpy as np
import pytest
import torch

from helpers import TINY_VLM_FAMILIES
from medinterp.capture.images import type_masks
from medinterp.methods.saliency.grads import batch_stats, grad_plan, image_inputs, target_losses
from medinterp.methods.saliency.images import encode_image_targets, image_examples, image_pixels
from medinterp.methods.targets import make_batch
from medinterp.models.image_tokens import token_types
from medinterp.prompts import load_prompt_set

VLMS = TINY_VLM_FAMILIES


@pytest.fixture(scope="module")
def examples():
    ps = load_prompt_set("synthetic_xray")
    return image_examples(ps, "which_lobe")[:2] + image_examples(ps, "left_lung")[2:3]  # different answer lengths


def reference_mlp_saliency(handle, tok, pixels, select, block):
    """mean |∂L/∂W| of block ``block``'s MLP weights for ONE prompt, gradients only through positions of ``select``."""
    batch = make_batch([tok], handle.tokenizer.pad_token_id, handle.tokenizer.padding_side)
    extra, _ = image_inputs(handle, batch, pixels, None)
    types = token_types(batch.input_ids, handle.parts.vision.image_token_id, batch.attention_mask)
    keep = type_masks(batch.input_ids, types, handle.tokenizer.all_special_ids)[select][..., None]
    mlp = handle.parts.mlp(block)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    hooks = [m.register_forward_hook(lambda _m, _a, out: torch.where(keep, out, out.detach())) for m in linears]
    params = [p for m in linears for p in m.parameters()]
    try:
        with torch.enable_grad():
            loss = target_losses(handle, batch, extra).sum()
            grads = torch.autograd.grad(loss, params)
    finally:
        for h in hooks:
            h.remove()
    return float(sum(g.abs().sum() for g in grads) / sum(p.numel() for p in params)), float(loss.detach())


@pytest.mark.parametrize("family", VLMS)
@pytest.mark.parametrize("select", ["image", "text", "all"])
def test_image_saliency_equals_autograd_restricted_to_the_token_type(vlms, examples, family, select):
    h = vlms[family]
    chosen = encode_image_targets(h, examples)
    assert [e.target for e, _ in chosen] == [" " + e.target.strip() for e in examples]
    n_image = h.parts.vision.grid.n_tokens
    for _, tok in chosen:  # the processor expanded the placeholder: the image's tokens are in the ids
        assert tok.ids.count(h.parts.vision.image_token_id) == n_image and tok.n_target >= 1
    pixels = image_pixels(h, [e for e, _ in chosen])
    plan = grad_plan(h.parts)
    losses, sums = batch_stats(h, plan, [t for _, t in chosen], "abs", "exact", pixels, select)
    for b, (_, tok) in enumerate(chosen):
        for block in (0, 3):
            want, loss = reference_mlp_saliency(h, tok, pixels[b:b + 1], select, block)
            got = sums[f"mlp.{block}"][b, 0] / plan.n_params[f"mlp.{block}"]
            assert got == pytest.approx(want, rel=1e-4, abs=1e-12)
            # the last block's output at the image positions reaches the answer through no later block: exactly 0
            assert (want == 0) == (select == "image" and block == 3)
            assert losses[b] == pytest.approx(loss, rel=1e-5)
    if select == "image":  # the head predicts the answer at text positions only; the lookup's image rows are replaced
        assert np.all(sums["embed"][:, 0] == 0)
        if "unembed" in sums:
            assert np.all(sums["unembed"][:, 0] == 0)


def test_the_image_set_answer_loss_depends_on_the_image(vlms, examples):
    h = vlms["llava"]
    chosen = encode_image_targets(h, examples[:1])
    pixels = image_pixels(h, [e for e, _ in chosen])
    plan = grad_plan(h.parts)
    loss_a, _ = batch_stats(h, plan, [chosen[0][1]], "abs", "exact", pixels, "all")
    loss_b, _ = batch_stats(h, plan, [chosen[0][1]], "abs", "exact", pixels.flip(-1), "all")  # the mirrored image
    assert abs(loss_a[0] - loss_b[0]) > 1e-6
