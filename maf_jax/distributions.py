"""The base distribution and the normalizing-flow distribution ``flow(c)``."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core import _pytree
from maf_jax.core._checks import check_event

__all__ = ["DiagNormal", "NormalizingFlow"]


def _shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints; floats are refused, not truncated."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is None or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in dims
    ):
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must hold non-negative sizes, got {shape!r}")
    return tuple(int(d) for d in dims)


@_pytree.dataclass
class DiagNormal:
    """Normal distribution with diagonal covariance over the last axis.

    Attributes:
        loc: Mean, shape ``(*batch, features)``.
        scale: Standard deviation, same shape.
    """

    loc: jax.Array
    scale: jax.Array

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of ``x`` of shape ``(*, features)``; returns shape ``(*)``."""
        z = (x - self.loc) / self.scale
        log_norm = 0.5 * math.log(2 * math.pi) + jnp.log(self.scale)
        return jnp.sum(-0.5 * z**2 - log_norm, axis=-1)

    def sample(self, key: jax.Array, shape=()) -> jax.Array:
        """Draws samples of shape ``(*shape, *batch, features)``."""
        shape = _shape(shape) + jnp.shape(self.loc)
        noise = jax.random.normal(key, shape, jnp.result_type(self.loc))
        return self.loc + self.scale * noise


@_pytree.dataclass
class NormalizingFlow:
    """Distribution of ``x = T^{-1}(z)`` with ``z ~ base``; ``T`` maps data to noise.

    ``log p(x) = log p_base(T(x)) + log|det dT/dx|``.

    Attributes:
        transform: Bijection from data to noise with ``forward_and_log_det`` and
            ``inverse_and_log_det``.
        base: Base distribution over noise, with ``log_prob`` and ``sample``.
        batch_shape: Shape of the batch of distributions (the context batch).
    """

    transform: Any
    base: Any
    batch_shape: tuple[int, ...] = _pytree.static(default=())

    @property
    def event_shape(self) -> tuple[int, ...]:
        """``(features,)``."""
        return jnp.shape(self.base.loc)[-1:]

    @jax.jit
    def log_prob(self, x: jax.Array) -> jax.Array:
        """Log-density of ``x`` of shape ``(*, features)``.

        ``x`` broadcasts against the batch shape; returns ``broadcast(*, batch_shape)``.
        """
        x = check_event(x, self.event_shape[0], "x")
        z, ladj = self.transform.forward_and_log_det(x)
        return self.base.log_prob(z) + ladj

    @functools.partial(jax.jit, static_argnums=2)
    def _rsample_and_log_prob(self, key: jax.Array, shape: tuple[int, ...]):
        z = self.base.sample(key, shape + self.batch_shape)
        x, ladj = self.transform.inverse_and_log_det(z)
        return x, self.base.log_prob(z) - ladj

    def rsample_and_log_prob(self, key: jax.Array, shape=()):
        """Differentiable samples and their log-densities, in one sequential pass.

        Shapes ``(*shape, *batch, features)`` and ``(*shape, *batch)``.
        """
        return self._rsample_and_log_prob(key, _shape(shape))

    def rsample(self, key: jax.Array, shape=()) -> jax.Array:
        """Samples of shape ``(*shape, *batch, features)``, reparameterised.

        Differentiable with respect to the flow's parameters.
        """
        return self._rsample(key, _shape(shape))

    @functools.partial(jax.jit, static_argnums=2)
    def _rsample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        z = self.base.sample(key, shape + self.batch_shape)
        return self.transform.inverse(z)

    def sample(self, key: jax.Array, shape=()) -> jax.Array:
        """Samples of shape ``(*shape, *batch, features)``, without gradients."""
        return jax.lax.stop_gradient(self.rsample(key, shape))

    def sample_and_log_prob(self, key: jax.Array, shape=()):
        """Samples and their log-densities in one sequential pass, without gradients."""
        return jax.lax.stop_gradient(self.rsample_and_log_prob(key, shape))
