"""Exact per-prompt weight-gradient statistics from one backward pass per batch (the saliency maths).

:func:`grad_plan` sorts every attention/MLP parameter, the embedding and the LM head into groups and
gradient paths; :class:`UnitGradStats` hooks the forward pass and reduces each output-gradient as it
arrives; :func:`batch_stats` runs one batch. The formulas are in :mod:`medinterp.methods.saliency`.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from medinterp.capture.images import type_masks
from medinterp.models.image_tokens import token_types
from medinterp.models.weights import numel, own_weights, shape
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks
from medinterp.methods.targets import Batch, TargetTokens, make_batch
from medinterp.models import BoundModel, ModelHandle

log = logging.getLogger(__name__)

REDUCTIONS = ("abs", "abs_wxg")  # mean |g| | mean |w·g|
MODES = ("exact", "batch_approx")
CHUNK = 1 << 20  # entries of one weight-gradient slice (4 MB in fp32: built and reduced in cache)


# ---------------------------------------------------------------------------------------------------
# Which parameters go where, and how their per-prompt gradient is obtained
# ---------------------------------------------------------------------------------------------------
@dataclass
class GradPlan:
    """The parameter groups of one model and, per module, the path that yields exact per-prompt gradients."""

    n_params: dict[str, int]  # group → parameter count ("attn.3", "mlp.3", "embed", "unembed")
    linear: list[tuple[nn.Linear, str]] = field(default_factory=list)  # einsum path
    pointwise: list[tuple[nn.Module, str]] = field(default_factory=list)  # per-prompt vjp of a small module
    loop: list[tuple[nn.Parameter, str]] = field(default_factory=list)  # one backward per prompt
    embed: nn.Embedding | None = None  # row-scatter path (None: the embedding is in ``loop``)
    lm_head: nn.Linear | None = None  # einsum path at the kept positions (None: in ``loop``)
    tied: bool = False


def _is_norm(module: nn.Module) -> bool:
    """A parameterised leaf that acts on each token separately (RMSNorm, LayerNorm and their variants)."""
    return not any(True for _ in module.children()) and "norm" in type(module).__name__.lower()


def grad_plan(parts: BoundModel) -> GradPlan:
    """Sort every attention/MLP parameter, the embedding and the LM head into groups and gradient paths."""
    config = getattr(parts.backbone, "config", None)
    # identity, or the config's word (accelerate's offload hooks swap in separate tensors for each module)
    tied = parts.lm_head.weight is parts.embed.weight or bool(getattr(config, "tie_word_embeddings", False))
    plan = GradPlan(n_params=defaultdict(int), tied=tied)

    def add_module(module: nn.Module, group: str) -> None:
        for sub in module.modules():
            own = list(sub.parameters(recurse=False))
            if not own:
                continue
            plan.n_params[group] += sum(numel(p) for p in own)
            if isinstance(sub, nn.Linear):
                plan.linear.append((sub, group))
            elif _is_norm(sub):
                plan.pointwise.append((sub, group))
            else:
                plan.loop.extend((p, group) for p in own)

    for b in range(parts.n_layers):
        add_module(parts.attn(b), f"attn.{b}")
        add_module(parts.mlp(b), f"mlp.{b}")
    plan.n_params["embed"] = numel(parts.embed.weight)
    head_linear = isinstance(parts.lm_head, nn.Linear)
    # The row-scatter path needs a plain lookup and, when tied, the head's share from the einsum path.
    if isinstance(parts.embed, nn.Embedding) and (head_linear or not tied):
        plan.embed = parts.embed
    else:  # (when tied, the loop's gradient of the shared matrix covers both uses)
        plan.loop.append((parts.embed.weight, "embed"))
    if not tied:
        plan.n_params["unembed"] = sum(numel(p) for p in parts.lm_head.parameters())
        if head_linear:
            plan.lm_head = parts.lm_head
        else:
            plan.loop.extend((p, "unembed") for p in parts.lm_head.parameters())
    elif plan.embed is not None:
        plan.lm_head = parts.lm_head
    if plan.loop:
        names = sorted({g for _, g in plan.loop})
        parted = sorted({g for p, g in plan.loop if hasattr(p, "ds_id")})
        if parted:
            # Their gradient is one extra backward per prompt over the retained graph; under ZeRO-3 the tensors
            # that graph saved from the weights (views, expert slices) were freed when the weights were
            # re-partitioned after the first backward, so it would fail deep inside autograd.
            more = f" and {len(parted) - 6} more" if len(parted) > 6 else ""
            raise MedinterpError(f"saliency: parameters of groups {', '.join(parted[:6])}{more} (not Linear, norm or "
                                 f"embedding: e.g. MoE experts, routers, attention sinks) have no per-prompt gradient "
                                 f"under strategy=zero3; use strategy=single or ddp for this model")
        log.warning("saliency: %d parameters (groups %s) have no batched per-prompt gradient; using one backward "
                    "per prompt for them (exact, slower)", len(plan.loop), ", ".join(names[:6]))
    plan.n_params = dict(plan.n_params)
    return plan


# ---------------------------------------------------------------------------------------------------
# Statistics of one gradient tensor
# ---------------------------------------------------------------------------------------------------
def _not_resident(weight: torch.Tensor) -> bool:
    """True when only a placeholder of ``weight`` is held outside a forward (ZeRO-3 partition, offloaded)."""
    return hasattr(weight, "ds_id") or getattr(getattr(weight, "_hf_hook", None), "offload", False)


def _plain_call(module: nn.Module, params: dict[str, torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``module``'s own forward with ``params`` substituted, without its hooks.

    ``torch.func.functional_call`` goes through ``module.__call__``, so ZeRO-3's gather hooks (a
    collective) and accelerate's offload hooks would run and fight the substituted tensors; calling the
    class's ``forward`` under the same re-parametrization skips them.
    """
    from torch.nn.utils.stateless import _reparametrize_module

    with _reparametrize_module(module, params):
        return type(module).forward(module, *args)


def _stats(grad: torch.Tensor, weight: torch.Tensor | None, reduction: str) -> torch.Tensor:
    """(Σ|g| or Σ|w·g|, Σ g²) of one gradient tensor, as fp64.

    Sums run in (at least) fp32: torch's cascade summation keeps the relative error near 1e-8 even over
    a vocab × d matrix and is many times faster than an fp64 reduction. (``vector_norm`` is not an
    alternative: its fp32 accumulation drifts by ~1e-4 there.)
    """
    dtype = torch.promote_types(grad.dtype, torch.float32)
    a = grad if reduction == "abs" else grad * weight
    return torch.stack([a.abs().sum(dtype=dtype), grad.square().sum(dtype=dtype)]).double()


def _sq_norm(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """(G,) squared Frobenius norms ‖d[g]ᵀ x[g]‖² = Σ_ts (d_t·d_s)(x_t·x_s), from (n, n) Gram matrices (fp64)."""
    x, d = x.double(), d.double()
    return ((d @ d.transpose(1, 2)) * (x @ x.transpose(1, 2))).sum((1, 2))


def _linear_stats(x: torch.Tensor, d: torch.Tensor, layer: nn.Linear, reduction: str,
                  skip_rows: Sequence[torch.Tensor] | None = None, squares: bool = True) -> torch.Tensor:
    """(G, 2) stats of G per-unit Linear gradients W_grad[g] = d[g]ᵀ x[g] (out, in) and bias_grad[g] = Σ_t d[g, t].

    x: (G, n, in) inputs and d: (G, n, out) output-gradients of each unit's tokens (padding zeroed);
    ``skip_rows[g]`` (sorted row indices) leaves those rows out of unit g's sums. Σ|g| needs the
    gradient itself: it is built in slices of about ``CHUNK`` entries (several units, or a block of
    output rows of one), so a vocab-sized LM head never sits in memory whole and each slice is reduced
    while still in cache. Σ g² comes from the n × n Gram identity and costs nothing next to it for a
    block's layers; ``squares=False`` leaves it NaN (the LM head's: its Gram matrices span the vocabulary,
    and no statistic uses it).
    """
    n_units, _, n_in = x.shape
    n_out = d.shape[-1]
    out = torch.zeros(n_units, 2, dtype=torch.float64, device=x.device)
    acc = torch.promote_types(x.dtype, torch.float32)  # see _stats
    rows = max(1, min(n_out, CHUNK // n_in))
    units = max(1, CHUNK // (rows * n_in))
    for lo in range(0, n_out, rows):
        for u0 in range(0, n_units, units):
            us, rs = slice(u0, u0 + units), slice(lo, lo + rows)
            g = d[us, :, rs].transpose(1, 2) @ x[us]  # (units, rows, in)
            if skip_rows is not None:  # zero the few skipped rows that fall in this slice
                for k, u in enumerate(skip_rows[us]):
                    g[k].index_fill_(0, u[(u >= lo) & (u < lo + rows)] - lo, 0)
            if reduction == "abs_wxg":
                g.mul_(layer.weight[rs])
            out[us, 0] += g.abs_().sum((1, 2), dtype=acc).double()
    out[:, 1] = math.nan
    if squares:
        out[:, 1] = _sq_norm(x, d)
        if skip_rows is not None:
            kept = torch.zeros(d.shape[0], d.shape[-1], dtype=torch.bool, device=d.device)
            for k, u in enumerate(skip_rows):
                kept[k, u] = True
            out[:, 1] -= _sq_norm(x, d.masked_fill(~kept[:, None, :], 0))
    if layer.bias is not None:
        gb = d.sum(1)  # (G, out)
        if skip_rows is not None:
            for k, u in enumerate(skip_rows):
                gb[k, u] = 0
        a = gb if reduction == "abs" else gb * layer.bias
        out += torch.stack([a.abs().sum(1, dtype=acc), gb.square().sum(1, dtype=acc)], dim=1).double()
    return out


# ---------------------------------------------------------------------------------------------------
# One batch
# ---------------------------------------------------------------------------------------------------
@contextmanager
def only_requires_grad(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Turn ``requires_grad`` off for every parameter except ``params``; restore all flags on exit."""
    # (an offloaded model's placeholders are swapped per forward and may be inference tensors: left alone)
    saved = [(p, p.requires_grad) for p in model.parameters() if not p.is_inference()]
    keep = {id(p) for p in params}
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in saved:
            if not p.is_inference():
                p.requires_grad_(flag)


def target_losses(handle: ModelHandle, batch: Batch, extra: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """(B,) teacher-forced L_b = −Σ_j log p(target_j | ...); logits only where a target token is predicted.
    ``extra``: more model inputs (an image batch's ``pixel_values`` and ``token_type_ids``), on the device."""
    device = handle.device
    out = handle.model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                       position_ids=batch.position_ids.to(device), use_cache=False,
                       logits_to_keep=batch.keep.to(device), **(extra or {}))
    logp = torch.log_softmax(out.logits.float(), dim=-1)  # (B, K, V); soft-capping, if any, is in the model
    rows = batch.rows.to(device)
    picked = logp[rows, batch.cols.to(device), batch.tokens.to(device)]  # (N,)
    return torch.zeros(len(batch.input_ids), device=device, dtype=picked.dtype).index_add(0, rows, -picked)


class UnitGradStats:
    """Hooks that turn one backward pass into per-unit gradient statistics of every planned parameter.

    A *unit* is one prompt (``exact``) or the whole batch (``batch_approx``). Forward hooks keep each
    module's input and attach a tensor hook to its output; when the output-gradient δ arrives during the
    backward pass, Linear gradients are reduced on the spot (:func:`_linear_stats`), norm modules are
    queued for :meth:`finish`, and the embedding is handled in :meth:`finish` from the gradient at its
    output. ``acc[group]`` is a (units, 2) tensor of (Σ|g| or Σ|w·g|, Σ g²); Σ g² is NaN for the
    groups that hold the LM head (``embed`` when tied, ``unembed``): see :func:`_linear_stats`.
    """

    def __init__(self, plan: GradPlan, batch: Batch, reduction: str, mode: str, device: torch.device,
                 select: torch.Tensor | None = None) -> None:
        B = len(batch.input_ids)
        self.plan, self.reduction, self.per_prompt = plan, reduction, mode == "exact"
        self.units = ([torch.tensor([b], device=device) for b in range(B)] if self.per_prompt
                      else [torch.arange(B, device=device)])
        self.mask = batch.attention_mask.to(device).bool()  # (B, T) real tokens
        self.keep_mask = batch.keep_mask.to(device)  # (B, K) positions whose logits are scored
        # (B, T) the positions whose gradients count (image prompt sets' ``tokens``; None: every real token)
        self.select = None if select is None else select.to(device)
        if self.select is not None:
            self.mask = self.mask & self.select
            self.keep_mask = self.keep_mask & self.select[:, batch.keep.to(device)]
        self.acc: dict[str, torch.Tensor] = defaultdict(
            lambda: torch.zeros(len(self.units), 2, dtype=torch.float64, device=device))
        self.active = True  # off after the main backward, so extra backward passes do not count twice
        self.deferred: list[tuple[nn.Module, str, torch.Tensor, torch.Tensor]] = []
        self.ids: torch.Tensor | None = None  # (B, T) token ids seen by the embedding
        self.embed_out: torch.Tensor | None = None  # where the backward pass stops
        self.uniq: list[torch.Tensor] = []  # per unit: its distinct real token ids (the rows it touches)
        self.head_rows: dict[int, torch.Tensor] = {}  # tied: per unit, LM-head gradient at those rows
        self._calls: set[int] = set()

    def hooks(self, parts: BoundModel) -> list[tuple[nn.Module, object]]:
        """(module, forward hook) pairs for :func:`medinterp.hooks.forward_hooks`."""
        plan = self.plan
        pairs = [(m, self._linear_hook(g, self.mask)) for m, g in plan.linear]
        pairs += [(m, self._pointwise_hook(g)) for m, g in plan.pointwise]
        pairs.append((parts.embed, self._embed_hook))
        if plan.lm_head is not None:
            pairs.append((plan.lm_head, self._linear_hook("embed" if plan.tied else "unembed", self.keep_mask, True)))
        return pairs

    # -- forward hooks -------------------------------------------------------------------------------
    def _once(self, module: nn.Module) -> None:
        if id(module) in self._calls:
            raise MedinterpError(f"saliency: module {type(module).__name__} runs twice in one forward pass; "
                                 "shared modules are not supported")
        self._calls.add(id(module))

    def _on_grad(self, output: torch.Tensor, fn) -> None:
        """Call ``fn(δ)`` when the output-gradient δ of ``output`` arrives (main backward pass only)."""
        if output.requires_grad:
            output.register_hook(lambda d: fn(d.detach()) if self.active else None)

    def _linear_hook(self, group: str, token_mask: torch.Tensor, head: bool = False):
        def fwd(module: nn.Linear, args, output):
            self._once(module)
            if self.reduction == "abs_wxg" and _not_resident(module.weight):
                raise MedinterpError("saliency: reduction 'abs_wxg' needs each weight during the backward pass, but this "
                                     "model's weights are partitioned (zero3) or offloaded (device_map); use "
                                     "method.reduction=abs or strategy=single/ddp")
            x = args[0].detach()
            if x.dim() != 3 or x.shape[:2] != token_mask.shape:
                raise MedinterpError(f"saliency: a Linear layer got input of shape {tuple(x.shape)}; per-prompt "
                                     f"gradients need (batch, tokens, features) = {tuple(token_mask.shape)} + (features,)")
            self._on_grad(output, lambda d: self._linear(module, group, token_mask, x, d, head))
        return fwd

    def _pointwise_hook(self, group: str):
        def fwd(module: nn.Module, args, output):
            self._once(module)
            x = args[0].detach()
            # a copy of the (small) weights for the vjp after the backward pass. Gathered, not read: ZeRO-3's
            # release hook ran before this one, so a partitioned model holds only a (0,) placeholder here
            # (a collective, in the same module order on every rank); offloaded weights are loaded likewise
            params = own_weights(module)
            if self.select is None:
                self._on_grad(output, lambda d: self.deferred.append((module, group, x, d, params)))
            else:  # only the selected positions' gradients count
                keep = position_mask(self.select, tuple(output.shape), type(module).__name__)
                self._on_grad(output, lambda d: self.deferred.append((module, group, x, torch.where(keep, d, 0),
                                                                      params)))
        return fwd

    def _embed_hook(self, module: nn.Module, args, output):
        self._once(module)
        self.ids = args[0]
        self.uniq = [torch.unique(self.ids[u][self.mask[u]]) for u in self.units]
        if not output.requires_grad:  # no parameter requires grad: make the output the leaf of the backward
            output = output.detach().requires_grad_(True)
        self.embed_out = output
        return output

    # -- gradient statistics -------------------------------------------------------------------------
    def _linear(self, module: nn.Linear, group: str, token_mask: torch.Tensor, x: torch.Tensor, d: torch.Tensor,
                head: bool) -> None:
        keep = token_mask[..., None]
        x, d = torch.where(keep, x, 0), torch.where(keep, d, 0)  # padding contributes nothing
        if not self.per_prompt:  # one unit: every token of the batch
            x, d = x.reshape(1, -1, x.shape[-1]), d.reshape(1, -1, d.shape[-1])
        skip = None
        if head and self.plan.tied:  # the unit's own token rows are summed with the lookup's in finish()
            skip = self.uniq
            for g, u in enumerate(self.uniq):
                self.head_rows[g] = d[g][:, u].T @ x[g]
        self.acc[group] += _linear_stats(x, d, module, self.reduction, skip, squares=not head)

    def finish(self, d_embed: torch.Tensor) -> None:
        """After the backward pass: the queued norm modules and the embedding (δ at its output: ``d_embed``)."""
        self.active = False
        for module, group, x, d, params in self.deferred:
            self._pointwise(module, group, x, d, params)
        if self.plan.embed is not None:
            self._embed(self.plan.embed, d_embed.detach())

    def _pointwise(self, module: nn.Module, group: str, x: torch.Tensor, d: torch.Tensor,
                   weights: dict[str, torch.Tensor]) -> None:
        """Per-unit gradient of a small per-token module's weights: a vjp of the module on its captured input."""
        names, params = zip(*weights.items())
        for g, u in enumerate(self.units):
            copies = [p.requires_grad_(True) for p in params]
            with torch.enable_grad():
                y = _plain_call(module, dict(zip(names, copies)), x[u])
                grads = torch.autograd.grad(y, copies, d[u])
            for p, grad in zip(params, grads):
                self.acc[group][g] += _stats(grad, p.detach(), self.reduction)

    def _embed(self, embed: nn.Embedding, d: torch.Tensor) -> None:
        """Per-unit embedding gradient: the unit's token output-gradients summed into their rows.

        The per-position gradient of the looked-up row is a vjp of the module itself (so Gemma's √d scale
        inside its forward is included) on a per-position copy of the rows, with a dummy row at
        ``padding_idx`` so that index is never used. As in ``F.embedding``, a token equal to
        ``padding_idx`` gets no gradient. With tied embeddings the LM head's gradient at the same rows
        is added before the absolute value; its other rows were counted in :meth:`_linear`.
        """
        sel = self.mask.nonzero(as_tuple=True)  # real positions
        flat_ids = self.ids[sel]  # (N,)
        n = flat_ids.numel()
        pad = embed.padding_idx
        index = torch.arange(n, device=flat_ids.device)
        if pad is not None:
            index = index + (index >= pad).long()  # skip the padding row
        # A lookup is linear in its table, so the vjp does not depend on the table's values: zeros do, and
        # avoid reading a weight that a partitioned or offloaded model does not hold outside its forward.
        table = torch.zeros(n + 1, shape(embed.weight)[1], dtype=embed.weight.dtype, device=flat_ids.device)
        table.requires_grad_(True)
        with torch.enable_grad():
            (g_table,) = torch.autograd.grad(_plain_call(embed, {"weight": table}, index), table, d[sel])
        per_pos = g_table[index]  # (N, d)
        if pad is not None:
            per_pos[flat_ids == pad] = 0
        where = torch.full_like(self.ids, -1)
        where[sel] = torch.arange(n, device=flat_ids.device)  # (B, T) → row of per_pos
        for g, (unit, u) in enumerate(zip(self.units, self.uniq)):
            positions = where[unit][self.mask[unit]]
            rows = torch.zeros(len(u), per_pos.shape[1], dtype=per_pos.dtype, device=per_pos.device)
            rows.index_add_(0, torch.searchsorted(u, flat_ids[positions]), per_pos[positions])
            if g in self.head_rows:
                rows = rows + self.head_rows[g]
            weight = embed.weight[u] if self.reduction == "abs_wxg" else None  # only |w·g| reads the weight
            self.acc["embed"][g] += _stats(rows, weight, self.reduction)


def batch_stats(handle: ModelHandle, plan: GradPlan, tokens: Sequence[TargetTokens], reduction: str = "abs",
                mode: str = "exact", pixel_values: torch.Tensor | None = None,
                select: str | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-prompt losses (B,) and, per group, (units, 2) sums (Σ|g| or Σ|w·g|, Σ g²) of the gradient
    (Σ g² NaN for the groups holding the LM head).

    Units are the B prompts (``exact``) or the batch as one (``batch_approx``: the gradient of the mean
    loss). Divide the first column by ``plan.n_params[group]`` for the mean. Image prompts (a VLM):
    ``tokens`` hold the processor's expanded ids, ``pixel_values`` their images (B, 3, H, W), and ``select``
    the token type whose positions' gradients count (medinterp/methods/saliency/images.py).
    """
    batch = make_batch(tokens, handle.tokenizer.pad_token_id, handle.tokenizer.padding_side)
    extra, mask = image_inputs(handle, batch, pixel_values, select) if pixel_values is not None else (None, None)
    rec = UnitGradStats(plan, batch, reduction, mode, handle.device, mask)
    loop = [p for p, _ in plan.loop]
    was_training = handle.model.training
    handle.model.train(False)
    try:
        with torch.enable_grad(), only_requires_grad(handle.model, loop):
            with forward_hooks(rec.hooks(handle.parts)):
                losses = target_losses(handle, batch, extra)
                total = losses.sum() if rec.per_prompt else losses.mean()
                (d_embed,) = torch.autograd.grad(total, [rec.embed_out], retain_graph=bool(loop))
            rec.finish(d_embed)
            for g, unit in enumerate(rec.units if loop else []):  # the parameters with no batched path
                unit_loss = losses[unit].sum() if rec.per_prompt else total
                grads = torch.autograd.grad(unit_loss, loop, retain_graph=g < len(rec.units) - 1)
                for (p, group), grad in zip(plan.loop, grads):
                    rec.acc[group][g] += _stats(grad, p, reduction)
    finally:
        handle.model.train(was_training)
    return losses.detach().cpu().numpy(), {k: v.cpu().numpy() for k, v in rec.acc.items()}


def position_mask(select: torch.Tensor, shape: tuple[int, ...], module: str) -> torch.Tensor:
    """``select`` (B, T) reshaped to broadcast over a per-token module's output of ``shape``: (B, T, ...) or, for
    norms applied after the heads were split off (Gemma 3's q/k norms: (B, H, T, d)), (B, H, T, d). The token
    axis is the one inner axis of size T; where none or several are, one line names the module."""
    B, T = select.shape
    axes = [i for i in range(1, len(shape) - 1) if shape[i] == T]
    if shape[0] != B or len(axes) != 1:
        raise MedinterpError(f"saliency with tokens: cannot tell the token axis of {module}'s output {shape} "
                             f"(batch {B}, {T} tokens)")
    return select.view(B, *[T if i == axes[0] else 1 for i in range(1, len(shape))])


def image_inputs(handle: ModelHandle, batch: Batch, pixel_values: torch.Tensor,
                 select: str | None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The extra model inputs of a batch of image prompts (``pixel_values``; Gemma 3: ``token_type_ids``) on the
    device, and the (B, T) positions of the token type ``select`` (None: every real token)."""
    vision = handle.parts.vision
    types = token_types(batch.input_ids, vision.image_token_id, batch.attention_mask)  # (B, T): 1 image, 0 text, -1 pad
    extra = {"pixel_values": pixel_values.to(handle.device, handle.model.dtype)}
    if vision.layout.token_type_ids:
        extra["token_type_ids"] = (types == 1).long().to(handle.device)
    mask = None if select is None else type_masks(batch.input_ids, types, handle.tokenizer.all_special_ids)[select]
    return extra, mask
