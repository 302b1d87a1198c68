"""The batch normalisation bijection between the transforms of a MAF.

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    appendix B; Dinh et al., Density estimation using Real NVP, 2017.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

import jax
import jax.numpy as jnp

from maf_jax.core import _pytree

__all__ = ["BatchNormalization", "batch_statistics", "input_statistics"]


def batch_statistics(x: jax.Array, axis_name: Hashable | None = None):
    """Mean and (biased) variance over every row of ``x`` ``(*, features)``.

    With ``axis_name``, over the rows of every device along that ``jax.pmap`` or
    ``shard_map`` axis too (equal rows per device). Under ``jax.jit`` with the rows
    sharded over a mesh, the plain mean is already over every device.
    """
    rows = x.reshape(-1, x.shape[-1])
    mean = rows.mean(0)
    if axis_name is not None:
        mean = jax.lax.pmean(mean, axis_name)
    var = ((rows - mean) ** 2).mean(0)
    if axis_name is not None:
        var = jax.lax.pmean(var, axis_name)
    return mean, var


@_pytree.dataclass
class BatchNormalization:
    r"""``y = exp(log_gamma) (x - mean) / sqrt(var + eps) + beta``, elementwise.

    :math:`\log|\det| = \sum_i \log\gamma_i - \tfrac12 \log(\mathrm{var}_i + \epsilon)`.
    With ``batch``, the forward uses the mean and variance of its input rows
    (training), else the running ones (``mean``, ``var``). The inverse always uses
    the running statistics: it is the exact inverse of the evaluation forward, and
    what a flow in training mode samples with.

    Attributes:
        log_gamma: Log-scale, shape ``(features,)``.
        beta: Shift, shape ``(features,)``.
        mean: Running mean, shape ``(features,)``.
        var: Running variance, shape ``(features,)``, positive.
        eps: Added to the variance.
        batch: Whether the forward uses the statistics of its input rows.
        axis_name: The ``pmap`` or ``shard_map`` axis the batch statistics average
            over, or ``None``.
    """

    log_gamma: jax.Array
    beta: jax.Array
    mean: jax.Array
    var: jax.Array
    eps: float = _pytree.static(default=1e-5)
    batch: bool = _pytree.static(default=False)
    axis_name: Hashable | None = _pytree.static(default=None)

    def _statistics(self, x):
        return batch_statistics(x, self.axis_name) if self.batch else (self.mean, self.var)

    def _log_scale(self, var):
        return self.log_gamma - 0.5 * jnp.log(var + self.eps)

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Normalises ``x`` ``(*, features)``; returns ``y`` and ``log|det dy/dx|``, ``(*)``."""
        mean, var = self._statistics(x)
        log_scale = self._log_scale(var)
        y = (x - mean) * jnp.exp(log_scale) + self.beta
        return y, jnp.broadcast_to(log_scale.sum(), y.shape[:-1])

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Undoes the evaluation forward; returns ``x`` and ``log|det dx/dy|``, ``(*)``."""
        log_scale = self._log_scale(self.var)
        x = (y - self.beta) * jnp.exp(-log_scale) + self.mean
        return x, jnp.broadcast_to(-log_scale.sum(), x.shape[:-1])

    def forward(self, x: jax.Array) -> jax.Array:
        """Normalises ``x``."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y: jax.Array) -> jax.Array:
        """Undoes the evaluation forward."""
        return self.inverse_and_log_det(y)[0]


def input_statistics(steps, x: jax.Array):
    """The batch statistics at the input of every batch normalisation of a chain.

    Args:
        steps: Stacked ``Compose(t, BatchNormalization)`` bijections, leading axis ``n``
            (a ``Chain``'s ``stacked``), applied as in training: each normalisation
            with the statistics of its input rows.
        x: The chain's input rows ``(*, features)``, broadcast with its batch.

    Returns:
        Means and variances, each ``(n, features)``.
    """

    def step(x, pair):
        y = pair.first.forward(x)
        statistics = batch_statistics(y, pair.second.axis_name)
        norm = dataclasses.replace(pair.second, mean=statistics[0], var=statistics[1], batch=False)
        return norm.forward(y), statistics

    _, (means, variances) = jax.lax.scan(step, x, steps)
    return means, variances
