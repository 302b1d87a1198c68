"""The standardisation bijection, composition of bijections, and data statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core import _pytree

__all__ = ["Compose", "Standardize", "nonzero_std", "statistics"]


@_pytree.dataclass
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


@_pytree.dataclass
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
    return data.mean(axis=0), nonzero_std(data.std(axis=0))


def nonzero_std(std: np.ndarray) -> np.ndarray:
    """``std``, with 1 for the columns that are constant (``std <= 1e-12``)."""
    return np.where(std > 1e-12, std, 1.0)
