"""Flax NNX modules of masked networks."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.core.network import Weights, Wiring, as_precision, matmul, mlp

__all__ = ["Mask", "MaskedLinear", "MaskedMLP"]


class Mask:
    """A fixed boolean connectivity mask ``(in, out)``: structure, not state.

    The mask is a read-only NumPy array, so that traced products fold it in as a
    constant, and it is hashable, so that a module holding it is static structure
    for ``jax.jit`` (it is not in ``nnx.state``, nor in checkpoints). A
    ``MaskedAutoregressiveTransform`` shares the arrays of its ``MadeLayout``.

    Args:
        value: Boolean array of shape ``(in, out)``.
    """

    def __init__(self, value):
        value = np.asarray(value, dtype=bool)
        if value.ndim != 2:
            raise ValueError(f"mask must be 2-D (in, out), got shape {value.shape}")
        if value.flags.writeable:
            value = value.copy()
            value.flags.writeable = False
        self.value = value
        self._hash = hash((value.shape, value.tobytes()))

    @property
    def shape(self) -> tuple[int, int]:
        """``(in, out)``."""
        return self.value.shape

    def __array__(self, dtype=None, copy=None):
        return self.value if dtype is None else self.value.astype(dtype)

    def __getitem__(self, index):
        return self.value[index]

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (
            isinstance(other, Mask)
            and self._hash == other._hash
            and np.array_equal(self.value, other.value)
        )

    def __repr__(self) -> str:
        return f"Mask(shape={self.shape}, connections={int(self.value.sum())})"


# Fewest values a layer's initialisation draws at once (``_draw``): layers up to
# 128 x 128 of new shapes compile nothing, for 64 KB per draw
# (benchmarks/build_time.py: 2**16 doubled a cached build's time, 4096 compiled
# again for hidden 128)
SMALLEST_DRAW = 2**14


def _uniform(key: jax.Array, shape: tuple[int, ...], dtype, bound: float, mask=None):
    """``jax.random.uniform(key, shape, dtype, -bound, bound)``, zero where ``mask`` is not.

    Drawn by ``_draw``: outside ``jax.jit`` with JAX's default generator, masked on
    the host and put on the default device (``jnp.asarray`` would compile a copy per
    shape).
    """
    values = _draw(jax.random.uniform, key, shape, dtype, -bound, bound)
    if not isinstance(values, np.ndarray):
        return values if mask is None else jnp.where(mask, values, 0)
    if mask is not None:
        values = np.where(mask, values, np.zeros((), values.dtype))
    return jax.device_put(values)


def _draw(sampler: Callable, key: jax.Array, shape: tuple[int, ...], dtype, *args):
    """``sampler(key, shape, dtype, *args)``, a ``jax.random`` distribution.

    Built outside ``jax.jit``, a module draws its weights op by op, and each new
    shape compiles programs of its own: a ``MAF`` of 5 transforms of new shapes
    took 2-4 s to build, most of it compiling the random number generator. With
    JAX's default generator (threefry, partitionable) the first ``n`` values of a
    flat draw are those of any shape of ``n`` values, so the values are drawn flat,
    ``SMALLEST_DRAW`` or the next power of two, then cut and reshaped on the host:
    the same numbers from a few programs per process, as a NumPy array. Traced
    (``nnx.eval_shape``, ``jax.jit``) or with another generator, it draws directly
    and returns a JAX array.
    """
    fast = (
        not isinstance(key, jax.core.Tracer)
        and str(jax.random.key_impl(key)) == "threefry2x32"
        and getattr(jax.config, "jax_threefry_partitionable", True)  # the only way, once gone
    )
    if not fast:
        return sampler(key, shape, dtype, *args)
    size = math.prod(shape)
    draw = max(SMALLEST_DRAW, 1 << max(size - 1, 0).bit_length())
    return np.asarray(_flat(sampler, key, draw, jnp.dtype(dtype), *args))[:size].reshape(shape)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _flat(sampler: Callable, key: jax.Array, size: int, dtype, *args) -> jax.Array:
    return sampler(key, (size,), dtype, *args)


class MaskedLinear(nnx.Module):
    """Linear layer ``y = x @ (W * M) + b`` with a fixed boolean mask ``M``.

    Weights and biases are drawn from ``U(-b, b)`` with ``b = gain / sqrt(in)``, as
    for a dense layer of the same shape (PyTorch's default, zuko's), then masked:
    units with few inputs start small, which held-out likelihoods favour
    (benchmarks/density.py).

    Args:
        mask: Boolean array of shape ``(in_features, out_features)``, or a ``Mask``.
        rngs: Random number generators; ``rngs.params()`` draws the weights.
        param_dtype: The dtype of the parameters.
        gain: Scale of the initial weights.
        precision: Precision of the product: ``"highest"`` (full float32, the
            default), ``"high"``, ``"default"`` (the backend's) or a
            ``jax.lax.Precision``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = MaskedLinear(jnp.tril(jnp.ones((3, 3), bool)), rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((5, 3))).shape
        (5, 3)
    """

    def __init__(
        self,
        mask,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        gain: float = 1.0,
        precision="highest",
    ):
        mask = mask if isinstance(mask, Mask) else Mask(mask)
        bound = gain / np.sqrt(max(mask.shape[0], 1))
        kernel = _uniform(rngs.params(), mask.shape, param_dtype, bound, mask.value)
        bias = _uniform(rngs.params(), mask.shape[1:], param_dtype, bound)
        self.in_features, self.out_features = mask.shape
        self.mask = mask
        self.precision = as_precision(precision)
        self.kernel = nnx.Param(kernel)
        self.bias = nnx.Param(bias)

    @property
    def weights(self) -> tuple[jax.Array, jax.Array]:
        """The masked kernel ``(in, out)`` and the bias ``(out,)``."""
        kernel = self.kernel[...]
        return kernel * self.mask.value.astype(kernel.dtype), self.bias[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns ``x @ (W * M) + b`` for ``x`` of shape ``(*, in_features)``."""
        kernel, bias = self.weights
        return matmul(x, kernel, self.precision) + bias


class MaskedMLP(nnx.Module):
    """Multilayer perceptron of masked linear layers.

    Args:
        masks: One boolean mask ``(in, out)`` per layer, consecutive shapes chaining.
        activation: Nonlinearity between layers.
        wiring: Which hidden layers the activation follows and which add an earlier
            one (``maf_jax.network.Wiring``); ``None`` for every hidden layer
            activated, no skips.
        rngs: Random number generators.
        param_dtype: The dtype of the parameters.
        output_gain: Scale of the initial weights of the last layer; small values
            start a flow close to the identity, so that training starts from the
            base density rather than from a random distortion of it.
        precision: Precision of the products, as for ``MaskedLinear``.
    """

    def __init__(
        self,
        masks: Sequence,
        activation: Callable = jax.nn.relu,
        wiring: Wiring | None = None,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        output_gain: float = 1e-2,
        precision="highest",
    ):
        masks = [m if isinstance(m, Mask) else Mask(m) for m in masks]
        shapes = [m.shape for m in masks]
        if not shapes or any(a[1] != b[0] for a, b in zip(shapes[:-1], shapes[1:])):
            raise ValueError(f"masks must be a non-empty chain (in, out), got {shapes}")
        wiring = wiring or Wiring.plain(len(masks) - 1)
        if len(wiring.skips) != len(masks) - 1 or any(
            s is not None and shapes[s][1] != shapes[k][1] for k, s in enumerate(wiring.skips)
        ):
            raise ValueError(f"wiring {wiring} does not fit hidden layers of shapes {shapes[:-1]}")
        self.activation = activation
        self.wiring = wiring
        self.precision = as_precision(precision)
        gains = [1.0] * (len(masks) - 1) + [output_gain]
        self.layers = nnx.List(
            MaskedLinear(m, rngs=rngs, param_dtype=param_dtype, gain=g, precision=precision)
            for m, g in zip(masks, gains)
        )

    @property
    def weights(self) -> Weights:
        """The masked ``(kernel, bias)`` pair of every layer."""
        return tuple(layer.weights for layer in self.layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to ``x`` of shape ``(*, in)``."""
        return mlp(self.weights, self.activation, x, self.precision, self.wiring)
