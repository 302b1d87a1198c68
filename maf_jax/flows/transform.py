"""The masked autoregressive transform: a MADE's parameters and orders (Flax NNX)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.autoregressive import DERIVATIVES, AutoregressiveTransform, as_inverse
from maf_jax.bijections.univariate import MonotonicAffineTransform
from maf_jax.core._checks import check_event, deprecated, positive_int
from maf_jax.core.graph import check_adjacency
from maf_jax.core.masks import MadeLayout, check_order
from maf_jax.core.network import as_precision
from maf_jax.nn.layers import MaskedMLP

__all__ = ["MaskedAutoregressiveTransform", "Order"]


class Order(nnx.Variable):
    """A fixed feature order; not a trainable parameter."""


def _check_shapes(shapes) -> tuple[tuple[int, ...], ...]:
    try:
        shapes = tuple(tuple(int(d) for d in shape) for shape in shapes)
    except TypeError:
        raise ValueError(
            f"shapes must be a sequence of parameter shapes such as ((), ()), got {shapes!r}"
        ) from None
    if not shapes or any(d < 1 for shape in shapes for d in shape):
        raise ValueError(f"shapes must be a non-empty sequence of shapes, got {shapes!r}")
    return shapes


class MaskedAutoregressiveTransform(nnx.Module):
    """Masked autoregressive transform: parameters of ``t(c)``.

    Feature ``i`` of ``y = t(c).forward(x)`` is ``f(x_i; phi_i)`` where ``phi_i`` is
    computed by a masked MLP from the context ``c`` and the features ``x_j`` with
    ``order[j] // ceil(features / passes) < order[i] // ceil(features / passes)``.

    Args:
        features: The number of features ``D``.
        context: The number of context features ``C``.
        passes: Passes of the inverse: ``features`` (default) is fully
            autoregressive, 2 a coupling transform.
        order: Feature order, a permutation of ``range(features)``; ascending if
            ``None``.
        univariate: Constructor of the elementwise bijection from its parameters;
            see ``maf_jax.bijections.univariate``.
        shapes: Shape of each univariate parameter, per feature.
        hidden_features: Sizes of the hidden layers.
        activation: Nonlinearity of the network.
        rngs: Random number generators for the initial weights.
        param_dtype: The dtype of the parameters.
        precision: Precision of the network's products: ``"highest"`` (full
            float32 on every backend, the default, so that the sequential inverse
            and the parallel forward round alike), ``"high"``, ``"default"`` (the
            backend's: TF32 on recent NVIDIA GPUs, bfloat16 passes on TPUs) or a
            ``jax.lax.Precision``.
        inverse: The inverse behind sampling: ``"incremental"`` (the default,
            about one network pass), ``"full_pass"`` (``passes`` network passes, the
            reference), or an object such as ``maf_jax.Incremental(blocks=4)``.
        derivative: How sampling is differentiated (``rsample``): ``"implicit"``
            (the default: by the implicit function theorem, about three network
            passes whatever the inverse, storing only the samples) or
            ``"autodiff"`` (through the inverse's operations; deprecated: building
            a transform with it emits a ``DeprecationWarning``, and it will be
            removed in the next release).
        degrees: The degree of each hidden unit, one ascending sequence per hidden
            layer (a unit of degree ``d`` sees the features of rank ``<= d``); spread
            evenly by default. ``maf_jax.interop.from_zuko`` sets zuko's.
        adjacency: A DAG over the features, as in zuko: boolean ``(features,
            features)`` or ``(features, features + context)``, ``A[i, j]`` when
            feature ``i`` may depend on input ``j``, ones on the diagonal. Feature
            ``i`` then depends on exactly its row; the order follows the graph and
            the inverse takes one step per feature (zuko's ``passes`` is the
            graph's depth). ``order`` and ``passes`` must be left out.
        residual: Whether the network is zuko's masked residual network: per hidden
            size a masked linear layer (none between equal sizes), then a residual
            block ``h + W_2 act(W_1 h + b_1) + b_2`` whose masks keep the
            autoregressive structure; the activation acts only inside the blocks.
        identity_init: Whether the network's last layer starts at zero, so that
            the transform starts as the identity (both univariate transforms are
            the identity at zero parameters); otherwise it starts with small
            weights (``output_gain`` 1e-2 of ``MaskedMLP``), near the identity.

    Settings are static: ``jax.jit`` traces again for a transform built with
    others, and two transforms with different settings coexist in one program.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> t = MaskedAutoregressiveTransform(3, context=2, rngs=nnx.Rngs(0))
        >>> y, ladj = t(jnp.ones(2)).forward_and_log_det(jnp.ones((5, 3)))
        >>> y.shape, ladj.shape
        ((5, 3), (5,))
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        passes: int | None = None,
        order: Sequence[int] | None = None,
        univariate: Callable = MonotonicAffineTransform,
        shapes: Sequence[Sequence[int]] = ((), ()),
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable = jax.nn.relu,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        precision="highest",
        inverse="incremental",
        derivative="implicit",
        degrees=None,
        adjacency=None,
        residual: bool = False,
        identity_init: bool = False,
    ):
        features = positive_int(features, "features")
        context = positive_int(context, "context", minimum=0)
        if not isinstance(identity_init, bool):
            raise ValueError(f"identity_init must be True or False, got {identity_init!r}")
        if adjacency is not None:
            if order is not None or passes is not None:
                raise ValueError("adjacency sets the order and the passes: give neither")
            adjacency = check_adjacency(adjacency, features, context)
            passes = features
        passes = features if passes is None else positive_int(passes, "passes")
        order = np.arange(features) if order is None else check_order(order, features)
        self.shapes = _check_shapes(shapes)
        total = sum(math.prod(shape) for shape in self.shapes)
        self.layout = MadeLayout(
            features,
            context,
            passes,
            tuple(hidden_features),
            total,
            degrees=degrees,
            adjacency=adjacency,
            residual=residual,
        )
        if adjacency is not None:
            order = self.layout.graph_order
        self.univariate = univariate
        self.precision = as_precision(precision)
        self.inverter = as_inverse(inverse)
        if derivative not in DERIVATIVES:
            raise ValueError(f"derivative must be one of {DERIVATIVES}, got {derivative!r}")
        if derivative == "autodiff":
            deprecated(
                'derivative="autodiff" is deprecated and will be removed in the next '
                'release; use the default, derivative="implicit"'
            )
        self.derivative = derivative
        self.order = Order(jnp.asarray(order, jnp.int32))
        self.identity_init = identity_init
        self.hyper = MaskedMLP(
            self.layout.masks,
            activation,
            self.layout.wiring,
            rngs=rngs,
            param_dtype=param_dtype,
            output_gain=0.0 if identity_init else 1e-2,
            precision=self.precision,
        )

    @property
    def features(self) -> int:
        """The number of features."""
        return self.layout.features

    @property
    def context(self) -> int:
        """The number of context features."""
        return self.layout.context

    def _check_context(self, c):
        expected = self.layout.context
        if expected == 0:
            if c is not None:
                raise ValueError("this flow is unconditional (context=0): call it without c")
            return None
        if c is None:
            raise ValueError(
                f"this flow is conditional: call it with a context c of shape (*, {expected})"
            )
        return check_event(c, expected, "context c", what="context")

    def __call__(self, c: jax.Array | None = None) -> AutoregressiveTransform:
        """Returns the bijection from data to noise given the context ``c``.

        Args:
            c: Context of shape ``(*batch, context)``, or ``None`` if unconditional.
        """
        return AutoregressiveTransform(
            # the masks are the layout's NumPy arrays: constants that XLA folds in
            weights=self.hyper.weights,
            order=self.order[...],
            context=self._check_context(c),
            layout=self.layout,
            univariate=self.univariate,
            shapes=self.shapes,
            activation=self.hyper.activation,
            precision=self.precision,
            inverter=self.inverter,
            derivative=self.derivative,
        )
