"""Data standardisation stored with a flow and undone on sampling and evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from maf_jax._checks import check_event
from maf_jax.distributions import NormalizingFlow

__all__ = ["Compose", "Standardization", "Standardize", "Standardized", "statistics"]


class Standardization(nnx.Variable):
    """Fixed standardisation statistics; not trainable."""


@struct.dataclass
class Standardize:
    """Affine bijection ``y = (x - mean) / std``, ``log|det| = -sum(log std)``.

    Attributes:
        mean: Shape ``(features,)``.
        std: Shape ``(features,)``, positive.
    """

    mean: jax.Array
    std: jax.Array

    def forward_and_log_det(self, x):
        """Returns ``(x - mean) / std`` and its log-determinant, shape ``(*)``."""
        y = (x - self.mean) / self.std
        return y, jnp.broadcast_to(-jnp.sum(jnp.log(self.std)), y.shape[:-1])

    def inverse_and_log_det(self, y):
        """Returns ``y * std + mean`` and its log-determinant, shape ``(*)``."""
        x = y * self.std + self.mean
        return x, jnp.broadcast_to(jnp.sum(jnp.log(self.std)), x.shape[:-1])

    def forward(self, x):
        """Returns ``(x - mean) / std``."""
        return (x - self.mean) / self.std

    def inverse(self, y):
        """Returns ``y * std + mean``."""
        return y * self.std + self.mean


@struct.dataclass
class Compose:
    """Bijections applied in turn: ``first`` then ``second``."""

    first: object
    second: object

    def forward_and_log_det(self, x):
        """Applies ``first`` then ``second``; log-determinants add."""
        y, ladj = self.first.forward_and_log_det(x)
        z, more = self.second.forward_and_log_det(y)
        return z, ladj + more

    def inverse_and_log_det(self, z):
        """Inverts ``second`` then ``first``; log-determinants add."""
        y, ladj = self.second.inverse_and_log_det(z)
        x, more = self.first.inverse_and_log_det(y)
        return x, ladj + more

    def forward(self, x):
        """Applies the composition."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, z):
        """Inverts the composition."""
        return self.inverse_and_log_det(z)[0]


def statistics(data) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over rows; constant columns get ``std = 1``."""
    data = np.asarray(data, np.float64)
    std = data.std(axis=0)
    return data.mean(axis=0), np.where(std > 1e-12, std, 1.0)


class Standardized(nnx.Module):
    """A flow fitted on standardised data, evaluated in the units of the data.

    ``model(c)`` is the distribution of ``x`` with
    ``log p(x | c) = log p_flow((x - mean) / std | c') - sum(log std)`` and samples
    ``mean + std * x_flow``, where ``c' = (c - context_mean) / context_std``.

    Args:
        flow: The flow on standardised data, e.g. a ``MAF``.
        mean: Data mean, shape ``(features,)``.
        std: Data standard deviation, shape ``(features,)``.
        context_mean: Context mean, shape ``(context,)``; zeros if ``None``.
        context_std: Context standard deviation, shape ``(context,)``; ones if ``None``.
    """

    def __init__(self, flow: nnx.Module, mean, std, context_mean=None, context_std=None):
        contexts = flow.context
        self.flow = flow
        self.mean = Standardization(jnp.asarray(mean, jnp.float32))
        self.std = Standardization(jnp.asarray(std, jnp.float32))
        if context_mean is None:
            context_mean, context_std = np.zeros(contexts), np.ones(contexts)
        self.context_mean = Standardization(jnp.asarray(context_mean, jnp.float32))
        self.context_std = Standardization(jnp.asarray(context_std, jnp.float32))

    @classmethod
    def from_data(cls, flow: nnx.Module, data, context=None) -> Standardized:
        """Takes the statistics of ``data`` ``(n, features)`` and ``context``."""
        context_stats = statistics(context) if context is not None else (None, None)
        return cls(flow, *statistics(data), *context_stats)

    @property
    def features(self) -> int:
        """The number of features."""
        return self.flow.features

    @property
    def context(self) -> int:
        """The number of context features."""
        return self.flow.context

    def __call__(self, c=None) -> NormalizingFlow:
        """Returns ``p(x | c)`` in the units of the data."""
        if c is not None and self.context:
            c = check_event(c, self.context, "context c", what="context")
            c = (c - self.context_mean[...]) / self.context_std[...]
        inner = self.flow(c)
        standardize = Standardize(self.mean[...], self.std[...])
        return NormalizingFlow(
            transform=Compose(standardize, inner.transform),
            base=inner.base,
            batch_shape=inner.batch_shape,
        )
