"""Figures of a fitted density: a 2-D heat map, or pairwise marginals."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.checkpoint.files import atomic_write

__all__ = ["plot"]


def _bounds(points: np.ndarray, margin: float = 0.1):
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    pad = margin * (high - low)
    return low - pad, high + pad


def plot(
    model, path, *, data=None, key: jax.Array, n: int = 5000, features: int = 4, c=None
) -> Path:
    """Writes a figure of ``model(c)`` to ``path`` (PNG, PDF or SVG).

    Two features: the log-density as a heat map beside the data and samples.
    More: histograms and pairwise scatter plots of the first ``features``
    features, data against samples.

    Args:
        model: A flow called as ``model(c)``.
        path: Output file.
        data: Array ``(rows, features)`` to draw beside the samples, or ``None``.
        key: PRNG key for the samples.
        n: Number of samples.
        features: Features shown in the pairwise grid.
        c: A single context ``(context,)`` for a conditional model.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dist = model(c)
    samples = np.asarray(jax.jit(lambda k: dist.sample(k, (n,)))(key))
    reference = samples if data is None else np.asarray(data)
    if samples.shape[-1] == 2:
        low, high = _bounds(np.concatenate([reference, samples]))
        gx, gy = np.linspace(low[0], high[0], 200), np.linspace(low[1], high[1], 200)
        grid = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
        density = np.exp(np.asarray(jax.jit(dist.log_prob)(jnp.asarray(grid, jnp.float32))))
        panels = [("data", reference), ("density", None), ("samples", samples)]
        fig, axes = plt.subplots(1, 3, figsize=(12, 4), constrained_layout=True)
        for ax, (title, points) in zip(axes, panels):
            if points is None:
                ax.imshow(
                    density.reshape(200, 200),
                    origin="lower",
                    cmap="viridis",
                    extent=(low[0], high[0], low[1], high[1]),
                    aspect="auto",
                )
            else:
                ax.hist2d(
                    points[:, 0],
                    points[:, 1],
                    bins=120,
                    range=[[low[0], high[0]], [low[1], high[1]]],
                    cmap="viridis",
                )
            ax.set_title(title)
    else:
        k = min(features, samples.shape[-1])
        fig, axes = plt.subplots(
            k, k, figsize=(2.5 * k, 2.5 * k), constrained_layout=True, squeeze=False
        )
        for i in range(k):
            for j in range(k):
                ax = axes[i, j]
                if i == j:
                    ax.hist(reference[:, i], bins=60, density=True, alpha=0.5, label="data")
                    ax.hist(samples[:, i], bins=60, density=True, alpha=0.5, label="samples")
                else:
                    ax.scatter(
                        reference[:2000, j], reference[:2000, i], s=1, alpha=0.3, label="data"
                    )
                    ax.scatter(
                        samples[:2000, j], samples[:2000, i], s=1, alpha=0.3, label="samples"
                    )
                if i == k - 1:
                    ax.set_xlabel(f"x{j}")
                if j == 0:
                    ax.set_ylabel(f"x{i}")
        axes[0, 0].legend(fontsize="small", loc="upper right")  # "best" scans every point
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, dpi=100, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path
