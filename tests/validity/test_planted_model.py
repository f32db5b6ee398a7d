"""The whole loop on a model with a planted domain layer (issue 11, "Done when").

A tiny llama of 8 blocks: every block but ``PLANTED`` has its writes to the residual stream (o_proj, down_proj)
halved, and block ``PLANTED`` alone is trained (Adam, 80 full-batch steps on 140 texts) so that the last
position of each drugs-probe question and of each of the map's prompts gives the item's specialty word (cross
entropy over the whole vocabulary). So the model knows the probe (accuracy ~0.9, chance 0.1) *because of*
that block. Then

(a) the ablation method's map (KL per block, method=ablation, run in process; the synthesis' segments rule)
    selects the planted block;
(b) validity of intervention=ablation on that lane is high: a large drop, beats every random draw, z > 3;
(c) the same with the lane replaced by random blocks (not the planted one): |z| small, beats ~ half the draws;
(d) the control: the same model with the other blocks halved but block ``PLANTED`` not trained: the probe is
    near chance, the map does not select the block and validity is not high, so (a) and (b) fail on it.

Measured when written (seed 0): (b) effect 0.84, z 4.2, random mean 0.10 +- 0.18; (c) z -0.34, 0.05, -1.44;
(d) the map selects no block, accuracy 0.16. About 20 s of CPU in all (the training 12 s).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.maps.curves import layers_of
from medinterp.maps.synthesis import MapParams, build_map
from medinterp.methods.ablation import LayerAblation
from medinterp.methods.ablation.method import select_prompts
from medinterp.models import ModelSpec
from medinterp.models.arch import adapter_for
from medinterp.models.load import ModelHandle, tiny_tokenizer
from medinterp.models.padding import padding_side
from medinterp.models.sources import smollm2_tokenizer_dir
from medinterp.models.tiny import tiny_config
from medinterp.prompts import load_prompt_set
from medinterp.run import run_method
from medinterp.validity.probe import build_probe, item_labels, probe_spec
from medinterp.validity.validate import ValidateSettings, validate

N_LAYERS, PLANTED = 8, 3
MAP_PROMPTS = 16  # the map's ablation prompts (max_prompts)
TEMPLATE = "started"  # the drugs template the map's ablation prompts use
pytestmark = pytest.mark.slow  # trains a block and maps it: ~20 s of CPU (minutes of wall time under load)
SETTINGS = ValidateSettings(n_draws=7, n_bands=1, max_items=32, n_boot=100, seed=0)


def _planted_model(cache_dir, steps: int = 80) -> ModelHandle:
    """The tiny 8-block llama, its other blocks halved and block PLANTED trained ``steps`` steps (0: not)."""
    from transformers import AutoModelForCausalLM

    spec = ModelSpec(name="tiny_llama", source="tiny", family="llama", n_layers=N_LAYERS)
    _, tok = tiny_tokenizer(spec, smollm2_tokenizer_dir(cache_dir))
    tok.pad_token = tok.eos_token
    config = tiny_config("llama", len(tok), tok.pad_token_id)
    config.num_hidden_layers = N_LAYERS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    handle = ModelHandle(spec=spec, model=model, tokenizer=tok, parts=adapter_for(model), device=torch.device("cpu"),
                         source="planted")
    _plant(handle, steps)
    return handle


def _plant(handle: ModelHandle, steps: int, lr: float = 3e-2) -> None:
    """Halve every other block's writes, then train block PLANTED alone (``steps`` full-batch Adam steps) on the
    drugs probe's questions and the map's prompts. (lr 6e-2 collapses the block to one answer: accuracy 0.12.)"""
    layers, tok = handle.parts.layers, handle.tokenizer
    spec, prompt_set = probe_spec("drugs"), load_prompt_set("drugs")
    probe = build_probe(spec, prompt_set, tok, SETTINGS.max_items, seed=SETTINGS.seed)  # validate's test questions
    word = {" " + spec.choices[label]: probe.choice_ids[i] for i, label in enumerate(probe.labels)}
    # the probe's questions and the map's prompts, each followed by the item's specialty word
    prompts = select_prompts(prompt_set, [TEMPLATE], MAP_PROMPTS, seed=0)
    label_of = dict(zip((item.id for item in prompt_set.items), item_labels(spec, prompt_set)))
    texts = [*probe.questions, *(q for q, _ in probe.train), *(p.text for p in prompts)]
    targets = [*(probe.choice_ids[a] for a in probe.answers), *(word[w] for _, w in probe.train),
               *(word[" " + spec.choices[label_of[p.item_id]]] for p in prompts)]
    with padding_side(tok, "left"):
        enc = tok(texts, padding=True, return_tensors="pt")
    answers = torch.tensor(targets)
    for p in handle.model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for b, block in enumerate(layers):
            if b != PLANTED:
                block.self_attn.o_proj.weight.mul_(0.5)
                block.mlp.down_proj.weight.mul_(0.5)
    params = list(layers[PLANTED].parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(steps):
            logits = handle.parts.lm_head(handle.parts.backbone(**enc).last_hidden_state[:, -1])  # (n, V)
            loss = torch.nn.functional.cross_entropy(logits, answers)
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in params:
        p.requires_grad_(False)


def _ablation_map(handle: ModelHandle) -> dict:
    """The knowledge map of the ablation method alone on drugs (KL per block, the synthesis' segments rule)."""
    prompt_set = load_prompt_set("drugs")
    method = LayerAblation(max_prompts=MAP_PROMPTS, max_new_tokens=4, n_boot=20, seed=0)
    result = run_method(method, handle, prompt_set, [TEMPLATE], batch_size=16)
    rows = [(row, "planted") for row in result.rows(handle.name, "drugs", "ablation")]
    return build_map(rows, MapParams(methods=("ablation",), domains=("drugs",), min_methods=1))


@pytest.fixture(scope="module")
def planted():
    from medinterp.models.sources import default_cache_dir

    handle = _planted_model(default_cache_dir())
    return handle, _ablation_map(handle)


def _map_blocks(kmap: dict) -> list[int]:
    """The blocks of the map's drugs ablation lane (block b writes read-out b + 1)."""
    return sorted(l - 1 for l in layers_of(tuple(iv) for iv in kmap["domains"]["drugs"]["ablation"]["intervals"]))


def test_the_map_selects_the_planted_block_and_its_validity_is_high(planted):
    handle, kmap = planted
    blocks = _map_blocks(kmap)
    assert PLANTED in blocks and len(blocks) <= 3, (blocks, kmap["domains"]["drugs"]["ablation"].get("raw"))  # (a)
    result = validate(handle, kmap, "drugs", "ablation", SETTINGS, damage_domains=["disease"])
    assert result["probes"]["drugs"]["accuracy"] > 0.75  # the planted block answers the probe (chance 0.1)
    lane = next(e for e in result["lanes"] if e["lane"] == "ablation")
    v = lane["validity"]
    random = np.array([r["effect"] for r in lane["random"]])
    assert lane["effect"]["value"] > 0.6 and lane["effect"]["ci_low"] > 0.4  # (b) the accuracy collapses
    assert v["beats"] == 1.0 and v["score"] > 3 and v["n_draws"] == 7 and v["n_broken"] == 0
    assert all(PLANTED not in r["blocks"] for r in lane["random"]) and random.max() < 0.5
    assert v["score"] == pytest.approx((lane["effect"]["value"] - random.mean()) / random.std(ddof=1))


def test_random_blocks_in_place_of_the_map_have_validity_near_zero(planted):
    handle, kmap = planted
    size = len(_map_blocks(kmap))
    rng = np.random.default_rng(1)
    scores, beats = [], []
    for _ in range(3):  # (c) three random lanes of the map's size, none holding the planted block
        blocks = sorted(rng.choice([b for b in range(N_LAYERS) if b != PLANTED], size=size, replace=False).tolist())
        fake = {"model": kmap["model"], "n_layers": N_LAYERS,
                "domains": {"drugs": {"ablation": {"intervals": [[b + 1, b + 1] for b in blocks]}}}}
        lane = validate(handle, fake, "drugs", "ablation", SETTINGS, damage_domains=["disease"])["lanes"][0]
        scores.append(lane["validity"]["score"])
        beats.append(lane["validity"]["beats"])
    assert np.isfinite(scores).all() and abs(np.mean(scores)) < 1.5 and max(abs(s) for s in scores) < 2.5, scores
    assert 0.15 < np.mean(beats) < 0.85, beats


def test_without_the_training_the_map_misses_the_block_and_validity_is_low():
    from medinterp.models.sources import default_cache_dir

    handle = _planted_model(default_cache_dir(), steps=0)  # (d) the same halving, block PLANTED left random
    kmap = _ablation_map(handle)
    assert PLANTED not in _map_blocks(kmap), _map_blocks(kmap)
    result = validate(handle, kmap, "drugs", "ablation", SETTINGS, damage_domains=["disease"])
    assert result["probes"]["drugs"]["accuracy"] < 0.3  # near chance (0.1): nothing answers the probe
    lane = next(e for e in result["lanes"] if e["lane"] == "ablation")
    assert lane["blocks"] == [] and lane["note"], lane  # the map selects nothing: no lane to validate
