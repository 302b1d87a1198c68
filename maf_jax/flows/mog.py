"""MAF MoG: a MAF whose base is a MADE with a mixture of Gaussians per feature (Flax NNX)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.mixture import LOG_SCALE_BOUND
from maf_jax.core._checks import check_event, positive_int
from maf_jax.core.masks import MadeLayout
from maf_jax.core.network import as_precision
from maf_jax.distributions import AutoregressiveMixture
from maf_jax.flows.autoregressive import MAF
from maf_jax.nn.layers import MaskedMLP

__all__ = ["MADEMoG", "MAFMoG"]


def _initial_bias(features: int, components: int) -> np.ndarray:
    """Output biases ``(features, 3, K)`` that start every mixture near ``N(0, 1)``.

    Equal weights, means at the normal's quantiles ``(k + 1/2) / K`` times ``s``,
    scales ``s`` with ``s^2 (1 + mean(q^2)) = 1``: unit variance, and components that
    differ from the start, so that gradients tell them apart.
    """
    quantiles = np.array([NormalDist().inv_cdf((k + 0.5) / components) for k in range(components)])
    scale = 1 / math.sqrt(1 + np.mean(quantiles**2))
    raw_log_scale = math.log(scale) / (1 - abs(math.log(scale)) / LOG_SCALE_BOUND)  # soft_bound^-1
    bias = np.stack([np.zeros(components), scale * quantiles, np.full(components, raw_log_scale)])
    return np.broadcast_to(bias, (features, 3, components))


class MADEMoG(nnx.Module):
    """The parameters of a MADE MoG: ``MADEMoG(c)`` is an ``AutoregressiveMixture``.

    Args:
        features: The number of features.
        context: The number of context features.
        components: Gaussians per feature ``K``.
        hidden_features: Sizes of the hidden layers.
        activation: Nonlinearity of the network.
        rngs: Random number generators for the initial weights.
        param_dtype: The dtype of the parameters.
        precision: Precision of the network's products (see ``MAF``).

    Every feature's mixture starts near a standard normal, its components spread
    over it (equal weights, means at the normal's quantiles).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        components: int = 10,
        hidden_features: Sequence[int] = (64, 64),
        activation=jax.nn.relu,
        *,
        rngs: nnx.Rngs,
        param_dtype=jnp.float32,
        precision="highest",
    ):
        features = positive_int(features, "features")
        context = positive_int(context, "context", minimum=0)
        self.components = positive_int(components, "components")
        layout = MadeLayout(features, context, features, tuple(hidden_features), 3 * components)
        self.layout = layout
        self.precision = as_precision(precision)
        self.hyper = MaskedMLP(
            layout.masks,
            activation,
            layout.wiring,
            rngs=rngs,
            param_dtype=param_dtype,
            precision=self.precision,
        )
        last = self.hyper.layers[-1]
        last.bias[...] = jnp.asarray(_initial_bias(features, components).ravel(), param_dtype)

    def __call__(self, c: jax.Array | None = None) -> AutoregressiveMixture:
        """Returns the mixture given the context ``c`` ``(*batch, context)`` or ``None``."""
        if self.layout.context:
            c = check_event(c, self.layout.context, "context c", what="context")
        return AutoregressiveMixture(
            weights=self.hyper.weights,
            context=c if self.layout.context else None,
            layout=self.layout,
            activation=self.hyper.activation,
            precision=self.precision,
        )


class MAFMoG(MAF):
    """MAF MoG: masked autoregressive transforms on a MADE MoG base.

    The paper's MAF MoG: the ``transforms`` of a ``MAF`` map the data to ``u``, whose
    density is a MADE with ``components`` Gaussians per feature, conditional on the
    context when the flow is. ``log_prob`` is exact; sampling draws ``u`` by the
    base's own autoregressive inverse (``AutoregressiveMixture.transform``), then
    inverts the transforms: each about one network pass.

    Args:
        features: The number of features.
        context: The number of context features.
        transforms: The number of autoregressive transforms.
        randperm: Whether each transform gets a random feature order.
        rngs: Random number generators for weights and permutations.
        components: Gaussians per feature in the base ``K``.
        **kwargs: Passed to ``MAF``; the base's network takes the transforms'
            ``hidden_features``, ``activation``, ``param_dtype`` and ``precision``.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> flow = MAFMoG(3, context=2, components=5, rngs=nnx.Rngs(0))
        >>> c = jax.random.normal(jax.random.key(1), (2,))
        >>> flow(c).sample(jax.random.key(2), (4,)).shape
        (4, 3)

    References:
        Papamakarios et al., Masked Autoregressive Flow for Density Estimation,
        2017, https://arxiv.org/abs/1705.07057
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 5,
        randperm: bool = False,
        *,
        rngs: nnx.Rngs,
        components: int = 10,
        **kwargs,
    ):
        super().__init__(features, context, transforms, randperm, rngs=rngs, **kwargs)
        transform = self.transforms.stacked  # the base's network takes its settings
        self.mixture = MADEMoG(
            features,
            context,
            components,
            transform.layout.hidden_features,
            transform.hyper.activation,
            rngs=rngs,
            param_dtype=self.param_dtype,
            precision=transform.precision,
        )

    def base(self, c: jax.Array | None = None) -> AutoregressiveMixture:
        """The MADE MoG given the context ``c``."""
        return self.mixture(c)
