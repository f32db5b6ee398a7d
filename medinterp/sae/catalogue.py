"""The medical feature catalogue and the per-latent table of a trained SAE.

Per-latent table (:func:`latent_table`), on held-out corpus tokens: frequency (share of tokens where the latent
is nonzero), mean activation where nonzero, max activation, Matryoshka group, the top tokens (the distinct
tokens of its ``top_n`` largest activations, strongest first) and where it fires by token type
(:func:`token_type_columns`, a VLM's image tokens vs text tokens):

- ``image_mass`` = sum of f_j over image tokens / sum of f_j over all tokens: the share of its activation mass
  on image tokens (depends on how many image tokens there are);
- ``image_share`` = mu_image / (mu_image + mu_text), mu_type = mean of f_j over the tokens of that type (zeros
  included; 0 when there are none): the same question free of the base rate, 0.5 for a latent that fires
  alike on both, 1 for one that fires only on image tokens;
- ``token_type``: ``image`` when image_share >= :data:`TOKEN_TYPE_THRESHOLD` (0.9: it fires at least 9 times as
  strongly per image token as per text token), ``text`` when image_share <= 1 - 0.9, ``both`` in between,
  ``dead`` when it never fires. On text alone every live latent is ``text``.

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

from medinterp.sae.activations import IMAGE

CATALOGUE_KINDS = ("categorical", "ordinal")
TOKEN_TYPE_THRESHOLD = 0.9  # image_share at least this: image; at most 1 - this: text; else both


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


def token_type_columns(f: torch.Tensor, types: np.ndarray, threshold: float = TOKEN_TYPE_THRESHOLD) -> list[dict]:
    """Per latent of codes ``f`` (tokens, m) with token ``types`` (tokens,) (1 image, 0 text): ``image_mass``,
    ``image_share`` and the ``token_type`` label (module docstring; NaN shares for a dead latent)."""
    image = torch.as_tensor(np.asarray(types) == IMAGE)
    f = f.double()
    mass_image, mass_all = f[image].sum(0), f.sum(0)  # (m,)
    mu_image = f[image].mean(0) if image.any() else torch.zeros(f.shape[1], dtype=f.dtype)
    mu_text = f[~image].mean(0) if (~image).any() else torch.zeros(f.shape[1], dtype=f.dtype)
    live = mass_all > 0
    nan = torch.full_like(mass_all, float("nan"))
    mass = torch.where(live, mass_image / mass_all.clamp(min=1e-300), nan)
    share = torch.where(live, mu_image / (mu_image + mu_text).clamp(min=1e-300), nan)
    rows = []
    for j, (m, sh, alive) in enumerate(zip(mass.tolist(), share.tolist(), live.tolist())):
        label = "dead" if not alive else "image" if sh >= threshold else "text" if sh <= 1 - threshold else "both"
        rows.append({"image_mass": m, "image_share": sh, "token_type": label})
    return rows


def latent_table(f: torch.Tensor, tokens: list[list[str]], group_ends: Sequence[int],
                 types: np.ndarray | None = None) -> list[dict]:
    """One row per latent from held-out codes ``f`` (tokens, m): frequency, mean and max activation, group,
    top tokens, and with the tokens' ``types`` (tokens,) where it fires (:func:`token_type_columns`)."""
    active = f > 0
    count = active.sum(0)
    freq = (count.double() / f.shape[0]).tolist()
    mean = (f.sum(0).double() / count.clamp(min=1)).tolist()
    peak = f.max(0).values.tolist()
    group = np.searchsorted(np.asarray(group_ends), np.arange(f.shape[1]), side="right").tolist()
    where = token_type_columns(f, types) if types is not None else [{}] * f.shape[1]
    return [{"latent": j, "group": group[j], "frequency": freq[j], "mean_activation": mean[j],
             "max_activation": peak[j], "dead": count[j].item() == 0, **where[j], "top_tokens": " | ".join(tokens[j])}
            for j in range(f.shape[1])]


def catalogue_rows(domain: str, labels: dict[str, np.ndarray], acts: np.ndarray, tokens: list[list[str]],
                   n_per_label: int = 3, token_types: Sequence[str] | None = None) -> list[dict]:
    """The ``n_per_label`` most selective latents (AUROC, label vs rest) for each label of each labeling;
    ``labels`` maps a labeling to one value per prompt, ``acts`` (prompts, m) the prompt activations;
    ``token_types`` (m,), each latent's ``token_type`` label from the per-latent table, goes into a column."""
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
                             **({} if token_types is None else {"token_type": token_types[j]}),
                             "top_tokens": " | ".join(tokens[j]), "explanation": "", "detection_score": float("nan")})
    return rows


__all__ = ["CATALOGUE_KINDS", "TOKEN_TYPE_THRESHOLD", "catalogue_rows", "latent_table", "selectivity_auroc",
           "token_type_columns", "top_tokens"]
