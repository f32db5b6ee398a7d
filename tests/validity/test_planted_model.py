"""The whole loop on a model with a planted domain layer (issue 11, "Done when").

A tiny llama of 8 blocks: every block but ``PLANTED`` has its writes to the residual stream (o_proj, down_proj)
halved, and block ``PLANTED`` alone is trained (Adam, a few dozen steps) to answer the drugs probe: the
question's last position must give the item's specialty word the largest logit among the ten choices. So
the model knows the probe (accuracy ~1) *because of* that block. Then

(a) the ablation method's map (KL per block, method=ablation, run in process; the synthesis' segments rule)
    selects the planted block;
(b) validity of intervention=ablation on that lane is high: a large drop, beats every random draw, z >> 2;
(c) the same with the lane replaced by random blocks (not the planted one): z ~ 0, beats ~ half the draws.

Without the training (an unplanted model) (a) and (b) fail: checked by hand when the test was written (the map
then selects other blocks and the probe is at chance, validity n/a or ~0).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medinterp.maps.curves import layers_of
from medinterp.maps.synthesis import MapParams, build_map
from medinterp.methods.ablation import LayerAblation
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
TEMPLATE = "started"  # the drugs template the map's ablation prompts use
pytestmark = pytest.mark.slow  # trains a block and maps it: ~30 s on a free 2-core CPU, minutes under load
SETTINGS = ValidateSettings(n_draws=7, n_bands=1, max_items=32, n_boot=100, seed=0)


def _planted_model(cache_dir, plant: bool = True) -> ModelHandle:
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
    if plant:
        _plant(handle)
    return handle


def _plant(handle: ModelHandle, steps: int = 80, lr: float = 3e-2) -> None:
    """Halve every other block's writes, then train block PLANTED alone on every drugs-probe question."""
    layers, tok = handle.parts.layers, handle.tokenizer
    spec, prompt_set = probe_spec("drugs"), load_prompt_set("drugs")
    probe = build_probe(spec, prompt_set, tok, None, seed=SETTINGS.seed)
    word = {" " + spec.choices[label]: probe.choice_ids[i] for i, label in enumerate(probe.labels)}
    # the probe's questions and the map's prompts (its first template), each followed by the item's specialty word
    texts = [*probe.questions, *(q for q, _ in probe.train), *(p.text for p in prompt_set.prompts(TEMPLATE))]
    targets = [*(probe.choice_ids[a] for a in probe.answers), *(word[w] for _, w in probe.train),
               *(word[" " + spec.choices[label]] for label in item_labels(spec, prompt_set))]
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
    method = LayerAblation(max_prompts=16, max_new_tokens=4, n_boot=20, seed=0)
    result = run_method(method, handle, prompt_set, [TEMPLATE], batch_size=16)
    rows = [(row, "planted") for row in result.rows(handle.name, "drugs", "ablation")]
    return build_map(rows, MapParams(methods=("ablation",), domains=("drugs",), min_methods=1))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from medinterp.models.sources import default_cache_dir

    handle = _planted_model(default_cache_dir())
    return handle, _ablation_map(handle)


def test_the_map_selects_the_planted_block_and_its_validity_is_high(planted):
    handle, kmap = planted
    entry = kmap["domains"]["drugs"]["ablation"]
    kl = entry["raw"] if "raw" in entry else None
    blocks = sorted(l - 1 for l in layers_of(tuple(iv) for iv in entry["intervals"]))
    assert PLANTED in blocks and len(blocks) <= 3, (blocks, entry.get("raw"))  # (a) read-out PLANTED+1 is written by the block
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
    size = len(layers_of(tuple(iv) for iv in kmap["domains"]["drugs"]["ablation"]["intervals"]))
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
