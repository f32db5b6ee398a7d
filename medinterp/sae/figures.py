"""Figures of an SAE run: training curves and the latent frequency histogram (matplotlib Figures; Agg)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CURVES = ("train/loss", "train/fvu", "train/l0", "train/dead_fraction")


def training_curves(rows: list[dict]) -> Figure:
    """Loss, FVU, L0 and dead fraction against the step, from the training log's rows (``step`` + keys)."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(3.2 * len(CURVES), 2.8))
    for ax, key in zip(axes, CURVES):
        pts = [(float(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, lw=1.2)
        ax.set_title(key.split("/", 1)[1])
        ax.set_xlabel("step")
        if key == "train/loss" and pts and min(y) > 0:
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def latent_frequencies(freq: np.ndarray) -> Figure:
    """Histogram of log10 latent frequency on held-out tokens (dead latents counted in the title)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    alive = freq[freq > 0]
    if len(alive):
        ax.hist(np.log10(alive), bins=40)
    ax.set_xlabel("log10 frequency (share of held-out tokens)")
    ax.set_ylabel("latents")
    ax.set_title(f"{len(alive)} alive, {int((freq == 0).sum())} dead of {len(freq)}")
    fig.tight_layout()
    return fig


__all__ = ["latent_frequencies", "training_curves"]
