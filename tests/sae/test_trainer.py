"""medinterp.sae.trainer / lightning_module: a planted hierarchical dictionary is recovered, the threshold reproduces
the batch top-k sparsity, decoder rows stay unit-norm, a checkpoint resumes."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("lightning", reason="SAE training runs on Lightning (pip install lightning)")

from medinterp.errors import MedinterpError  # noqa: E402
from medinterp.sae.config import SAEConfig, group_sizes_from_fractions  # noqa: E402
from medinterp.sae.evaluate import evaluate_sae  # noqa: E402
from medinterp.sae.model import SparseAutoencoder  # noqa: E402
from medinterp.sae.train_config import TrainConfig  # noqa: E402
from medinterp.sae.trainer import checkpoint_step, train_sae  # noqa: E402

D, PARENTS, CHILDREN = 32, 4, 6


def planted_hierarchy(n_batches: int, batch: int, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Features (PARENTS * (1 + CHILDREN) = 28, D) orthonormal directions and batches of their sparse sums.
    Each parent fires with p = 0.3; a firing parent brings one of its children with p = 2/3 (a child never fires
    alone: the hierarchy that makes a plain SAE absorb parents into children). L0 = 4 * 0.3 * (1 + 2/3) = 2 on
    average, = k. Magnitudes uniform in [1, 2]; a common offset of norm 4 (for the geometric-median b_dec)."""
    g = torch.Generator().manual_seed(seed)
    n_feats = PARENTS * (1 + CHILDREN)
    feats = torch.linalg.qr(torch.randn(D, D, generator=g))[0][:, :n_feats].T.contiguous()
    offset = torch.randn(D, generator=g)
    offset = 4 * offset / offset.norm()
    out = []
    for _ in range(n_batches):
        parent_on = torch.rand(batch, PARENTS, generator=g) < 0.3
        child_on = parent_on & (torch.rand(batch, PARENTS, generator=g) < 2 / 3)
        child = torch.randint(0, CHILDREN, (batch, PARENTS), generator=g)
        codes = torch.zeros(batch, n_feats)
        codes[:, :PARENTS] = parent_on.float()
        codes.scatter_(1, PARENTS + torch.arange(PARENTS) * CHILDREN + child, child_on.float())
        mags = 1 + torch.rand(batch, n_feats, generator=g)
        out.append((codes * mags) @ feats + offset)
    return feats, out


def recovered(feats: torch.Tensor, sae: SparseAutoencoder, cos: float = 0.9) -> float:
    W = sae.W_dec.detach()
    sims = (feats @ (W / W.norm(dim=1, keepdim=True)).T).max(1).values
    return float((sims >= cos).float().mean())


# The planted recipe: the training loop with dictionary_learning's k annealing over the first 200 steps
# (k from d = 32 down to 2). Without it recovery plateaus at 86-93 % (docs/sae.md, "Planted hierarchy").
PLANTED = TrainConfig(lr=3e-3, warmup_steps=50, k_anneal_steps=200, threshold_start_step=800, threshold_beta=0.99,
                      dead_tokens=50_000)


def train_planted(seed: int) -> tuple[torch.Tensor, list[torch.Tensor], SparseAutoencoder]:
    """Planted features, their batches and a Matryoshka BatchTopK SAE (64 latents, default fractions) trained on
    them for 2000 steps of 512 tokens; ``seed`` draws the data (the SAE's init and the loop are fixed)."""
    feats, batches = planted_hierarchy(2000, 512, seed=seed)
    config = SAEConfig(D, 64, 2, "batchtopk", group_sizes_from_fractions(64, [1 / 16, 1 / 16, 1 / 8, 1 / 4, 1 / 2]))
    sae = train_sae(SparseAutoencoder(config, seed=0), batches, PLANTED, max_steps=2000, progress=False, seed=0)
    return feats, batches, sae


@pytest.fixture(scope="module")
def trained():
    return train_planted(seed=0)


def test_planted_hierarchy_is_recovered(trained):
    feats, _, sae = trained
    assert recovered(feats, sae) >= 0.9  # 28 of 28 at seed 0
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


@pytest.mark.slow  # five trainings, ~8 s each on an idle core
def test_planted_hierarchy_is_recovered_at_every_seed():
    got = [recovered(feats, sae) for feats, _, sae in (train_planted(seed) for seed in range(5))]
    assert min(got) >= 0.9, got  # 2026-12-06: 1.0, 0.96, 0.96, 0.93, 0.96 (seeds 5-9: 0.93-0.96)


def test_threshold_reproduces_the_batch_topk_sparsity(trained):
    _, batches, sae = trained
    assert sae.threshold_is_set and bool((sae.threshold == sae.threshold[0]).all())
    got = evaluate_sae(sae, batches[-200:], progress=False)
    assert got.l0 == pytest.approx(2.0, rel=0.10)  # k = 2 per token on average in training
    assert got.fvu < 0.1


def test_bad_settings_stop_in_one_line():
    sae = SparseAutoencoder(SAEConfig(4, 8, 2, "batchtopk"))
    with pytest.raises(MedinterpError, match="threshold_start_step.*below max_steps"):
        train_sae(sae, [torch.zeros(4, 4)], TrainConfig(), max_steps=10)
    with pytest.raises(MedinterpError, match=r"\(tokens, 4\) tensor.*shape \(3, 5\)"):
        train_sae(sae, [torch.zeros(3, 5)], TrainConfig(threshold_start_step=0), max_steps=2, progress=False)
    with pytest.raises(MedinterpError, match=r"'k_anneal_steps' \(900\) must be at most threshold_start_step \(100\)"):
        train_sae(sae, [torch.zeros(4, 4)], TrainConfig(k_anneal_steps=900, threshold_start_step=100), max_steps=2000)
    with pytest.raises(MedinterpError, match="needs k < d"):
        train_sae(SparseAutoencoder(SAEConfig(4, 8, 4, "topk")), [torch.zeros(4, 4)], TrainConfig(k_anneal_steps=5),
                  max_steps=10)
    with pytest.raises(MedinterpError, match="cannot be trained"):
        train_sae(SparseAutoencoder(SAEConfig(4, 8, None, "jumprelu")), [torch.zeros(4, 4)], max_steps=2)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    x = planted_hierarchy(1, 256, seed=1)[1][0]
    cfg = TrainConfig(lr=1e-2, warmup_steps=3, threshold_start_step=2, threshold_beta=0.5, dead_tokens=300)
    config = SAEConfig(D, 48, 3, "batchtopk", (8, 16, 24))
    straight = train_sae(SparseAutoencoder(config, seed=1), [x], cfg, max_steps=12, progress=False)
    first = train_sae(SparseAutoencoder(config, seed=1), [x], cfg, max_steps=7, progress=False,
                      checkpoint_dir=tmp_path, checkpoint_every=7)
    assert not torch.equal(first.W_dec, straight.W_dec)
    assert checkpoint_step(tmp_path / "last.ckpt") == 7 and checkpoint_step(tmp_path / "none.ckpt") is None
    resumed = train_sae(SparseAutoencoder(config, seed=99), [x], cfg, max_steps=12, progress=False,
                        ckpt_path=tmp_path / "last.ckpt")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.allclose(getattr(resumed, name), getattr(straight, name), atol=1e-6), name


def test_a_checkpoint_folder_without_model_states_is_one_line(tmp_path):
    (tmp_path / "last.ckpt" / "checkpoint").mkdir(parents=True)  # a DeepSpeed save killed before its states
    with pytest.raises(MedinterpError, match=r"holds no DeepSpeed model states .*remove it to train from the start"):
        checkpoint_step(tmp_path / "last.ckpt")


def test_a_generator_is_read_once_and_a_dataloader_is_cycled():
    seen = []

    def gen():
        for i in range(5):
            seen.append(i)
            yield torch.randn(16, 4)

    sae = SparseAutoencoder(SAEConfig(4, 8, 2, "topk"))
    before = sae.W_dec.detach().clone()
    train_sae(sae, gen(), TrainConfig(warmup_steps=0), max_steps=100, progress=False)
    assert seen == list(range(5)) and not torch.equal(sae.W_dec, before)
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.randn(32, 4)), batch_size=16)  # rows are (x,) tuples; 2 batches/epoch
    calls = []
    sae = SparseAutoencoder(SAEConfig(4, 8, 2, "topk"))
    original = sae.pre_activations
    sae.pre_activations = lambda x: (calls.append(len(x)), original(x))[1]
    train_sae(sae, loader, TrainConfig(warmup_steps=0), max_steps=5, progress=False)
    assert calls == [16] * 5  # cycled over epochs until max_steps


def test_the_curves_are_logged_per_group(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    x = planted_hierarchy(1, 256, seed=3)[1][0]
    config = SAEConfig(D, 48, 2, "batchtopk", (8, 16, 24))
    cfg = TrainConfig(warmup_steps=2, threshold_start_step=1, dead_tokens=256)
    train_sae(SparseAutoencoder(config), [x], cfg, max_steps=4, progress=False, log_every_n_steps=1,
              logger=CSVLogger(tmp_path, name="sae"))
    import csv

    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    want = {"train/loss", "train/mse_g0", "train/mse_g1", "train/mse_g2", "train/auxk", "train/l0",
            "train/dead_fraction", "train/fvu", "train/threshold"}
    assert want <= set(rows[0]) and len(rows) == 4
    last = rows[-1]
    assert float(last["train/l0"]) == 2.0 and float(last["train/dead_fraction"]) > 0  # k = 2; unkept for 256 tokens
    assert float(last["train/threshold"]) > 0
