"""Representation geometry, layer by layer: linearity, anisotropy, intrinsic dimension, contextualization, logit lens.

Every metric of issue 10 at every read-out layer ``l`` (0..n_layers), each with a 95 % bootstrap CI; definitions,
sources and pitfalls in docs/geometry.md, the metric functions in medinterp/metrics/ (linearity, isotropy,
intrinsic_dim, contextual, lens). The ``labeling`` column names the token set a row was computed on:

- ``tokens``: every non-pad, non-special token of every prompt (BOS excluded: an attention sink whose vector is the
  same in every prompt), at most ``max_rows`` per layer, a seeded sample of the same tokens at every layer:
  ``linearity``, ``linearity_heldout``, ``linearity_residual``, ``nonlinearity``, ``intra_similarity`` (+ ``_adj``)
  and ``anisotropy_cosine`` (the baseline ``intra_similarity_adj`` subtracts);
- the cell's ``reduction`` (``last`` | ``mean`` | ``term``; one vector per prompt, as the UMAP method reads):
  ``anisotropy_spectral``, ``anisotropy_cosine``, ``anisotropy_cosine_std``, ``id_twonn``, ``id_mle``,
  ``self_similarity``, ``mev`` (+ ``_adj``, minus this token set's ``anisotropy_cosine``);
- ``last``: the logit lens at each prompt's last token (the read-out position): ``lens_kl``, ``lens_rank``,
  ``lens_top1_agree``, on ``lens_max_prompts`` prompts (a seeded sample; null: all).

Linearity is a property of a block: block ``b`` maps read-out ``b`` to ``b + 1`` and is reported at read-out
``b + 1`` (medinterp/methods/base.py); read-out 0 has NaN rows with a note, so every metric has a row at every
read-out. Contextualization treats the prompt set's templates as the contexts of each term (the reduced vectors of
one item across templates); fewer than 3 templates make it NaN with a note.

Image prompt sets (a VLM; ``tokens=image|text|all``, medinterp/methods/tokens.py): the token set read is the
image's grid tokens, the prompt's text tokens (special tokens excluded) or both, with the masks of
medinterp/capture/images.py. The ``tokens`` rows are the sampled tokens of that type; the reduced set is one
vector per prompt, the mean over that type's tokens (labeling ``mean``, whatever the cell's ``reduction``); the
logit lens stays at each prompt's last token (a text token) under every ``tokens``. Read-out 0 is block 0's
input (the image features are merged after the embedding module), and the model's own output distribution is
the whole VLM's on the image inputs. Rows and summary.json carry ``tokens``; text sets are unchanged.

As a method (medinterp/methods/base.py): model units are prompt batches (cut by the activation capture's helper,
``batch_size`` and ``batch_tokens``), one forward each (the model's own, so the final distribution is its real
output); local units are the read-out layers, in this process by default (``n_jobs = 1``: torch on the model's
device, a GPU where there is one). Every unit is checkpointed by the driver.
"""
from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medinterp.capture.images import (
    ImageTokens,
    encode_images,
    image_batch_order,
    pool_weight,
    require_vision,
    token_masks,
)
from medinterp.capture.lens import lens_logits, output_logits
from medinterp.capture.limits import memory_errors, prompt_batches, prompt_names
from medinterp.capture.residual import readout_modules
from medinterp.capture.tokens import encode, reduce_tokens
from medinterp.errors import MedinterpError
from medinterp.hooks import forward_hooks, record, record_input
from medinterp.methods.base import ItemValue, Measurement, Method, MethodResult, register_method
from medinterp.methods.tokens import MODALITIES as TOKEN_MODALITIES, check_token_setting, token_type
from medinterp.metrics import Estimate, finite_mean_with_ci
from medinterp.metrics.contextual import intra_similarity, mev, self_similarity
from medinterp.metrics.intrinsic_dim import intrinsic_dims
from medinterp.metrics.isotropy import anisotropy_cosine, anisotropy_spectral
from medinterp.metrics.lens import lens_stats
from medinterp.metrics.linearity import linearity_scores
from medinterp.validation import check_int_settings

if TYPE_CHECKING:
    from medinterp.cell import Cell
    from medinterp.models import ModelHandle

log = logging.getLogger(__name__)

TOKENS, LENS = "tokens", "last"  # labelings of the all-token rows and of the lens (the reduced set: the reduction)
FAMILIES = {  # metric family -> metrics (one figure panel each family; docs/geometry.md)
    "linearity": ("linearity", "linearity_heldout", "linearity_residual", "nonlinearity"),
    "anisotropy": ("anisotropy_spectral", "anisotropy_cosine", "anisotropy_cosine_std"),
    "intrinsic_dimension": ("id_twonn", "id_mle"),
    "contextualization": ("self_similarity", "self_similarity_adj", "mev", "mev_adj", "intra_similarity",
                          "intra_similarity_adj"),
    "logit_lens": ("lens_kl", "lens_rank", "lens_top1_agree"),
}
METRICS = tuple(m for ms in FAMILIES.values() for m in ms)
LINEARITY = FAMILIES["linearity"]
LENS_METRICS = FAMILIES["logit_lens"]
MIN_CONTEXTS = 3  # contexts (templates) per term below which contextualization is undefined (issue 10)
LENS_TOLERANCE = 1e-3  # nats: lens_kl at the last read-out above this means the head is not final_norm -> lm_head


@dataclass
class GeometryWork:
    """One geometry cell: its prompts (template-major, the order of :class:`~medinterp.methods.points.Points`), the
    model units' batches, the token sample, and (rank 0, filled by :meth:`Geometry.sink`) the captured arrays."""

    item_ids: list[str]
    template_ids: list[str]
    n_templates: int
    texts: list[str]
    spans: list[tuple[int, int]]
    batches: list[np.ndarray]  # prompt indices per model unit
    offsets: np.ndarray  # (N + 1,) prompt p's tokens are global token ids offsets[p] .. offsets[p + 1] - 1
    sampled: np.ndarray  # (R,) sorted global token ids of the all-token rows (the same at every layer)
    lens_prompts: np.ndarray  # (M,) sorted prompt indices that get the logit lens
    reduction: str
    n_layers: int
    d_model: int
    batch_size: int  # the cell's limits (the out-of-memory message names them)
    batch_tokens: int | None
    reduced: np.ndarray | None = None  # rank 0: (n_layers + 1, N, D) float32, the reduced read-outs
    rows: np.ndarray | None = None  # rank 0: (n_layers + 1, R, D) float32, the sampled token rows
    lens: np.ndarray | None = None  # rank 0: (n_layers + 1, 3, M) float64: lens_kl, lens_rank, lens_top1_agree
    tokens: str | None = None  # image sets: the token type read (image | text | all); None: a text set
    prompts: list[Any] | None = None  # image sets: the prompts (their images), in the order of ``texts``

    @property
    def n_units(self) -> int:
        return len(self.batches)

    @property
    def n_local_units(self) -> int:
        return self.n_layers + 1

    @property
    def row_prompt(self) -> np.ndarray:
        """(R,) the prompt of each sampled row (the groups of linearity's folds and of intra-similarity)."""
        return np.searchsorted(self.offsets, self.sampled, side="right") - 1


def token_sample(lengths: Sequence[int], max_rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, sampled)``: prompt ``p``'s tokens are the global ids ``offsets[p] .. offsets[p + 1] - 1``; the sample
    is every token when there are at most ``max_rows`` (None: no cap), else ``max_rows`` of them drawn without
    replacement with ``seed``, sorted. A function of the lengths and the seed only: the same on every rank and rerun."""
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
    total = int(offsets[-1])
    if max_rows is None or total <= max_rows:
        return offsets, np.arange(total)
    return offsets, np.sort(np.random.default_rng(seed).choice(total, size=max_rows, replace=False))


def lens_sample(n_prompts: int, max_prompts: int | None, seed: int) -> np.ndarray:
    """The sorted prompt indices that get the logit lens: all, or ``max_prompts`` drawn with ``seed``."""
    if max_prompts is None or n_prompts <= max_prompts:
        return np.arange(n_prompts)
    return np.sort(np.random.default_rng(seed + 1).choice(n_prompts, size=max_prompts, replace=False))


@register_method("geometry")
@dataclass(frozen=True)
class Geometry(Method):
    """Per-layer representation geometry (module docstring; docs/geometry.md). Settings are fixed at construction."""

    max_rows: int | None = 20_000  # all-token rows per layer (a seeded sample beyond); None: every token
    lens_max_prompts: int | None = 64  # prompts decoded by the logit lens (a seeded sample); None: all
    k_mle: int = 20  # neighbours of the Levina-Bickel MLE
    discard_fraction: float = 0.1  # TwoNN: the largest mu ratios left out of the fit
    n_folds: int = 5  # grouped folds of linearity_heldout / nonlinearity
    n_pairs: int = 10_000  # random row pairs of anisotropy_cosine
    n_boot: int = 200
    seed: int = 0
    n_jobs: int = 1  # local units in worker processes (1: in this process, torch on the model's device)
    tokens: str | None = None  # image prompt sets: the token set read, image | text | all (null: all); text sets: null

    modalities = TOKEN_MODALITIES  # text sets and image sets (read by token type)

    def __post_init__(self) -> None:
        check_token_setting("geometry", self.tokens)
        check_int_settings("geometry method", self, {"k_mle": 2, "n_folds": 2, "n_pairs": 1, "n_boot": 1, "n_jobs": 1,
                                                     "max_rows": 2, "lens_max_prompts": 2},
                           nullable={"max_rows": "no cap", "lens_max_prompts": "no cap"})
        if not 0.0 <= self.discard_fraction < 1.0:
            raise MedinterpError(f"geometry method: discard_fraction must be in [0, 1); got {self.discard_fraction}")

    # -- the Method seam (medinterp/methods/base.py) -------------------------------------------------------
    def prepare(self, cell: Cell) -> GeometryWork:
        h, ps = cell.handle, cell.prompt_set
        tokens = token_type("geometry", self.tokens, ps)
        prompts = [p for t in cell.templates for p in ps.prompts(t)]  # template-major, as cell.points
        texts = [p.text for p in prompts]
        if tokens is None:
            batches = prompt_batches(h, texts, cell.batch_size, cell.batch_tokens, prompt_names(prompts))
            special = h.tokenizer(texts, return_special_tokens_mask=True)["special_tokens_mask"]
            lengths = [len(mask) - sum(mask) for mask in special]  # non-special tokens per prompt
        else:
            require_vision(h, "the prompt set")
            batches = image_batch_order(h, prompts, cell.batch_size, cell.batch_tokens)
            lengths = image_token_counts(h, prompts, batches, tokens)
        offsets, sampled = token_sample(lengths, self.max_rows, cell.seed)
        return GeometryWork([p.item_id for p in prompts], [p.template_id for p in prompts], len(cell.templates), texts,
                            [p.term_span for p in prompts], batches, offsets, sampled,
                            lens_sample(len(prompts), self.lens_max_prompts, cell.seed),
                            cell.reduction if tokens is None else "mean", h.n_layers, h.d_model, cell.batch_size,
                            cell.batch_tokens, tokens=tokens, prompts=None if tokens is None else prompts)

    def run_unit(self, handle: ModelHandle, work: GeometryWork, i: int) -> dict[str, np.ndarray]:
        """One forward of batch ``i``: its prompts' reduced read-outs, sampled token rows and logit-lens stats."""
        idx = work.batches[i]
        with memory_errors(work.batch_size, work.batch_tokens, handle.device):
            return forward_batch(handle, work, idx)

    def open(self, handle: ModelHandle, work: GeometryWork) -> None:
        shape = (work.n_layers + 1, len(work.texts), work.d_model)
        work.reduced = np.full(shape, np.nan, np.float32)
        work.rows = np.full((work.n_layers + 1, len(work.sampled), work.d_model), np.nan, np.float32)
        work.lens = np.full((work.n_layers + 1, len(LENS_METRICS), len(work.lens_prompts)), np.nan)

    def sink(self, handle: ModelHandle, work: GeometryWork, i: int, result: dict[str, np.ndarray]) -> None:
        work.reduced[:, result["prompts"]] = result["reduced"]
        work.rows[:, np.searchsorted(work.sampled, result["tokens"])] = result["rows"]
        work.lens[:, :, np.searchsorted(work.lens_prompts, result["lens_prompts"])] = result["lens"]

    def close(self, handle: ModelHandle, work: GeometryWork, ok: bool) -> None:
        if ok:
            log.info("%s: %d prompts, %d token rows x %d read-outs x d=%d; measuring layers", handle.name,
                     len(work.texts), len(work.sampled), work.n_layers + 1, work.d_model)

    def local_unit(self, handle: ModelHandle, work: GeometryWork, j: int) -> Callable[[], Any]:
        previous = work.rows[j - 1] if j > 0 else None
        return functools.partial(measure_layer, self, j, work.reduced[j], work.rows[j], previous, work.row_prompt,
                                 work.lens[j], LayerIds.of(work), str(handle.device))

    def finish(self, handle: ModelHandle, work: GeometryWork, results: Sequence[Any]) -> MethodResult:
        per_layer = list(results[work.n_units:])
        measurements = [m for ms, _ in per_layer for m in ms]
        items = [v for _, vs in per_layer for v in vs]
        labelings = {TOKENS: "every non-pad, non-special token (sampled)",
                     work.reduction: f"one vector per prompt (reduction={work.reduction})"}
        if work.tokens is not None:
            labelings = {TOKENS: f"the {work.tokens} tokens of the image prompts (sampled)",
                         work.reduction: f"one vector per prompt: the mean over its {work.tokens} tokens"}
        lens = "the last token of the lens prompts (logit lens)"
        labelings[LENS] = f"{labelings[LENS]}; {lens}" if LENS in labelings else lens
        # no key with the word "token": W&B leaves out files with secret-looking keys (medinterp/secrets.py)
        summary = {"sampled_rows": len(work.sampled), "all_rows": int(work.offsets[-1]), "max_rows": self.max_rows,
                   "lens_prompts": len(work.lens_prompts), "prompts": len(work.texts),
                   "lens_max_prompts": self.lens_max_prompts, "contexts_per_term": work.n_templates,
                   "labelings": labelings, "notes": layer_notes(measurements)}
        if work.tokens is not None:
            summary["tokens"] = work.tokens
        return MethodResult(measurements, artifacts={"summary": summary}, items=items, tokens=work.tokens or "")


def image_token_counts(handle: ModelHandle, prompts: Sequence[Any], batches: Sequence[np.ndarray],
                       tokens: str) -> list[int]:
    """Tokens of type ``tokens`` per image prompt (the processor's expansion of the placeholder, per batch)."""
    counts = [0] * len(prompts)
    for idx in batches:
        mask = token_masks(encode_images(handle, [prompts[i] for i in idx]), handle.tokenizer.all_special_ids)[tokens]
        for i, n in zip(idx, mask.sum(-1).tolist()):
            counts[int(i)] = int(n)
    return counts


def _batch_inputs(handle: ModelHandle, work: GeometryWork, idx: np.ndarray):
    """One batch's inputs on the model's device, its (B, T) cpu mask of the tokens measured, the (B, T, D) -> (B, D)
    reduction and the read-out hooks' modules with whether each records its input (an image set's read-out 0)."""
    texts = [work.texts[p] for p in idx]
    if work.tokens is None:
        spans = [work.spans[p] for p in idx] if work.reduction == "term" else None
        tokens = encode(handle.tokenizer, texts, work.reduction, spans)
        real = (tokens.pool_weight > 0 if work.reduction == "mean" else
                encode(handle.tokenizer, texts, "mean").pool_weight > 0)
        batch = tokens.to(handle.device)
        return batch, real, lambda hidden: reduce_tokens(hidden, batch, work.reduction), \
            [(m, False) for m in readout_modules(handle.parts)]
    images = encode_images(handle, [work.prompts[p] for p in idx])
    weight = pool_weight(images, handle.tokenizer.all_special_ids, work.tokens)  # (B, T): the mean over the type
    real = weight > 0
    batch, weight = ImageTokens(images.to(handle.device, handle.model.dtype)), weight.to(handle.device)
    layers = handle.parts.layers
    return batch, real, lambda hidden: torch.einsum("btd,bt->bd", hidden, weight.to(hidden.dtype)), \
        [(layers[0], True), *((m, False) for m in layers)]


def forward_batch(handle: ModelHandle, work: GeometryWork, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The model side of one batch (prompt indices ``idx``), one forward of the whole model with a hook per read-out.

    Returns numpy arrays: ``prompts`` (B,), ``reduced`` (L + 1, B, D) float32; ``tokens`` (r,) global ids of the
    batch's sampled tokens and ``rows`` (L + 1, r, D) float32; ``lens_prompts`` (m,) and ``lens`` (L + 1, 3, m):
    KL(final || lens) in nats, rank of the final top-1 under the lens (0 = top), top-1 agreement (0/1).
    """
    texts = [work.texts[p] for p in idx]
    batch, real, reduce_batch, readouts = _batch_inputs(handle, work, idx)
    counts = real.sum(-1).numpy()
    expected = work.offsets[idx + 1] - work.offsets[idx]
    if not np.array_equal(counts, expected):
        bad = int(np.flatnonzero(counts != expected)[0])
        raise MedinterpError(f"geometry: prompt {texts[bad]!r} tokenizes to {counts[bad]} tokens in a batch but "
                             f"{expected[bad]} alone; the token sample needs the same tokens either way")
    # global token id of every real token (B, T); a token is a row when it is in the sample
    gid = torch.as_tensor(work.offsets[idx])[:, None] + real.long().cumsum(-1) - 1
    in_sample = torch.as_tensor(np.isin(gid.numpy(), work.sampled)) & real
    lens_rows = torch.as_tensor(np.flatnonzero(np.isin(idx, work.lens_prompts)))
    sel, lens_rows_dev = in_sample.to(handle.device), lens_rows.to(handle.device)
    last_dev = batch.last_index[lens_rows_dev]

    def reduce(hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (reduce_batch(hidden).float().cpu(), hidden[sel].float().cpu(),
                hidden[lens_rows_dev, last_dev])  # the last read-out vectors of the lens prompts, model dtype

    captured: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    modules = readouts
    with torch.inference_mode():
        with forward_hooks([(m, (record_input if is_input else record)(captured, layer, reduce))
                            for layer, (m, is_input) in enumerate(modules)]):
            final = output_logits(handle, batch)[lens_rows_dev]  # (m, V) the model's own output distribution
        # every read-out of the lens prompts in ONE pass over the head: the pass is bound by reading the (V, D) weight
        # (Gemma-3-270M: 671 MB), not by its m (L + 1) rows; also without lens prompts (under ZeRO-3 every rank's
        # every unit gathers the head once)
        m = len(lens_rows)
        decoded = lens_logits(handle.parts, torch.cat([captured[j][2] for j in range(len(modules))]))  # ((L + 1) m, V)
        lens = torch.zeros(len(modules), len(LENS_METRICS), m, dtype=torch.float64)
        for layer in range(len(modules) if m else 0):
            stats = lens_stats(final, decoded[layer * m:(layer + 1) * m])
            lens[layer] = torch.stack([s.double().cpu() for s in stats])  # (3, m)
    return {"prompts": np.asarray(idx), "reduced": np.stack([captured[j][0].numpy() for j in range(len(modules))]),
            "tokens": gid[in_sample].numpy(), "rows": np.stack([captured[j][1].numpy() for j in range(len(modules))]),
            "lens_prompts": np.asarray(idx)[lens_rows.numpy()], "lens": lens.numpy()}


@dataclass(frozen=True)
class LayerIds:
    """What a local unit needs to name its per-item rows: each prompt's item and template, and the shapes."""

    item_ids: tuple[str, ...]
    template_ids: tuple[str, ...]
    n_templates: int
    lens_prompts: tuple[int, ...]
    reduction: str
    n_layers: int

    @classmethod
    def of(cls, work: GeometryWork) -> LayerIds:
        return cls(tuple(work.item_ids), tuple(work.template_ids), work.n_templates,
                   tuple(int(p) for p in work.lens_prompts), work.reduction, work.n_layers)


def _nan(n: int = 0) -> Estimate:
    return Estimate(math.nan, math.nan, math.nan, int(n))


def _mean(values: np.ndarray, n_boot: int, seed: int) -> tuple[Estimate, str]:
    """The mean of per-term/per-prompt ``values`` with its bootstrap CI, and a note when non-finite values (a zero
    vector's cosine) were left out or fewer than 2 remain (no CI)."""
    values = np.asarray(values, dtype=np.float64)
    bad = int((~np.isfinite(values)).sum())
    note = f"{bad} non-finite value(s) of {len(values)} left out" if bad else ""
    if len(values) - bad < 2:
        note = "; ".join(filter(None, [note, f"{len(values) - bad} finite value(s): no CI"]))
    return finite_mean_with_ci(values, n_boot=n_boot, seed=seed), note


def _adjusted(est: Estimate, baseline: Estimate) -> Estimate:
    """``est`` minus a baseline's value (the CI shifted with it: the baseline is held at its point value)."""
    b = baseline.value
    return Estimate(est.value - b, est.ci_low - b, est.ci_high - b, est.n)


def measure_layer(cfg: Geometry, layer: int, reduced: np.ndarray, rows: np.ndarray, previous: np.ndarray | None,
                  row_prompt: np.ndarray, lens: np.ndarray, ids: LayerIds,
                  device: str) -> tuple[list[Measurement], list[ItemValue]]:
    """Every metric of read-out ``layer`` (a local unit): ``reduced`` (N, D) one vector per prompt, ``rows`` (R, D)
    the sampled token rows (``previous``: the same tokens at read-out ``layer - 1``, None at 0), ``row_prompt`` (R,)
    their prompts, ``lens`` (3, M) the lens stats of the lens prompts. Torch on ``device``."""
    dev = torch.device(device)
    X = torch.as_tensor(np.ascontiguousarray(reduced)).to(dev)  # (N, D)
    T = torch.as_tensor(np.ascontiguousarray(rows)).to(dev)  # (R, D)
    out: list[Measurement] = []
    items: list[ItemValue] = []
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}

    def add(labeling: str, metric: str, est: Estimate, note: str = "") -> None:
        out.append(Measurement(labeling, metric, layer, est, note))

    # linearity of block layer - 1 (read-out layer - 1 -> layer), on the token rows
    if previous is None:
        for metric in LINEARITY:
            add(TOKENS, metric, _nan(len(rows)), "undefined at read-out 0: block b's linearity (read-out b -> b + 1) "
                                                 "is reported at read-out b + 1")
    else:
        P = torch.as_tensor(np.ascontiguousarray(previous)).to(dev)
        scores = linearity_scores(P, T, torch.as_tensor(row_prompt), n_folds=cfg.n_folds, **kw)
        for metric in LINEARITY:
            add(TOKENS, metric, scores[metric].estimate, scores[metric].note)

    # anisotropy: spectral and cosine on the reduced set; cosine also on the token rows (intra-similarity's baseline)
    red = ids.reduction
    base = {}
    for labeling, data in ((red, X), (TOKENS, T)):
        s = anisotropy_cosine(data, n_pairs=cfg.n_pairs, **kw)
        base[labeling] = s.estimate
        add(labeling, "anisotropy_cosine", s.estimate, s.note)
    for metric, s in (("anisotropy_spectral", anisotropy_spectral(X, **kw)),
                      ("anisotropy_cosine_std", anisotropy_cosine(X, standardize=True, n_pairs=cfg.n_pairs, **kw))):
        add(red, metric, s.estimate, s.note)

    # intrinsic dimension of the reduced set
    for metric, s in intrinsic_dims(X, k=cfg.k_mle, discard_fraction=cfg.discard_fraction, **kw).items():
        add(red, metric, s.estimate, s.note)  # id_twonn, id_mle from one neighbour search

    # contextualization: the templates are each term's contexts; intra-similarity on the token rows
    n_items = len(ids.item_ids) // max(ids.n_templates, 1)
    terms = ids.item_ids[:n_items]
    if ids.n_templates < MIN_CONTEXTS:
        note = (f"undefined: {ids.n_templates} context(s) per term (templates), fewer than {MIN_CONTEXTS}; "
                f"use templates=all or >= {MIN_CONTEXTS}")
        for metric in ("self_similarity", "self_similarity_adj", "mev", "mev_adj"):
            add(red, metric, _nan(n_items), note)
    else:
        V = X.reshape(ids.n_templates, n_items, -1).transpose(0, 1)  # (terms, contexts, D), template-major prompts
        for metric, fn in (("self_similarity", self_similarity), ("mev", mev)):
            values = fn(V).double().cpu().numpy()  # (terms,)
            est, note = _mean(values, **kw)
            add(red, metric, est, note)
            add(red, f"{metric}_adj", _adjusted(est, base[red]), note)
            items += [ItemValue(red, metric, layer, term, "", float(v)) for term, v in zip(terms, values)]
    groups, counts = np.unique(row_prompt, return_counts=True)
    keep = np.isin(row_prompt, groups[counts >= 2])  # a prompt with one sampled token has intra-similarity 1
    if keep.sum() >= 4:
        kept = row_prompt[keep]
        per_prompt = intra_similarity(T[torch.as_tensor(keep).to(dev)], torch.as_tensor(kept)).double().cpu().numpy()
        est, note = _mean(per_prompt, **kw)
        if not keep.all():
            note = "; ".join(filter(None, [note, f"{len(groups) - len(np.unique(kept))} prompt(s) with one sampled "
                                                 "token left out"]))
        add(TOKENS, "intra_similarity", est, note)
        add(TOKENS, "intra_similarity_adj", _adjusted(est, base[TOKENS]), note)
        items += [ItemValue(TOKENS, "intra_similarity", layer, ids.item_ids[p], ids.template_ids[p], float(v))
                  for p, v in zip(np.unique(kept), per_prompt)]
    else:
        for metric in ("intra_similarity", "intra_similarity_adj"):
            add(TOKENS, metric, _nan(int(keep.sum())), "undefined: fewer than 2 prompts with 2+ sampled tokens")

    # logit lens: per-prompt stats computed on the model side
    guard = ""
    if layer == ids.n_layers and np.nanmax(lens[0], initial=0.0) > LENS_TOLERANCE:
        guard = (f"lens_kl at the last read-out is {np.nanmax(lens[0]):.3g} nats, not 0: this family's output is not "
                 "final_norm -> lm_head (-> soft cap); the lens does not decode as the model does")
        log.warning("geometry: %s", guard)
    for k, metric in enumerate(LENS_METRICS):
        values = lens[k]
        est, note = _mean(values, **kw)
        add(LENS, metric, est, "; ".join(filter(None, [note, guard])))
        items += [ItemValue(LENS, metric, layer, ids.item_ids[p], ids.template_ids[p], float(v))
                  for p, v in zip(ids.lens_prompts, values)]
    return out, items


def layer_notes(measurements: Sequence[Measurement]) -> dict[str, dict[str, list[int]]]:
    """{metric: {note: layers}} of every row with a note (summary.json: why a value is NaN or must be read with care)."""
    notes: dict[str, dict[str, list[int]]] = {}
    for m in measurements:
        if m.note:
            notes.setdefault(f"{m.labeling}/{m.metric}", {}).setdefault(m.note, []).append(m.layer)
    return notes


__all__ = ["FAMILIES", "METRICS", "Geometry", "GeometryWork", "lens_sample", "measure_layer", "token_sample"]
