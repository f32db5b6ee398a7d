"""dictionary_learning's file layout (saprmarks/dictionary_learning): ``ae.pt`` (a torch state dict) + ``config.json``.

config.json is ``{"trainer": {"dict_class": ..., "trainer_class": ..., "activation_dim": d, "dict_size": m,
"k": k, ...training settings..., "layer": ..., "lm_name": ...}}`` (what ``trainSAE`` writes). The state dict's
keys depend on the class (shapes for d inputs, m latents):

| dict_class | keys | our activation |
|---|---|---|
| ``AutoEncoderTopK`` | encoder.weight (m, d), encoder.bias (m), decoder.weight (d, m), b_dec (d), k, [threshold] | topk |
| ``BatchTopKSAE`` | the same, threshold () | batchtopk |
| ``MatryoshkaBatchTopKSAE`` | W_enc (d, m), b_enc (m), W_dec (m, d), b_dec (d), k, threshold (), group_sizes (G,) | batchtopk, G groups |
| ``JumpReluAutoEncoder`` | W_enc, b_enc, W_dec, b_dec, threshold (m) — x enters WITHOUT subtracting b_dec | jumprelu |
| ``AutoEncoder`` (ReLU) | encoder.weight, encoder.bias, decoder.weight, bias (d) | jumprelu, theta = 0 |

All of them encode ReLU((x - b_dec) W_enc + b_enc) with their rule (JumpReluAutoEncoder: x W_enc + b_enc, so
b_dec W_enc is folded into b_enc on load and out of it on save). dictionary_learning's thresholded encoding
``post_relu * (post_relu > theta)`` equals ours, ReLU(pre) * [pre > theta], for every theta. Without a
config.json the class is read from the keys (a TopK/BatchTopK file then counts as BatchTopK when its threshold
is set).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from medinterp.errors import MedinterpError
from medinterp.sae.config import SAEConfig
from medinterp.sae.model import SparseAutoencoder
from medinterp.sae.train_config import TrainConfig

WEIGHTS = "ae.pt"
CONFIG = "config.json"
CLASSES = ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder", "MatryoshkaBatchTopKSAE")
TRAINERS = {"AutoEncoderTopK": "TopKTrainer", "BatchTopKSAE": "BatchTopKTrainer",
            "MatryoshkaBatchTopKSAE": "MatryoshkaBatchTopKTrainer", "JumpReluAutoEncoder": "JumpReluTrainer"}


def _dict_class(sae: SparseAutoencoder) -> str:
    c = sae.config
    if c.activation == "jumprelu":
        return "JumpReluAutoEncoder"
    if c.is_matryoshka and c.activation == "topk":
        raise MedinterpError("dictionary_learning has no Matryoshka TopK class; save this SAE in the 'saelens' layout.")
    if c.is_matryoshka:
        return "MatryoshkaBatchTopKSAE"
    return {"topk": "AutoEncoderTopK", "batchtopk": "BatchTopKSAE"}[c.activation]


def _scalar_threshold(sae: SparseAutoencoder, cls: str) -> torch.Tensor:
    th = sae.threshold.detach().cpu()
    if not bool((th == th[0]).all()):
        raise MedinterpError(f"dictionary_learning's {cls} has one threshold for all latents; this SAE has one per "
                             "latent: save it in the 'saelens' layout.")
    return th[0].clone().to(torch.float32)


def state_dict(sae: SparseAutoencoder) -> tuple[str, dict[str, torch.Tensor]]:
    """(dict_class, the state dict in that class's key layout)."""
    cls = _dict_class(sae)
    W_enc, b_enc, W_dec, b_dec = (t.detach().cpu().clone() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec))
    k = torch.tensor(sae.config.k or 0, dtype=torch.int32)
    if cls == "JumpReluAutoEncoder":
        return cls, {"W_enc": W_enc, "b_enc": b_enc - b_dec @ W_enc, "W_dec": W_dec, "b_dec": b_dec,
                     "threshold": sae.threshold.detach().cpu().clone()}
    threshold = _scalar_threshold(sae, cls)
    if cls == "MatryoshkaBatchTopKSAE":
        return cls, {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec, "k": k, "threshold": threshold,
                     "group_sizes": torch.tensor(sae.config.group_sizes, dtype=torch.int64)}
    return cls, {"encoder.weight": W_enc.T.contiguous(), "encoder.bias": b_enc, "decoder.weight": W_dec.T.contiguous(),
                 "b_dec": b_dec, "k": k, "threshold": threshold}


def config_json(sae: SparseAutoencoder, cls: str, train: TrainConfig | None, meta: dict[str, Any]) -> dict:
    """The ``{"trainer": {...}}`` document trainSAE writes, with our training settings under its names."""
    c = sae.config
    trainer: dict[str, Any] = {"trainer_class": TRAINERS.get(cls, cls), "dict_class": cls, "activation_dim": c.d,
                               "dict_size": c.n_latents, "k": c.k}
    if c.is_matryoshka:
        trainer["group_sizes"] = list(c.group_sizes)
        trainer["group_fractions"] = [s / c.n_latents for s in c.group_sizes]
    if train is not None:
        t = train.to_dict()
        trainer.update(lr=train.lr_for(c.n_latents), warmup_steps=t["warmup_steps"], decay_start=t["decay_start"],
                       auxk_alpha=t["auxk_alpha"], threshold_beta=t["threshold_beta"],
                       threshold_start_step=t["threshold_start_step"], top_k_aux=t["top_k_aux"] or c.d // 2,
                       group_weights=t["group_weights"], dead_feature_threshold=t["dead_tokens"],
                       k_anneal_steps=t["k_anneal_steps"])
    trainer.update({"layer": None, "lm_name": None, "submodule_name": None, **meta})
    return {"trainer": trainer}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MedinterpError(f"{path} is not valid JSON ({err}).") from None
    trainer = doc.get("trainer", {}) if isinstance(doc, dict) else {}
    return trainer if isinstance(trainer, dict) else {}


def _class_from_keys(sd: dict, trainer: dict, source: str) -> str:
    if trainer.get("dict_class") in CLASSES:
        return trainer["dict_class"]
    if "group_sizes" in sd:
        return "MatryoshkaBatchTopKSAE"
    if "W_enc" in sd and "threshold" in sd:
        return "JumpReluAutoEncoder"
    if "encoder.weight" in sd and "bias" in sd:
        return "AutoEncoder"
    if "encoder.weight" in sd and "k" in sd:
        return "BatchTopKSAE" if float(sd.get("threshold", torch.tensor(-1.0))) >= 0 else "AutoEncoderTopK"
    named = trainer.get("dict_class")
    what = f"dict_class {named!r}" if named else f"keys {sorted(sd)[:6]}"
    raise MedinterpError(f"{source} is a dictionary_learning file of an unsupported class ({what}); "
                         f"valid: {', '.join(CLASSES)}.")


def _get(sd: dict, key: str, source: str) -> torch.Tensor:
    if key not in sd or not isinstance(sd[key], torch.Tensor):
        raise MedinterpError(f"The SAE in {source} is malformed: its state dict has no tensor {key!r}.")
    return sd[key].to(torch.float32)


def load(weights: Path) -> tuple[SparseAutoencoder, dict]:
    """The SAE in a dictionary_learning ``ae.pt`` (with the config.json beside it when present) and that config's
    ``trainer`` section."""
    source = str(weights)
    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file: one line)
        raise MedinterpError(f"{source} is not a readable torch state dict ({type(err).__name__}).") from None
    if not isinstance(sd, dict):
        raise MedinterpError(f"{source} holds a {type(sd).__name__}, not a state dict of SAE weights.")
    trainer = _read_config(weights.parent)
    cls = _class_from_keys(sd, trainer, source)
    if cls in ("MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder"):
        W_enc, b_enc, W_dec, b_dec = (_get(sd, key, source) for key in ("W_enc", "b_enc", "W_dec", "b_dec"))
    else:
        W_enc, b_enc = _get(sd, "encoder.weight", source).T, _get(sd, "encoder.bias", source)
        W_dec = _get(sd, "decoder.weight", source).T
        b_dec = _get(sd, "bias" if cls == "AutoEncoder" else "b_dec", source)
    d, m = W_enc.shape
    if cls == "JumpReluAutoEncoder":
        config, threshold = SAEConfig(d, m, None, "jumprelu"), _get(sd, "threshold", source)
        b_enc = b_enc + b_dec @ W_enc  # it encodes x W_enc + b_enc: fold b_dec in
    elif cls == "AutoEncoder":
        config, threshold = SAEConfig(d, m, None, "jumprelu"), torch.zeros(m)
    else:
        k = int(sd["k"]) if "k" in sd else trainer.get("k")
        sizes = tuple(int(s) for s in sd["group_sizes"]) if cls == "MatryoshkaBatchTopKSAE" else ()
        activation = "topk" if cls == "AutoEncoderTopK" else "batchtopk"
        config = SAEConfig(d, m, k, activation, sizes)
        threshold = _get(sd, "threshold", source) if "threshold" in sd else torch.tensor(-1.0)
    sae = SparseAutoencoder.from_tensors(config, source, W_enc=W_enc, b_enc=b_enc, W_dec=W_dec, b_dec=b_dec,
                                         threshold=threshold)
    return sae, trainer


__all__ = ["CLASSES", "CONFIG", "WEIGHTS", "config_json", "load", "state_dict"]
