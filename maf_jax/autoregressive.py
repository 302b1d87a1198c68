"""The masked autoregressive bijection and its two sequential inverses.

The bijection maps data to noise in parallel, ``y_i = f(x_i; phi_i(x_<i, c))``; its
inverse is sequential. ``full_pass_inverse`` is the reference: ``steps`` full passes
of the network. ``incremental_inverse`` does the arithmetic of one pass in total: at
step ``s`` it computes only the hidden units that become final then (the window of
degree ``s - 1`` of each layer) and the outputs of rank ``s``.

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from maf_jax._checks import check_event
from maf_jax.masks import MadeLayout
from maf_jax.nn import Weights, mlp

__all__ = ["CHUNK", "AutoregressiveTransform", "full_pass_inverse", "incremental_inverse"]

# Rows per chunk of the incremental inverse: its buffers, (rows, hidden) per layer,
# then stay in the L2 cache across the steps (benchmarks/sampling_chunks.py).
CHUNK = 512


@struct.dataclass
class AutoregressiveTransform:
    """Masked autoregressive bijection from data ``x`` to noise ``y``.

    Built by ``MaskedAutoregressiveTransform(c)``; a JAX pytree. The network sees
    the features sorted by ``order``, so that the masks depend only on ``layout``.

    Attributes:
        weights: Masked ``(kernel, bias)`` pairs of the network, kernels
            ``(in, out)``, inputs being the sorted features then the context.
        order: Feature order, a permutation of ``range(features)``.
        context: The context, shape ``(*batch, context)``, or ``None``.
        layout: The static MADE structure.
        univariate: Constructor of the elementwise bijection from its parameters.
        shapes: Shape of each univariate parameter, per feature.
        activation: Nonlinearity of the network.
    """

    weights: Weights
    order: jax.Array
    context: jax.Array | None
    layout: MadeLayout = struct.field(pytree_node=False)
    univariate: Callable = struct.field(pytree_node=False)
    shapes: tuple[tuple[int, ...], ...] = struct.field(pytree_node=False)
    activation: Callable = struct.field(pytree_node=False)

    # Shapes and the rank-sorted space.

    def _check(self, x, name: str) -> jax.Array:
        return check_event(x, self.layout.features, name)

    def _lead_shape(self, x: jax.Array) -> tuple[int, ...]:
        if self.context is None:
            return x.shape[:-1]
        try:
            return np.broadcast_shapes(x.shape[:-1], self.context.shape[:-1])
        except ValueError:
            raise ValueError(
                f"input batch shape {x.shape[:-1]} does not broadcast with the "
                f"context batch shape {self.context.shape[:-1]}"
            ) from None

    def _sort(self, x: jax.Array) -> jax.Array:
        return jnp.take(x, jnp.argsort(self.order), axis=-1)

    def _unsort(self, x: jax.Array) -> jax.Array:
        return jnp.take(x, self.order, axis=-1)

    def _univariate(self, phi: jax.Array):
        """Splits raw outputs ``(*, n, total)`` into the univariate parameters."""
        params, offset = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            params.append(phi[..., offset : offset + size].reshape(*phi.shape[:-1], *shape))
            offset += size
        return self.univariate(*params)

    def _conditioner(self, xs: jax.Array, context: jax.Array | None):
        """Univariate bijection for sorted inputs ``xs`` of shape ``(N, D)``."""
        inputs = xs if context is None else jnp.concatenate([xs, context], axis=-1)
        phi = mlp(self.weights, self.activation, inputs)
        return self._univariate(phi.reshape(*xs.shape, self.layout.total))

    def _flat(self, x: jax.Array):
        """Sorts, broadcasts against the context and flattens to ``(N, D)``."""
        lead = self._lead_shape(x)
        xs = jnp.broadcast_to(self._sort(x), (*lead, x.shape[-1])).reshape(-1, x.shape[-1])
        context = None
        if self.context is not None:
            context = jnp.broadcast_to(self.context, (*lead, self.context.shape[-1]))
            context = context.reshape(xs.shape[0], -1)
        return xs, context, lead

    def _unflat(self, xs: jax.Array, ladj: jax.Array, lead):
        return self._unsort(xs).reshape(*lead, -1), ladj.sum(-1).reshape(lead)

    # The bijection.

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to noise, in one parallel pass.

        Args:
            x: Data of shape ``(*, features)``.

        Returns:
            ``y`` of shape ``(*, features)`` and ``log|det dy/dx|`` of shape ``(*)``,
            ``*`` broadcast against the context batch shape.
        """
        xs, context, lead = self._flat(self._check(x, "x"))
        ys, ladj = self._conditioner(xs, context).forward_and_log_det(xs)
        return self._unflat(ys, ladj, lead)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Noise to data with ``incremental_inverse``; returns ``x`` and
        ``log|det dx/dy|``."""
        return incremental_inverse(self, y)

    def forward(self, x: jax.Array) -> jax.Array:
        """Data to noise; see ``forward_and_log_det``."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y: jax.Array) -> jax.Array:
        """Noise to data; see ``inverse_and_log_det``."""
        return self.inverse_and_log_det(y)[0]


def full_pass_inverse(t: AutoregressiveTransform, y: jax.Array):
    """Reference inverse: ``steps`` full passes of the network in a ``lax.scan``.

    After pass ``k`` the features of rank ``< k`` are exact, so ``steps`` passes
    give the exact inverse whatever the number of features.

    Args:
        t: The bijection.
        y: Noise of shape ``(*, features)``.

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    ys, context, lead = t._flat(t._check(y, "y"))

    def step(carry, _):
        xs, _ = carry
        return t._conditioner(xs, context).inverse_and_log_det(ys), None

    init = (jnp.zeros_like(ys), jnp.zeros_like(ys))
    (xs, ladj), _ = jax.lax.scan(step, init, length=t.layout.steps)
    return t._unflat(xs, ladj, lead)


def incremental_inverse(t: AutoregressiveTransform, y: jax.Array, chunk: int | None = CHUNK):
    """Exact inverse at the cost of one network pass, over ``steps`` scan steps.

    Hidden units are laid out by degree; a unit of degree ``d`` depends only on
    features of rank ``<= d``, so it is final once step ``d`` is done. Step ``s``
    computes the window of units of degree ``s - 1`` in every layer, reading the
    full buffer of the layer below, then the outputs and the inverse of the
    features of rank ``s``. Rows are processed in chunks so that the buffers stay
    in cache across the steps.

    Args:
        t: The bijection.
        y: Noise of shape ``(*, features)``.
        chunk: Rows per chunk; ``None`` processes all rows at once.

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    ys, context, lead = t._flat(t._check(y, "y"))
    features = t.layout.features
    (kernel, bias), *rest = t.weights
    layers = [(kernel[:features], bias), *rest]
    if context is None:
        xs, ladj = _in_chunks(lambda ys: _incremental(t, layers, ys), chunk, ys)
    else:  # context inputs are constant: fold them into a per-row first bias
        rows_bias = bias + context @ kernel[features:]

        def solve(ys, rows_bias):
            return _incremental(t, [(kernel[:features], rows_bias), *rest], ys)

        xs, ladj = _in_chunks(solve, chunk, ys, rows_bias)
    return t._unflat(xs, ladj, lead)


def _in_chunks(solve: Callable, chunk: int | None, *rows: jax.Array):
    """Applies ``solve`` to consecutive chunks of rows with ``lax.map``."""
    n = rows[0].shape[0]
    if chunk is None or n <= chunk:
        return solve(*rows)
    count = -(-n // chunk)
    pad = count * chunk - n
    chunked = [jnp.pad(a, ((0, pad), (0, 0))).reshape(count, chunk, -1) for a in rows]
    out = jax.lax.map(lambda a: solve(*a), chunked)
    return jax.tree.map(lambda a: a.reshape(count * chunk, -1)[:n], out)


def _incremental(t: AutoregressiveTransform, layers, ys: jax.Array):
    """The incremental inverse of rows ``ys`` ``(n, D)``, in the sorted space."""
    layout, total, block = t.layout, t.layout.total, t.layout.block
    *hidden, (out_kernel, out_bias) = layers
    widths = [width for _, width in layout.windows]
    starts = [start for start, _ in layout.windows]

    def window(a, start, width, axis=-1):
        return jax.lax.dynamic_slice_in_dim(a, start, width, axis=axis)

    def hidden_step(xs, buffers, unit_starts):
        below, updated = xs, []
        for (w, b), buffer, s, width in zip(hidden, buffers, unit_starts, widths):
            h = t.activation(below @ window(w, s, width) + window(b, s, width))
            below = jax.lax.dynamic_update_slice_in_dim(buffer, h, s, axis=1)
            updated.append(below)
        return updated

    def output_step(xs, ladj, below, feature_start):
        columns = (feature_start * total, block * total)
        phi = below @ window(out_kernel, *columns) + window(out_bias, *columns)
        u = t._univariate(phi.reshape(-1, block, total))
        x_block, ladj_block = u.inverse_and_log_det(window(ys, feature_start, block))
        xs = jax.lax.dynamic_update_slice_in_dim(xs, x_block, feature_start, axis=1)
        ladj = jax.lax.dynamic_update_slice_in_dim(ladj, ladj_block, feature_start, axis=1)
        return xs, ladj

    def step(carry, start):
        xs, ladj, buffers = carry
        *unit_starts, feature_start = start
        buffers = hidden_step(xs, buffers, unit_starts)
        xs, ladj = output_step(xs, ladj, buffers[-1] if buffers else xs, feature_start)
        return (xs, ladj, buffers), None

    n, dtype = ys.shape[0], jnp.result_type(ys, out_kernel)
    buffers = [jnp.zeros((n, w.shape[1]), dtype) for w, _ in hidden]
    xs, ladj = jnp.zeros(ys.shape, dtype), jnp.zeros(ys.shape, dtype)
    feature_starts = layout.feature_starts
    first = layout.first_hidden_step
    if first:  # step 0 without hidden work: rank-0 outputs are the biases
        xs, ladj = output_step(xs, ladj, buffers[-1], feature_starts[0])
    steps = tuple(jnp.asarray(a[first:]) for a in (*starts, feature_starts))
    (xs, ladj, _), _ = jax.lax.scan(step, (xs, ladj, buffers), steps)
    return xs, ladj
