"""CE-loss recovered and KL to the clean model: the SAE's reconstruction spliced into the forward pass.

For each held-out context, three forward passes of the whole model (medinterp/hooks.py ``record`` / ``patch`` on
the read-out module of ``layer``: the embedding for 0, block l-1's output for l >= 1):

- clean: unchanged; its residual stream h (B, T, d) at the layer is recorded;
- SAE: h replaced by ``reconstruct(h)`` at the SAE tokens (non-pad, position 0 kept clean: the SAE never saw it);
- zero ablation: h replaced by 0 at the same tokens (the ablation SAELens and Gao et al. report; stated in the run).

With CE_c = mean next-token cross-entropy over the predicted tokens (positions t >= 1 whose next token t+1 is
real; the predictions at t = 0 are equal in all three passes and left out):

    CE-loss recovered = (CE_zero - CE_sae) / (CE_zero - CE_clean)

1 = the reconstruction loses nothing the model needs, 0 = as bad as deleting the layer's residual stream; it can
leave [0, 1] (below 0: worse than zero ablation). NaN (with a note) when CE_zero = CE_clean. KL =
mean over the same tokens of KL(p_clean || p_sae), in nats. Logits are the model's own (final norm, head, soft cap).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medinterp.capture.residual import readout_modules
from medinterp.hooks import forward_hooks, patch, record
from medinterp.sae.activations import token_batch
from medinterp.sae.packing import token_mask

ABLATION = "zero"


@dataclass
class SpliceMetrics:
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_loss_recovered: float
    kl: float
    n_tokens: int
    ablation: str = ABLATION
    note: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _logits(handle, batch, hooks) -> torch.Tensor:
    with forward_hooks(hooks):
        return handle.model(**batch.model_inputs(), use_cache=False).logits.float()


@torch.inference_mode()
def splice_metrics(handle, input_ids: torch.Tensor, mask: torch.Tensor, layer: int,
                   reconstruct: Callable[[torch.Tensor], torch.Tensor], batch_contexts: int = 2,
                   progress: bool = True) -> SpliceMetrics:
    """CE clean / SAE / zero, CE-loss recovered and KL over the contexts ``input_ids`` / ``mask`` (n, T);
    ``reconstruct`` maps raw activations (n, d) to raw reconstructions (n, d)."""
    module = readout_modules(handle.parts)[layer]
    sums = {"clean": 0.0, "sae": 0.0, "zero": 0.0, "kl": 0.0}
    count = 0
    for start in tqdm(range(0, len(input_ids), batch_contexts), desc="CE-loss recovered", unit="batch",
                      disable=not progress):
        batch = token_batch(input_ids[start:start + batch_contexts], mask[start:start + batch_contexts]).to(handle.device)
        splice = token_mask(batch.attention_mask)  # (B, T)
        # predicted tokens: t >= 1 with a real next token
        scored = splice[:, :-1] & batch.attention_mask[:, 1:].bool()  # (B, T-1)
        targets = batch.input_ids[:, 1:][scored]  # (n,)
        store: dict[str, torch.Tensor] = {}
        clean = _logits(handle, batch, [(module, record(store, "h"))])
        h = store["h"]  # (B, T, d)
        recon = h.clone()
        recon[splice] = reconstruct(h[splice]).to(h.dtype)
        logp_clean = F.log_softmax(clean[:, :-1][scored], -1)  # (n, V)
        del clean
        logp_sae = F.log_softmax(_logits(handle, batch, [(module, patch(recon, splice))])[:, :-1][scored], -1)
        logp_zero = F.log_softmax(_logits(handle, batch, [(module, patch(torch.zeros_like(h), splice))])[:, :-1][scored], -1)
        pick = targets[:, None]
        sums["clean"] -= float(logp_clean.gather(1, pick).sum())
        sums["sae"] -= float(logp_sae.gather(1, pick).sum())
        sums["zero"] -= float(logp_zero.gather(1, pick).sum())
        sums["kl"] += float((logp_clean.exp() * (logp_clean - logp_sae)).sum())
        count += len(targets)
    if count == 0:
        nan = float("nan")
        return SpliceMetrics(nan, nan, nan, nan, nan, 0, note="no predicted tokens (contexts too short)")
    ce = {k: v / count for k, v in sums.items()}
    gap = ce["zero"] - ce["clean"]
    note = "" if gap != 0 else "CE_zero = CE_clean: zero ablation of the layer changes nothing, recovery undefined"
    recovered = (ce["zero"] - ce["sae"]) / gap if gap != 0 else math.nan
    return SpliceMetrics(ce["clean"], ce["sae"], ce["zero"], recovered, ce["kl"], count, note=note)


__all__ = ["ABLATION", "SpliceMetrics", "splice_metrics"]
