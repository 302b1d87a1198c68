"""The derivative of the autoregressive inverse by the implicit function theorem.

``x = T^{-1}(y)`` solves ``T(x) = y``. Given the cotangents ``gx`` of ``x`` and ``gl``
of ``log|det dx/dy| = -L(x)`` (``L`` the forward log-determinant), let
``a = gx - gl dL/dx`` and ``u = J^{-T} a`` with ``J = dT/dx``. Then the cotangent of
``y`` is ``u``, and that of the parameters and context is the VJP of ``(T, L)`` at
``x``, with ``x`` held fixed, of the cotangents ``(-u, -gl)``. Nothing of the inverse
is stored or differentiated: only ``x``.

``J`` is triangular in the rank order, its diagonal the univariate derivatives
``d_p``, so ``J^T u = a`` is solved from the highest rank down. That solve is itself
an incremental inverse (``maf_jax.inverses.incremental``) of the transposed network: a MADE
whose inputs are ``d * u``, whose first layer spreads each feature's value over its
univariate parameters (times ``df/dphi / d``), whose hidden layers are the original
ones transposed in reverse order (times the activation's derivative at ``x``; a skip
from layer ``s`` to ``k`` becomes one from ``k`` to ``s``), and
whose univariate step is ``d_p u_p = a_p - c_p``. Ranks and degrees are reversed
(``r -> steps - 1 - r``, ``d -> steps - 2 - d``) so that its schedule runs forwards.
The whole derivative costs about one forward pass, two backward passes (one to
``x`` for ``dL/dx``, one to the parameters and context) and one network pass of
solve.

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core.masks import DegreeLayout
from maf_jax.core.network import matmul
from maf_jax.core.schedule import schedule
from maf_jax.inverses.incremental import Network, solve
from maf_jax.inverses.rows import rowwise

__all__ = ["implicit_inverse", "transposed_solve"]


@jax.custom_vjp
def implicit_inverse(t, y: jax.Array):
    """``t.inverter(t, y)``, differentiated by the implicit function theorem.

    Args:
        t: The bijection, its context (if any) broadcast to one row per row of ``y``.
        y: Noise of shape ``(n, features)``.

    Returns:
        ``x`` of shape ``(n, features)`` and ``log|det dx/dy|`` of shape ``(n,)``.
    """
    return _inverse(t, y)


# The inverse and the solve of its derivative work row by row: under jax.vmap over
# contexts, keys or noise they run once on all the rows, as the batched call does.
_inverse = rowwise(lambda t, y: t.inverter(t, y))


def _forward(t, y):
    x, ladj = _inverse(t, y)
    return (x, ladj), (t, x)


def _backward(residuals, cotangents):
    t, x = residuals
    gx, gl = cotangents
    # One forward pass, in the rank-sorted space where the weights are stored (no
    # permutation of them), gives both the VJP and the linearisation of the solve.
    xs = t._sort(x)
    _, vjp, (slopes, d, d_phi) = jax.vjp(_linearised, t, xs, has_aux=True)
    _, gxs_ladj = vjp((jnp.zeros_like(xs), -gl))
    activated = [s for s in slopes if s is not None]
    u = _solve_rows(t, t._sort(gx) + gxs_ladj, d, d_phi, *activated)
    # one backward pass for the parameters: the VJP is linear in the cotangents
    gt, _ = vjp((-u, -gl))
    return gt, t._unsort(u)


implicit_inverse.defvjp(_forward, _backward)


class _Residual(NamedTuple):
    """The univariate step of the transposed solve: ``d u = a - c``, solved for ``d u``."""

    c: jax.Array

    def inverse_and_log_det(self, a):
        return a - self.c, jnp.zeros_like(a)


class _Problem(NamedTuple):
    """The static parts of the transposed solve, as ``incremental.solve`` reads them."""

    layout: DegreeLayout
    univariate: Callable
    shapes: tuple
    activation: Any
    precision: Any


def _linearised(t, xs: jax.Array):
    """The forward pass at sorted features ``xs`` ``(n, D)``, and its derivatives.

    Returns:
        ``y`` ``(n, D)`` in the sorted space and ``log|det dy/dx|`` ``(n,)``; and
        the activation's derivative at every hidden layer's
        pre-activations, ``(n, units)`` each (``None`` for a layer without
        activation), and the univariate derivatives ``d = df/dx`` ``(n, D)`` and
        ``df/dphi`` ``(n, D, total)``.
    """
    h = xs if t.context is None else jnp.concatenate([xs, t.context], axis=-1)
    values, slopes, wiring = [], [], t.layout.wiring
    *hidden, (w_out, b_out) = t.weights
    for (w, b), activated, skip in zip(hidden, wiring.activated, wiring.skips):
        h = matmul(h, w, t.precision) + b
        if skip is not None:
            h = h + values[skip]
        slope = None
        if activated:
            h, slope = jax.jvp(t.activation, (h,), (jnp.ones_like(h),))
        values.append(h)
        slopes.append(slope)
    n, features, total = xs.shape[0], xs.shape[1], t.layout.total
    phi = (matmul(h, w_out, t.precision) + b_out).reshape(n, features, total)
    params, offset = [], 0
    for shape in t.shapes:
        size = math.prod(shape)
        part = phi[..., offset : offset + size]
        params.append(part[..., 0] if not shape else part.reshape(n, features, *shape))
        offset += size
    (y, ladj), vjp = jax.vjp(lambda x, p: t.univariate(*p).forward_and_log_det(x), xs, params)
    # elementwise: each y_p has its own x_p and phi_p
    d, d_params = vjp((jnp.ones_like(y), jnp.zeros_like(ladj)))
    d_phi = jnp.concatenate([g.reshape(n, features, math.prod(g.shape[2:])) for g in d_params], -1)
    return (y, ladj.sum(-1)), (slopes, d, d_phi)


def transposed_solve(t, x: jax.Array, a: jax.Array, blocks: int | None = None, groups: int = 1):
    """``u = J^{-T} a``, ``J = dT/dx`` at ``x``, by one incremental sweep.

    Args:
        t: The bijection, its context (if any) with one row per row of ``x``.
        x: Data ``(n, features)``.
        a: The cotangent to solve for, ``(n, features)``.
        blocks: Blocks of the schedule, as for ``Incremental``.
        groups: Most groups of blocks; one by default, the smallest program
            (``benchmarks/vi.py`` compiles the gradient with it).

    Returns:
        ``u`` of shape ``(n, features)``.
    """
    slopes, d, d_phi = _linearised(t, t._sort(x))[1]
    return t._unsort(_sorted_solve(t, t._sort(a), slopes, d, d_phi, blocks, groups))


def _sorted_solve(t, a, slopes, d, d_phi, blocks: int | None = None, groups: int = 1):
    """``transposed_solve`` in the sorted space, given ``_linearised``'s derivatives."""
    layout, n = t.layout, a.shape[0]
    features, total, block, steps = layout.features, layout.total, layout.block, layout.steps
    padded = steps * block
    pad = padded - features  # the reversed first rank is short: fill it with null features

    def reverse(v, axis):  # sorted features to reversed, padded ones
        v = jnp.flip(v, axis)
        return jnp.pad(v, [(pad, 0) if i == axis else (0, 0) for i in range(v.ndim)])

    # Transposed layers, unit-major (out, in): each original kernel (in, out) with its
    # feature axes reversed and padded and its unit axes reversed.
    (w_in, _), *rest = t.weights
    weights = [w_in[:features], *(w for w, _ in rest)]

    def params_axis(w):  # columns p * total + q
        w = reverse(w.reshape(w.shape[0], features, total), 1)
        return w.reshape(w.shape[0], padded * total)

    transposed = []
    for k, w in enumerate(weights):
        w = reverse(w, 0) if k == 0 else jnp.flip(w, 0)
        w = params_axis(w) if k == len(weights) - 1 else jnp.flip(w, 1)
        transposed.append(w)
    spread = np.kron(np.eye(padded, dtype=np.float32), np.ones((total, 1), np.float32))
    kernels = [jnp.asarray(spread, d.dtype), *reversed(transposed)]
    first = reverse(d_phi / d[..., None], 1).reshape(n, padded * total)
    factors = [first.T, *(None if s is None else jnp.flip(s, 1).T for s in reversed(slopes))]
    degrees = [np.repeat(np.arange(padded) // block, total)]
    degrees += [(steps - 2 - degree)[::-1] for degree in reversed(layout.hidden_degrees)]
    for i in range(1, len(degrees)):
        # Reversed, a layer's lowest degree has the fewest units and may be above 0,
        # and its top degree holds the remainder units; the schedule's windows, as
        # wide as that, recompute final units at steps whose degree holds fewer, so
        # fill degree 0 with null units up to the widest degree's count (then every
        # degree but the widest holds no more than degree 0: one group of blocks).
        counts = np.bincount(degrees[i])
        null = int(counts.max() - counts[0])
        degrees[i] = np.concatenate([np.zeros(null, int), degrees[i]])
        kernels[i] = jnp.pad(kernels[i], ((null, 0), (0, 0)))
        kernels[i + 1] = jnp.pad(kernels[i + 1], ((0, 0), (null, 0)))
        if factors[i] is not None:
            factors[i] = jnp.pad(factors[i], ((null, 0), (0, 0)))
    *hidden, output = [(w, jnp.zeros(w.shape[0], d.dtype)) for w in kernels]
    plan_layout = DegreeLayout(
        padded,
        1,
        block,
        tuple(tuple(map(int, g)) for g in degrees),
        layout.wiring.transposed(),
    )
    problem = _Problem(plan_layout, _Residual, ((),), None, t.precision)
    net = Network(tuple(hidden), output, tuple(factors))
    du, _ = solve(problem, net, reverse(a, 1).T, schedule(plan_layout, blocks, groups))
    return jnp.flip(du[:, pad:], 1) / d


def _solve_in_rows(t, a, d, d_phi, *activated):
    """``_sorted_solve`` given only the activated layers' slopes.

    Every argument of a ``rowwise`` function is an array of rows: none is ``None``.
    """
    slopes, given = [], iter(activated)
    for is_activated in t.layout.wiring.activated:
        slopes.append(next(given) if is_activated else None)
    return _sorted_solve(t, a, slopes, d, d_phi)


_solve_rows = rowwise(_solve_in_rows)  # see _inverse
