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
from maf_jax.nn import Weights, matmul, mlp
from maf_jax.schedule import Group, schedule

__all__ = [
    "BLOCKS",
    "CHUNK",
    "GROUPS",
    "INVERSE",
    "AutoregressiveTransform",
    "full_pass_inverse",
    "incremental_inverse",
]

# Defaults of the incremental inverse, read when tracing. Rows per chunk, None for all
# at once: on CPU, chunks that keep the buffers in cache no longer pay for their extra
# steps (benchmarks/inverse_sweep.py); chunks bound the buffers' memory.
CHUNK = None
# Blocks, None for about sqrt(steps) / 2, and the most groups they form, one lax.scan
# each (maf_jax/schedule.py, benchmarks/inverse_sweep.py).
BLOCKS = None
GROUPS = 4
# The inverse behind ``inverse_and_log_det``, and so behind ``sample``: "incremental"
# (about one network pass) or "full_pass" (``steps`` passes, the reference; a fallback
# where a compiler fails on the incremental one, see README). Read when tracing.
INVERSE = "incremental"


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
        """Noise to data with the inverse that ``INVERSE`` names.

        Returns ``x`` and ``log|det dx/dy|``.
        """
        inverses = {"incremental": incremental_inverse, "full_pass": full_pass_inverse}
        if INVERSE not in inverses:
            raise ValueError(
                f"maf_jax.autoregressive.INVERSE must be one of {sorted(inverses)}, got {INVERSE!r}"
            )
        return inverses[INVERSE](self, y)

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


def incremental_inverse(
    t: AutoregressiveTransform,
    y: jax.Array,
    chunk: int | None = None,
    blocks: int | None = None,
    groups: int | None = None,
):
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
            of the buffers, ``(hidden, chunk)`` per layer; ``None`` for ``CHUNK``
            (itself ``None``, all rows at once, unless changed).
        blocks: Blocks of regular steps; ``None`` for ``BLOCKS`` (itself ``None``,
            about ``sqrt(steps) / 2``, unless changed).
        groups: Most groups of blocks, each compiled once; ``None`` for ``GROUPS``.

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    chunk = CHUNK if chunk is None else chunk
    blocks = BLOCKS if blocks is None else blocks
    groups = GROUPS if groups is None else groups
    ys, context, lead = t._flat(t._check(y, "y"), sort=True)
    features = t.layout.features
    plan = schedule(t.layout, blocks, groups)
    (kernel, bias), *rest = t.weights
    layers = [(kernel[:features], bias), *rest]
    if context is None:
        xs, ladj = _in_chunks(lambda ys: _incremental(t, layers, ys, plan), chunk, ys)
    else:  # context inputs are constant: fold them into a per-row first bias
        rows_bias = bias + matmul(context, kernel[features:])

        def solve(ys, rows_bias):
            return _incremental(t, [(kernel[:features], rows_bias), *rest], ys, plan)

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


def _incremental(t: AutoregressiveTransform, layers, ys: jax.Array, plan: tuple[Group, ...]):
    """The incremental inverse of rows ``ys`` ``(n, D)``, in the sorted space.

    ``plan`` is the layout's ``schedule``. Buffers are kept unit-major,
    ``(units, n)``, so that windows and spans of units are contiguous rows.
    """
    total, block = t.layout.total, t.layout.block
    params = [(w.T, b.T) for w, b in layers]  # (out, in), (out,) or (out, n)
    *hidden, (out_w, out_b) = params
    ys = ys.T

    def rows(a, start, size):
        return jax.lax.dynamic_slice_in_dim(a, start, size, axis=0)

    def outer(w, b, below, lo, span, before: int):
        """Pre-activations of units ``[lo, lo + span)`` from the final inputs.

        Inputs ``[0, before)`` may be final, the others are not; those not final
        yet are zeros in ``below``, so the product counts exactly the final ones
        whatever the block of the group.
        """
        b, w = rows(b, lo, span), rows(w, lo, span)
        pre = b[:, None] if b.ndim == 1 else b
        if before > 0:
            pre = pre + matmul(w[:, :before], below[:before])
        return jnp.broadcast_to(pre, (span, below.shape[1]))

    def local_weights(w, lo, span, below_lo, below_span, inside):
        """Weights from the block's span of the layer below to the layer's span.

        Zero outside ``inside``, the inputs that become final within the block:
        the others are already in ``outer``.
        """
        w = jax.lax.dynamic_slice_in_dim(rows(w, lo, span), below_lo, below_span, axis=1)
        unit = below_lo + jnp.arange(below_span)
        return jnp.where((unit >= inside[0]) & (unit < inside[1]), w, 0)

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

    def run(group: Group, carry, offsets):
        """One block of ``group``.

        ``offsets`` holds the block's span starts, inside ranges, and window and
        feature starts: constants, or data in a scan over blocks.
        """
        xs, ladj, buffers = carry
        *works, output = group.works
        los, insides, starts, feature_starts = offsets
        f_lo, f_span = los[-1] // total, output.span // total
        below_spans = [(f_lo, f_span), *((lo, w.span) for lo, w in zip(los, works))]
        weights = [*hidden[: len(works)], (out_w, out_b)]
        belows = [xs, *buffers[: len(works)]] if works else [buffers[-1] if buffers else xs]
        # The outer products, once per block; then the weights the steps need.
        pres = [
            outer(w, b, below, lo, work.span, work.before)
            for (w, b), below, lo, work in zip(weights, belows, los, group.works)
        ]
        out_pres = parameters(pres.pop())
        local_ws = [
            local_weights(w, lo, work.span, *below, inside) if work.grows else None
            for (w, _), lo, work, below, inside in zip(
                weights, los, group.works, below_spans, insides
            )
        ]
        # Steps read and write only the block's spans, kept in small local buffers
        # and written back once: the full buffers stay out of the loop.
        local_units = [rows(buffer, lo, w.span) for buffer, lo, w in zip(buffers, los, works)]

        def step(carry, start):
            x_local, ladj_local, local_units = carry
            *unit_starts, feature_start = start
            below, updated = x_local, []
            for w, pre, local, work, lo, s in zip(
                local_ws, pres, local_units, works, los, unit_starts
            ):
                value = rows(pre, s - lo, work.width)
                if w is not None:
                    value = value + matmul(rows(w, s - lo, work.width), below)
                below = jax.lax.dynamic_update_slice_in_dim(
                    local, t.activation(value), s - lo, axis=0
                )
                updated.append(below)
            # Each parameter is its slice of the outer terms plus the inner terms.
            phi = [rows(pre, feature_start - f_lo, block) for pre in out_pres]
            if local_ws[-1] is not None:
                out_rows = rows(local_ws[-1], (feature_start - f_lo) * total, block * total)
                phi = [a + b for a, b in zip(phi, parameters(matmul(out_rows, below)))]
            x_block, ladj_block = t.univariate(*phi).inverse_and_log_det(
                rows(ys, feature_start, block)
            )
            x_local = jax.lax.dynamic_update_slice_in_dim(
                x_local, x_block, feature_start - f_lo, axis=0
            )
            ladj_local = jax.lax.dynamic_update_slice_in_dim(
                ladj_local, ladj_block, feature_start - f_lo, axis=0
            )
            return (x_local, ladj_local, updated), None

        local = (rows(xs, f_lo, f_span), rows(ladj, f_lo, f_span), local_units)
        step_starts = (*starts, feature_starts)
        if len(feature_starts) == 1:
            local = step(local, [a[0] for a in step_starts])[0]
        else:
            local = jax.lax.scan(step, local, step_starts)[0]
        x_local, ladj_local, local_units = local
        xs = jax.lax.dynamic_update_slice_in_dim(xs, x_local, f_lo, axis=0)
        ladj = jax.lax.dynamic_update_slice_in_dim(ladj, ladj_local, f_lo, axis=0)
        buffers = list(buffers)
        for i, (local, lo) in enumerate(zip(local_units, los)):
            buffers[i] = jax.lax.dynamic_update_slice_in_dim(buffers[i], local, lo, axis=0)
        return xs, ladj, buffers

    n, dtype = ys.shape[1], jnp.result_type(ys, out_w)
    buffers = [jnp.zeros((w.shape[0], n), dtype) for w, _ in hidden]
    carry = (jnp.zeros(ys.shape, dtype), jnp.zeros(ys.shape, dtype), buffers)
    for group in plan:
        offsets = (
            tuple(w.lo for w in group.works),
            tuple(w.inside for w in group.works),
            tuple(w.starts for w in group.works[:-1]),
            group.feature_starts,
        )
        if len(group.steps) == 1:  # one block: its offsets are constants
            carry = run(group, carry, jax.tree.map(lambda a: a[0], offsets))
        else:
            carry = jax.lax.scan(
                lambda carry, offsets, group=group: (run(group, carry, offsets), None),
                carry,
                jax.tree.map(jnp.asarray, offsets),
            )[0]
    xs, ladj, _ = carry
    return xs.T, ladj.T
