"""A flow fitted on standardised data, evaluated in the units of the data (Flax NNX)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.standardize import Compose, Standardize, statistics
from maf_jax.core._checks import check_event
from maf_jax.core._pytree import float_dtype
from maf_jax.distributions import NormalizingFlow
from maf_jax.flows.autoregressive import bounded

__all__ = ["Standardization", "Standardized", "unwrapped"]


class Standardization(nnx.Variable):
    """Fixed standardisation statistics; not trainable."""


def _statistic(value, size: int, name: str, what: str, dtype) -> Standardization:
    """``value`` as a ``(size,)`` statistic of ``dtype``: zeros or ones if ``None``."""
    scale = name.endswith("std")
    if value is None:
        value = np.ones(size) if scale else np.zeros(size)
    shape = np.shape(value)
    if shape not in ((), (size,)):
        raise ValueError(
            f"{name}: expected shape ({size},) (the flow's {what}={size}) or a scalar, "
            f"got shape {shape}"
        )
    if scale and not isinstance(value, jax.core.Tracer) and not (np.asarray(value) > 0).all():
        raise ValueError(f"{name}: standard deviations must be positive, got {value!r}")
    return Standardization(jnp.broadcast_to(jnp.asarray(value, dtype), (size,)))


class Standardized(nnx.Module):
    """A flow fitted on standardised data, evaluated in the units of the data.

    ``model(c)`` is the distribution of ``x`` with
    ``log p(x | c) = log p_flow((x - mean) / std | c') - sum(log std)`` and samples
    ``mean + std * x_flow``, where ``c' = (c - context_mean) / context_std``. For a
    flow with ``bounds`` (``flow.support``), ``x`` is first mapped to the real line
    and the statistics are in the mapped units (``from_data`` carries the data's
    own with ``Support.linearized``): the map onto the support is the outermost
    part, so samples stay inside it.

    Args:
        flow: The flow on standardised data, e.g. a ``MAF``.
        mean: Data mean, shape ``(features,)`` or a scalar; zeros if ``None``.
        std: Data standard deviation, positive, shape ``(features,)`` or a scalar;
            ones if ``None``.
        context_mean: Context mean, shape ``(context,)`` or a scalar; zeros if ``None``.
        context_std: Context standard deviation, positive, shape ``(context,)`` or a
            scalar; ones if ``None``.

    Each statistic is independent of the others: a missing mean is zeros and a
    missing standard deviation ones, whatever else is given. The statistics are held
    in the dtype of the flow's parameters (float32 at the least): a float64 flow
    standardises in float64.

    Raises:
        ValueError: For a statistic of another shape, a standard deviation that is
            not positive, or context statistics for an unconditional flow.
    """

    def __init__(self, flow: nnx.Module, mean=None, std=None, context_mean=None, context_std=None):
        dtype = float_dtype(nnx.state(flow, nnx.Param))
        features, contexts = flow.features, flow.context
        context_stats = (("context_mean", context_mean), ("context_std", context_std))
        given = [name for name, v in context_stats if v is not None and np.size(v)]
        if given and not contexts:
            raise ValueError(f"the flow is unconditional (context=0): give no {' or '.join(given)}")
        self.flow = flow
        self.mean = _statistic(mean, features, "mean", "features", dtype)
        self.std = _statistic(std, features, "std", "features", dtype)
        self.context_mean = _statistic(context_mean, contexts, "context_mean", "context", dtype)
        self.context_std = _statistic(context_std, contexts, "context_std", "context", dtype)

    @classmethod
    def from_data(cls, flow: nnx.Module, data, context=None) -> Standardized:
        """Takes the statistics of ``data`` ``(n, features)`` and ``context``.

        For a flow with ``bounds``, carried to the real line by the map linearised
        at the data's mean (``Support.linearized``).

        Raises:
            ValueError: For data on or outside the flow's bounds.
        """
        context_stats = statistics(context) if context is not None else (None, None)
        stats = statistics(data)
        support = getattr(flow, "support", None)
        if support is not None:
            dtype = float_dtype(nnx.state(flow, nnx.Param))
            support.check(data, "data", dtype)
            stats = support.linearized(*(jnp.asarray(s, dtype) for s in stats))
        return cls(flow, *stats, *context_stats)

    @property
    def features(self) -> int:
        """The number of features."""
        return self.flow.features

    @property
    def context(self) -> int:
        """The number of context features."""
        return self.flow.context

    def _context(self, c):
        """The context as the flow sees it: checked and standardised."""
        if c is not None and self.context:
            c = check_event(c, self.context, "context c", what="context")
            c = (c - self.context_mean[...]) / self.context_std[...]
        return c

    def _flow_inputs(self, x, c):
        """``x`` and ``c`` as the flow's transforms see them: mapped, standardised."""
        support = getattr(self.flow, "support", None)
        x = x if support is None else support.forward(x)
        return Standardize(self.mean[...], self.std[...]).forward(x), self._context(c)

    def update_batch_norms(self, x, c=None) -> None:
        """The flow's ``update_batch_norms`` on rows ``x`` in the units of the data."""
        self.flow._update_norms(*self._flow_inputs(x, c))

    def set_batch_norms(self, x, c=None) -> None:
        """The flow's ``set_batch_norms`` on rows ``x`` in the units of the data."""
        self.flow._set_norms(*self._flow_inputs(x, c))

    def __call__(self, c=None) -> NormalizingFlow:
        """Returns ``p(x | c)`` in the units of the data."""
        c = self._context(c)
        support = getattr(self.flow, "support", None)
        inner = self.flow(c) if support is None else self.flow.unconstrained(c)
        standardize = Standardize(self.mean[...], self.std[...])
        standardized = NormalizingFlow(
            transform=Compose(standardize, inner.transform),
            base=inner.base,
            batch_shape=inner.batch_shape,
        )
        return bounded(standardized, support)


def unwrapped(model: nnx.Module) -> nnx.Module:
    """The flow of ``model``: the one it wraps for a ``Standardized`` model, else ``model``."""
    return model.flow if isinstance(model, Standardized) else model
