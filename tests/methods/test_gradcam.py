"""Grad-CAM on image patches: a tiny VLM whose answer is made to depend on one known patch.

Planting (both tiny families, on a freshly loaded copy):

- image features: the projector's output is replaced (a forward hook: the planted "tower") by
  ``s * brightness(patch) * u + z_patch``: the patch's mean pixel value above the darkest patch's, along a fixed
  unit direction ``u``, plus a fixed vector per patch index (random, orthogonal to ``u``, with a shared
  component ``8 r``);
- language model: every block writes nothing (attention ``o_proj`` and MLP ``down_proj`` zero) except the
  attention of one full-attention block, whose queries are zero (uniform attention), whose values read ``u``
  (half of each head) and ``r`` (the other half) and whose output writes the ``u`` half (weighted 30 to 1) to the answer token's
  unembedding row, the ``r`` half to a direction orthogonal to it. So the answer's logit grows with the
  brightness of whichever patch is bright, carried by that block's attention to it, and attending more to a
  dark patch (more ``r``) lowers it (it also keeps Gemma's norm after the attention from cancelling the signal).

The picture is dark but for one patch: Grad-CAM's argmax must fall on that patch, and on the mirrored
patch for the mirrored picture; reading the same token scores with a wrong layout (the CLS kept, the other
family's grid, column-major) must not find it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import load_tiny
from medinterp.errors import MedinterpError
from medinterp.methods.answer_inputs import AnswerExample, encode
from medinterp.methods.gradcam_maps import gradcam_tokens
from medinterp.models.arch.vision import ImageGrid

FAMILIES = {"llava": ((1, 4), 48), "gemma3_vlm": ((2, 3), 64)}  # planted patch (row, col), image side in pixels


def plant(handle, answer: int, seed: int = 0, scale: float = 30.0, o_scale: float = 100.0) -> int:
    """Plant the model in place for the answer token id ``answer`` (module docstring); returns the block used."""
    parts, vision = handle.parts, handle.parts.vision
    grid = vision.grid
    g = torch.Generator().manual_seed(seed)
    d = handle.d_model
    u = torch.randn(d, generator=g)
    u /= u.norm()
    z = torch.randn(grid.rows * grid.cols, d, generator=g)
    z -= (z @ u)[:, None] * u  # the noise has no u component
    r = torch.randn(d, generator=g)
    r -= (r @ u) * u
    r /= r.norm()
    z += 8.0 * r  # every patch shares a fixed component r, which the values read beside u
    seen = {}

    def tower_input(_module, args, kwargs):
        seen["pixels"] = args[0] if args else kwargs["pixel_values"]

    def projector_output(_module, _inputs, output):
        pixels = seen["pixels"].float().mean(1, keepdim=True)  # (B, 1, H, W)
        cell = pixels.shape[-1] // grid.cols
        bright = torch.nn.functional.avg_pool2d(pixels, cell).flatten(1)  # (B, rows * cols), row-major
        bright = bright - bright.min(1, keepdim=True).values
        return (scale * bright[..., None] * u + z).to(output.dtype)

    vision.tower.register_forward_pre_hook(tower_input, with_kwargs=True)
    vision.projector.register_forward_hook(projector_output)
    types = getattr(parts.text_config, "layer_types", None) or ["full_attention"] * parts.n_layers
    block = max(b for b, t in enumerate(types) if t == "full_attention")
    with torch.no_grad():
        for b in range(parts.n_layers):
            parts.attn(b).o_proj.weight.zero_()
            parts.mlp(b).down_proj.weight.zero_()
        attn = parts.attn(block)
        attn.q_proj.weight.zero_()
        # values: half of each head's dims read u, half a fixed direction r; the output writes those halves to the
        # answer's unembedding row w and to a direction q orthogonal to it (so a norm after the attention, Gemma's
        # post_attention_layernorm, keeps how much u the block read)
        head_dim = attn.head_dim
        w = parts.lm_head.weight[answer].detach().clone()
        q = torch.randn(d, generator=g)
        q -= (q @ w) / (w @ w) * w
        half_v = (torch.arange(attn.v_proj.weight.shape[0]) % head_dim < head_dim // 2)[:, None]
        attn.v_proj.weight.copy_(torch.where(half_v, u[None, :], r[None, :]))
        half_o = (torch.arange(attn.o_proj.weight.shape[1]) % head_dim < head_dim // 2)[None, :]
        n_in = attn.o_proj.weight.shape[1]
        attn.o_proj.weight.copy_(torch.where(half_o, 30 * w[:, None] / w.norm(), q[:, None] / q.norm()) * o_scale / n_in)
    return block


@pytest.fixture(scope="module", params=list(FAMILIES))
def planted(request, cache_dir, tmp_path_factory):
    family = request.param
    handle = load_tiny(family, cache_dir)
    image = picture(tmp_path_factory.mktemp("any"), FAMILIES[family][1], 2, (0, 0), "any")
    answer = int(encode(handle, [example(image)]).first_answer()[0])  # "yes" as the chat template is followed
    return family, handle, answer, plant(handle, answer)


def example(image: str, answer: str = "yes") -> AnswerExample:
    return AnswerExample("a", "t", "Is there an opacity?", answer, image)


def picture(tmp_path, side: int, n: int, cell: tuple[int, int], name: str) -> str:
    """A black ``side`` x ``side`` PNG with one white grid cell (of an ``n`` x ``n`` grid)."""
    from PIL import Image

    pixels = np.zeros((side, side, 3), dtype=np.uint8)
    step = side // n
    r, c = cell
    pixels[r * step:(r + 1) * step, c * step:(c + 1) * step] = 255
    path = tmp_path / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return str(path)


def cams(handle, image: str, target: str = "answer") -> torch.Tensor:
    batch = encode(handle, [example(image)])
    return gradcam_tokens(handle, batch, target, max_answer_tokens=1)[0]  # (L, n_tokens)


def argmax_cell(scores: torch.Tensor, grid: ImageGrid) -> tuple[int, int]:
    r, c = divmod(int(grid.to_grid(scores).flatten().argmax()), grid.cols)
    return r, c


def test_the_map_peaks_on_the_planted_patch_and_follows_the_mirror(planted, tmp_path):
    family, handle, _, block = planted
    (r, c), side = FAMILIES[family]
    grid = handle.parts.vision.grid
    tokens = cams(handle, picture(tmp_path, side, grid.cols, (r, c), "plain"))
    assert int(tokens.abs().sum(-1).argmax()) == block  # the planted block is the only one with a map
    assert argmax_cell(tokens[block], grid) == (r, c)
    assert float(tokens.min()) == 0.0  # clamped: attending more to a dark patch lowers the logit, and counts 0
    mirrored = cams(handle, picture(tmp_path, side, grid.cols, (r, grid.cols - 1 - c), "mirrored"))
    assert argmax_cell(mirrored[block], grid) == (r, grid.cols - 1 - c)
    other = [b for b in range(handle.n_layers) if b != block]
    assert float(tokens[other].abs().max()) == 0.0  # blocks that write nothing get no gradient


def test_wrong_grid_layouts_miss_the_patch(planted, tmp_path):
    family, handle, _, block = planted
    (r, c), side = FAMILIES[family]
    grid = handle.parts.vision.grid
    tokens = cams(handle, picture(tmp_path, side, grid.cols, (r, c), "plain"))[block]
    column_major = divmod(int(tokens.argmax()), grid.rows)[::-1]  # token k read as (k % rows, k // rows)
    assert column_major != (r, c)
    other = ImageGrid(4, 4) if family == "llava" else ImageGrid(6, 6)  # the other family's grid
    for wrong in (ImageGrid(grid.rows, grid.cols, prefix=1), other):  # CLS kept; grids swapped
        with pytest.raises(MedinterpError):
            argmax_cell(tokens, wrong)
    shifted = ImageGrid(grid.rows, grid.cols, prefix=1)  # CLS kept, the scores read one token late
    assert argmax_cell(torch.cat([tokens.new_zeros(1), tokens]), shifted) == (r, c)
    assert argmax_cell(torch.cat([tokens[1:], tokens.new_zeros(1)]), grid) != (r, c)


def test_question_target_uses_the_predicted_token(planted, tmp_path):
    """Before generation the planted model predicts the answer token, so the question map peaks there too."""
    family, handle, answer, block = planted
    (r, c), side = FAMILIES[family]
    grid = handle.parts.vision.grid
    image = picture(tmp_path, side, grid.cols, (r, c), "plain")
    batch = encode(handle, [example(image, "")], teacher_force=False)
    from medinterp.methods.answer_inputs import forward
    from medinterp.models.head import head_logits

    with torch.no_grad():
        hidden = forward(handle, batch).last_hidden_state
    assert int(head_logits(handle.parts, hidden[0, batch.question[0]]).argmax()) == answer
    assert argmax_cell(cams(handle, image, "question")[block], grid) == (r, c)


def test_eager_attention_is_restored(planted, tmp_path):
    _, handle, _, _ = planted
    before = handle.model.config._attn_implementation, handle.model.config.text_config._attn_implementation
    side = FAMILIES[planted[0]][1]
    cams(handle, picture(tmp_path, side, handle.parts.vision.grid.cols, (0, 0), "corner"))
    assert (handle.model.config._attn_implementation, handle.model.config.text_config._attn_implementation) == before
    assert before[0] != "eager"
