"""The medical feature catalogue and the per-latent table of a trained SAE.

Per-latent table (:func:`latent_table`), on held-out corpus tokens: frequency (share of tokens where the latent
is nonzero), mean activation where nonzero, max activation, Matryoshka group, and the top tokens (the distinct
tokens of its ``top_n`` largest activations, strongest first).

Catalogue (:func:`selectivity_auroc`, :func:`catalogue_rows`): every prompt of a domain's prompt set (each item
through each template) is encoded at the layer; a prompt's activation of latent j is the max over its SAE tokens
(non-pad, position 0 dropped). For each labeling and each label value c, the selectivity of latent j is the
AUROC of that activation for "label = c" against the rest (Mann-Whitney: the probability that a random prompt
of c activates j more than a random other prompt, ties counted 1/2): 1 = fires only on c, 0.5 = no preference
(a latent silent on every prompt scores exactly 0.5). The ``n_per_label`` most selective latents per label go
into the catalogue, with their top tokens. Categorical and ordinal labelings are read (an ordinal level is a
class); numeric ones (age in years) have no classes to be selective for and are skipped.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

CATALOGUE_KINDS = ("categorical", "ordinal")


def selectivity_auroc(acts: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``acts`` (n, m) for the boolean labels ``positive`` (n,): (m,) float64, ties
    averaged (equal to sklearn's roc_auc_score per column). NaN when one class is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(acts.shape[1], np.nan)
    ranks = rankdata(acts, axis=0)  # (n, m), average ranks of ties
    return (ranks[positive].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def top_tokens(f: torch.Tensor, token_ids: np.ndarray, decode, top_n: int = 20, keep: int = 5) -> list[list[str]]:
    """Per latent: the distinct tokens (decoded, ``repr``-free strings) of its ``top_n`` largest activations in
    ``f`` (tokens, m), strongest first, at most ``keep``; [] for a latent that never fires."""
    n = min(top_n, f.shape[0])
    values, rows = f.topk(n, dim=0)  # (n, m)
    out = []
    for j in range(f.shape[1]):
        seen: list[str] = []
        for v, r in zip(values[:, j].tolist(), rows[:, j].tolist()):
            if v <= 0 or len(seen) >= keep:
                break
            text = decode(int(token_ids[r]))
            if text not in seen:
                seen.append(text)
        out.append(seen)
    return out


def latent_table(f: torch.Tensor, tokens: list[list[str]], group_ends: Sequence[int]) -> list[dict]:
    """One row per latent from held-out codes ``f`` (tokens, m): frequency, mean and max activation, group,
    top tokens."""
    active = f > 0
    count = active.sum(0)
    freq = (count.double() / f.shape[0]).tolist()
    mean = (f.sum(0).double() / count.clamp(min=1)).tolist()
    peak = f.max(0).values.tolist()
    group = np.searchsorted(np.asarray(group_ends), np.arange(f.shape[1]), side="right").tolist()
    return [{"latent": j, "group": group[j], "frequency": freq[j], "mean_activation": mean[j],
             "max_activation": peak[j], "dead": count[j].item() == 0, "top_tokens": " | ".join(tokens[j])}
            for j in range(f.shape[1])]


def catalogue_rows(domain: str, labels: dict[str, np.ndarray], acts: np.ndarray, tokens: list[list[str]],
                   n_per_label: int = 3) -> list[dict]:
    """The ``n_per_label`` most selective latents (AUROC, label vs rest) for each label of each labeling;
    ``labels`` maps a labeling to one value per prompt, ``acts`` (prompts, m) the prompt activations."""
    rows = []
    for labeling, values in labels.items():
        values = np.asarray(values).astype(str)
        for label in sorted(set(values.tolist())):
            positive = values == label
            auroc = selectivity_auroc(acts, positive)
            order = np.argsort(-np.nan_to_num(auroc, nan=-1.0), kind="stable")[:n_per_label]
            for rank, j in enumerate(order.tolist(), 1):
                rows.append({"domain": domain, "labeling": labeling, "label": label, "rank": rank, "latent": j,
                             "auroc": float(auroc[j]), "n_label": int(positive.sum()),
                             "n_rest": int((~positive).sum()),
                             "mean_act_label": float(acts[positive, j].mean()),
                             "mean_act_rest": float(acts[~positive, j].mean()),
                             "top_tokens": " | ".join(tokens[j]), "explanation": "", "detection_score": float("nan")})
    return rows


__all__ = ["CATALOGUE_KINDS", "catalogue_rows", "latent_table", "selectivity_auroc", "top_tokens"]
