"""A mixture of Gaussians as a univariate bijection onto the standard normal.

``z = Phi^{-1}(F(x))`` maps ``x``, distributed as the mixture ``F``, to a standard
normal ``z``; its inverse ``x = F^{-1}(Phi(z))`` draws from the mixture. As the
univariate transform of an ``AutoregressiveTransform`` whose network is a MADE MoG, it
makes sampling a MADE MoG one autoregressive inverse (``maf_jax.inverses``), and
samples differentiable in every parameter, the weights included (the implicit
reparameterisation of Figurnov et al., 2018: ``dx/dtheta = -(dF/dtheta) / f(x)``).

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    section 3.4 (MADE MoG), https://arxiv.org/abs/1705.07057
    Figurnov et al., Implicit Reparameterization Gradients, 2018,
    https://arxiv.org/abs/1805.08498
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr, ndtri

from maf_jax.bijections.univariate import soft_bound
from maf_jax.core import _pytree

__all__ = ["LOG_SCALE_BOUND", "MixtureCDF", "normal_quantile"]

LOG_SCALE_BOUND = -math.log(1e-3)  # components' scales in (1e-3, 1e3)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
NEWTON_STEPS = 32  # at most; each step is Newton's or halves the bracket


@jax.custom_jvp
def normal_quantile(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
    """``Phi^{-1}(p)`` from ``log p`` and ``log(1 - p)``, from the smaller of the two.

    Each tail is computed from its own probability, so ``z`` keeps its precision on
    both sides (``Phi^{-1}(1 - 1e-10)`` from ``1 - p`` in float32). Below the
    smallest normal number, where ``p`` itself underflows, ``z`` solves
    ``log Phi(z) = log p`` by Newton's method from the tail's asymptotic expansion.
    """
    log_small = jnp.minimum(log_p, log_q)
    tiny = jnp.finfo(jnp.result_type(log_p)).tiny
    z = ndtri(jnp.maximum(jnp.exp(log_small), tiny))  # the smaller tail's side: z < 0
    far = log_small < math.log(tiny)
    t = -2 * jnp.where(far, log_small, -2.0)  # > 174 where used, 4 (a real root) elsewhere
    guess = -jnp.sqrt(t - jnp.log(t) - math.log(2 * math.pi))
    for _ in range(3):  # Newton on log Phi(z) - log p, whose slope is phi(z) / Phi(z)
        slope = jnp.exp(-0.5 * guess**2 - HALF_LOG_2PI - log_ndtr(guess))
        guess = guess - (log_ndtr(guess) - log_small) / slope
    z = jnp.where(far, guess, z)
    return jnp.where(log_p < log_q, z, -z)


@normal_quantile.defjvp
def _normal_quantile_jvp(primals, tangents):
    # dz = dp / phi(z), with dp = p dlog p = -(1 - p) dlog(1 - p)
    # from the smaller tail only: the other's ratio overflows in the far tails, and an
    # infinite factor times a zero cotangent would be NaN
    (log_p, log_q), (d_log_p, d_log_q) = primals, tangents
    z = normal_quantile(log_p, log_q)
    lower = log_p < log_q
    ratio = jnp.exp(jnp.where(lower, log_p, log_q) + 0.5 * z**2 + HALF_LOG_2PI)
    return z, jnp.where(lower, ratio, -ratio) * jnp.where(lower, d_log_p, d_log_q)


@_pytree.dataclass
class MixtureCDF:
    r"""``z = Phi^{-1}(F(x))`` for ``F`` a mixture of ``K`` Gaussians per feature.

    .. math:: F(x) = \sum_k \pi_k \Phi\left(\frac{x - \mu_k}{\sigma_k}\right),
        \quad \pi = \mathrm{softmax}(\mathrm{logits}),
        \quad \log \sigma = \mathrm{soft\_bound}(s, \log 1000).

    ``log|dz/dx| = log f(x) - log phi(z)``. The inverse solves ``F(x) = Phi(z)`` in
    log space on the side of the smaller tail, by Newton's method kept inside a
    bracket (``x`` lies between the smallest and largest ``mu_k + sigma_k z``) and
    falling back to bisection, from the weighted mean of the components' quantiles,
    until every row's residual or step is at rounding level (at most ``NEWTON_STEPS``).

    Args:
        logits: Unnormalised log-weights, shape ``(*, features, K)``.
        means: The components' means ``mu``, same shape.
        scales: The unconstrained log-scales ``s``, same shape.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> t = MixtureCDF(jnp.zeros(2), jnp.array([-1.0, 1.0]), jnp.zeros(2))
        >>> x = jax.jit(t.inverse)(jnp.array([-1.0, 1.0]))  # F(x) = Phi(z)
        >>> [round(v, 3) for v in x.tolist()]
        [-1.493, 1.493]
        >>> bool(jnp.allclose(jax.jit(t.forward)(x), jnp.array([-1.0, 1.0]), atol=1e-5))
        True
    """

    logits: jax.Array
    means: jax.Array
    scales: jax.Array

    def _components(self):
        """Log-weights, means, log-scales and inverse scales, each ``(*, K)``."""
        log_scales = soft_bound(self.scales, LOG_SCALE_BOUND)
        log_weights = jax.nn.log_softmax(self.logits, axis=-1)
        return log_weights, self.means, log_scales, jnp.exp(-log_scales)

    def components(self):
        """Log-weights, means and log-scales of the mixtures, each ``(*, K)``."""
        return self._components()[:3]

    def log_density(self, x: jax.Array) -> jax.Array:
        """``log f(x)``, elementwise."""
        return self._log_tail_and_density(self._components(), x, jnp.ones_like(x))[1]

    @staticmethod
    def _log_tail_and_density(components, x: jax.Array, sign):
        """``log F(x)`` where ``sign`` is 1, ``log(1 - F(x))`` where -1, and ``log f(x)``."""
        log_weights, means, log_scales, inverse_scales = components
        u = (x[..., None] - means) * inverse_scales
        log_tail = jax.nn.logsumexp(log_weights + log_ndtr(sign[..., None] * u), axis=-1)
        log_pdf = jax.nn.logsumexp(log_weights - 0.5 * u**2 - log_scales, axis=-1)
        return log_tail, log_pdf - HALF_LOG_2PI

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``z = Phi^{-1}(F(x))`` and ``log|dz/dx|``, elementwise."""
        components, ones = self._components(), jnp.ones_like(x)
        log_cdf, log_pdf = self._log_tail_and_density(components, x, ones)
        log_sf, _ = self._log_tail_and_density(components, x, -ones)
        z = normal_quantile(log_cdf, log_sf)
        return z, log_pdf + 0.5 * z**2 + HALF_LOG_2PI

    def inverse_and_log_det(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns ``x = F^{-1}(Phi(z))`` and ``log|dx/dz|``, elementwise."""
        components = self._components()
        log_weights, means, log_scales, _ = components
        ends = means + jnp.exp(log_scales) * z[..., None]  # each component's quantile
        # solve log F(x) = log Phi(z) below the median, log(1 - F(x)) = log Phi(-z) above
        sign = jnp.where(z < 0, 1, -1).astype(z.dtype)
        target = log_ndtr(-jnp.abs(z))
        tolerance = 4 * jnp.finfo(z.dtype).eps

        def step(state):
            i, low, high, x, _ = state
            log_tail, log_pdf = self._log_tail_and_density(components, x, sign)
            h = sign * (log_tail - target)  # increases with x, zero at the solution
            low, high = jnp.where(h < 0, x, low), jnp.where(h > 0, x, high)
            newton = x - h / jnp.exp(log_pdf - log_tail)
            # converged: h is rounding noise, or the step is; such a step is taken even
            # where that noise moved the bracket's end past the solution
            small = (jnp.abs(h) <= 4 * tolerance * (1 + jnp.abs(target))) | (
                jnp.abs(newton - x) <= tolerance * (1 + jnp.abs(x))
            )
            inside = (newton >= low) & (newton <= high)
            new = jnp.where(inside | small, newton, (low + high) / 2)
            return i + 1, low, high, new, jnp.all(small)

        start = jnp.sum(jnp.exp(log_weights) * ends, axis=-1)  # inside the bracket
        state = (0, ends.min(axis=-1), ends.max(axis=-1), start, False)
        x = jax.lax.while_loop(lambda s: (s[0] < NEWTON_STEPS) & ~s[4], step, state)[3]
        x = jnp.where(jnp.isfinite(z), x, z)  # NaN stays NaN, infinities map to themselves
        log_pdf = self._log_tail_and_density(components, x, sign)[1]
        return x, -(log_pdf + 0.5 * z**2 + HALF_LOG_2PI)

    def forward(self, x: jax.Array) -> jax.Array:
        """Returns ``z``; see ``forward_and_log_det``."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, z: jax.Array) -> jax.Array:
        """Returns ``x``; see ``inverse_and_log_det``."""
        return self.inverse_and_log_det(z)[0]
