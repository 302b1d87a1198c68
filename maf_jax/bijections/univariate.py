"""Elementwise monotonic bijections parametrised by the autoregressive network.

A univariate transform is any callable ``univariate(*params)`` that takes one array
per entry of ``shapes``, each of shape ``(*, features, *shape)``, and returns an
object with four elementwise methods on arrays of shape ``(*, features)``:

- ``forward(x) -> y`` and ``inverse(y) -> x``;
- ``forward_and_log_det(x) -> (y, log|dy/dx|)`` and
  ``inverse_and_log_det(y) -> (x, log|dx/dy|)``, the log-derivatives elementwise.

The returned object must be a JAX pytree (for example a dataclass registered with
``jax.tree_util.register_dataclass``) so that it can cross ``jax.jit`` boundaries.

Example:
    A monotonic shift-and-softplus-scale transform with two parameters per feature:

    >>> import dataclasses, jax, jax.numpy as jnp
    >>> @jax.tree_util.register_dataclass
    ... @dataclasses.dataclass(frozen=True)
    ... class SoftplusAffine:
    ...     shift: jax.Array
    ...     raw_scale: jax.Array
    ...     def forward_and_log_det(self, x):
    ...         scale = jax.nn.softplus(self.raw_scale) + 1e-3
    ...         return x * scale + self.shift, jnp.log(scale) * jnp.ones_like(x)
    ...     def inverse_and_log_det(self, y):
    ...         scale = jax.nn.softplus(self.raw_scale) + 1e-3
    ...         return (y - self.shift) / scale, -jnp.log(scale) * jnp.ones_like(y)
    ...     def forward(self, x):
    ...         return self.forward_and_log_det(x)[0]
    ...     def inverse(self, y):
    ...         return self.inverse_and_log_det(y)[0]
    >>> from flax import nnx
    >>> import maf_jax
    >>> flow = maf_jax.MAF(3, univariate=SoftplusAffine, shapes=((), ()), rngs=nnx.Rngs(0))
    >>> flow().log_prob(jnp.zeros(3)).shape
    ()
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from maf_jax.core import _pytree

__all__ = ["MonotonicAffineTransform", "soft_bound"]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def soft_bound(s: jax.Array, bound: float) -> jax.Array:
    """``s / (1 + |s| / bound)``, in ``(-bound, bound)``, with slope 1 at 0."""
    return s / (1 + jnp.abs(s) / bound)


@soft_bound.defjvp
def _soft_bound_jvp(bound, primals, tangents):
    # d/ds = 1 / (1 + |s| / bound)^2: one residual where autodiff keeps three
    (s,), (ds,) = primals, tangents
    denominator = 1 + jnp.abs(s) / bound
    return s / denominator, ds / denominator**2


@_pytree.dataclass
class MonotonicAffineTransform:
    r"""Affine map ``y = x * exp(a) + b`` with a softly bounded log-scale.

    The log-scale is ``a = s / (1 + |s / log(slope)|)``, so ``|a| < -log(slope)``
    and the derivative lies in ``(slope, 1 / slope)``, as in zuko.

    Args:
        shift: The shift ``b``, shape ``(*, features)``.
        scale: The unconstrained log-scale ``s``, shape ``(*, features)``.
        slope: The smallest derivative, in ``(0, 1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> t = MonotonicAffineTransform(jnp.array([1.0]), jnp.array([0.0]))
        >>> t.forward(jnp.array([2.0]))
        Array([3.], dtype=float32)
    """

    shift: jax.Array
    scale: jax.Array
    slope: float = _pytree.static(default=1e-3)

    @property
    def log_scale(self) -> jax.Array:
        """The bounded log-scale ``a``."""
        return soft_bound(self.scale, -math.log(self.slope))

    def forward(self, x: jax.Array) -> jax.Array:
        """Returns ``y = x * exp(a) + b``."""
        return x * jnp.exp(self.log_scale) + self.shift

    def inverse(self, y: jax.Array) -> jax.Array:
        """Returns ``x = (y - b) * exp(-a)``."""
        return (y - self.shift) * jnp.exp(-self.log_scale)

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``y`` and the elementwise ``log|dy/dx| = a``."""
        log_scale = self.log_scale
        y = x * jnp.exp(log_scale) + self.shift
        return y, jnp.broadcast_to(log_scale, y.shape)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``x`` and the elementwise ``log|dx/dy| = -a``."""
        log_scale = self.log_scale
        x = (y - self.shift) * jnp.exp(-log_scale)
        return x, jnp.broadcast_to(-log_scale, x.shape)
