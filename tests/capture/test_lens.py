"""The logit lens against a hand-computed decode: the final norm exactly once, the soft cap, the model's own logits."""
from __future__ import annotations

import pytest
import torch

from medinterp.capture.lens import lens_logits, output_logits
from medinterp.capture.residual import capture_batch
from medinterp.capture.tokens import encode
from medinterp.models import ModelSpec, load_model

TEXTS = ["The patient was started on metoprolol.", "Her current medication list includes a statin and aspirin."]


@pytest.fixture(scope="module", params=["llama", "gemma3"])
def handle(request, cache_dir):
    """A private tiny model (its weights are edited) whose final norm has random, non-unit weights: with the
    initial weights (ones; Gemma: zeros, scaled 1 + w) RMSNorm is idempotent, so applying it twice would pass."""
    h = load_model(ModelSpec(name=f"tiny_{request.param}", source="tiny", family=request.param, n_layers=4), "cpu",
                   cache_dir)
    with torch.no_grad():
        h.parts.final_norm.weight.copy_(torch.randn(h.parts.final_norm.weight.shape, generator=torch.Generator().manual_seed(1)))
    return h


def rms_norm_by_hand(handle, x):
    """The family's RMSNorm written out: x / sqrt(mean(x^2) + eps) * w (Llama) or * (1 + w) (Gemma)."""
    norm = handle.parts.final_norm
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    w = norm.weight.double()
    scale = 1.0 + w if handle.parts.adapter.family == "gemma3" else w
    x = x.double()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * scale


def readouts(handle, texts):
    """Every read-out (L + 1) of each prompt's last real token: (L + 1, B, D); and the batch."""
    batch = encode(handle.tokenizer, texts, "last")
    acts = capture_batch(handle, batch, list(range(handle.n_layers + 1)), "last")
    return torch.stack(acts), batch


def own_logits(handle, text):
    """The model's own output logits at the last token of ``text`` alone (no padding)."""
    ids = handle.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        return handle.model(input_ids=ids, use_cache=False).logits[0, -1].float()


def test_lens_is_the_hand_decode_at_every_readout(handle):
    acts, _ = readouts(handle, TEXTS)
    W = handle.parts.lm_head.weight.double()  # (V, D); tied or not, the head's own weight
    for layer in range(handle.n_layers + 1):
        with torch.inference_mode():
            got = lens_logits(handle.parts, acts[layer])
        want = rms_norm_by_hand(handle, acts[layer]) @ W.T
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_final_norm_applied_exactly_once(handle):
    """The lens of the last read-out (raw last-block output) is the model's output: KL 0. Skipping the norm or
    applying it twice (what normalising transformers' hidden_states[-1] does) gives other logits."""
    acts, _ = readouts(handle, TEXTS)
    last = acts[handle.n_layers]
    with torch.inference_mode():
        got = lens_logits(handle.parts, last)
        skipped = handle.parts.lm_head(last).float()
        doubled = handle.parts.lm_head(handle.parts.final_norm(handle.parts.final_norm(last))).float()
    for b, text in enumerate(TEXTS):
        want = own_logits(handle, text)
        torch.testing.assert_close(got[b], want, rtol=1e-4, atol=1e-4)
        assert (skipped[b] - want).abs().max() > 1e-2
        assert (doubled[b] - want).abs().max() > 1e-2
        kl = torch.nn.functional.kl_div(got[b].log_softmax(-1), want.log_softmax(-1), log_target=True, reduction="sum")
        assert abs(float(kl)) < 1e-6


def test_output_logits_are_the_models_own_at_the_last_token(handle):
    """The padded batch (left or right) gives each prompt's unpadded last-token logits."""
    saved = handle.tokenizer.padding_side
    try:
        for side in ("left", "right"):
            handle.tokenizer.padding_side = side
            batch = encode(handle.tokenizer, TEXTS, "last")
            with torch.inference_mode():
                got = output_logits(handle, batch)
            for b, text in enumerate(TEXTS):
                torch.testing.assert_close(got[b], own_logits(handle, text), rtol=1e-4, atol=1e-4)
    finally:
        handle.tokenizer.padding_side = saved


def test_soft_capped_head_uses_its_cap(cache_dir):
    """Gemma-2-style final_logit_softcapping on a tiny gemma config: the lens caps as the model's forward does."""
    h = load_model(ModelSpec(name="tiny_gemma3", source="tiny", family="gemma3", n_layers=4), "cpu", cache_dir)
    cap = 0.05  # far below the random head's logits, so the cap bends them
    h.parts.text_config.final_logit_softcapping = cap
    assert h.parts.logit_softcap == cap
    acts, _ = readouts(h, TEXTS)
    with torch.inference_mode():
        got = lens_logits(h.parts, acts[h.n_layers])
        uncapped = h.parts.lm_head(h.parts.final_norm(acts[h.n_layers])).float()
    assert got.abs().max() <= cap
    assert uncapped.abs().max() > 2 * cap
    for b, text in enumerate(TEXTS):
        torch.testing.assert_close(got[b], own_logits(h, text), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, torch.tanh(uncapped / cap) * cap)
