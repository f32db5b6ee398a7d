"""Train a sparse autoencoder on one residual-stream layer, evaluate it, and catalogue its medical latents.

    python runners/sae.py                                  (make sae: Gemma-3-270M, the middle layer, expansion 8)
    python runners/sae.py model=tiny_gemma3 sae.layer=1 sae/arch=topk logger=none
    python runners/sae.py sae.corpus=[icd10cm,/data/notes.txt] sae/train=full device=cuda
    python runners/sae.py model=tiny_llava sae.images=[synthetic_xray] sae.tokens=image   (a VLM's image tokens)

Stages, each a function below (docs/sae.md, "The runner"): corpus -> packed contexts -> activation cache ->
training (Lightning; checkpoints, resume) -> evaluation (FVU, L0, dead fraction, CE-loss recovered, KL) ->
per-latent table -> catalogue -> auto-interpretation -> steering (both on by default; the judge=<name> of
conf/judge/) -> files, report.html, W&B.

Writes into the Hydra run folder: metrics.json, latents.csv, catalogue.csv, interpretation.csv, steering.csv,
steering_latents.csv, train_curves.csv, corpus.json,
config.json, figures (training_curves.png, latent_frequency.png), the SAE in both layouts (sae/saelens,
sae/dictionary_learning), report.html and the offline W&B run. A run killed mid-training resumes from
<run>/checkpoints/last.ckpt when started again with the same ``hydra.run.dir``; the folder only gets
metrics.json once everything else is written.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import sys
from functools import partial
from pathlib import Path

from _common import (cached_model, check_group_choices, exit_cleanly_on_sigterm, launched_strategy, log, publish,
                     quiet_libraries, sweep_group, user_errors)

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from medinterp.capture.images import TOKEN_TYPES, require_vision  # noqa: E402
from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.io import atomic_write, save_png, write_json  # noqa: E402
from medinterp.methods import select_templates  # noqa: E402
from medinterp.models import ModelSpec  # noqa: E402
from medinterp.sae import (SAEConfig, SparseAutoencoder, TrainConfig, evaluate_sae, group_sizes_from_fractions,  # noqa: E402
                           load_sae, save_sae)
from medinterp.sae.autointerp import InterpConfig, interpret  # noqa: E402
from medinterp.sae.activations import TokenStream, cache_activations  # noqa: E402
from medinterp.sae.catalogue import (CATALOGUE_KINDS, TOKEN_TYPE_THRESHOLD, catalogue_rows, latent_table,  # noqa: E402
                                    top_tokens)
from medinterp.sae.corpus import check_corpus_sources, load_corpus  # noqa: E402
from medinterp.sae.figures import latent_frequencies, training_curves  # noqa: E402
from medinterp.sae.image_prompts import image_prompt_sets, split_image_prompts  # noqa: E402
from medinterp.sae.outliers import KeptRows, norm_limit, pass_through_outliers  # noqa: E402
from medinterp.sae.packing import Packed, pack  # noqa: E402
from medinterp.sae.prompt_codes import image_prompt_codes, prompt_codes  # noqa: E402
from medinterp.sae.run_state import SAERun  # noqa: E402
from medinterp.sae.splice import ABLATION, splice_metrics  # noqa: E402
from medinterp.sae.stages import (interpretation_contexts, interpretation_latents, merge_interpretation,  # noqa: E402
                                  steering_targets)
from medinterp.sae.steering import SteeringConfig, SteeringResult, steer  # noqa: E402
from medinterp.sae.wandb_curves import training_wandb_logger  # noqa: E402
from medinterp.tracking import TrackerSettings  # noqa: E402
from medinterp.validation import check_positive_int, check_retired_settings, check_seed, is_int  # noqa: E402

CHECKPOINTS = "checkpoints"
CURVES_DIR = "train_log"  # Lightning's CSVLogger folder (copied to train_curves.csv at the end)
CURVES_BEFORE_RESUME = "train_log_before_resume.csv"  # a resumed run's earlier steps
EVAL_BATCH = 1024


# ----------------------------------------------------------------------------------------------- settings
def sae_config(cfg: DictConfig) -> dict:
    """conf/sae.yaml resolved into plain containers, its settings checked before anything is loaded."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    check_retired_settings(plain)
    s = plain["sae"]
    for name in ("ctx_len", "expansion", "k", "train_tokens", "eval_tokens", "ce_contexts", "batch_size", "steps",
                 "checkpoint_every", "top_tokens"):
        check_positive_int(f"sae.{name}", s[name])
    check_positive_int("capture_batch", plain["capture_batch"])
    check_positive_int("sae.catalogue.n_per_label", s["catalogue"]["n_per_label"])
    check_seed(s["seed"], "sae.seed")
    ratio = s["max_norm_ratio"]
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1):
        raise MedinterpError(f"sae.max_norm_ratio must be a number > 1 (outlier tokens: ||x|| above it times the "
                             f"median norm) or null (keep every token); got {ratio!r}")
    if s["layer"] is not None and (isinstance(s["layer"], bool) or not isinstance(s["layer"], int)):
        raise MedinterpError(f"sae.layer must be a read-out layer (an integer) or null (the middle); got {s['layer']!r}")
    n_layers = plain["model"].get("n_layers")
    if s["layer"] is not None and n_layers is not None and not 0 <= s["layer"] <= n_layers:
        raise MedinterpError(f"sae.layer={s['layer']} is outside {plain['model']['name']}; valid: 0..{n_layers}")
    s["corpus"] = check_corpus_sources(s["corpus"])
    check_image_settings(s)
    if s["pretrained"] and not Path(s["pretrained"]).expanduser().exists():
        raise MedinterpError(f"sae.pretrained: no SAE at {Path(s['pretrained']).expanduser().absolute()}")
    TrainConfig(**s["train"])  # one line on a bad training setting
    if s["activation"] == "batchtopk" and s["steps"] <= s["train"]["threshold_start_step"]:
        raise MedinterpError(f"sae.steps ({s['steps']}) must exceed sae.train.threshold_start_step "
                             f"({s['train']['threshold_start_step']}): the inference threshold would never be set")
    check_stage_settings(s)
    return plain


def check_image_settings(s: dict) -> None:
    """One line on a bad ``sae.tokens`` / ``sae.images`` (not an image set; ``tokens=image`` without images)."""
    if s["tokens"] not in TOKEN_TYPES:
        raise MedinterpError(f"sae.tokens must be one of {', '.join(TOKEN_TYPES)}; got {s['tokens']!r}")
    if not isinstance(s["images"], list):
        raise MedinterpError(f"sae.images must be a list of image prompt sets (e.g. [synthetic_xray]); got "
                             f"{s['images']!r}")
    if s["tokens"] == "image" and not s["images"]:
        raise MedinterpError("sae.tokens=image needs image prompts: sae.images=[<an image prompt set>] on a "
                             "vision-language model (e.g. model=tiny_llava sae.images=[synthetic_xray])")
    for prompt_set in image_prompt_sets(s["images"]):
        select_templates(prompt_set, s["image_templates"])


def check_stage_settings(s: dict) -> None:
    """One line on a bad interpretation or steering setting, before anything is loaded."""
    if s["interpret"]:
        i = s["interpretation"]
        for name in ("contexts", "window", "n_top"):
            check_positive_int(f"sae.interpretation.{name}", i[name])
        if not is_int(i["n_random"]) or i["n_random"] < 0:
            raise MedinterpError(f"sae.interpretation.n_random must be an integer >= 0; got {i['n_random']!r}")
        if i["window"] < 2 or s["ctx_len"] % i["window"]:
            raise MedinterpError(f"sae.interpretation.window must divide sae.ctx_len ({s['ctx_len']}) and be >= 2; "
                                 f"got {i['window']}")
        interp_config(s)
    if s["steer"]:
        for name in ("n_latents", "n_prompts"):
            check_positive_int(f"sae.steering.{name}", s["steering"][name])
        steering_config(s, 1.0)


def interp_config(s: dict) -> InterpConfig:
    i = s["interpretation"]
    return InterpConfig(n_explain=i["n_explain"], n_detect=i["n_detect"], top_tokens=s["top_tokens"], seed=s["seed"])


def steering_config(s: dict, unit: float) -> SteeringConfig:
    """``sae.steering`` with α = each of ``alphas`` times ``unit``."""
    t = s["steering"]
    return SteeringConfig(alphas=tuple(a * unit for a in t["alphas"]), positions=t["positions"],
                          n_new_tokens=t["n_new_tokens"], coherence_max=t["coherence_max"], seed=s["seed"])


# ----------------------------------------------------------------------------------------------- stages
def data_stage(run: SAERun) -> None:
    """Corpus -> packed contexts (held-out first, then training) -> the activation caches of the layer."""
    s, handle = run.cfg["sae"], run.handle
    corpus = load_corpus(s["corpus"], seed=s["seed"])
    per_context = s["ctx_len"] - 1 - (handle.tokenizer.bos_token_id is not None)  # SAE tokens of a full context
    n_eval = max(-(-s["eval_tokens"] // per_context), s["ce_contexts"])
    n_train = -(-s["train_tokens"] // per_context)
    packed = pack(handle.tokenizer, corpus.documents, s["ctx_len"], n_eval + n_train)
    if len(packed.input_ids) <= n_eval:
        raise MedinterpError(f"sae.corpus holds {packed.n_tokens} tokens, too few for {n_eval} held-out contexts and "
                             f"training; add text or lower sae.eval_tokens")
    evals = Packed(packed.input_ids[:n_eval], packed.mask[:n_eval], packed.sha256, packed.documents)
    trains = Packed(packed.input_ids[n_eval:], packed.mask[n_eval:], packed.sha256, packed.documents)
    images = split_image_prompts(image_prompt_sets(s["images"]), s["image_templates"],
                                 s["eval_tokens"] / (s["eval_tokens"] + s["train_tokens"]), s["seed"])
    from medinterp.capture.cache import model_key

    root = Path(run.cfg["cache_dir"]) / "sae_activations" / model_key(handle)
    stores = []
    for name, part, prompts in (("eval", evals, images.eval), ("train", trains, images.train)):
        key = hashlib.sha256(part.input_ids.numpy().tobytes() + part.mask.numpy().tobytes()
                             + str(run.layer).encode()
                             + (f"\n{s['tokens']}\n{images.key}".encode() if s["images"] else b"")).hexdigest()[:16]
        stores.append(cache_activations(handle, part.input_ids, part.mask, [run.layer], root / f"{name}-{key}",
                                        batch_contexts=run.cfg["capture_batch"], desc=f"SAE activations ({name})",
                                        images=prompts, tokens=s["tokens"]))
    run.norm_limit = norm_limit(stores[1], run.layer, s["max_norm_ratio"])  # massive activations: outliers.py
    run.eval, run.train = (KeptRows(store, run.layer, run.norm_limit) for store in stores)
    run.eval_contexts = evals
    run.scale = run.train.scale(run.layer) if s["normalize"] and not s["pretrained"] else 1.0
    write_json(run.out_dir / "corpus.json", {
        "sources": s["corpus"], "provenance": corpus.provenance, "corpus_sha256": packed.sha256,
        "packed": packed.summary(), "held_out_contexts": n_eval, "training_contexts": len(trains.input_ids),
        "train_tokens": run.train.n_tokens, "eval_tokens": run.eval.n_tokens,
        "activation_cache": {"train": str(run.train.folder), "eval": str(run.eval.folder)},
        "tokens": s["tokens"], "images": s["images"],
        "image_prompts": {"held_out": len(images.eval), "training": len(images.train)},
        "token_types": {t: sum(store.meta["rows_per_type"][t] for store in stores) for t in ("text", "image")},
        "scale": run.scale, "mean_squared_norm": run.train.mean_squared_norm(run.layer),
        "outliers": {"max_norm_ratio": s["max_norm_ratio"], "norm_limit": run.norm_limit,
                     "train": run.train.n_outliers, "eval": run.eval.n_outliers}})
    log.info("corpus: %d documents, %d tokens (sha256 %s); %d training / %d held-out SAE tokens (%d / %d norm "
             "outliers left out); scale %.4g", packed.documents, packed.n_tokens, packed.sha256[:12],
             run.train.n_tokens, run.eval.n_tokens, run.train.n_outliers, run.eval.n_outliers, run.scale)


def build_sae(run: SAERun) -> SparseAutoencoder:
    s, d = run.cfg["sae"], run.handle.d_model
    m = s["expansion"] * d
    config = SAEConfig(d, m, s["k"], s["activation"], group_sizes_from_fractions(m, s["group_fractions"]))
    return SparseAutoencoder(config, seed=s["seed"])


def train_stage(run: SAERun) -> None:
    """Train with Lightning (checkpoints every ``checkpoint_every`` steps; resume from <run>/checkpoints/last.ckpt)."""
    from lightning.pytorch.loggers import CSVLogger

    from medinterp.sae import checkpoint_step, train_sae

    s = run.cfg["sae"]
    if s["pretrained"]:
        run.sae, layout, _ = load_sae(s["pretrained"], d=run.handle.d_model)
        run.sae.eval()
        log.info("SAE loaded from %s (%s layout): not trained", s["pretrained"], layout)
        return
    run.sae = build_sae(run)
    ckpt = run.out_dir / CHECKPOINTS / "last.ckpt"
    start = checkpoint_step(ckpt) or 0  # a file, or a folder under DeepSpeed
    if ckpt.exists():
        log.info("resuming from %s (step %d of %d)", ckpt, start, s["steps"])
        curves = run.out_dir / CURVES_DIR / "metrics.csv"
        if curves.is_file():  # Lightning's CSV logger starts its file afresh: keep the steps before the resume
            rows = [r for r in csv.DictReader(curves.open()) if int(r["step"]) < start]
            write_rows(run.out_dir / CURVES_BEFORE_RESUME, rows)
    stream = TokenStream(run.train, run.layer, s["batch_size"], seed=s["seed"], scale=run.scale, start_batch=start)
    t = s["trainer"]
    curves = training_wandb_logger(TrackerSettings.from_dict(run.cfg.get("logger")), run.out_dir,
                                   name=f"{run.handle.name}-sae",
                                   group=sweep_group() if HydraConfig.initialized() else None,
                                   config={"sae": s, "model": run.handle.name, "layer": run.layer})
    loggers = [CSVLogger(str(run.out_dir), name=CURVES_DIR, version=""), *([curves] if curves else [])]
    train_sae(run.sae, stream, TrainConfig(**s["train"]), max_steps=s["steps"], logger=loggers,
              checkpoint_dir=run.out_dir / CHECKPOINTS, checkpoint_every=s["checkpoint_every"],
              ckpt_path=ckpt if start else None, accelerator=t["accelerator"], devices=t["devices"],
              strategy=t["strategy"], precision=t["precision"], log_every_n_steps=1, seed=s["seed"])
    if curves:
        curves.experiment.finish()
    run.sae.eval()


def evaluate_stage(run: SAERun) -> None:
    """FVU, explained variance, L0, dead fraction on the held-out tokens; CE-loss recovered and KL on held-out
    contexts (the reconstruction taken back to raw space, x_hat / s)."""
    s, sae, scale = run.cfg["sae"], run.sae, run.scale
    rec = evaluate_sae(sae, run.eval.batches(run.layer, EVAL_BATCH, scale))
    device = sae.W_enc.device

    @partial(pass_through_outliers, limit=run.norm_limit)  # outlier tokens spliced back unchanged
    def reconstruct(h: torch.Tensor) -> torch.Tensor:
        return sae(h.float().to(device) * scale).to(h.device) / scale

    ctx = run.eval_contexts
    n = min(s["ce_contexts"], len(ctx.input_ids))
    spliced = splice_metrics(run.handle, ctx.input_ids[:n], ctx.mask[:n], run.layer, reconstruct)
    notes = "; ".join(filter(None, [rec.note, spliced.note]))
    run.metrics = {"fvu": rec.fvu, "explained_variance": rec.explained_variance, "l0": rec.l0,
                   "dead_fraction": rec.dead_fraction, "ce_loss_recovered": spliced.ce_loss_recovered,
                   "kl": spliced.kl, "ce_clean": spliced.ce_clean, "ce_sae": spliced.ce_sae, "ce_zero": spliced.ce_zero,
                   "ablation": ABLATION, "n_eval_tokens": rec.n_tokens, "n_ce_tokens": spliced.n_tokens,
                   "n_ce_contexts": n, "scale": scale, "layer": run.layer, "model": run.handle.name,
                   "d": sae.config.d, "n_latents": sae.config.n_latents, "k": sae.config.k,
                   "activation": sae.config.activation, "group_sizes": list(sae.config.group_sizes),
                   "threshold": float(sae.threshold.max()), "steps": s["steps"], "batch_size": s["batch_size"],
                   "train_tokens": run.train.n_tokens, "n_outliers": run.eval.n_outliers,
                   "n_outliers_train": run.train.n_outliers, "max_norm_ratio": s["max_norm_ratio"], "note": notes}


def latents_stage(run: SAERun) -> list[list[str]]:
    """The per-latent table on the held-out tokens; returns each latent's top tokens."""
    sae, scale = run.sae, run.scale
    with torch.no_grad():
        f = torch.cat([sae.encode(x.to(sae.W_enc.device)).cpu() for x in run.eval.batches(run.layer, EVAL_BATCH, scale)])
    tok = run.handle.tokenizer
    tokens = top_tokens(f, run.eval.array("token_ids"), lambda i: tok.decode([i]), keep=run.cfg["sae"]["top_tokens"])
    run.latents = latent_table(f, tokens, sae.config.group_ends, run.eval.array("token_types"))
    run.metrics["tokens"] = run.cfg["sae"]["tokens"]
    run.metrics["latent_token_types"] = {t: sum(r["token_type"] == t for r in run.latents)
                                         for t in ("image", "text", "both", "dead")}
    run.metrics["token_type_threshold"] = TOKEN_TYPE_THRESHOLD
    return tokens


def catalogue_stage(run: SAERun, tokens: list[list[str]]) -> None:
    """Per domain, labeling and label: the latents most selective for it (AUROC, label vs rest)."""
    from medinterp.prompts import load_prompt_set

    cat = run.cfg["sae"]["catalogue"]
    for domain in cat["domains"] or []:
        prompt_set = load_prompt_set(domain)
        prompt_set.require_items("the SAE catalogue")
        prompts = [p for t in select_templates(prompt_set, cat["templates"]) for p in prompt_set.prompts(t)]
        item = {it.id: it for it in prompt_set.items}
        labels = {name: np.array([item[p.item_id].labels[name] for p in prompts], dtype=object)
                  for name, labeling in prompt_set.labelings.items() if labeling.kind in CATALOGUE_KINDS}
        if not labels:
            continue
        desc = f"SAE catalogue ({prompt_set.domain})"
        if prompt_set.modality == "image":  # image + question through the VLM, the run's token types
            require_vision(run.handle, f"sae.catalogue.domains: prompt set {prompt_set.domain!r}")
            acts = image_prompt_codes(run.handle, run.sae, prompts, run.layer, run.scale, run.cfg["sae"]["tokens"],
                                      batch_size=run.cfg["capture_batch"], desc=desc)
        else:
            if run.cfg["sae"]["tokens"] == "image":  # a text set has no image token to read
                run.metrics.setdefault("catalogue_skipped", []).append(prompt_set.domain)
                log.warning("catalogue: %s skipped (a text prompt set; sae.tokens=image)", prompt_set.domain)
                continue
            run.prompts[prompt_set.domain] = ([p.text for p in prompts], labels)  # steering's prompts: text only
            acts = prompt_codes(run.handle, run.sae, [p.text for p in prompts], run.layer, run.scale, desc=desc)
        run.catalogue += catalogue_rows(prompt_set.domain, labels, acts, tokens, cat["n_per_label"],
                                        [r["token_type"] for r in run.latents])


def interpretation_stage(run: SAERun, judge) -> None:
    """Explain and detection-score the catalogue's latents and a few random ones on held-out windows
    (medinterp/sae/stages.py); explanation, detection_score and status go into latents.csv and catalogue.csv,
    every interpreted latent into interpretation.csv, the summary into metrics.json."""
    from medinterp.judges.llm import LLMJudge
    from medinterp.sae.interpreters import KeywordInterpreter, LLMInterpreter

    s = run.cfg["sae"]["interpretation"]
    ids = run.eval_contexts.input_ids[:s["contexts"]]
    contexts = interpretation_contexts(run.handle, ids, run.layer, s["window"], run.scale, run.cfg["capture_batch"])
    chosen = interpretation_latents(run.catalogue, run.latents, s["n_top"], s["n_random"], run.cfg["sae"]["seed"])
    interpreter = LLMInterpreter(judge) if isinstance(judge, LLMJudge) else KeywordInterpreter()
    result = interpret(run.sae, contexts, interpreter, list(chosen), interp_config(run.cfg["sae"]))
    rows = merge_interpretation(result, chosen, [run.latents, run.catalogue])
    write_rows(run.out_dir / "interpretation.csv", rows)
    by = {k: [r["detection"] for r in rows if r["chosen_by"] == k and r["status"] == "ok"]
          for k in ("catalogue", "random")}
    run.metrics["interpretation"] = {
        **result.summary(), "file": "interpretation.csv", "n_contexts": contexts.shape[0], "window": s["window"],
        **{f"detection_{k}": float(np.mean(v)) if v else float("nan") for k, v in by.items()}}
    log.info("interpretation (%s): %d latents, %d ok, mean detection %.3f", result.interpreter, len(rows),
             run.metrics["interpretation"]["n_ok"], run.metrics["interpretation"]["detection"])


def steering_stage(run: SAERun, judge) -> None:
    """Steer with the catalogue's most selective latents (medinterp/sae/stages.py), target word = the label:
    α = each of ``sae.steering.alphas`` times the latent's largest held-out contribution max_j / s (its largest
    activation in latents.csv, taken back to raw space; Templeton et al. 2024 steer at multiples of a feature's
    maximum). Rows (latent, α) into steering.csv, per latent steering_latents.csv, the success rate into
    metrics.json."""
    s = run.cfg["sae"]["steering"]
    unit = {r["latent"]: r["max_activation"] / run.scale for r in run.latents}
    live = [r for r in run.catalogue  # a latent silent on held-out text has no scale; image sets are not steered
            if unit[r["latent"]] > 0 and r["domain"] in run.prompts]
    targets = steering_targets(live, run.prompts, s["n_latents"], s["n_prompts"])
    if not targets:
        run.metrics["steering"] = {"n_latents": 0, "note": "no live catalogue latent with target and unrelated prompts"}
        return
    rows, latents = [], []
    for t in targets:  # one sweep per latent: its own α scale and control prompts
        part = steer(run.handle, run.sae, run.layer, [t.target], t.unrelated, judge,
                     steering_config(run.cfg["sae"], unit[t.target.latent]))
        rows += part.rows
        latents += part.latents
    result = SteeringResult(rows, latents)
    where = {t.target.latent: t for t in targets}
    table = [{**r, "alpha_max_act": r["alpha"] / unit[r["latent"]]} for r in result.table()]
    write_rows(run.out_dir / "steering.csv", table)
    write_rows(run.out_dir / "steering_latents.csv", [
        {"latent": r.latent, "domain": where[r.latent].domain, "labeling": where[r.latent].labeling,
         "label": where[r.latent].label, "words": " | ".join(where[r.latent].target.words),
         "auroc": where[r.latent].auroc, "max_contribution": unit[r.latent], "success": r.success,
         "best_alpha": r.best_alpha,
         "best_alpha_max_act": None if r.best_alpha is None else r.best_alpha / unit[r.latent], "note": r.note}
        for r in latents])
    run.metrics["steering"] = {**result.summary(), "alphas_max_act": list(s["alphas"]), "positions": s["positions"],
                               "files": ["steering.csv", "steering_latents.csv"]}
    log.info("steering: %d latents, success rate %s", len(latents), run.metrics["steering"]["success_rate"])


# ----------------------------------------------------------------------------------------------- files
def write_rows(path: Path, rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["latent"])
        writer.writeheader()
        writer.writerows(rows)
    atomic_write(path, write, newline="")


def write_stage(run: SAERun) -> None:
    """The SAE in both layouts, the tables, the curves, the figures, then metrics.json last."""
    out, s = run.out_dir, run.cfg["sae"]
    meta = {"model_name": run.handle.name, "hook_layer": run.layer, "hook_name": f"resid_post_layer_{run.layer}",
            "context_size": s["ctx_len"], "activation_scale": run.scale}
    for layout in () if s["pretrained"] else ("saelens", "dictionary_learning"):  # a loaded SAE: the user's files
        save_sae(run.sae, out / "sae" / layout, layout, train=TrainConfig(**s["train"]), meta=meta)
    write_rows(out / "latents.csv", run.latents)
    write_rows(out / "catalogue.csv", run.catalogue)
    rows = []
    for part in (out / CURVES_BEFORE_RESUME, out / CURVES_DIR / "metrics.csv"):
        rows += list(csv.DictReader(part.open())) if part.is_file() else []
    if rows:
        keys = list(dict.fromkeys(k for r in rows for k in r))
        write_rows(out / "train_curves.csv", [{k: r.get(k, "") for k in keys} for r in rows])
    save_png(training_curves(rows), out / "training_curves.png")
    save_png(latent_frequencies(np.array([r["frequency"] for r in run.latents])), out / "latent_frequency.png")
    write_json(out / "config.json", run.cfg)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(out / CURVES_DIR, ignore_errors=True)
    (out / CURVES_BEFORE_RESUME).unlink(missing_ok=True)
    write_json(out / "metrics.json", run.metrics)


def run_sae(cfg: DictConfig, out_dir: Path) -> Path:
    """Every stage of an SAE run into ``out_dir``."""
    plain = sae_config(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = SAERun(plain, out_dir)
    strategy = launched_strategy(json.dumps(plain["strategy"], sort_keys=True), cfg.device)
    run.handle = cached_model(ModelSpec.from_dict(plain["model"]), strategy, cfg.cache_dir)
    s, n_layers = plain["sae"], run.handle.n_layers
    run.layer = n_layers // 2 if s["layer"] is None else s["layer"]
    if not 0 <= run.layer <= n_layers:
        raise MedinterpError(f"sae.layer={run.layer} is outside {run.handle.name}; valid: 0..{n_layers}")
    if s["images"]:  # one line on a text-only model before the corpus is read
        require_vision(run.handle, "sae.images")
    if s["pretrained"]:  # one line on a file in neither layout, or of another width, before any capture
        load_sae(s["pretrained"], d=run.handle.d_model)
    else:
        build_sae(run)  # one line on k > latents before any capture
    log.info("model=%s layer=%d/%d d=%d latents=%d k=%d activation=%s out=%s", run.handle.name, run.layer, n_layers,
             run.handle.d_model, s["expansion"] * run.handle.d_model, s["k"], s["activation"], out_dir)
    data_stage(run)
    train_stage(run)
    evaluate_stage(run)
    tokens = latents_stage(run)
    catalogue_stage(run, tokens)
    if s["interpret"] or s["steer"]:
        judge = instantiate(plain["judge"])  # judge=<name> (conf/judge/): the interpreter and steering's coherence
        if s["interpret"]:
            interpretation_stage(run, judge)
        if s["steer"]:
            steering_stage(run, judge)
    write_stage(run)
    m = run.metrics
    log.info("FVU %.4f  explained variance %.4f  L0 %.1f  dead %.3f  CE-loss recovered %.4f  KL %.4f%s", m["fvu"],
             m["explained_variance"], m["l0"], m["dead_fraction"], m["ce_loss_recovered"], m["kl"],
             f"  ({m['note']})" if m["note"] else "")
    return out_dir


@hydra.main(config_path="../conf", config_name="sae", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    quiet_libraries()
    out_dir = run_sae(cfg, Path(HydraConfig.get().runtime.output_dir))
    publish(out_dir, cfg, name=f"{HydraConfig.get().runtime.choices['model']}-sae", job_type="sae",
            group=sweep_group(), report="summary")
    log.info("results: %s", out_dir)


if __name__ == "__main__":
    exit_cleanly_on_sigterm()
    user_errors(check_group_choices)(sys.argv[1:], ("model", "strategy", "logger", "judge", "sae/arch", "sae/train"))
    logging.getLogger("medinterp").setLevel(logging.INFO)
    main()
