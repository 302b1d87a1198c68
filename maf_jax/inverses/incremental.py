"""The incremental inverse: the exact inverse at the arithmetic of one network pass.

Hidden units are laid out by degree; a unit of degree ``d`` depends only on
features of rank ``<= d``, so it is final once step ``d`` is done. Step ``s``
computes the window of units of degree ``s - 1`` in every layer, then the outputs
and the inverse of the features of rank ``s``. Steps are grouped into blocks
(``maf_jax/schedule.py``): at the start of a block one wide product per layer adds
the contributions of every input that is final; each step then adds only those of
the inputs made final within the block, reading the block's spans of units, kept in
small local buffers. Buffers are unit-major, ``(units, rows)``, so that windows and
spans are contiguous rows. The regular blocks run in one ``lax.scan`` whatever their
number; the size of their wide products changes with the part of the group they are
in (``lax.switch``).

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core._checks import positive_int
from maf_jax.core.network import matmul
from maf_jax.core.schedule import Group, Layer, schedule, with_null_units

__all__ = ["Incremental", "Network", "incremental_inverse", "solve"]

Pair = tuple[jax.Array, jax.Array]


class Network(NamedTuple):
    """The network: kernels ``(out, in)``, biases ``(out,)`` or ``(out, n)``.

    The first layer's inputs are the sorted features alone: the context is folded
    into its bias, one column per row. Hidden layers are wired as the problem's
    ``layout.wiring`` says; an activated layer's units are ``activation(pre)``, or,
    where ``factors`` are given (a network linearised at a point, as in
    ``maf_jax.inverses.implicit``), ``pre * factor`` with one factor per unit and row
    (``None`` for a layer that is not activated). With ``input_major``, kernels are
    ``(in, out)``, as a flow stores them: the wide products contract their first
    axis and only the blocks' small spans of weights are transposed, where a
    transpose of every kernel would add kernels to the compiled program (sampler
    compile at 64 and 128 features: 6.8 -> 6.3 and 6.0 -> 5.7 billion
    instructions, 7.2 -> 7.4 at 256; sampling as fast).
    """

    hidden: tuple[Pair, ...]
    output: Pair
    factors: tuple[jax.Array, ...] | None = None
    input_major: bool = False


class Carry(NamedTuple):
    """What the blocks fill in, unit-major; zeros where not final yet.

    Attributes:
        x: Features in the sorted space, ``(features, n)``.
        ladj: Their elementwise ``log|dx/dy|``, ``(features, n)``.
        units: Each hidden layer's activations, ``(units, n)``.
    """

    x: jax.Array
    ladj: jax.Array
    units: tuple[jax.Array, ...]


class Offsets(NamedTuple):
    """Where one block of a group works, per layer the steps compute (``group.works``).

    Constants when the group has one block, data in a scan over its blocks.

    Attributes:
        lo: First unit of the layer's span.
        inside: Inputs ``[inside[0], inside[1])`` of the layer become final in the block.
        starts: First unit of each step's window in the layer's span (from ``lo``),
            ``(k,)``, hidden layers only.
        feature_starts: First feature of each step's rank, ``(k,)``.
        part: The part of the group the block is in (``Group.parts``).
    """

    lo: tuple[Any, ...]
    inside: tuple[Any, ...]
    starts: tuple[Any, ...]
    feature_starts: Any
    part: Any


class Block(NamedTuple):
    """What every step of a block reads.

    Attributes:
        factors: Per hidden layer computed, the span's factors ``(span, n)`` (``None``
            for a layer without activation), or ``None`` for the activation.
        outer: Per hidden layer computed, pre-activations of its span from the
            inputs final before the block, ``(span, n)``.
        outer_params: The same for the outputs, one array per univariate parameter.
        inner: Per layer computed, its weights from the inputs made final within
            the block (zero elsewhere), or ``None`` where none are.
        feature_lo: First feature of the block's span.
        y: The noise, ``(features, n)``.
    """

    factors: list[jax.Array] | None
    outer: list[jax.Array]
    outer_params: list[jax.Array]
    inner: list[jax.Array | None]
    feature_lo: Any
    y: jax.Array


def incremental_inverse(
    t, y: jax.Array, chunk: int | None = None, blocks: int | None = None, groups: int = 4
):
    """Exact inverse at the cost of one network pass, over ``steps`` scan steps.

    Args:
        t: The bijection, an ``AutoregressiveTransform``.
        y: Noise of shape ``(*, features)``.
        chunk: Rows per chunk, processed one after another to bound the memory of
            the buffers, ``(hidden, chunk)`` per layer; ``None`` for all at once.
        blocks: Blocks of regular steps; ``None`` for blocks of about 8 steps, at
            most 8.
        groups: Most sizes of the regular blocks' wide products (``schedule``).

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    y, context, lead = t._flat(t._check(y, "y"), sort=True)
    features = t.layout.features
    layout, indices = with_null_units(t.layout)
    plan = schedule(layout, blocks, groups)
    (kernel, bias), *rest = _with_null_units(t.weights, indices)
    first = kernel[:features]

    def solve_rows(y, bias):
        *hidden, output = ((first, bias.T), *rest)
        return solve(t, Network(tuple(hidden), output, input_major=True), y.T, plan)

    if context is None:
        x, ladj = _in_chunks(functools.partial(solve_rows, bias=bias), chunk, y)
    else:  # context inputs are constant: fold them into a per-row first bias
        x, ladj = _in_chunks(
            solve_rows, chunk, y, bias + matmul(context, kernel[features:], t.precision)
        )
    return t._unflat(x, ladj, lead, unsort=True)


def _with_null_units(weights, indices: tuple[np.ndarray, ...]):
    """``weights`` for the layout that ``with_null_units`` pads.

    Units are gathered by ``indices``; null ones (-1) get zero weights in and out.
    """
    weights = list(weights)
    for k, index in enumerate(indices):
        if len(index) == weights[k][0].shape[1] and (index >= 0).all():
            continue
        gather = np.where(index >= 0, index, weights[k][0].shape[1])  # a zero unit at the end
        (w, b), (w_next, b_next) = weights[k], weights[k + 1]
        weights[k] = (
            jnp.pad(w, ((0, 0), (0, 1)))[:, gather],
            jnp.pad(b, (0, 1))[gather],
        )
        weights[k + 1] = jnp.pad(w_next, ((0, 1), (0, 0)))[gather], b_next
    return tuple(weights)


@dataclasses.dataclass(frozen=True)
class Incremental:
    """``inverse=`` option: the incremental inverse with its settings.

    Args:
        chunk: Rows per chunk (``None``: all rows at once); chunks bound the
            buffers' memory and, on CPU, can keep them in cache
            (``benchmarks/inverse_sweep.py``).
        blocks: Blocks of regular steps (``None``: blocks of about 8 steps, at
            most 8).
        groups: Most parts of the regular blocks, each with wide products of
            its own size: more waste less arithmetic, and each adds a product
            per layer to the program.
    """

    chunk: int | None = None
    blocks: int | None = None
    groups: int = 4
    name: ClassVar[str] = "incremental"

    def __post_init__(self):
        for field in ("chunk", "blocks"):
            if getattr(self, field) is not None:
                positive_int(getattr(self, field), field)
        positive_int(self.groups, "groups")

    def __call__(self, t, y: jax.Array):
        """Returns ``x`` and ``log|det dx/dy|`` of ``t`` at ``y``."""
        return incremental_inverse(t, y, self.chunk, self.blocks, self.groups)


def _in_chunks(fn: Callable, chunk: int | None, *rows: jax.Array):
    """Applies ``fn`` to consecutive chunks of rows with ``lax.map``."""
    n = rows[0].shape[0]
    if chunk is None or n <= chunk:
        return fn(*rows)
    count = -(-n // chunk)
    pad = count * chunk - n
    chunked = [jnp.pad(a, ((0, pad), (0, 0))).reshape(count, chunk, -1) for a in rows]
    out = jax.lax.map(lambda a: fn(*a), chunked)
    return jax.tree.map(lambda a: a.reshape(count * chunk, -1)[:n], out)


def solve(t, net: Network, y: jax.Array, plan: tuple[Group, ...]):
    """The inverse of unit-major noise ``y`` ``(features, n)``, group after group.

    ``t`` holds the static parts of the problem: ``layout`` (``block``, ``total``,
    ``wiring``), ``univariate``, ``shapes``, ``activation`` and ``precision``.

    Returns ``x`` and ``log|dx/dy|`` elementwise, each ``(n, features)``.
    """
    n, dtype = y.shape[1], jnp.result_type(y, net.output[0])
    units = tuple(jnp.zeros((len(b), n), dtype) for _, b in net.hidden)
    carry = Carry(jnp.zeros(y.shape, dtype), jnp.zeros(y.shape, dtype), units)
    for group in plan:
        offsets = Offsets(
            tuple(w.lo for w in group.works),
            tuple(w.inside for w in group.works),
            tuple(w.starts - w.lo[:, None] for w in group.works[:-1]),
            group.feature_starts,
            group.parts,
        )
        run = functools.partial(_block, t, net, group, y)
        if len(group.steps) == 1:  # one block: its offsets are constants
            carry = run(carry, jax.tree.map(lambda a: a[0], offsets))
        else:
            offsets = jax.tree.map(jnp.asarray, offsets)
            carry = jax.lax.scan(lambda c, o, run=run: (run(c, o), None), carry, offsets)[0]
    return carry.x.T, carry.ladj.T


# Offsets are never negative, and JAX's wrap of negative ones costs a compare and a
# select in every kernel that slices (sampler compile at 64 features: about -5%).
def _rows(a: jax.Array, start, size: int, axis: int = 0) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(a, start, size, axis, allow_negative_indices=False)


def _update(a: jax.Array, rows: jax.Array, start) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(a, rows, start, 0, allow_negative_indices=False)


def _kernel_block(kernel: jax.Array, lo, span: int, in_lo, in_span: int, input_major: bool):
    """Weights from inputs ``[in_lo, in_lo + in_span)`` to units ``[lo, lo + span)``, as stored."""
    out_axis = 1 if input_major else 0
    return _rows(_rows(kernel, lo, span, out_axis), in_lo, in_span, 1 - out_axis)


def _outer(
    t, weights: Pair, below: jax.Array, lo, work: Layer, before: int, input_major: bool
) -> jax.Array:
    """Pre-activations of the span from its inputs final before the block.

    Inputs ``[0, before)`` may be final, the others are not; those not final yet
    are zeros in ``below``, so the product counts exactly the final ones whatever
    the block of the part.
    """
    kernel, b = weights
    pre = _rows(b, lo, work.span)
    pre = pre[:, None] if pre.ndim == 1 else pre
    if before > 0:
        w = _kernel_block(kernel, lo, work.span, 0, before, input_major)
        dims = (((0 if input_major else 1,), (0,)), ((), ()))
        pre = pre + jax.lax.dot_general(w, below[:before], dims, precision=t.precision)
    return jnp.broadcast_to(pre, (work.span, below.shape[1]))


def _inner(
    w: jax.Array, lo, work: Layer, below_lo, below_span: int, inside, input_major: bool
) -> jax.Array:
    """Weights from the block's span of the layer below to the layer's span, ``(out, in)``.

    Zero outside ``inside``, the inputs that become final within the block: the
    others are already in ``_outer``.
    """
    w = _kernel_block(w, lo, work.span, below_lo, below_span, input_major)
    w = w.T if input_major else w
    unit = below_lo + jnp.arange(below_span)
    return jnp.where((unit >= inside[0]) & (unit < inside[1]), w, 0)


def _parameters(t, phi: jax.Array) -> list[jax.Array]:
    """Each univariate parameter's rows of unit-major outputs ``phi``.

    ``phi`` holds the ``(features * total, n)`` outputs of some features,
    feature-major. Returns arrays of shape ``(features, n, *shape)``. Parameters of
    shape ``()`` are strided row slices of ``phi``: XLA on CPU vectorises elementwise
    work on those, not on rows read through a reshape or a slice of a fused sum.
    """
    total, out, offset = t.layout.total, [], 0
    for shape in t.shapes:
        size = math.prod(shape)
        if not shape:
            out.append(phi[offset::total])
        else:
            part = phi.reshape(phi.shape[0] // total, total, phi.shape[-1])[
                :, offset : offset + size
            ]
            out.append(jnp.moveaxis(part, 1, -1).reshape(part.shape[0], -1, *shape))
        offset += size
    return out


def _block(t, net: Network, group: Group, y: jax.Array, carry: Carry, offsets: Offsets) -> Carry:
    """One block of ``group``: the wide products, then its steps on local buffers."""
    *works, output = group.works
    total = t.layout.total
    # lax.div: offsets are never negative, no sign fixup as in //
    feature_lo, feature_span = jax.lax.div(offsets.lo[-1], np.int32(total)), output.span // total
    weights = [*net.hidden[: len(works)], net.output]
    belows = [carry.x, *carry.units[: len(works)]] if works else [(carry.x, *carry.units)[-1]]
    below_spans = [(feature_lo, feature_span), *((lo, w.span) for lo, w in zip(offsets.lo, works))]

    def products(befores):
        args = zip(weights, belows, offsets.lo, group.works, befores, strict=True)
        return [_outer(t, *a, net.input_major) for a in args]

    # the part's products, one size per layer; lax.switch picks them
    parts = list(zip(*(work.befores for work in group.works)))
    if len(set(parts)) == 1:
        outer = products(parts[0])
    else:
        outer = jax.lax.switch(offsets.part, [functools.partial(products, p) for p in parts])
    inner = [
        _inner(w, lo, work, *below, inside, net.input_major) if work.grows else None
        for (w, _), lo, work, below, inside in zip(
            weights, offsets.lo, group.works, below_spans, offsets.inside
        )
    ]
    factors = None
    if net.factors is not None:
        factors = [
            None if f is None else _rows(f, lo, w.span)
            for f, lo, w in zip(net.factors, offsets.lo, works)
        ]
    outer_params = _parameters(t, outer[-1])
    block = Block(factors, outer[:-1], outer_params, inner, feature_lo, y)
    # The steps read and write only the block's spans, written back once: the full
    # buffers stay out of the loop.
    local = Carry(
        _rows(carry.x, feature_lo, feature_span),
        _rows(carry.ladj, feature_lo, feature_span),
        tuple(_rows(units, lo, w.span) for units, lo, w in zip(carry.units, offsets.lo, works)),
    )
    step = functools.partial(_step, t, works, block)
    starts = (offsets.starts, offsets.feature_starts)
    if len(offsets.feature_starts) == 1:
        local = step(local, jax.tree.map(lambda a: a[0], starts))[0]
    else:
        local = jax.lax.scan(step, local, starts)[0]
    units = list(carry.units)
    for i, (values, lo) in enumerate(zip(local.units, offsets.lo)):
        units[i] = _update(units[i], values, lo)
    return Carry(
        _update(carry.x, local.x, feature_lo),
        _update(carry.ladj, local.ladj, feature_lo),
        tuple(units),
    )


def _step(t, works: list[Layer], block: Block, local: Carry, starts):
    """One step: the windows of every hidden layer, then the features of one rank."""
    unit_starts, feature_start = starts
    wiring = t.layout.wiring
    below, units = local.x, []
    for i, (w, pre, values, work, s) in enumerate(
        zip(block.inner, block.outer, local.units, works, unit_starts)
    ):
        value = _rows(pre, s, work.width)
        if w is not None:
            value = value + matmul(_rows(w, s, work.width), below, t.precision)
        if wiring.skips[i] is not None:  # final in this window: computed just now
            value = value + _rows(units[wiring.skips[i]], s, work.width)
        if wiring.activated[i] and block.factors is None:
            value = t.activation(value)
        elif wiring.activated[i]:
            value = value * _rows(block.factors[i], s, work.width)
        below = _update(values, value, s)
        units.append(below)
    # Each parameter is its slice of the outer terms plus the inner terms.
    size, offset = t.layout.block, feature_start - block.feature_lo
    phi = [_rows(pre, offset, size) for pre in block.outer_params]
    if block.inner[-1] is not None:
        out_rows = _rows(block.inner[-1], offset * t.layout.total, size * t.layout.total)
        inner = _parameters(t, matmul(out_rows, below, t.precision))
        phi = [a + b for a, b in zip(phi, inner)]
    x, ladj = t.univariate(*phi).inverse_and_log_det(_rows(block.y, feature_start, size))
    x, ladj = (_update(a, b, offset) for a, b in ((local.x, x), (local.ladj, ladj)))
    return Carry(x, ladj, tuple(units)), None
