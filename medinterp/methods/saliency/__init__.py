"""Weight-gradient saliency: how strongly each block's weights drive the prediction of the medical term.

Per prompt (an item rendered with a template, cut before its term; see :mod:`medinterp.methods.targets`)
the loss is the teacher-forced negative log-likelihood of the term's tokens,

    L = −Σ_j log p(target_j | prompt, target_<j)            (Marinescu et al., ICLR 2026; methods.md 1.2)

and the saliency of a parameter group P is the mean over its entries of |∂L/∂w| (``reduction="abs"``,
the paper's choice) or of |w · ∂L/∂w| (``"abs_wxg"``, a first-order estimate of the loss change from
zeroing the weight). Groups and the read-out layer they are reported at (methods/base.py convention):

- ``grad_attn`` / ``grad_mlp``: every parameter under ``parts.attn(b)`` / ``parts.mlp(b)`` (q/k/v/o
  projections and their biases, Gemma's and Qwen3's q/k norms; gate/up/down projections), layer b + 1;
- ``grad_block``: the union of the two, i.e. their means weighted by parameter count, layer b + 1. The
  block's own norms (input/post-attention/feed-forward) are in neither group and are not reported;
- ``grad_embed``: the whole embedding matrix (rows of tokens the prompt does not contain have zero
  gradient and count in the mean), layer 0. With tied embeddings the matrix is also the LM head, and
  its gradient is the sum of both uses, as autograd gives it;
- ``grad_unembed``: the LM head, layer n_layers + 1, only when it is not tied to the embedding;
- ``loss``: mean L over prompts, layer −1.

Each value is the mean over prompts of the per-prompt saliency with a bootstrap 95 % CI.

**Exact per-prompt gradients from one backward pass per batch** (``mode="exact"``). Prompts in a batch
do not interact, so the gradient of Σ_b L_b gives, at every module output, the output-gradient δ_b of each
prompt's own loss. Per-prompt weight gradients follow without a backward per prompt:

- ``nn.Linear``: ∂L_b/∂W = Σ_t δ_{b,t} x_{b,t}ᵀ and ∂L_b/∂bias = Σ_t δ_{b,t}, from the captured input x
  and output-gradient δ; padding positions are excluded;
- the embedding: prompt b's gradient is its own tokens' output-gradients scattered onto their rows (a
  token that occurs twice adds up in its row), so Σ|g| is a sum over the touched rows only; with tied
  embeddings the LM head's dense per-prompt gradient is added row-wise before the absolute value;
- norm weights inside attention (q/k norms): a per-prompt vector-Jacobian product of the small module
  on its captured input;
- any other parameter (e.g. attention sinks or fused expert tensors of a mixture-of-experts MLP): one
  extra backward per prompt through the retained graph, exact but slow (a warning says so).

No weight needs ``requires_grad`` for the main pass: the embedding output is made the leaf the backward
starts from, so autograd never materialises a parameter gradient and no ``.grad`` is ever written.

``mode="batch_approx"`` takes |∂(mean_b L_b)/∂w| per batch instead: the absolute value of the *batch
mean* gradient, not the mean of per-prompt absolute values. Opposite-signed per-prompt gradients cancel
before the absolute value, so it is never larger (triangle inequality) and shrinks as the batch grows;
its CI is over batches. It is what one ``loss.mean().backward()`` gives and is kept for comparison only.

Modules: :mod:`~medinterp.methods.saliency.grads` (parameter groups, per-prompt gradient statistics
from one backward pass: :class:`GradPlan`, :class:`UnitGradStats`, :func:`batch_stats`) and
:mod:`~medinterp.methods.saliency.method` (:class:`WeightSaliency`).
"""
from medinterp.methods.saliency.grads import (MODES, REDUCTIONS, GradPlan, UnitGradStats, batch_stats, grad_plan,
                                             only_requires_grad, target_losses)
from medinterp.methods.saliency.method import SaliencyWork, WeightSaliency

__all__ = ["MODES", "REDUCTIONS", "GradPlan", "SaliencyWork", "UnitGradStats", "WeightSaliency", "batch_stats",
           "grad_plan", "only_requires_grad", "target_losses"]
