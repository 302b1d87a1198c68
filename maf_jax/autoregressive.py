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

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from maf_jax._checks import check_event
from maf_jax.masks import MadeLayout
from maf_jax.nn import Weights, mlp
from maf_jax.schedule import Block, Layer, schedule

__all__ = ["CHUNK", "AutoregressiveTransform", "full_pass_inverse", "incremental_inverse"]

# Rows per chunk of the incremental inverse, None for all at once: on CPU, chunks that
# keep the buffers in cache no longer pay for their extra steps
# (benchmarks/inverse_sweep.py); chunks bound the buffers' memory.
CHUNK = None
# Blocks of the incremental inverse; None: about sqrt(steps) / 2 (maf_jax/schedule.py,
# benchmarks/inverse_sweep.py).
BLOCKS = None


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

    def _original_weights(self) -> Weights:
        """The weights for features in their original order, outputs parameter-major.

        Feature ``i`` sits at sorted position ``order[i]``, so the first kernel's rows
        and the last layer's outputs are gathered by ``order``; outputs are also
        reordered from ``(features, total)`` to ``(total, features)`` so that each
        parameter is a contiguous slice. Gathering weights instead of activations
        keeps gathers and their scatter gradients off the batch.
        """
        features, total = self.layout.features, self.layout.total
        (kernel, bias), *rest = self.weights
        # One-hot products rather than gathers: exact, and their gradients are
        # products too, where a gather's is a scatter, slow to compile on CPU.
        select = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)
        onehot = jax.nn.one_hot(self.order, features, dtype=kernel.dtype)
        kernel = jnp.concatenate(
            [select("id,dh->ih", onehot, kernel[:features]), kernel[features:]]
        )
        layers = [(kernel, bias), *rest]
        w, b = layers[-1]
        w = select("id,hdt->hti", onehot, w.reshape(w.shape[0], features, total))
        b = select("id,dt->ti", onehot, b.reshape(features, total))
        layers[-1] = (w.reshape(w.shape[0], -1), b.reshape(-1))
        return tuple(layers)

    def _conditioner(self, x: jax.Array, context: jax.Array | None, weights: Weights):
        """Univariate bijection for rows ``x`` ``(N, D)`` in their original order.

        ``weights`` are the parameter-major ``_original_weights``.
        """
        inputs = x if context is None else jnp.concatenate([x, context], axis=-1)
        phi = mlp(weights, self.activation, inputs).reshape(x.shape[0], -1, x.shape[1])
        params, offset = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            part = phi[:, offset : offset + size]
            params.append(
                part[:, 0] if not shape else jnp.moveaxis(part, 1, -1).reshape(*x.shape, *shape)
            )
            offset += size
        return self.univariate(*params)

    def _flat(self, x: jax.Array, sort: bool = False):
        """Broadcasts against the context and flattens to ``(N, D)``.

        Sorts the features by ``order`` first if ``sort``.
        """
        lead = self._lead_shape(x)
        x = self._sort(x) if sort else x
        x = jnp.broadcast_to(x, (*lead, x.shape[-1])).reshape(-1, x.shape[-1])
        context = None
        if self.context is not None:
            context = jnp.broadcast_to(self.context, (*lead, self.context.shape[-1]))
            context = context.reshape(x.shape[0], -1)
        return x, context, lead

    def _unflat(self, x: jax.Array, ladj: jax.Array, lead, unsort: bool = False):
        x = self._unsort(x) if unsort else x
        return x.reshape(*lead, -1), ladj.sum(-1).reshape(lead)

    # The bijection.

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Data to noise, in one parallel pass.

        Args:
            x: Data of shape ``(*, features)``.

        Returns:
            ``y`` of shape ``(*, features)`` and ``log|det dy/dx|`` of shape ``(*)``,
            ``*`` broadcast against the context batch shape.
        """
        x, context, lead = self._flat(self._check(x, "x"))
        y, ladj = self._conditioner(x, context, self._original_weights()).forward_and_log_det(x)
        return self._unflat(y, ladj, lead)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Noise to data with ``incremental_inverse``.

        Returns ``x`` and ``log|det dx/dy|``.
        """
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
    y, context, lead = t._flat(t._check(y, "y"))
    weights = t._original_weights()

    def step(carry, _):
        x, _ = carry
        return t._conditioner(x, context, weights).inverse_and_log_det(y), None

    init = (jnp.zeros_like(y), jnp.zeros_like(y))
    (x, ladj), _ = jax.lax.scan(step, init, length=t.layout.steps)
    return t._unflat(x, ladj, lead)


def incremental_inverse(t: AutoregressiveTransform, y: jax.Array, chunk: int | None = CHUNK):
    """Exact inverse at the cost of one network pass, over ``steps`` scan steps.

    Hidden units are laid out by degree; a unit of degree ``d`` depends only on
    features of rank ``<= d``, so it is final once step ``d`` is done. Step ``s``
    computes the window of units of degree ``s - 1`` in every layer, reading the
    full buffer of the layer below, then the outputs and the inverse of the
    features of rank ``s``. Steps are grouped into blocks (``maf_jax/schedule.py``)
    so that most of the arithmetic runs as wide matrix products.

    Args:
        t: The bijection.
        y: Noise of shape ``(*, features)``.
        chunk: Rows per chunk, processed one after another to bound the memory
            of the buffers, ``(hidden, chunk)`` per layer; ``None`` processes all
            rows at once.

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    ys, context, lead = t._flat(t._check(y, "y"), sort=True)
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
    return t._unflat(xs, ladj, lead, unsort=True)


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
    """The incremental inverse of rows ``ys`` ``(n, D)``, in the sorted space.

    Buffers are kept unit-major, ``(units, n)``, so that windows and ranges of
    units are contiguous rows. See ``maf_jax/schedule.py`` for the blocks.
    """
    total, block = t.layout.total, t.layout.block
    params = [(w.T, b.T) for w, b in layers]  # (out, in), (out,) or (out, n)
    ys = ys.T

    def rows(a, start, size):
        return jax.lax.dynamic_slice_in_dim(a, start, size, axis=0)

    def column(b):
        return b[:, None] if b.ndim == 1 else b

    def outer(w, b, below, work: Layer):
        """Contributions of the inputs final before the block, plus the bias."""
        lo, hi = work.rows
        pre = column(b[lo:hi])
        if work.before:
            pre = pre + w[lo:hi, : work.before] @ below[: work.before]
        return jnp.broadcast_to(pre, (hi - lo, below.shape[1]))

    def inner(w_local, pre, local, work: Layer, start):
        """A window's pre-activations.

        ``pre`` plus the inputs made final in the block, read from ``local``, the
        block's rows of the layer below, whose weights ``w_local`` are zero for rows
        that ``pre`` already counts.
        """
        value = rows(pre, start - work.rows[0], work.width)
        if work.inside[1] > work.inside[0]:
            value = value + rows(w_local, start, work.width) @ local
        return value

    def local_weights(w, lo, hi, work: Layer):
        """Columns ``[lo, hi)`` of ``w``, zero outside ``work.inside``."""
        keep = (np.arange(lo, hi) >= work.inside[0]) & (np.arange(lo, hi) < work.inside[1])
        return w[:, lo:hi] * keep.astype(w.dtype)

    def parameters(phi):
        """Each univariate parameter's rows of unit-major outputs ``phi``.

        ``phi`` holds the ``(features * total, n)`` outputs of some features,
        feature-major. Returns arrays of shape ``(features, n, *shape)``. Parameters
        of shape ``()`` are strided row slices of ``phi``: XLA on CPU vectorises
        elementwise work on those, not on rows read through a reshape or through a
        slice of a fused sum.
        """
        out, offset = [], 0
        for shape in t.shapes:
            size = math.prod(shape)
            if not shape:
                out.append(phi[offset::total])
            else:
                part = phi.reshape(-1, total, phi.shape[-1])[:, offset : offset + size]
                out.append(jnp.moveaxis(part, 1, -1).reshape(part.shape[0], -1, *shape))
            offset += size
        return out

    def run(plan: Block, carry):
        xs, ladj, buffers = carry
        *hidden, (out_w, out_b) = params
        works = plan.layers if plan.hidden else ()
        hidden = hidden[: len(works)]
        # The outer products read only what is final before the block: once, up front.
        pres, below = [], xs
        for (w, b), buffer, work in zip(hidden, buffers, works):
            pres.append(outer(w, b, below, work))
            below = buffer
        out_pres = parameters(outer(out_w, out_b, buffers[-1] if buffers else xs, plan.output))
        # Steps read and write only the block's rows, kept in small local buffers
        # and written back once: the full buffers stay out of the loop.
        f0, f1 = (r // total for r in plan.output.rows)
        spans = [(f0, f1)] + [work.rows for work in works]
        local_units = [buffer[slice(*work.rows)] for buffer, work in zip(buffers, works)]
        inside = [local_weights(w, *span, work) for (w, _), span, work in zip(hidden, spans, works)]
        out_inside = local_weights(out_w, *spans[len(works)], plan.output)

        def step(carry, start):
            x_local, ladj_local, local_units = carry
            *unit_starts, feature_start = start
            below, updated = x_local, []
            for w, pre, local, work, s in zip(inside, pres, local_units, works, unit_starts):
                h = t.activation(inner(w, pre, below, work, s))
                below = jax.lax.dynamic_update_slice_in_dim(local, h, s - work.rows[0], axis=0)
                updated.append(below)
            # Each parameter is its slice of the outer terms plus the inner terms.
            phi = [rows(pre, feature_start - f0, block) for pre in out_pres]
            if plan.output.inside[1] > plan.output.inside[0]:
                inner_phi = rows(out_inside, feature_start * total, block * total) @ below
                phi = [a + b for a, b in zip(phi, parameters(inner_phi))]
            x_block, ladj_block = t.univariate(*phi).inverse_and_log_det(
                rows(ys, feature_start, block)
            )
            x_local = jax.lax.dynamic_update_slice_in_dim(
                x_local, x_block, feature_start - f0, axis=0
            )
            ladj_local = jax.lax.dynamic_update_slice_in_dim(
                ladj_local, ladj_block, feature_start - f0, axis=0
            )
            return (x_local, ladj_local, updated), None

        starts = (*(work.starts for work in works), plan.feature_starts)
        local = (xs[f0:f1], ladj[f0:f1], local_units)
        if len(plan.steps) == 1:
            local = step(local, [int(a[0]) for a in starts])[0]
        else:
            local = jax.lax.scan(step, local, tuple(map(jnp.asarray, starts)))[0]
        x_local, ladj_local, local_units = local
        xs = jax.lax.dynamic_update_slice_in_dim(xs, x_local, f0, axis=0)
        ladj = jax.lax.dynamic_update_slice_in_dim(ladj, ladj_local, f0, axis=0)
        buffers = list(buffers)
        for i, (local, work) in enumerate(zip(local_units, works)):
            buffers[i] = jax.lax.dynamic_update_slice_in_dim(
                buffers[i], local, work.rows[0], axis=0
            )
        return xs, ladj, buffers

    n, dtype = ys.shape[1], jnp.result_type(ys, params[-1][0])
    buffers = [jnp.zeros((w.shape[0], n), dtype) for w, _ in params[:-1]]
    carry = (jnp.zeros(ys.shape, dtype), jnp.zeros(ys.shape, dtype), buffers)
    for plan in schedule(t.layout, BLOCKS):
        carry = run(plan, carry)
    xs, ladj, _ = carry
    return xs.T, ladj.T
