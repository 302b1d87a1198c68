"""The pure functions of a network: matrix products at a set precision, wirings and the MLP."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "ACTIVATIONS",
    "PRECISIONS",
    "activation_name",
    "Weights",
    "Wiring",
    "as_precision",
    "matmul",
    "mlp",
]

Weights = tuple[tuple[jax.Array, jax.Array], ...]

# The activations a model can name (in checkpoints, on the command line, in zuko
# interop): one registry, read by each of them.
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,  # the tanh approximation
    "gelu_exact": functools.partial(jax.nn.gelu, approximate=False),  # torch's default
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,
}


def activation_name(activation: Callable) -> str:
    """The name of ``activation`` in ``ACTIVATIONS``.

    Raises:
        ValueError: For an activation that is not there, listing those that are.
    """
    for name, fn in ACTIVATIONS.items():
        if fn is activation or fn == activation:
            return name
    raise ValueError(f"activation {activation!r} is not one of {sorted(ACTIVATIONS)}")


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


@dataclasses.dataclass(frozen=True)
class Wiring:
    """How each hidden layer ``k`` is computed from the layers before it.

    ``h_k = act_k(h_{k-1} @ W_k + b_k + h_{skips[k]})``, where ``act_k`` is the
    activation if ``activated[k]`` and the identity otherwise, and the last term is
    there only if ``skips[k]`` is not ``None`` (an earlier layer of the same units).
    The output layer is ``h_{L-1} @ W + b``.

    Attributes:
        activated: Per hidden layer, whether the activation follows its product.
        skips: Per hidden layer, the earlier hidden layer added to its product, or
            ``None``.
    """

    activated: tuple[bool, ...]
    skips: tuple[int | None, ...]

    def __post_init__(self):
        if len(self.activated) != len(self.skips) or any(
            s is not None and not 0 <= s < k for k, s in enumerate(self.skips)
        ):
            raise ValueError(f"invalid wiring {self}")

    @classmethod
    def plain(cls, layers: int) -> Wiring:
        """An MLP: every hidden layer activated, no skips."""
        return cls((True,) * layers, (None,) * layers)

    @classmethod
    def residual(cls, hidden_features: Sequence[int]) -> tuple[Wiring, tuple[int, ...]]:
        """The wiring of zuko's ``MaskedMLP(..., residual=True)``.

        A linear layer into each hidden size (none between equal sizes), each followed
        by a residual block ``h + W_2 act(W_1 h + b_1) + b_2``; no activation outside
        the blocks.

        Returns:
            The wiring, and for each of its hidden layers the index of the hidden
            size it has (its units are those of that layer of ``hidden_features``).
        """
        activated, skips, sources = [], [], []
        for i, size in enumerate(hidden_features):
            if i == 0 or size != hidden_features[i - 1]:  # the linear layer
                activated += [False]
                skips += [None]
                sources += [i]
            block_input = len(activated) - 1
            activated += [True, False]
            skips += [None, block_input]
            sources += [i, i]
        return cls(tuple(activated), tuple(skips)), tuple(sources)

    def transposed(self) -> Wiring:
        """The wiring of the transposed network, with one more layer first.

        Layer ``j >= 1`` of the transposed network holds the cotangents of layer
        ``L - j`` (layer 0 those of the outputs); a skip ``s -> k`` becomes one from
        layer ``L - k`` to ``L - s``.

        Raises:
            ValueError: Where a layer is the source of more than one skip.
        """
        layers = len(self.skips)
        sources = [s for s in self.skips if s is not None]
        if len(set(sources)) != len(sources):
            raise ValueError("a layer added to more than one later layer has no transposed wiring")
        skips = [None] * (layers + 1)
        for k, s in enumerate(self.skips):
            if s is not None:
                skips[layers - s] = layers - k
        return Wiring((True, *self.activated[::-1]), tuple(skips))


def mlp(
    weights: Weights,
    activation: Callable,
    x: jax.Array,
    precision: jax.lax.Precision,
    wiring: Wiring | None = None,
) -> jax.Array:
    """Applies a multilayer perceptron, its hidden layers wired as ``wiring`` says.

    Args:
        weights: ``(kernel, bias)`` pairs, kernels of shape ``(in, out)`` with the
            masks already applied.
        activation: Elementwise nonlinearity.
        x: Inputs of shape ``(*, in)``.
        precision: Precision of the products.
        wiring: How hidden layers connect; ``None`` for the activation after every
            hidden layer and no skips.

    Returns:
        Outputs of shape ``(*, out)`` of the last layer.
    """
    *hidden, (kernel, bias) = weights
    wiring = wiring or Wiring.plain(len(hidden))
    values = []
    for (w, b), activated, skip in zip(hidden, wiring.activated, wiring.skips):
        x = matmul(x, w, precision) + b
        if skip is not None:
            x = x + values[skip]
        x = activation(x) if activated else x
        values.append(x)
    return matmul(x, kernel, precision) + bias
