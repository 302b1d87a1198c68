"""The masked autoregressive bijection, the choice of its inverse, and the reference inverse.

The bijection maps data to noise in parallel, ``y_i = f(x_i; phi_i(x_<i, c))``; its
inverse is sequential. ``full_pass_inverse`` is the reference: ``steps`` full passes
of the network. ``maf_jax.inverses.incremental`` does the arithmetic of one pass in total.

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core import _pytree
from maf_jax.core._checks import check_event
from maf_jax.core.masks import MadeLayout
from maf_jax.core.network import Weights, mlp
from maf_jax.inverses.implicit import implicit_inverse
from maf_jax.inverses.incremental import Incremental
from maf_jax.inverses.pallas import PallasFullPass

__all__ = [
    "DERIVATIVES",
    "INVERSES",
    "AutoregressiveTransform",
    "FullPass",
    "as_inverse",
    "full_pass_inverse",
]

# Features from which the weights are put in feature order by gathers rather than
# one-hot products (train step, batch 512: at 256 features, hidden 128, the products
# made the step 1.25x the dense MLP's, the gathers 1.02x; from 5 to 64 features the
# gathers' scatter kernels made it 1-8% slower than the products)
GATHER_FROM = 128

# "autodiff" is deprecated: MaskedAutoregressiveTransform warns when built with it
DERIVATIVES = ("implicit", "autodiff")


@_pytree.dataclass
class AutoregressiveTransform:
    """Masked autoregressive bijection from data ``x`` to noise ``y``.

    Built by ``MaskedAutoregressiveTransform(c)``; a JAX pytree whose static fields
    (everything but the arrays) are part of its structure, so that ``jax.jit``
    traces again for another setting. The network sees the features sorted by
    ``order``, so that the masks depend only on ``layout``.

    Attributes:
        weights: Masked ``(kernel, bias)`` pairs of the network, kernels
            ``(in, out)``, inputs being the sorted features then the context.
        order: Feature order, a permutation of ``range(features)``.
        context: The context, shape ``(*batch, context)``, or ``None``.
        layout: The static MADE structure.
        univariate: Constructor of the elementwise bijection from its parameters.
        shapes: Shape of each univariate parameter, per feature.
        activation: Nonlinearity of the network.
        precision: Precision of the network's products.
        inverter: The inverse behind ``inverse_and_log_det``, a callable
            ``inverse(t, y) -> (x, log|det dx/dy|)`` such as ``Incremental()``.
        derivative: How the inverse is differentiated: ``"implicit"`` (by the
            implicit function theorem, ``maf_jax.inverses.implicit``, whatever the inverter)
            or ``"autodiff"`` (through the inverter's operations, each transform
            recomputed in the backward pass; deprecated, removed in the next
            release: ``MaskedAutoregressiveTransform`` warns when built with it).
    """

    weights: Weights
    order: jax.Array
    context: jax.Array | None
    layout: MadeLayout = _pytree.static()
    univariate: Callable = _pytree.static()
    shapes: tuple[tuple[int, ...], ...] = _pytree.static()
    activation: Callable = _pytree.static()
    precision: jax.lax.Precision = _pytree.static(default=jax.lax.Precision.HIGHEST)
    inverter: Callable = _pytree.static(default=Incremental())
    derivative: str = _pytree.static(default="implicit")

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

    # ``order`` is a permutation: gathers by it need no bounds handling, and with
    # mode="clip" JAX adds none (the default fills out-of-bounds entries with NaN,
    # a compare and select in every kernel that reads the result).

    def _sort(self, x: jax.Array) -> jax.Array:
        return jnp.take(x, jnp.argsort(self.order), axis=-1, mode="clip")

    def _unsort(self, x: jax.Array) -> jax.Array:
        return jnp.take(x, self.order, axis=-1, mode="clip")

    def _original_weights(self, gather: bool | None = None) -> Weights:
        """The weights for features in their original order, outputs parameter-major.

        Feature ``i`` sits at sorted position ``order[i]``, so the first kernel's rows
        and the last layer's outputs are gathered by ``order``; outputs are also
        reordered from ``(features, total)`` to ``(total, features)`` so that each
        parameter is a contiguous slice. Gathering weights instead of activations
        keeps gathers and their scatter gradients off the batch.

        Args:
            gather: Gathers (``True``) or one-hot products (``False``); by default
                gathers from ``GATHER_FROM`` features.
        """
        features, total = self.layout.features, self.layout.total
        if not (features >= GATHER_FROM if gather is None else gather):
            # one-hot products: their gradients are products too, where a gather's
            # is a scatter, a few more kernels to compile and run
            onehot = jax.nn.one_hot(self.order, features, dtype=self.weights[0][0].dtype)
            einsum = functools.partial(jnp.einsum, precision=jax.lax.Precision.HIGHEST)
            rows = functools.partial(einsum, "id,d...->i...", onehot)
            outputs = functools.partial(einsum, "id,...dt->...ti", onehot)
        else:  # a product costs features^2 x units: 20% of a step at 256 features
            take = functools.partial(jnp.take, indices=self.order, mode="clip", unique_indices=True)
            rows = functools.partial(take, axis=0)
            outputs = lambda a: jnp.swapaxes(take(a, axis=-2), -1, -2)  # noqa: E731
        (kernel, bias), *rest = self.weights
        layers = [(jnp.concatenate([rows(kernel[:features]), kernel[features:]]), bias), *rest]
        # the last layer's bias as one more row of its kernel: one reordering, not two
        w, b = layers[-1]
        w = outputs(jnp.concatenate([w, b[None]]).reshape(w.shape[0] + 1, features, total))
        w = w.reshape(w.shape[0], -1)
        layers[-1] = (w[:-1], w[-1])
        return tuple(layers)

    def _conditioner(self, x: jax.Array, context: jax.Array | None, weights: Weights):
        """Univariate bijection for rows ``x`` ``(N, D)`` in their original order.

        ``weights`` are the parameter-major ``_original_weights``.
        """
        inputs = x if context is None else jnp.concatenate([x, context], axis=-1)
        phi = mlp(weights, self.activation, inputs, self.precision, self.layout.wiring)
        # split, not sliced: the gradient is then one concatenation, where the slices'
        # pads let XLA fuse every later transform's cotangents again into each one's
        sizes = [math.prod(shape) * x.shape[1] for shape in self.shapes]
        parts = jnp.split(phi, np.cumsum(sizes)[:-1].tolist(), axis=-1)
        params = [
            part
            if not shape
            else jnp.moveaxis(part.reshape(x.shape[0], -1, x.shape[1]), 1, -1).reshape(
                *x.shape, *shape
            )
            for part, shape in zip(parts, self.shapes, strict=True)
        ]
        return self.univariate(*params)

    def _flat(self, x: jax.Array, sort: bool = False):
        """Broadcasts against the context and flattens to ``(N, D)``.

        Sorts the features by ``order`` first if ``sort``.
        """
        lead = self._lead_shape(x)
        x = self._sort(x) if sort else x
        # explicit sizes, no -1: a batch may be empty
        rows = math.prod(lead)
        x = jnp.broadcast_to(x, (*lead, x.shape[-1])).reshape(rows, x.shape[-1])
        context = None
        if self.context is not None:
            size = self.context.shape[-1]
            context = jnp.broadcast_to(self.context, (*lead, size)).reshape(rows, size)
        return x, context, lead

    def _unflat(self, x: jax.Array, ladj: jax.Array, lead, unsort: bool = False):
        x = self._unsort(x) if unsort else x
        return x.reshape(*lead, x.shape[-1]), ladj.sum(-1).reshape(lead)

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
        """Noise to data with the ``inverter``, differentiated as ``derivative`` says.

        Args:
            y: Noise of shape ``(*, features)``.

        Returns:
            ``x`` of shape ``(*, features)`` and ``log|det dx/dy|`` of shape ``(*)``.
        """
        y, context, lead = self._flat(self._check(y, "y"))
        flat = dataclasses.replace(self, context=context)
        if self.derivative == "implicit":
            x, ladj = implicit_inverse(flat, y)
        else:  # recomputed in the backward pass rather than stored
            x, ladj = jax.checkpoint(self.inverter)(flat, y)
        return x.reshape(*lead, y.shape[-1]), ladj.reshape(lead)

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


@dataclasses.dataclass(frozen=True)
class FullPass:
    """``inverse=`` option: the reference inverse, ``steps`` full passes.

    Slower than ``Incremental`` by about ``steps`` times; its program is the
    smallest, and it is what the tests compare every other inverse with.
    """

    name: ClassVar[str] = "full_pass"

    def __call__(self, t: AutoregressiveTransform, y: jax.Array):
        """Returns ``x`` and ``log|det dx/dy|`` of ``t`` at ``y``."""
        return full_pass_inverse(t, y)


INVERSES = {"incremental": Incremental, "full_pass": FullPass, "pallas_full_pass": PallasFullPass}


def as_inverse(inverse) -> Callable:
    """Returns the inverse that ``inverse`` names, or ``inverse`` if it is one.

    Args:
        inverse: A name of ``INVERSES`` (``"incremental"``, ``"full_pass"``) or a
            hashable callable ``inverse(t, y) -> (x, log|det dx/dy|)`` such as
            ``Incremental(blocks=4)``.

    Raises:
        ValueError: For an unknown name or an object that is not a hashable callable.
    """
    if isinstance(inverse, str):
        if inverse not in INVERSES:
            raise ValueError(f"inverse must be one of {sorted(INVERSES)}, got {inverse!r}")
        return INVERSES[inverse]()
    try:
        hash(inverse)
    except TypeError:
        inverse = None
    if not callable(inverse) or isinstance(inverse, type):
        raise ValueError(
            f"inverse must be one of {sorted(INVERSES)} or a hashable callable "
            "inverse(t, y) -> (x, ladj) such as maf_jax.Incremental(blocks=4)"
        )
    return inverse
