"""MLP-neuron attribution for one answer token: activation x gradient, integrated gradients, and interventions.

A *neuron* is one coordinate of the input of a block's down projection, ``a = act(gate(x)) * up(x)`` (F of
them per block, F = ``intermediate_size``): the MLP writes ``down.weight[:, i] * a_i`` into the residual
stream, so neuron ``i``'s **output row** is ``down.weight[:, i]`` (D,). The target ``f`` is the logit of the
answer's first token at the question position (medinterp/methods/answer_inputs.py), soft-capped where the
model caps. Scores are summed over the selected positions ``S`` (``tokens=image|text|all``):

- ``grad_x_act`` (multimodal neurons, Schwettmann et al. 2023, ICCV workshops): ``s_i = sum_{t in S}
  a_{t,i} * df/da_{t,i}``, the first-order estimate of what removing the neuron at S costs the logit. One
  forward and one backward pass for every block at once.
- ``integrated_gradients`` (knowledge neurons, Dai et al. 2022, ACL; Sundararajan et al. 2017):
  ``s_i = sum_{t in S} a_{t,i} * int_0^1 df/da_{t,i}(alpha a) d alpha`` where only block ``l``'s neurons at
  S are scaled by alpha (baseline 0, the rest of the forward unchanged). The integral uses ``steps``
  Gauss-Legendre nodes on [0, 1] (exact for polynomials of degree 2 steps - 1; Dai et al. used a 20-step
  Riemann sum, which needs far more steps for the same error). **Completeness**: per prompt and block,
  ``sum_i s_i = f(a) - f(a with the block's neurons at S set to 0)`` up to the quadrature error (tested
  to 1e-3). ``steps`` forward + backward passes per block.

Interventions (Dai et al. 2022, §4): the top neurons of a block multiplied by ``factor`` at S (0: suppress;
2: amplify) and the answer token's probability compared with the intact model's.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from medinterp.errors import MedinterpError
from medinterp.hooks import forward_pre_hooks
from medinterp.methods.answer_inputs import AnswerBatch, forward
from medinterp.models.head import head_logits
from medinterp.models import ModelHandle
from medinterp.models.weights import full_weights

ATTRIBUTIONS = ("grad_x_act", "integrated_gradients")
DOWN = "down_proj"  # the down projection inside a block's MLP (llama, gemma, qwen, mistral)


def down_projections(handle: ModelHandle) -> list[nn.Module]:
    """Every block's down projection; a model without one (a mixture of experts) is a one-line error."""
    out = []
    for layer in range(handle.n_layers):
        down = getattr(handle.parts.mlp(layer), DOWN, None)
        if not isinstance(down, nn.Linear):
            raise MedinterpError(f"method=neurons needs a dense MLP with a {DOWN} Linear in every block (llama, gemma, "
                                 f"qwen, mistral families); {handle.parts.adapter.family!r} block {layer} has none")
        out.append(down)
    return out


def target_logit(handle: ModelHandle, batch: AnswerBatch, target: torch.Tensor) -> torch.Tensor:
    """(B,) float32: the logit of ``target[b]`` at row b's question position (one forward of ``batch``)."""
    hidden = forward(handle, batch).last_hidden_state  # (B, T, D), final-normed
    rows = torch.arange(len(target), device=hidden.device)
    return head_logits(handle.parts, hidden[rows, batch.question])[rows, target]  # (B,)


def _scaled(mask_BT: torch.Tensor, scale: torch.Tensor | float, store: list, index: torch.Tensor | None = None):
    """A pre-hook multiplying the down projection's input by ``scale`` at the ``mask_BT`` positions (only the
    neurons ``index`` when given), keeping the scaled tensor in ``store``."""
    def hook(_module, args):
        a = args[0]  # (B, T, F)
        m = mask_BT.to(a.device, a.dtype)[..., None]  # (B, T, 1)
        if index is not None:
            m = m * torch.zeros(a.shape[-1], device=a.device, dtype=a.dtype).index_fill_(0, index.to(a.device), 1.0)
        new = a * (1 - m) + a * m * scale
        store.append(new)
        return (new, *args[1:])
    return hook


def grad_x_act(handle: ModelHandle, batch: AnswerBatch, mask_BT: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, L, F) float32 activation x gradient scores, summed over the ``mask_BT`` positions."""
    downs = down_projections(handle)
    acts: list[list[torch.Tensor]] = [[] for _ in downs]
    with torch.enable_grad(), forward_pre_hooks([(d, _scaled(mask_BT, 1.0, acts[l])) for l, d in enumerate(downs)]):
        logit = target_logit(handle, batch, target)
        grads = torch.autograd.grad(logit.sum(), [a[0] for a in acts])
    m = mask_BT.to(logit.device, torch.float32)[..., None]  # (B, T, 1)
    return torch.stack([(a[0].float() * g.float() * m).sum(1) for a, g in zip(acts, grads)], 1).detach()


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the ``steps``-point Gauss-Legendre rule on [0, 1] (weights sum to 1)."""
    x, w = np.polynomial.legendre.leggauss(steps)
    return (x + 1) / 2, w / 2


def integrated_gradients(handle: ModelHandle, batch: AnswerBatch, mask_BT: torch.Tensor, target: torch.Tensor,
                         steps: int) -> torch.Tensor:
    """(B, L, F) float32 integrated-gradients scores per block (baseline: the block's neurons at the mask = 0)."""
    downs = down_projections(handle)
    nodes, weights = gauss_legendre(steps)
    acts: list[list[torch.Tensor]] = [[] for _ in downs]
    with torch.no_grad(), forward_pre_hooks([(d, _scaled(mask_BT, 1.0, acts[l])) for l, d in enumerate(downs)]):
        forward(handle, batch)
    out = []
    for down, act in zip(downs, acts):
        total = 0.0
        for alpha, w in zip(nodes, weights):  # the integral of the gradient along alpha a, by quadrature
            kept: list[torch.Tensor] = []
            with torch.enable_grad(), forward_pre_hooks([(down, _scaled(mask_BT, float(alpha), kept))]):
                logit = target_logit(handle, batch, target)
                (grad,) = torch.autograd.grad(logit.sum(), [kept[0]])
            total = total + grad.float() * float(w)  # (B, T, F)
        m = mask_BT.to(total.device, torch.float32)[..., None]  # (B, T, 1)
        out.append((act[0].float() * total * m).sum(1))  # (B, F)
    return torch.stack(out, 1).detach()


@torch.no_grad()
def intervened_prob(handle: ModelHandle, batch: AnswerBatch, mask_BT: torch.Tensor, target: torch.Tensor,
                    layer: int, neurons: torch.Tensor | None, factor: float) -> torch.Tensor:
    """(B,) the answer token's probability with block ``layer``'s ``neurons`` times ``factor`` at the mask
    (``neurons=None``: the intact model)."""
    pairs = [] if neurons is None else [(down_projections(handle)[layer], _scaled(mask_BT, factor, [], neurons))]
    with forward_pre_hooks(pairs):
        hidden = forward(handle, batch).last_hidden_state
    rows = torch.arange(len(target), device=hidden.device)
    return torch.softmax(head_logits(handle.parts, hidden[rows, batch.question]), -1)[rows, target]


def decode_rows(handle: ModelHandle, layer: int, neurons: Sequence[int], k: int) -> list[list[str]]:
    """Each neuron's output row ``down.weight[:, i]`` through the unembedding (``lm_head``, no final norm: a
    direction, not a read-out): its ``k`` top tokens, decoded. The down projection's weight is read through
    :func:`~medinterp.models.weights.full_weights` (loaded when ``device_map`` offloaded it); the head is called,
    so its own hooks place it."""
    down, head = down_projections(handle)[layer], handle.parts.lm_head
    with torch.no_grad():
        with full_weights(down):
            rows = down.weight[:, list(neurons)].T.clone()  # (n, D)
        top = head(rows.to(head.weight.dtype)).topk(k, -1).indices  # (n, k)
    return [[handle.tokenizer.decode([int(t)]) for t in row] for row in top.tolist()]
