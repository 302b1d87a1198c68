"""The full-pass inverse as one Pallas kernel: every step on chip, no launch per step.

Each program of the kernel holds a tile of rows and the network's weights and runs the
``steps`` passes of ``full_pass_inverse`` in a loop: pass ``k`` makes the features of
rank ``< k + 1`` exact. On a GPU (Triton) that replaces the incremental inverse's few
small kernels per step by one kernel per transform; on a CPU the kernel runs in Pallas'
interpret mode, which is how the tests check it. Its derivative is the transform's
(``maf_jax.inverses.implicit``), so ``rsample`` stays differentiable.

Shapes are padded inside: features and hidden units to powers of two of at least 16
(Triton's block and matrix-product minimums; padded weights are zero, and every
activation of ``maf_jax.checkpoint.schema`` maps 0 to 0), rows to whole tiles.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from maf_jax.core._checks import positive_int
from maf_jax.core.network import matmul, mlp

__all__ = ["PallasFullPass", "pallas_full_pass_inverse"]


def _size(n: int) -> int:
    """The padded size of an axis: a power of two, at least 16."""
    return max(16, 1 << (n - 1).bit_length())


def _pad(a: jax.Array, shape) -> jax.Array:
    return jnp.pad(a, [(0, s - d) for s, d in zip(shape, a.shape)])


def pallas_full_pass_inverse(t, y: jax.Array, tile: int = 128, interpret: bool | None = None):
    """The full-pass inverse of ``t`` at ``y``, in one Pallas kernel.

    Args:
        t: The bijection, an ``AutoregressiveTransform``.
        y: Noise of shape ``(*, features)``.
        tile: Rows per program.
        interpret: Run in Pallas' interpret mode; ``None`` for on the CPU only.

    Returns:
        ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
    """
    from jax.experimental import pallas as pl

    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    ys, context, lead = t._flat(t._check(y, "y"), sort=True)
    n, features = ys.shape
    total, steps = t.layout.total, t.layout.steps
    width = _size(features)
    (kernel, bias), *rest = t.weights
    first_bias = jnp.broadcast_to(bias, (n, bias.shape[0]))
    if context is not None:  # context inputs are constant: a per-row first bias
        first_bias = first_bias + matmul(context, kernel[features:], t.precision)
    # Output columns parameter-major, q * width + p (q the element of the feature's
    # flattened parameters), so that each element of a parameter is a slice.
    *hidden, (w_out, b_out) = [(kernel[:features], bias), *rest]
    w_out = w_out.reshape(-1, features, total).transpose(0, 2, 1)
    w_out = _pad(w_out, (w_out.shape[0], total, width)).reshape(w_out.shape[0], total * width)
    b_out = _pad(b_out.reshape(features, total).T, (total, width)).reshape(1, total * width)
    sizes = [width, *(_size(w.shape[1]) for w, _ in hidden)]
    weights = [_pad(w, (a, b)) for (w, _), a, b in zip(hidden, sizes[:-1], sizes[1:])]
    weights.append(_pad(w_out, (sizes[-1], total * width)))
    # The biases after the first layer's per-row one; without hidden layers the first
    # layer is the output layer and its per-row bias the output bias.
    biases = [_pad(b.reshape(1, -1), (1, s)) for (_, b), s in zip(hidden[1:], sizes[2:])]
    if hidden:
        biases.append(b_out)
        first_bias = _pad(first_bias, (n, sizes[1]))
    else:  # parameter-major like the output columns; it already holds the output bias
        first_bias = first_bias.reshape(n, features, total).transpose(0, 2, 1)
        first_bias = _pad(first_bias, (n, total, width)).reshape(n, total * width)
    rows = -(-n // tile) * tile
    y_rows = _pad(ys, (rows, width))
    first_bias = _pad(first_bias, (rows, first_bias.shape[1]))

    def invert(y_ref, bias_ref, *refs):
        *parameter_refs, x_ref, ladj_ref = refs
        ws = [ref[...] for ref in parameter_refs[: len(weights)]]
        bs = [bias_ref[...], *(ref[...] for ref in parameter_refs[len(weights) :])]
        y_tile = y_ref[...]

        def one_pass(_, carry):
            h = mlp(tuple(zip(ws, bs)), t.activation, carry[0], t.precision, t.layout.wiring)
            return t.univariate(*_parameters(t, h, width)).inverse_and_log_det(y_tile)

        zeros = jnp.zeros_like(y_tile)
        x_ref[...], ladj_ref[...] = jax.lax.fori_loop(0, steps, one_pass, (zeros, zeros))

    row_block = pl.BlockSpec((tile, width), lambda i: (i, 0))
    whole = [pl.BlockSpec(a.shape, lambda i: (0, 0)) for a in [*weights, *biases]]
    bias_block = pl.BlockSpec((tile, first_bias.shape[1]), lambda i: (i, 0))
    out = jax.ShapeDtypeStruct((rows, width), jnp.result_type(ys, w_out))
    x, ladj = pl.pallas_call(
        invert,
        out_shape=(out, out),
        grid=(rows // tile,),
        in_specs=[row_block, bias_block, *whole],
        out_specs=(row_block, row_block),
        interpret=interpret,
    )(y_rows, first_bias, *weights, *biases)
    return t._unflat(x[:n, :features], ladj[:n, :features], lead, unsort=True)


def _parameters(t, h: jax.Array, width: int) -> list[jax.Array]:
    """The univariate parameters in parameter-major outputs ``h`` ``(rows, total * width)``.

    Returns one array per parameter, ``(rows, width, *shape)``.
    """
    params, offset = [], 0
    for shape in t.shapes:
        size = math.prod(shape)
        slots = [h[:, (offset + j) * width : (offset + j + 1) * width] for j in range(size)]
        if shape:
            params.append(jnp.stack(slots, axis=-1).reshape(*slots[0].shape, *shape))
        else:
            params.append(slots[0])
        offset += size
    return params


@dataclasses.dataclass(frozen=True)
class PallasFullPass:
    """``inverse=`` option: the full-pass inverse in one Pallas kernel per transform.

    Args:
        tile: Rows per program of the kernel.
        interpret: Pallas' interpret mode; ``None`` for on the CPU only (the kernel is
            meant for GPUs, where it compiles through Triton).
    """

    tile: int = 128
    interpret: bool | None = None
    name: ClassVar[str] = "pallas_full_pass"

    def __post_init__(self):
        positive_int(self.tile, "tile")

    def __call__(self, t, y: jax.Array):
        """Returns ``x`` and ``log|det dx/dy|`` of ``t`` at ``y``."""
        return pallas_full_pass_inverse(t, y, self.tile, self.interpret)
