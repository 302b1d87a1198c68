"""A flow fitted on standardised data, evaluated in the units of the data (Flax NNX)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.standardize import Compose, Standardize, statistics
from maf_jax.core._checks import check_event
from maf_jax.core._pytree import float_dtype
from maf_jax.distributions import NormalizingFlow

__all__ = ["Standardization", "Standardized"]


class Standardization(nnx.Variable):
    """Fixed standardisation statistics; not trainable."""


class Standardized(nnx.Module):
    """A flow fitted on standardised data, evaluated in the units of the data.

    ``model(c)`` is the distribution of ``x`` with
    ``log p(x | c) = log p_flow((x - mean) / std | c') - sum(log std)`` and samples
    ``mean + std * x_flow``, where ``c' = (c - context_mean) / context_std``.

    Args:
        flow: The flow on standardised data, e.g. a ``MAF``.
        mean: Data mean, shape ``(features,)``.
        std: Data standard deviation, shape ``(features,)``.
        context_mean: Context mean, shape ``(context,)``; zeros if ``None``.
        context_std: Context standard deviation, shape ``(context,)``; ones if ``None``.

    The statistics are held in the dtype of the flow's parameters (float32 at the
    least): a float64 flow standardises in float64.
    """

    def __init__(self, flow: nnx.Module, mean, std, context_mean=None, context_std=None):
        contexts = flow.context
        dtype = float_dtype(nnx.state(flow, nnx.Param))
        self.flow = flow
        self.mean = Standardization(jnp.asarray(mean, dtype))
        self.std = Standardization(jnp.asarray(std, dtype))
        if context_mean is None:
            context_mean, context_std = np.zeros(contexts), np.ones(contexts)
        self.context_mean = Standardization(jnp.asarray(context_mean, dtype))
        self.context_std = Standardization(jnp.asarray(context_std, dtype))

    @classmethod
    def from_data(cls, flow: nnx.Module, data, context=None) -> Standardized:
        """Takes the statistics of ``data`` ``(n, features)`` and ``context``."""
        context_stats = statistics(context) if context is not None else (None, None)
        return cls(flow, *statistics(data), *context_stats)

    @property
    def features(self) -> int:
        """The number of features."""
        return self.flow.features

    @property
    def context(self) -> int:
        """The number of context features."""
        return self.flow.context

    def __call__(self, c=None) -> NormalizingFlow:
        """Returns ``p(x | c)`` in the units of the data."""
        if c is not None and self.context:
            c = check_event(c, self.context, "context c", what="context")
            c = (c - self.context_mean[...]) / self.context_std[...]
        inner = self.flow(c)
        standardize = Standardize(self.mean[...], self.std[...])
        return NormalizingFlow(
            transform=Compose(standardize, inner.transform),
            base=inner.base,
            batch_shape=inner.batch_shape,
        )
