"""SAELens's file layout (jbloomAus/SAELens): ``cfg.json`` + ``sae_weights.safetensors``.

Weights (d = d_in, m = d_sae): W_enc (d, m), W_dec (m, d), b_enc (m), b_dec (d), and for JumpReLU
threshold (m) (older training checkpoints: log_threshold; BatchTopK training checkpoints: topk_threshold ()).
SAELens encodes pre = (x - b_dec * apply_b_dec_to_input) W_enc + b_enc and then:

| cfg.json ``architecture`` | rule | our activation |
|---|---|---|
| ``jumprelu`` (how SAELens saves trained BatchTopK / Matryoshka SAEs; Gemma Scope) | ReLU(pre) * [pre > theta_j] | jumprelu |
| ``topk`` (``k``), or v5 ``standard`` with ``activation_fn_str: topk`` (``activation_fn_kwargs.k``) | per-token top-k of ReLU | topk |
| ``standard`` (ReLU) | ReLU(pre) | jumprelu, theta = 0 |
| ``batchtopk`` / ``matryoshka_batchtopk`` (training checkpoints; ``k``, ``matryoshka_widths``) | threshold topk_threshold | batchtopk |

``apply_b_dec_to_input: false`` is folded into b_enc (b_enc + b_dec W_enc), which gives the same codes.
Activation normalisation other than ``none`` and ``hook_z`` reshaping are refused in one line.

Saving writes the v6 layout: a BatchTopK SAE (Matryoshka or not) as ``jumprelu`` with its threshold repeated
per latent (what SAELens itself does after training), a TopK SAE as ``topk`` with ``k``; the fields SAELens
does not know (our activation, k, Matryoshka group sizes) go under a top-level ``medinterp`` key, which SAELens
ignores and which makes our own round trip exact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from medinterp.errors import MedinterpError
from medinterp.sae.config import SAEConfig
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig
from medinterp.validation import is_int, is_number

WEIGHTS = "sae_weights.safetensors"
CONFIG = "cfg.json"
ARCHITECTURES = ("batchtopk", "jumprelu", "matryoshka_batchtopk", "standard", "topk")


def tensors(sae: SparseAutoencoder) -> dict[str, torch.Tensor]:
    """The safetensors payload: W_enc, W_dec, b_enc, b_dec (+ threshold unless TopK), contiguous float32."""
    out = {name: getattr(sae, name).detach().cpu().contiguous().clone()
           for name in ("W_enc", "W_dec", "b_enc", "b_dec")}
    if sae.config.activation != "topk":
        out["threshold"] = sae.threshold.detach().cpu().clone()
    return out


def cfg_json(sae: SparseAutoencoder, meta: dict[str, Any], train: TrainConfig | None = None) -> dict:
    """SAELens v6 cfg.json of ``sae``; ``meta`` goes to ``metadata`` (model_name, hook_name, ...), our SAE config
    and training settings under ``medinterp``."""
    c = sae.config
    doc: dict[str, Any] = {"architecture": "topk" if c.activation == "topk" else "jumprelu", "d_in": c.d,
                           "d_sae": c.n_latents, "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
                           "normalize_activations": "none", "reshape_activations": "none", "metadata": dict(meta),
                           "medinterp": {**c.to_dict(), "train": None if train is None else train.to_dict()}}
    if c.activation == "topk":
        doc["k"] = c.k
    return doc


def _read_cfg(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MedinterpError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(doc, dict):
        raise MedinterpError(f"{path} must hold a JSON object (SAELens's cfg.json); got {type(doc).__name__}.")
    return doc


def _k(cfg: dict, source: str) -> int:
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if not is_number(k) or float(k) != int(k):
        raise MedinterpError(f"{source} gives no integer k for its top-k rule; got {k!r}.")
    return int(k)


def _config(cfg: dict, sd: dict, d: int, m: int, source: str) -> tuple[SAEConfig, torch.Tensor]:
    """Our SAEConfig and the (m,) threshold of a SAELens cfg.json and weights."""
    arch = cfg.get("architecture", "standard")
    if arch == "standard" and cfg.get("activation_fn_str") == "topk":
        arch = "topk"
    if arch not in ARCHITECTURES:
        raise MedinterpError(f"{source} has the SAELens architecture {arch!r}, which medinterp cannot load; "
                             f"valid: {', '.join(ARCHITECTURES)}.")
    ours = cfg.get("medinterp") if isinstance(cfg.get("medinterp"), dict) else {}
    if arch == "jumprelu":
        if "threshold" in sd:
            threshold = sd["threshold"].float()
        elif "log_threshold" in sd:
            threshold = sd["log_threshold"].float().exp()
        else:
            raise MedinterpError(f"The SAE in {source} is malformed: a jumprelu SAE without 'threshold'.")
        if ours.get("activation") == "batchtopk":  # ours, saved as SAELens saves BatchTopK
            return SAEConfig(d, m, ours.get("k"), "batchtopk", tuple(ours.get("group_sizes") or ())), threshold
        return SAEConfig(d, m, None, "jumprelu"), threshold
    if arch == "standard":
        return SAEConfig(d, m, None, "jumprelu"), torch.zeros(m)
    if arch == "topk":
        return SAEConfig(d, m, _k(cfg, source), "topk", tuple(ours.get("group_sizes") or ())), torch.full((m,), -1.0)
    widths = [int(w) for w in cfg.get("matryoshka_widths") or []] if arch == "matryoshka_batchtopk" else []
    sizes = tuple(b - a for a, b in zip([0] + widths[:-1], widths)) if widths else ()
    if sizes and sum(sizes) < m:  # SAELens appends a last level of width d_sae
        sizes = (*sizes, m - sum(sizes))
    th = sd.get("topk_threshold", torch.tensor(-1.0)).float()
    return SAEConfig(d, m, _k(cfg, source), "batchtopk", sizes), th.expand(m)


def load(folder: Path) -> tuple[SparseAutoencoder, dict]:
    """The SAE of a SAELens folder (cfg.json + sae_weights.safetensors) and its cfg.json."""
    cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
    source = str(folder)
    cfg = _read_cfg(cfg_path)
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise MedinterpError(f"{cfg_path} sets normalize_activations={cfg['normalize_activations']!r}; medinterp "
                             "loads only SAEs on raw activations (valid: none).")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise MedinterpError(f"{cfg_path} sets reshape_activations={cfg['reshape_activations']!r}; valid: none.")
    try:
        sd = load_file(str(w_path))
    except Exception as err:  # noqa: BLE001 (any unreadable file: one line)
        raise MedinterpError(f"{w_path} is not a readable safetensors file ({type(err).__name__}).") from None
    missing = [k for k in ("W_enc", "W_dec", "b_enc", "b_dec") if k not in sd]
    if missing:
        raise MedinterpError(f"The SAE in {source} is malformed: {WEIGHTS} has no {', '.join(missing)}.")
    W_enc, W_dec, b_enc, b_dec = (sd[k].float() for k in ("W_enc", "W_dec", "b_enc", "b_dec"))
    if W_enc.ndim != 2:
        raise MedinterpError(f"The SAE in {source} is malformed: W_enc has shape {tuple(W_enc.shape)}, "
                             "expected (d_in, d_sae).")
    d, m = W_enc.shape
    for name in ("d_in", "d_sae"):
        stated, actual = cfg.get(name), {"d_in": d, "d_sae": m}[name]
        if stated is not None and (not is_int(stated) or stated != actual):
            raise MedinterpError(f"The SAE in {source} is malformed: cfg.json says {name}={stated!r} but W_enc is "
                                 f"{tuple(W_enc.shape)}.")
    config, threshold = _config(cfg, sd, d, m, source)
    if cfg.get("apply_b_dec_to_input", True) is False:
        b_enc = b_enc + b_dec @ W_enc  # it encodes x W_enc + b_enc: fold b_dec in
    sae = SparseAutoencoder.from_tensors(config, source, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec,
                                         threshold=threshold)
    return sae, cfg


__all__ = ["ARCHITECTURES", "CONFIG", "WEIGHTS", "cfg_json", "load", "tensors"]
