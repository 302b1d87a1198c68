"""Batch normalisation as a Flax NNX module that returns its bijection."""

from __future__ import annotations

from collections.abc import Hashable

import jax
import jax.numpy as jnp
from flax import nnx

from maf_jax.bijections.batch_norm import BatchNormalization
from maf_jax.core._checks import positive_int

__all__ = ["BatchNorm"]


class BatchNorm(nnx.Module):
    """The parameters and running statistics of a ``BatchNormalization``.

    Follows Flax NNX's modes: after ``model.train()`` (the mode a module is built
    in) ``BatchNorm()`` normalises with the statistics of its input rows; after
    ``model.eval()`` with the running ones. The running statistics are
    ``nnx.BatchStat`` variables, changed by ``update`` (``maf_jax.fit`` calls it
    after every step) or set outright.

    Args:
        features: The number of features.
        momentum: Weight of the old running statistics in ``update``.
        eps: Added to the variance.
        axis_name: The ``pmap`` or ``shard_map`` axis batch statistics average over
            (not needed under ``jax.jit`` over a mesh, where a mean over the rows is
            already every device's). A flow's: ``flow.norms.stacked.axis_name``.
        param_dtype: The dtype of the parameters and statistics.
    """

    def __init__(
        self,
        features: int,
        *,
        momentum: float = 0.9,
        eps: float = 1e-5,
        axis_name: Hashable | None = None,
        param_dtype=jnp.float32,
    ):
        features = positive_int(features, "features")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.log_gamma = nnx.Param(jnp.zeros(features, param_dtype))
        self.beta = nnx.Param(jnp.zeros(features, param_dtype))
        self.mean = nnx.BatchStat(jnp.zeros(features, param_dtype))
        self.var = nnx.BatchStat(jnp.ones(features, param_dtype))
        self.momentum, self.eps, self.axis_name = momentum, eps, axis_name
        self.use_running_average = False

    def __call__(self) -> BatchNormalization:
        """The bijection, with batch statistics unless in evaluation mode."""
        return BatchNormalization(
            self.log_gamma[...],
            self.beta[...],
            self.mean[...],
            self.var[...],
            eps=self.eps,
            batch=not self.use_running_average,
            axis_name=self.axis_name,
        )

    def update(self, mean: jax.Array, var: jax.Array) -> None:
        """Moves the running statistics toward a batch's: ``m old + (1 - m) new``."""
        m = self.momentum
        self.mean[...] = m * self.mean[...] + (1 - m) * mean
        self.var[...] = m * self.var[...] + (1 - m) * var
