"""The monotonic rational-quadratic spline, a univariate transform with a closed-form inverse.

``K`` bins split ``[-B, B]`` in both directions; within bin ``k`` the map is a ratio
of quadratics that goes through the knots ``(x_k, y_k)`` with derivatives ``d_k``.
Outside ``[-B, B]`` it is the identity, and the derivatives at ``±B`` are 1, so the
map is continuously differentiable everywhere.

References:
    Durkan et al., Neural Spline Flows, 2019, https://arxiv.org/abs/1906.04032
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from maf_jax.bijections.entries import parameter_shapes
from maf_jax.bijections.univariate import soft_bound
from maf_jax.core import _pytree

__all__ = ["MonotonicRQSTransform", "RationalQuadraticSpline"]


@_pytree.dataclass
class MonotonicRQSTransform:
    r"""Monotonic rational-quadratic spline on ``[-B, B]``, the identity outside.

    The unconstrained parameters are mapped as in zuko: widths and heights through
    a soft bound of ``-log(slope) / 2`` and a softmax, so that no bin is more than
    ``1 / slope`` times wider than another; inner knot derivatives through a soft
    bound of ``-log(slope)`` and ``exp``, so they lie in ``(slope, 1 / slope)``.

    With ``z = (x - x_k) / (x_{k+1} - x_k)`` and ``s = (y_{k+1} - y_k) / (x_{k+1} - x_k)``,

    .. math:: y = y_k + (y_{k+1} - y_k)
        \frac{s z^2 + d_k z (1 - z)}{s + (d_k + d_{k+1} - 2 s) z (1 - z)}.

    Args:
        widths: Unconstrained bin widths, shape ``(*, K)``.
        heights: Unconstrained bin heights, shape ``(*, K)``.
        derivatives: Unconstrained derivatives at the ``K - 1`` inner knots,
            shape ``(*, K - 1)``.
        bound: The half-width ``B`` of the spline's domain and codomain.
        slope: The smallest derivative, in ``(0, 1)``.

    Example:
        >>> import jax.numpy as jnp
        >>> t = MonotonicRQSTransform(jnp.zeros(4), jnp.arange(4.0), jnp.zeros(3))
        >>> x = jnp.array([-6.0, 1.0, 6.0])  # the first and last outside [-5, 5]
        >>> y = t.forward(x)
        >>> y[0].item(), y[2].item(), bool(jnp.allclose(t.inverse(y), x))
        (-6.0, 6.0, True)
    """

    widths: jax.Array
    heights: jax.Array
    derivatives: jax.Array
    bound: float = _pytree.static(default=5.0)
    slope: float = _pytree.static(default=1e-3)

    def _knots(self, raw: jax.Array) -> jax.Array:
        """Knot positions ``(*, K + 1)`` from ``-B`` to ``B`` exactly."""
        fractions = jax.nn.softmax(soft_bound(raw, -math.log(self.slope) / 2), axis=-1)
        inner = jnp.cumsum(fractions[..., :-1], axis=-1)
        ends = jnp.ones_like(fractions[..., :1])
        edges = jnp.concatenate([-ends, 2 * inner - 1, ends], axis=-1)
        return self.bound * edges

    def _spline(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Knots ``xs``, ``ys`` and the derivatives ``ds`` there, each ``(*, K + 1)``."""
        inner = jnp.exp(soft_bound(self.derivatives, -math.log(self.slope)))
        one = jnp.ones_like(inner[..., :1])
        ds = jnp.concatenate([one, inner, one], axis=-1)
        return self._knots(self.widths), self._knots(self.heights), ds

    def _bin(self, value: jax.Array, along: int):
        """Whether ``value`` ``(*)`` is inside, and its bin's ``x0, x1, y0, y1, d0, d1``.

        The bin is looked up along ``xs`` (``along=0``) or ``ys`` (``along=1``).
        """
        knots = self._spline()
        k = jnp.sum(knots[along][..., 1:-1] <= value[..., None], axis=-1)
        # one-hot selections: elementwise, and so are their gradients (a gather's is a scatter)
        onehot = k[..., None] == jnp.arange(knots[0].shape[-1] - 1)

        def pick(a):
            return jnp.sum(jnp.where(onehot, a, 0), axis=-1)

        (x0, y0, d0), (x1, y1, d1) = [
            [pick(a[..., :-1]) for a in knots],
            [pick(a[..., 1:]) for a in knots],
        ]
        return jnp.abs(value) < self.bound, x0, x1, y0, y1, d0, d1

    @staticmethod
    def _map(z, x0, x1, y0, y1, d0, d1):
        """``y`` and ``log dy/dx`` at position ``z`` in ``[0, 1]`` of the bin."""
        width, height = x1 - x0, y1 - y0
        s = height / width
        zz = z * (1 - z)
        denominator = s + (d0 + d1 - 2 * s) * zz
        y = y0 + height * (s * z**2 + d0 * zz) / denominator
        numerator = s**2 * (d1 * z**2 + 2 * s * zz + d0 * (1 - z) ** 2)
        return y, jnp.log(numerator) - 2 * jnp.log(denominator)

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``y`` and the elementwise ``log|dy/dx|``, shapes ``(*)``."""
        inside, x0, x1, y0, y1, d0, d1 = self._bin(x, along=0)
        # outside, z = 0 keeps the unused branch finite, and so its gradients
        z = jnp.where(inside, (x - x0) / (x1 - x0), 0)
        y, ladj = self._map(z, x0, x1, y0, y1, d0, d1)
        return jnp.where(inside, y, x), jnp.where(inside, ladj, 0)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``x`` and the elementwise ``log|dx/dy|``, shapes ``(*)``.

        Solves ``a z^2 + b z + c = 0`` for its root in ``[0, 1]``,
        ``z = 2c / (-b - sqrt(b^2 - 4ac)) = (-b + sqrt(b^2 - 4ac)) / 2a`` (Durkan et
        al., eq. 29), from the nearer end of the bin, in the first form where
        ``b >= 0`` and the second elsewhere. Durkan's form alone, from the lower
        end, loses up to 15 of float32's 24 bits near steep knots.
        """
        inside, x0, x1, y0, y1, d0, d1 = self._bin(y, along=1)
        width, height = x1 - x0, y1 - y0
        s = height / width
        # Solved from the nearer end of the bin: the spline seen from its top end,
        # w = 1 - z, has the same form with d0 and d1 swapped, and there the
        # coefficients do not cancel (from the bottom, a loses its digits near a
        # steep lower knot when y is near the top).
        from_top = y - y0 > y1 - y
        dy = jnp.where(inside, jnp.where(from_top, y1 - y, y - y0), 0)
        near = jnp.where(from_top, d1, d0)
        curvature = d0 + d1 - 2 * s
        a = height * (s - near) + dy * curvature
        b = height * near - dy * curvature
        c = -s * dy
        root = jnp.sqrt(jnp.maximum(b**2 - 4 * a * c, 0))
        # the two forms of the root in [0, 1]: each adds terms of one sign where the
        # other cancels (b < 0 implies a > 0); the unused one's divisor is kept nonzero
        positive = b >= 0
        w = jnp.where(
            positive,
            2 * c / jnp.where(positive, -b - root, -1),
            (root - b) / jnp.where(positive, 1, 2 * a),
        )
        w = jnp.clip(w, 0, 1)
        x = jnp.where(from_top, x1 - w * width, x0 + w * width)
        _, ladj = self._map(jnp.where(from_top, 1 - w, w), x0, x1, y0, y1, d0, d1)
        return jnp.where(inside, x, y), jnp.where(inside, -ladj, 0)

    def forward(self, x: jax.Array) -> jax.Array:
        """Returns ``y``; see ``forward_and_log_det``."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y: jax.Array) -> jax.Array:
        """Returns ``x``; see ``inverse_and_log_det``."""
        return self.inverse_and_log_det(y)[0]


def _real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class RationalQuadraticSpline:
    """The ``univariate=`` constructor of splines with ``bins`` bins on ``[-bound, bound]``.

    A hashable value, so that flows built with equal settings share compiled code.

    Args:
        bins: The number of bins ``K``, at least 2.
        bound: The half-width ``B`` of the domain; features beyond it pass unchanged.
        slope: The smallest derivative, in ``(0, 1)``.

    Example:
        >>> spline = RationalQuadraticSpline(bins=4)
        >>> spline.shapes
        ((4,), (4,), (3,))
    """

    bins: int = 8
    bound: float = 5.0
    slope: float = 1e-3

    def __post_init__(self):
        if isinstance(self.bins, bool) or not isinstance(self.bins, int) or self.bins < 2:
            raise ValueError(f"bins must be an integer >= 2, got {self.bins!r}")
        if not (_real(self.bound) and 0 < self.bound < math.inf):
            raise ValueError(f"bound must be a positive finite number, got {self.bound!r}")
        if not (_real(self.slope) and 0 < self.slope < 1):
            raise ValueError(f"slope must be a number in (0, 1), got {self.slope!r}")
        object.__setattr__(self, "bound", float(self.bound))
        object.__setattr__(self, "slope", float(self.slope))

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        """Per-feature parameter shapes: widths, heights, inner derivatives."""
        return parameter_shapes({"name": "spline", "bins": self.bins})

    def __call__(self, widths, heights, derivatives) -> MonotonicRQSTransform:
        """The spline of these unconstrained parameters."""
        return MonotonicRQSTransform(widths, heights, derivatives, self.bound, self.slope)
