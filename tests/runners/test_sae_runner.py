"""runners/sae.py in process on a tiny model: the run folder (metrics equal to a re-evaluation of the saved SAE,
tables, corpus record), a killed run resumes to the same SAE as an uninterrupted one, bad input in one line with
nothing complete written. The CLI (exit 2, one line) in the ``slow`` test."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

if __name__ == "__main__":  # run as a script (the DeepSpeed resume test): tests/ and the repository importable
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from helpers import ROOT, compose_map, run_runner, runner
from medinterp.errors import MedinterpError

pytest.importorskip("lightning")

QUICK = ["model=tiny_gemma3", "logger=none", "sae.ctx_len=32", "sae.train_tokens=1024", "sae.eval_tokens=256",
         "sae.ce_contexts=3", "sae.batch_size=128", "sae.steps=24", "sae.checkpoint_every=8", "sae.expansion=4",
         "sae.k=8", "sae.train.warmup_steps=4", "sae.train.threshold_start_step=6", "sae.train.dead_tokens=512",
         "sae.catalogue.domains=[dosage,progression]", "sae.catalogue.n_per_label=2", "capture_batch=4",
         "sae.interpret=false", "sae.steer=false"]  # the two stages: test_interpretation_and_steering_...
STAGES = ["sae.interpret=true", "sae.steer=true", "sae.interpretation.contexts=8", "sae.interpretation.window=8",
          "sae.interpretation.n_top=12", "sae.interpretation.n_random=4", "sae.steering.n_latents=2",
          "sae.steering.n_prompts=3", "sae.steering.alphas=[0,0.1,0.3]", "sae.steering.n_new_tokens=4"]


def run_sae(overrides, out_dir: Path, cache: Path) -> Path:
    """``python runners/sae.py *overrides`` in this process, without report and W&B (``publish``)."""
    cfg = compose_map([*QUICK, f"cache_dir={cache}", *overrides], config_name="sae")
    with open_dict(cfg):
        del cfg["hydra"]
    return runner("sae").run_sae(cfg, Path(out_dir))


@pytest.fixture(scope="module")
def sae_cache(tmp_path_factory) -> Path:
    """One medinterp cache for this module's in-process runs: the tiny model is built, and the corpus captured,
    once (each test's own run folder stays its own)."""
    return tmp_path_factory.mktemp("sae_cache")


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, sae_cache) -> Path:
    """The folder of one uninterrupted run with the QUICK settings (read, never written, by the tests)."""
    return run_sae([], tmp_path_factory.mktemp("plain") / "run", sae_cache)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_run_folder_holds_metrics_that_re_evaluate_from_the_saved_sae(plain_run):
    from medinterp.sae import evaluate_sae, load_sae
    from medinterp.sae.activations import ActivationStore
    from medinterp.sae.outliers import KeptRows

    out = plain_run
    m = json.loads((out / "metrics.json").read_text())
    for key in ("fvu", "explained_variance", "l0", "dead_fraction", "ce_loss_recovered", "kl"):
        assert math.isfinite(m[key]), key
    assert m["explained_variance"] == pytest.approx(1 - m["fvu"]) and m["ablation"] == "zero"
    assert (m["layer"], m["d"], m["n_latents"], m["k"], m["steps"]) == (2, 64, 256, 8, 24)  # the middle of 4
    assert m["ce_loss_recovered"] == pytest.approx((m["ce_zero"] - m["ce_sae"]) / (m["ce_zero"] - m["ce_clean"]))
    corpus = json.loads((out / "corpus.json").read_text())
    assert corpus["sources"] == ["icd10cm", "hpo", "prompts"] and len(corpus["corpus_sha256"]) == 64
    assert corpus["provenance"]["hpo"]["release"].startswith("hp/releases/")
    assert corpus["train_tokens"] >= 1024 and corpus["eval_tokens"] >= 256
    limit = corpus["outliers"]["norm_limit"]  # the stores without norm outliers (medinterp/sae/outliers.py)
    store = KeptRows(ActivationStore(corpus["activation_cache"]["eval"]), 2, limit)
    train = KeptRows(ActivationStore(corpus["activation_cache"]["train"]), 2, limit)
    assert m["n_eval_tokens"] == store.n_tokens == corpus["eval_tokens"]
    assert (m["n_outliers"], m["n_outliers_train"]) == (store.n_outliers, train.n_outliers)
    assert m["scale"] == corpus["scale"] == train.scale(2) != 1.0
    for layout in ("saelens", "dictionary_learning"):
        sae, _, _ = load_sae(out / "sae" / layout, d=64)
        again = evaluate_sae(sae, store.batches(2, 100, m["scale"]), progress=False)
        assert again.fvu == pytest.approx(m["fvu"], rel=1e-5) and again.l0 == pytest.approx(m["l0"], rel=1e-6)
    latents = rows(out / "latents.csv")
    assert len(latents) == 256 and [int(r["latent"]) for r in latents] == list(range(256))
    dead = sum(r["dead"] == "True" for r in latents) / 256
    assert dead == pytest.approx(m["dead_fraction"])
    cat = rows(out / "catalogue.csv")
    labels = {(r["domain"], r["labeling"], r["label"]) for r in cat}
    assert {d for d, _, _ in labels} == {"dosage", "progression"} and len(cat) == 2 * len(labels)
    assert all(0.0 <= float(r["auroc"]) <= 1.0 for r in cat)
    curves = rows(out / "train_curves.csv")
    assert [int(r["step"]) for r in curves] == list(range(24))
    assert (out / "training_curves.png").is_file() and (out / "latent_frequency.png").is_file()
    assert not (out / "checkpoints").exists() and json.loads((out / "config.json").read_text())["sae"]["k"] == 8


def kill_and_resume(tmp_path: Path, overrides: list[str], monkeypatch, whole: Path | None = None,
                    cache: Path | None = None) -> tuple[Path, Path, list[int]]:
    """An uninterrupted run (``whole``: one made before with ``overrides`` and ``cache``), and one killed after the
    checkpoint at step 8 then started again in its folder: (whole run folder, resumed run folder, the batch each
    training start read first)."""
    cache = cache or tmp_path / "cache"
    whole = whole or run_sae(overrides, tmp_path / "whole", cache)
    sae_runner = runner("sae")
    real = sae_runner.TokenStream

    class Killed(real):
        def __next__(self):
            if self.next_batch == 13:  # after the checkpoint at step 8 (checkpoint_every=8)
                raise KeyboardInterrupt  # what Ctrl-C or a scheduler's kill does to the loop
            return super().__next__()

    monkeypatch.setattr(sae_runner, "TokenStream", Killed)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_sae(overrides, tmp_path / "resumed", cache)
    killed = tmp_path / "resumed"
    assert (killed / "checkpoints" / "last.ckpt").exists() and not (killed / "metrics.json").exists()
    starts = []

    class Counted(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            starts.append(self.next_batch)

    monkeypatch.setattr(sae_runner, "TokenStream", Counted)
    return whole, run_sae(overrides, killed, cache), starts


def assert_same_sae(whole: Path, out: Path) -> None:
    from medinterp.sae import load_sae

    a, _, _ = load_sae(whole / "sae" / "saelens")
    b, _, _ = load_sae(out / "sae" / "saelens")
    for name, tensor in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert [int(r["step"]) for r in rows(out / "train_curves.csv")] == list(range(24))
    assert json.loads((out / "metrics.json").read_text())["fvu"] == pytest.approx(
        json.loads((whole / "metrics.json").read_text())["fvu"], rel=1e-5)


def test_a_killed_run_resumes_from_its_checkpoint_to_the_uninterrupted_sae(tmp_path, monkeypatch, plain_run, sae_cache):
    whole, out, starts = kill_and_resume(tmp_path, [], monkeypatch, plain_run, sae_cache)
    assert starts == [8]  # resumed at the checkpoint's step, not started afresh
    assert_same_sae(whole, out)


@pytest.mark.slow  # DeepSpeed's process group: in a process of its own
def test_a_killed_deepspeed_run_resumes_from_its_checkpoint_folder(tmp_path):
    """Under DeepSpeed ``last.ckpt`` is a folder; the runner once looked for a file and started a killed run over."""
    pytest.importorskip("deepspeed")
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (tmp_path / "resumed" / "checkpoints").exists()  # removed once the run completed
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [8]
    assert_same_sae(tmp_path / "whole", tmp_path / "resumed")


def test_interpretation_and_steering_fill_the_tables_and_metrics(tmp_path, sae_cache):
    """Both stages on: the interpreted latents' activity equals an independent encoding of transformers'
    hidden states (layer, scale, windows, masks wired right), each keyword explanation is a token the latent fires
    on, the explanation/score/status reach latents.csv and catalogue.csv, and steering at alpha = 0 changes
    nothing."""
    from medinterp.models import ModelSpec, load_model
    from medinterp.sae import load_sae
    from medinterp.sae.activations import ActivationStore
    from medinterp.sae.interpreters import normalise_token

    out = run_sae(STAGES, tmp_path / "run", sae_cache)
    m = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    handle = load_model(ModelSpec.from_dict(config["model"]), "cpu", sae_cache)
    tok, layer, scale = handle.tokenizer, m["layer"], m["scale"]
    store = ActivationStore(json.loads((out / "corpus.json").read_text())["activation_cache"]["eval"])
    index, token_ids = store.array("index"), store.array("token_ids")
    ids = np.full((8, 32), tok.pad_token_id, dtype=np.int64)  # the first 8 held-out contexts, rebuilt
    ids[:, 0] = tok.bos_token_id
    keep = index[:, 0] < 8
    ids[index[keep, 0], index[keep, 1]] = token_ids[keep]
    with torch.no_grad():
        h = handle.model(input_ids=torch.as_tensor(ids), output_hidden_states=True).hidden_states[layer]
    sae, _, _ = load_sae(out / "sae" / "saelens")
    with torch.no_grad():
        f = sae.encode(h.reshape(-1, h.shape[-1]) * scale).reshape(32, 8, -1)  # 8 contexts x 4 windows of 8
    counted = ~np.isin(ids, tok.all_special_ids)  # BOS, EOS separators, padding do not count
    counted[:, 0] = False  # nor the first position of a packed context
    f *= torch.as_tensor(counted.reshape(32, 8, 1))
    words = np.array([[normalise_token(tok.decode([t])) for t in row] for row in ids]).reshape(32, 8)
    interp = rows(out / "interpretation.csv")
    assert [r["chosen_by"] for r in interp].count("random") == 4 and len(interp) == 16
    ok = [r for r in interp if r["status"] == "ok"]
    assert len(ok) >= 5
    for r in interp:
        j = int(r["latent"])
        assert int(r["n_active"]) == int((f[:, :, j].amax(1) > 0).sum()), j
    for r in ok:
        j = int(r["latent"])
        fired = set(words[(f[:, :, j] > 0).numpy()].tolist())
        assert set(r["explanation"].split(" | ")) <= fired, (j, r["explanation"])
        assert 0.0 <= float(r["detection"]) <= 1.0
    by_latent = {int(r["latent"]): r for r in interp}
    for table in ("latents.csv", "catalogue.csv"):
        for r in rows(out / table):
            got = by_latent.get(int(r["latent"]))
            if got is None:
                assert (r["status"], r["explanation"], r["detection_score"]) == ("not interpreted", "", "nan")
            else:
                assert (r["status"], r["explanation"]) == (got["status"], got["explanation"])
                assert r["detection_score"] == got["detection"]
    catalogue = rows(out / "catalogue.csv")
    assert {int(r["latent"]) for r in interp if r["chosen_by"] == "catalogue"} <= {int(r["latent"]) for r in catalogue}
    assert m["interpretation"]["n_ok"] == len(ok)
    assert m["interpretation"]["detection"] == pytest.approx(np.mean([float(r["detection"]) for r in ok]))

    steering, targets, s = rows(out / "steering.csv"), rows(out / "steering_latents.csv"), m["steering"]
    assert len(targets) == s["n_latents"] == 2 and len(steering) == 2 * 3
    peak = {int(r["latent"]): float(r["max_activation"]) for r in rows(out / "latents.csv")}
    for r in steering:  # alpha = multiple x the latent's largest held-out activation, in raw space
        j = int(r["latent"])
        assert float(r["alpha"]) == pytest.approx(float(r["alpha_max_act"]) * peak[j] / scale) and peak[j] > 0
        if float(r["alpha"]) == 0:
            assert float(r["delta_target"]) == float(r["delta_unrelated"]) == 0.0 and float(r["coherence"]) == 1.0
    assert sorted({round(float(r["alpha_max_act"]), 9) for r in steering}) == pytest.approx([0, 0.1, 0.3])
    for t in targets:
        assert any((c["domain"], c["label"], c["latent"]) == (t["domain"], t["label"], t["latent"]) for c in catalogue)
        assert t["words"] == " " + t["label"].replace("_", " ")
    decided = [t["success"] == "True" for t in targets if t["success"] != ""]
    assert s["success_rate"] == pytest.approx(np.mean(decided))


@pytest.mark.parametrize("override, message", [
    (["sae.corpus=[{tmp}/missing.txt]"], "sae.corpus: file not found: .*missing.txt"),
    (["sae.corpus=[{tmp}/empty.txt]"], "sae.corpus: .*empty.txt is empty"),
    (["sae.corpus=[pubmed]"], "'pubmed' is neither a built-in source"),
    (["sae.layer=9"], r"sae.layer=9 is outside tiny_gemma3; valid: 0..4"),
    (["sae.k=300"], r"The SAE's 'k' must be an integer in \[1, n_latents\] = \[1, 256\]; got 300"),
    (["sae.pretrained={tmp}/neither"], "neither|no SAE"),
    (["sae.pretrained={tmp}/wide"], "width 32, but the model's residual stream has width 64"),
    (["sae.steps=5"], "must exceed sae.train.threshold_start_step"),
    (["sae.max_norm_ratio=1"], r"sae.max_norm_ratio must be a number > 1 .* got 1$"),
    (["sae.interpret=true", "sae.interpretation.window=5"],
     r"sae.interpretation.window must divide sae.ctx_len \(32\)"),
    (["sae.steer=true", "sae.steering.alphas=[]"], "steering: alphas must be a non-empty list of finite numbers"),
    (["sae.tokens=image"], r"sae.tokens=image needs image prompts: sae.images=\[<an image prompt set>\]"),
    (["sae.tokens=pixels"], "sae.tokens must be one of image, text, all; got 'pixels'"),
    (["sae.images=[disease]"], "prompt set 'disease' is an text prompt set; sae.images"),
    (["sae.images=[synthetic_xray]", "sae.image_templates=[nope]"], "template for domain 'synthetic_xray'"),
    (["sae.images=[synthetic_xray]"], "sae.images holds images, but model 'tiny_gemma3' is a text-only model"),
])
def test_bad_input_is_one_line_and_writes_nothing_complete(tmp_path, sae_cache, override, message):
    from medinterp.sae import SAEConfig, SparseAutoencoder, save_sae

    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "neither").mkdir()
    (tmp_path / "neither" / "weights.bin").write_bytes(b"x")
    save_sae(SparseAutoencoder(SAEConfig(32, 64, 4, "topk")), tmp_path / "wide", "saelens")
    with pytest.raises(MedinterpError, match=message) as err:
        run_sae([o.format(tmp=tmp_path) for o in override], tmp_path / "run", sae_cache)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_the_cli_exits_2_with_one_line(tmp_path):
    proc = run_runner("sae.py", *QUICK, f"cache_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}",
                      f"sae.corpus=[{tmp_path}/none.jsonl]", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == f"error: sae.corpus: file not found: {tmp_path}/none.jsonl"
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("tokens", ["all", "image"])
def test_a_tiny_vlm_run_on_image_prompts_labels_each_latent_s_token_type(tmp_path, tokens):
    """model=tiny_llava sae.images=[synthetic_xray]: the caches hold the image prompts' tokens with their types,
    and latents.csv's token columns equal a recomputation from the saved SAE on the held-out cache."""
    from medinterp.sae import load_sae
    from medinterp.sae.activations import IMAGE, ActivationStore
    from medinterp.sae.catalogue import token_type_columns

    vlm = [o for o in QUICK if not o.startswith("model=")] + ["model=tiny_llava",
                                                                  "sae.catalogue.domains=[dosage,synthetic_xray]"]
    cfg = compose_map([*vlm, f"cache_dir={tmp_path / 'cache'}", "sae.images=[synthetic_xray]",
                       "sae.image_templates=1", f"sae.tokens={tokens}"], config_name="sae")
    with open_dict(cfg):
        del cfg["hydra"]
    out = runner("sae").run_sae(cfg, tmp_path / "run")
    m = json.loads((out / "metrics.json").read_text())
    corpus = json.loads((out / "corpus.json").read_text())
    assert math.isfinite(m["fvu"]) and m["tokens"] == tokens and m["token_type_threshold"] == 0.9
    assert corpus["image_prompts"] == {"held_out": 13, "training": 51}  # 64 items, held-out share 256 / 1280
    store = ActivationStore(corpus["activation_cache"]["eval"])
    types = store.array("token_types")
    assert store.meta["rows_per_type"]["image"] == int((types == IMAGE).sum()) >= 13 * 35  # 6 x 6 grid, first dropped
    assert (types == IMAGE).all() if tokens == "image" else (types != IMAGE).any()
    assert (corpus["token_types"]["text"] == 0) == (tokens == "image")  # tokens=image: no text row cached
    sae, _, _ = load_sae(out / "sae" / "saelens")
    with torch.no_grad():
        f = sae.encode(store.rows(m["layer"], np.arange(store.n_tokens)) * m["scale"])
    want = token_type_columns(f, types)
    latents = rows(out / "latents.csv")
    assert [r["token_type"] for r in latents] == [w["token_type"] for w in want]
    np.testing.assert_allclose([float(r["image_share"]) for r in latents], [w["image_share"] for w in want],
                               rtol=1e-4)
    assert m["latent_token_types"] == {t: sum(w["token_type"] == t for w in want)
                                       for t in ("image", "text", "both", "dead")}
    if tokens == "image":  # only image tokens: every live latent is an image latent
        assert {r["token_type"] for r in latents} <= {"image", "dead"}
    by_latent = {r["latent"]: r["token_type"] for r in latents}
    catalogue = rows(out / "catalogue.csv")
    assert all(r["token_type"] == by_latent[r["latent"]] for r in catalogue)
    xray = {(r["labeling"], r["label"]) for r in catalogue if r["domain"] == "synthetic_xray"}
    assert {"presence", "side", "lobe"} <= {labeling for labeling, _ in xray}  # the image set's labels, ranked
    domains = {r["domain"] for r in catalogue}
    assert domains == ({"synthetic_xray"} if tokens == "image" else {"dosage", "synthetic_xray"})
    assert m.get("catalogue_skipped") == (["dosage"] if tokens == "image" else None)


if __name__ == "__main__":  # the DeepSpeed resume test's own process: python test_sae_runner.py <tmp>
    with pytest.MonkeyPatch.context() as patch:
        _, _, first = kill_and_resume(Path(sys.argv[1]), ["sae.trainer.strategy=deepspeed", "sae.trainer.devices=1",
                                                          "sae.trainer.accelerator=cpu"], patch)
    print(json.dumps(first))
