"""medinterp.sae.files: round trips in the dictionary_learning and SAELens layouts, files written by hand in each
library's exact key layout (encodings against an independent reimplementation of that library's encoder), bad input."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from medinterp.errors import MedinterpError
from medinterp.sae.config import SAEConfig
from medinterp.sae.files import load_sae, save_sae
from medinterp.sae.model import SparseAutoencoder

D, M = 6, 16
X = torch.randn(40, D, generator=torch.Generator().manual_seed(0)) * 2


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def trained_like(config: SAEConfig, threshold: float = 0.4) -> SparseAutoencoder:
    sae = SparseAutoencoder(config, seed=3)
    with torch.no_grad():
        sae.b_enc.copy_(rand(M, seed=4) * 0.3)
        sae.b_dec.copy_(rand(D, seed=5))
        if config.activation != "topk":  # a TopK SAE has no threshold (it stays the unset -1)
            sae.threshold.fill_(threshold)
    return sae


CONFIGS = {"topk": SAEConfig(D, M, 3, "topk"), "batchtopk": SAEConfig(D, M, 3, "batchtopk"),
           "matryoshka": SAEConfig(D, M, 3, "batchtopk", (2, 2, 4, 8)),
           "jumprelu": SAEConfig(D, M, None, "jumprelu")}


@pytest.mark.parametrize("layout", ["saelens", "dictionary_learning"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip(tmp_path, layout, name):
    sae = trained_like(CONFIGS[name])
    if name == "jumprelu":
        with torch.no_grad():
            sae.threshold.copy_(torch.linspace(0, 0.8, M))
    save_sae(sae, tmp_path / "sae", layout, meta={"model_name": "gemma3_270m"})
    back, got_layout, _ = load_sae(tmp_path / "sae", d=D)
    assert got_layout == layout and back.config == sae.config
    for p in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.allclose(getattr(back, p), getattr(sae, p), atol=1e-6), p
    assert torch.allclose(back.encode(X), sae.encode(X), atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == (
        ["cfg.json", "sae_weights.safetensors"] if layout == "saelens" else ["ae.pt", "config.json"])


# -- files in the other libraries' own layouts, encoded by reimplementations of their encoders -------------------
W_ENC, B_ENC, W_DEC, B_DEC = rand(D, M, seed=10), rand(M, seed=11) * 0.5, rand(M, D, seed=12), rand(D, seed=13)


def dl_threshold(pre):  # dictionary_learning: post_relu * (post_relu > threshold)
    return lambda th: pre.relu() * (pre.relu() > th)


def test_dictionary_learning_batchtopk_file(tmp_path):
    torch.save({"encoder.weight": W_ENC.T.clone(), "encoder.bias": B_ENC, "decoder.weight": W_DEC.T.clone(),
                "b_dec": B_DEC, "k": torch.tensor(4, dtype=torch.int), "threshold": torch.tensor(0.7)},
               tmp_path / "ae.pt")
    (tmp_path / "config.json").write_text(json.dumps({"trainer": {"dict_class": "BatchTopKSAE", "k": 4}}))
    sae, layout, doc = load_sae(tmp_path, d=D)
    pre = torch.nn.functional.linear(X - B_DEC, W_ENC.T, B_ENC)
    want = dl_threshold(pre)(0.7)
    assert layout == "dictionary_learning" and sae.config.activation == "batchtopk" and sae.config.k == 4
    assert torch.allclose(sae.encode(X), want, atol=1e-5)
    assert torch.allclose(sae(X), want @ W_DEC + B_DEC, atol=1e-4)


def test_dictionary_learning_topk_and_matryoshka_files(tmp_path):
    torch.save({"encoder.weight": W_ENC.T.clone(), "encoder.bias": B_ENC, "decoder.weight": W_DEC.T.clone(),
                "b_dec": B_DEC, "k": torch.tensor(3, dtype=torch.int)}, tmp_path / "ae_final.pt")
    sae, _, _ = load_sae(tmp_path / "ae_final.pt")  # no config.json: the class from the keys
    post = (torch.nn.functional.linear(X - B_DEC, W_ENC.T, B_ENC)).relu()
    top = post.topk(3, dim=-1)
    want = torch.zeros_like(post).scatter(-1, top.indices, top.values)
    assert sae.config.activation == "topk" and torch.allclose(sae.encode(X), want, atol=1e-5)

    folder = tmp_path / "matryoshka"
    folder.mkdir()
    torch.save({"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC, "k": torch.tensor(3, dtype=torch.int),
                "threshold": torch.tensor(0.5), "group_sizes": torch.tensor([4, 4, 8])}, folder / "ae.pt")
    sae, _, _ = load_sae(folder)
    assert sae.config.group_sizes == (4, 4, 8)
    assert torch.allclose(sae.encode(X), dl_threshold((X - B_DEC) @ W_ENC + B_ENC)(0.5), atol=1e-5)


def test_dictionary_learning_jumprelu_file_without_b_dec_on_the_input(tmp_path):
    th = torch.linspace(0.0, 1.0, M)
    torch.save({"W_enc": W_ENC, "b_enc": B_ENC, "W_dec": W_DEC, "b_dec": B_DEC, "threshold": th}, tmp_path / "ae.pt")
    sae, _, _ = load_sae(tmp_path)
    pre = X @ W_ENC + B_ENC  # JumpReluAutoEncoder.apply_b_dec_to_input defaults to False
    assert torch.allclose(sae.encode(X), (pre * (pre > th)).relu(), atol=1e-5)
    save_sae(sae, tmp_path / "again", "dictionary_learning")
    again = torch.load(tmp_path / "again" / "ae.pt", weights_only=True)
    assert torch.allclose(again["b_enc"], B_ENC, atol=1e-5)  # folded back out on save


def write_saelens(folder, cfg: dict, tensors: dict):
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps(cfg))


def test_saelens_jumprelu_file(tmp_path):
    th = torch.rand(M, generator=torch.Generator().manual_seed(20))
    base = {"architecture": "jumprelu", "d_in": D, "d_sae": M, "dtype": "float32", "device": "cpu",
            "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
            "metadata": {"model_name": "gemma-3-270m", "hook_name": "blocks.9.hook_resid_post"}}
    weights = {"W_enc": W_ENC, "W_dec": W_DEC, "b_enc": B_ENC, "b_dec": B_DEC, "threshold": th}
    write_saelens(tmp_path / "a", base, weights)
    sae, layout, doc = load_sae(tmp_path / "a" / "cfg.json", d=D)
    pre = (X - B_DEC) @ W_ENC + B_ENC
    want = pre.relu() * (pre > th)
    assert layout == "saelens" and sae.config.activation == "jumprelu" and doc["metadata"]["model_name"]
    assert torch.allclose(sae.encode(X), want, atol=1e-5)
    assert torch.allclose(sae(X), want @ W_DEC + B_DEC, atol=1e-4)
    write_saelens(tmp_path / "b", {**base, "apply_b_dec_to_input": False}, weights)
    pre = X @ W_ENC + B_ENC
    assert torch.allclose(load_sae(tmp_path / "b")[0].encode(X), pre.relu() * (pre > th), atol=1e-5)


def test_saelens_topk_v5_and_relu_files(tmp_path):
    weights = {"W_enc": W_ENC, "W_dec": W_DEC, "b_enc": B_ENC, "b_dec": B_DEC}
    write_saelens(tmp_path / "topk", {"architecture": "standard", "d_in": D, "d_sae": M, "activation_fn_str": "topk",
                                      "activation_fn_kwargs": {"k": 5}, "apply_b_dec_to_input": True}, weights)
    sae, _, _ = load_sae(tmp_path / "topk")
    pre = (X - B_DEC) @ W_ENC + B_ENC
    top = pre.topk(5, dim=-1)  # SAELens: top-k of the pre-activations, then ReLU
    want = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
    assert sae.config.activation == "topk" and sae.config.k == 5
    assert torch.allclose(sae.encode(X), want, atol=1e-5)
    write_saelens(tmp_path / "relu", {"architecture": "standard", "d_in": D, "d_sae": M}, weights)
    assert torch.allclose(load_sae(tmp_path / "relu")[0].encode(X), pre.relu(), atol=1e-5)


def test_bad_files_stop_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    cases = [(tmp_path / "nowhere", "does not exist"), (tmp_path / "empty", "neither format")]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "ae.pt").write_text("not a checkpoint")
    cases.append((tmp_path / "junk", "not a readable torch state dict"))
    weights = {"W_enc": W_ENC, "W_dec": W_DEC, "b_enc": B_ENC, "b_dec": B_DEC}
    write_saelens(tmp_path / "gated", {"architecture": "gated", "d_in": D, "d_sae": M}, weights)
    cases.append((tmp_path / "gated", "architecture 'gated'.*valid: batchtopk, jumprelu"))
    write_saelens(tmp_path / "norm", {"architecture": "standard", "d_in": D, "d_sae": M,
                                      "normalize_activations": "expected_average_only_in"}, weights)
    cases.append((tmp_path / "norm", "normalize_activations.*valid: none"))
    write_saelens(tmp_path / "lying", {"architecture": "standard", "d_in": D + 1, "d_sae": M}, weights)
    cases.append((tmp_path / "lying", "cfg.json says d_in=7"))
    for path, message in cases:
        with pytest.raises(MedinterpError, match=message) as err:
            load_sae(path)
        assert "\n" not in str(err.value)
    save_sae(trained_like(CONFIGS["batchtopk"]), tmp_path / "ok")
    with pytest.raises(MedinterpError, match="width 6, but the model's residual stream has width 640"):
        load_sae(tmp_path / "ok", d=640)
    with pytest.raises(MedinterpError, match="valid: dictionary_learning, saelens"):
        save_sae(trained_like(CONFIGS["topk"]), tmp_path / "x", "npz")
    per_latent = trained_like(CONFIGS["batchtopk"])
    with torch.no_grad():
        per_latent.threshold[0] = 9.0
    with pytest.raises(MedinterpError, match="one threshold for all latents"):
        save_sae(per_latent, tmp_path / "y", "dictionary_learning")
