"""The pure functions of a network: matrix products at a set precision and the MLP."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["PRECISIONS", "Weights", "as_precision", "matmul", "mlp"]

Weights = tuple[tuple[jax.Array, jax.Array], ...]

# JAX's default float32 product is TF32 on recent NVIDIA GPUs and one bfloat16 pass on
# TPUs; then the sequential inverse and the parallel forward round differently, and a
# sample's log-density disagrees with the log_prob of that sample by ~1e-3. maf_jax's
# default is therefore "highest", full float32 everywhere (what CPUs do anyway).
PRECISIONS = {
    "highest": jax.lax.Precision.HIGHEST,
    "high": jax.lax.Precision.HIGH,
    "default": jax.lax.Precision.DEFAULT,
}


def as_precision(precision) -> jax.lax.Precision:
    """Returns ``precision`` as a ``jax.lax.Precision``.

    Args:
        precision: A name of ``PRECISIONS``, a ``jax.lax.Precision``, or ``None``
            for the backend's default.

    Raises:
        ValueError: For anything else.
    """
    if precision is None:
        return jax.lax.Precision.DEFAULT
    if isinstance(precision, jax.lax.Precision):
        return precision
    if isinstance(precision, str) and precision.lower() in PRECISIONS:
        return PRECISIONS[precision.lower()]
    raise ValueError(
        f"precision must be one of {sorted(PRECISIONS)}, a jax.lax.Precision or None, "
        f"got {precision!r}"
    )


def matmul(a: jax.Array, b: jax.Array, precision: jax.lax.Precision) -> jax.Array:
    """``a @ b`` at ``precision``."""
    return jnp.matmul(a, b, precision=precision)


def mlp(
    weights: Weights, activation: Callable, x: jax.Array, precision: jax.lax.Precision
) -> jax.Array:
    """Applies a multilayer perceptron with the activation between layers.

    Args:
        weights: ``(kernel, bias)`` pairs, kernels of shape ``(in, out)`` with the
            masks already applied.
        activation: Elementwise nonlinearity.
        x: Inputs of shape ``(*, in)``.
        precision: Precision of the products.

    Returns:
        Outputs of shape ``(*, out)`` of the last layer.
    """
    *hidden, (kernel, bias) = weights
    for w, b in hidden:
        x = activation(matmul(x, w, precision) + b)
    return matmul(x, kernel, precision) + bias
