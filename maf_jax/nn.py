"""Flax NNX modules of masked networks and the pure function that applies them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["PRECISION", "Mask", "MaskedLinear", "MaskedMLP", "matmul", "mlp"]

Weights = tuple[tuple[jax.Array, jax.Array], ...]

# Precision of every matrix product of maf_jax. JAX's default is TF32 on recent
# NVIDIA GPUs and one bfloat16 pass on TPUs; then the sequential inverse and the
# parallel forward round differently, and a sample's log-density disagrees with the
# log_prob of that sample by ~1e-3. HIGHEST is full float32 everywhere (on CPU it is
# what the default does anyway); set ``maf_jax.nn.PRECISION = None`` before tracing
# to use the backend's default.
PRECISION = jax.lax.Precision.HIGHEST


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b`` at ``PRECISION``."""
    return jnp.matmul(a, b, precision=PRECISION)


class Mask(nnx.Variable):
    """A fixed boolean connectivity mask; not a trainable parameter."""


def mlp(weights: Weights, activation: Callable, x: jax.Array) -> jax.Array:
    """Applies a multilayer perceptron with the activation between layers.

    Args:
        weights: ``(kernel, bias)`` pairs, kernels of shape ``(in, out)`` with the
            masks already applied.
        activation: Elementwise nonlinearity.
        x: Inputs of shape ``(*, in)``.

    Returns:
        Outputs of shape ``(*, out)`` of the last layer.
    """
    *hidden, (kernel, bias) = weights
    for w, b in hidden:
        x = activation(matmul(x, w) + b)
    return matmul(x, kernel) + bias


class MaskedLinear(nnx.Module):
    """Linear layer ``y = x @ (W * M) + b`` with a fixed boolean mask ``M``.

    Weights and biases are drawn from ``U(-b, b)`` with ``b = gain / sqrt(in)``, as
    for a dense layer of the same shape (PyTorch's default, zuko's), then masked:
    units with few inputs start small, which held-out likelihoods favour
    (benchmarks/density.py).

    Args:
        mask: Boolean array of shape ``(in_features, out_features)``.
        rngs: Random number generators; ``rngs.params()`` draws the weights.
        param_dtype: The dtype of the parameters.
        gain: Scale of the initial weights.
    """

    def __init__(self, mask, *, rngs: nnx.Rngs, param_dtype=jnp.float32, gain: float = 1.0):
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (in, out), got shape {mask.shape}")
        bound = gain / np.sqrt(max(mask.shape[0], 1))
        kernel = jax.random.uniform(rngs.params(), mask.shape, param_dtype, -bound, bound)
        self.in_features, self.out_features = mask.shape
        self.mask = Mask(jnp.asarray(mask))
        self.kernel = nnx.Param(jnp.where(mask, kernel, 0))
        self.bias = nnx.Param(
            jax.random.uniform(rngs.params(), (mask.shape[1],), param_dtype, -bound, bound)
        )

    @property
    def weights(self) -> tuple[jax.Array, jax.Array]:
        """The masked kernel ``(in, out)`` and the bias ``(out,)``."""
        return self.kernel[...] * self.mask[...], self.bias[...]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Returns ``x @ (W * M) + b`` for ``x`` of shape ``(*, in_features)``."""
        kernel, bias = self.weights
        return matmul(x, kernel) + bias


class MaskedMLP(nnx.Module):
    """Multilayer perceptron of masked linear layers.

    Args:
        masks: One boolean mask ``(in, out)`` per layer, consecutive shapes chaining.
        activation: Nonlinearity between layers.
        rngs: Random number generators.
        param_dtype: The dtype of the parameters.
        output_gain: Scale of the initial weights of the last layer; small values
            start a flow close to the identity, so that training starts from the
            base density rather than from a random distortion of it.
    """

    def __init__(
        self,
        masks: Sequence,
        activation: Callable = jax.nn.relu,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        output_gain: float = 1e-2,
    ):
        shapes = [np.shape(m) for m in masks]
        if not shapes or any(a[1] != b[0] for a, b in zip(shapes[:-1], shapes[1:])):
            raise ValueError(f"masks must be a non-empty chain (in, out), got {shapes}")
        self.activation = activation
        gains = [1.0] * (len(masks) - 1) + [output_gain]
        self.layers = nnx.List(
            MaskedLinear(m, rngs=rngs, param_dtype=param_dtype, gain=g)
            for m, g in zip(masks, gains)
        )

    @property
    def weights(self) -> Weights:
        """The masked ``(kernel, bias)`` pair of every layer."""
        return tuple(layer.weights for layer in self.layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the network to ``x`` of shape ``(*, in)``."""
        return mlp(self.weights, self.activation, x)
