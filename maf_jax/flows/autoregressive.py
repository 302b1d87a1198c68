"""Flax NNX flows: the MAF and the NSF, stacks of masked autoregressive transforms."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.batch_norm import batch_statistics, input_statistics
from maf_jax.bijections.chain import Chain
from maf_jax.bijections.spline import RationalQuadraticSpline
from maf_jax.bijections.standardize import Compose
from maf_jax.bijections.support import DEFAULT_LINK, TAIL, Support, check_link
from maf_jax.core._checks import positive_int
from maf_jax.core.masks import check_order
from maf_jax.distributions import DiagNormal, NormalizingFlow
from maf_jax.flows.transform import MaskedAutoregressiveTransform
from maf_jax.nn.batch_norm import BatchNorm
from maf_jax.nn.stack import Stack

__all__ = ["MAF", "NSF", "bounded"]

# ``link="learned"``: ``tails`` holds ``logit(2 share) / TAILS_GAIN``. Adam steps every
# parameter by about its learning rate whatever its scale, so the shares' logits move
# 30 times as fast as a weight: from 2% to 20% within some hundred steps at 1e-3,
# before early stopping ends a spline flow's training (within 30 epochs on
# ``benchmarks/npe.py``'s 5-D box, where at the pace of a weight they reached 3% and
# 0.52% of the draws lay next to a bound, against 0.06%; 8 seeds).
TAILS_GAIN = 30.0


class MAF(nnx.Module):
    """Masked Autoregressive Flow, with the interface of ``zuko.flows.MAF``.

    A stack of masked autoregressive transforms on a standard normal base. The
    transforms are held as one (``transforms``, a ``maf_jax.nn.Stack``): one
    ``MaskedAutoregressiveTransform`` whose parameters and orders have a leading
    axis, one array per kind of weight, applied by a ``lax.scan``.

    Orders alternate between ascending and descending (or ``order`` and
    ``features - 1 - order`` when an ``order`` is given), or are drawn at random
    from ``rngs`` when ``randperm=True``.

    Args:
        features: The number of features.
        context: The number of context features.
        transforms: The number of autoregressive transforms.
        randperm: Whether each transform gets a random feature order.
        rngs: Random number generators for weights and permutations.
        order: Feature order of the even transforms; odd ones are reversed.
        bounds: The support of the data: one ``(lower, upper)`` pair for every
            feature, or one per feature (shape ``(features, 2)``), ``None`` or an
            infinite value for an unbounded side. The flow then runs on the real
            line and ``maf_jax.bijections.Support`` maps it onto the support:
            samples always lie strictly inside, ``log_prob`` stays exact and is
            ``-inf`` outside. ``None`` (the default): the real line.
        link: How a feature with two finite bounds ``a < b`` maps to the real
            line: ``"learned"`` (the default: the identity, but within a share of
            the width of a bound, where a probit tail takes over; the share is a
            parameter per feature, ``tails``, trained with the flow's from 2%, so a
            posterior thin against the box keeps it as it is and a wide one gets
            long tails), ``"probit"`` (``Phi^{-1}((x - a) / (b - a))``, which bends
            the whole box), ``"linear"`` (the learned link's tails kept at 2%) or
            ``"logit"`` (sbi's map; flows saved before the probit use it).
            ``maf_jax.bijections.Support`` says which when.
        batch_norm: Whether a batch normalisation follows every transform (the
            paper's MAF): ``maf_jax.nn.BatchNorm``, with batch statistics in
            training mode (``flow.train()``, as built) and running averages in
            evaluation mode (``flow.eval()``); sampling always uses the running
            averages. ``maf_jax.fit`` switches the modes and updates the averages.
        batch_norm_axis: The ``jax.pmap`` or ``shard_map`` axis whose devices'
            rows the batch statistics cover (their mean and variance are averaged
            over it), as ``axis_name`` of ``flax.nnx.BatchNorm``; ``None`` (the
            default) for the rows in hand, which under ``jax.jit`` over a mesh
            are already every device's. Not stored in checkpoints: it describes
            the program, not the model (``flow.norms.stacked.axis_name``).
        param_dtype: The dtype of the parameters and of the base distribution.
        unroll: Longest chain whose forward is unrolled when differentiated
            (training compiles and runs faster through straight-line code; longer
            chains keep the loop).
        **kwargs: Passed to every ``MaskedAutoregressiveTransform``: ``passes``,
            ``hidden_features``, ``activation``, ``univariate``, ``shapes``,
            ``precision``, ``inverse``, ``derivative``, ``degrees``, ``adjacency``,
            ``residual``, ``identity_init``.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> flow = MAF(3, context=4, rngs=nnx.Rngs(0))
        >>> c = jax.random.normal(jax.random.key(1), (4,))
        >>> x = flow(c).sample(jax.random.key(2))
        >>> x.shape, flow(c).log_prob(x).shape
        ((3,), ())

    References:
        Papamakarios et al., Masked Autoregressive Flow for Density Estimation,
        2017, https://arxiv.org/abs/1705.07057
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        *,
        rngs: nnx.Rngs,
        order: Sequence[int] | None = None,
        bounds=None,
        link: str = DEFAULT_LINK,
        batch_norm: bool = False,
        batch_norm_axis: Hashable | None = None,
        param_dtype=jnp.float32,
        unroll: int = 10,
        **kwargs,
    ):
        features = positive_int(features, "features")
        check_link(link)  # also without bounds: a misspelt link is refused, not ignored
        self._support = None if bounds is None else Support.of(bounds, features, link)
        learned = bounds is not None and link == "learned"
        # per feature, the tails' share of its width, started at TAIL (TAILS_GAIN); one
        # assignment, a Param or None, so that NNX keeps the attribute as data
        start = math.log(2 * TAIL / (1 - 2 * TAIL)) / TAILS_GAIN
        self.tails = nnx.Param(jnp.full(features, start, param_dtype)) if learned else None
        transforms = positive_int(transforms, "transforms")
        self.unroll = positive_int(unroll, "unroll", minimum=0)
        if randperm and order is not None:
            raise ValueError("give either order or randperm=True, not both")
        if kwargs.get("adjacency") is not None:  # the graph sets every order
            if randperm or order is not None:
                raise ValueError("adjacency sets the orders: give neither order nor randperm")
            orders = [None] * transforms
        elif randperm:
            orders = [
                np.asarray(jax.random.permutation(rngs.params(), features))
                for _ in range(transforms)
            ]
        else:
            first = np.arange(features) if order is None else check_order(order, features)
            orders = [first, features - 1 - first]
            orders = [orders[i % 2] for i in range(transforms)]
        self.param_dtype = param_dtype
        self.transforms = Stack(
            MaskedAutoregressiveTransform(
                features, context, order=o, rngs=rngs, param_dtype=param_dtype, **kwargs
            )
            for o in orders
        )
        if not isinstance(batch_norm, bool):
            raise ValueError(f"batch_norm must be True or False, got {batch_norm!r}")
        if batch_norm_axis is not None and not batch_norm:
            raise ValueError("batch_norm_axis names the batch norms' axis: give batch_norm=True")
        norms = (
            BatchNorm(features, param_dtype=param_dtype, axis_name=batch_norm_axis) for _ in orders
        )
        self.norms = Stack(norms) if batch_norm else None

    @property
    def support(self) -> Support | None:
        """The map of the data's support onto the real line, ``None`` without ``bounds``.

        With ``link="learned"``, its tails' shares are those learned so far.
        """
        if self.tails is None:
            return self._support
        share = 0.5 * jax.nn.sigmoid(TAILS_GAIN * self.tails[...])
        return dataclasses.replace(self._support, share=share)

    @property
    def features(self) -> int:
        """The number of features."""
        return self.transforms.stacked.layout.features

    @property
    def context(self) -> int:
        """The number of context features."""
        return self.transforms.stacked.layout.context

    def __call__(self, c: jax.Array | None = None) -> NormalizingFlow:
        """Returns the distribution ``p(x | c)``.

        Args:
            c: Context of shape ``(*batch, context)``, or ``None`` if unconditional.

        Returns:
            A ``NormalizingFlow`` of batch shape ``batch`` and event shape
            ``(features,)``.
        """
        return bounded(self.unconstrained(c), self.support)

    def unconstrained(self, c: jax.Array | None = None) -> NormalizingFlow:
        """The distribution of the data mapped to the real line by ``support``.

        The flow itself when it has no ``bounds``. ``Standardized`` standardises
        between the two maps.
        """
        stacked = self.transforms(c)  # every leaf with the leading axis of the stack
        batch_shape = () if stacked.context is None else stacked.context.shape[1:-1]
        if self.norms is not None:
            stacked = Compose(stacked, self.norms())
        return NormalizingFlow(
            transform=Chain(stacked, batch_shape, self.unroll),
            base=self.base(c),
            batch_shape=batch_shape,
        )

    def _normalized_steps(self, c) -> Chain:
        if self.norms is None:
            raise ValueError("this flow has no batch normalisation: build it with batch_norm=True")
        return self.unconstrained(c).transform

    def update_batch_norms(self, x: jax.Array, c: jax.Array | None = None) -> None:
        """Moves each batch normalisation's running averages toward a batch's.

        The batch statistics are those of each normalisation's input rows on a
        training forward of the data rows ``x`` ``(*, features)`` (for a flow with
        ``bounds``, carried to the real line by its ``support`` first).
        """
        self._update_norms(*self._flow_inputs(x, c))

    def set_batch_norms(self, x: jax.Array, c: jax.Array | None = None) -> None:
        """Sets each batch normalisation's statistics to those of its input rows.

        The paper's choice after training: one transform after the other, each
        normalisation's mean and variance are those of every data row of ``x`` at
        its input (``x`` carried to the real line first, as for
        ``update_batch_norms``), the earlier ones normalising with the statistics
        just set.
        """
        self._set_norms(*self._flow_inputs(x, c))

    def _flow_inputs(self, x: jax.Array, c: jax.Array | None):
        """``x`` and ``c`` as the transforms see them: ``x`` carried to the real line."""
        return (x if self.support is None else self.support.forward(x)), c

    def _update_norms(self, u: jax.Array, c: jax.Array | None) -> None:
        """``update_batch_norms`` on ``u``, the input of the transforms."""
        steps = self._normalized_steps(c)
        self.norms.stacked.update(*input_statistics(steps.stacked, steps._broadcast(u)))

    def _set_norms(self, u: jax.Array, c: jax.Array | None) -> None:
        """``set_batch_norms`` on ``u``, the input of the transforms."""
        steps = self._normalized_steps(c)
        u, norms = steps._broadcast(u), self.norms.stacked
        for i in range(len(steps)):
            pair = steps[i]
            y = pair.first.forward(u)
            mean, var = batch_statistics(y, pair.second.axis_name)
            norms.mean[...] = norms.mean[...].at[i].set(mean)
            norms.var[...] = norms.var[...].at[i].set(var)
            u = dataclasses.replace(pair.second, mean=mean, var=var, batch=False).forward(y)

    def base(self, c: jax.Array | None = None):
        """The base distribution: a standard normal (``MAFMoG``: a MADE MoG given ``c``)."""
        zeros = jnp.zeros(self.features, self.param_dtype)
        return DiagNormal(zeros, jnp.ones_like(zeros))


def bounded(flow: NormalizingFlow, support: Support | None) -> NormalizingFlow:
    """``flow`` carried onto ``support`` (``flow`` itself for ``None``)."""
    if support is None:
        return flow
    return dataclasses.replace(flow, transform=Compose(support, flow.transform))


class NSF(MAF):
    """Neural spline flow: a MAF whose univariate maps are rational-quadratic splines.

    With the interface of ``zuko.flows.NSF``. Splines act on ``[-bound, bound]`` and
    are the identity outside, so standardize the features first (``fit`` does by
    default). Sampling uses the same fast inverse as ``MAF``: each spline is
    inverted in closed form.

    Args:
        features: The number of features.
        context: The number of context features.
        transforms: The number of autoregressive transforms.
        randperm: Whether each transform gets a random feature order.
        rngs: Random number generators for weights and permutations.
        bins: The number of bins ``K`` of each spline.
        bound: The half-width ``B`` of the splines' domain.
        slope: The smallest derivative at the knots, in ``(0, 1)``.
        **kwargs: Passed to ``MAF``: ``order``, ``bounds``, ``passes``,
            ``hidden_features``, ``activation``, ``param_dtype``, ``precision``,
            ``inverse``, ...

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> flow = NSF(3, context=4, bins=8, rngs=nnx.Rngs(0))
        >>> c = jax.random.normal(jax.random.key(1), (4,))
        >>> flow(c).sample(jax.random.key(2), (5,)).shape
        (5, 3)

    References:
        Durkan et al., Neural Spline Flows, 2019, https://arxiv.org/abs/1906.04032
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        *,
        rngs: nnx.Rngs,
        bins: int = 8,
        bound: float = 5.0,
        slope: float = 1e-3,
        **kwargs,
    ):
        for key in ("univariate", "shapes"):
            if key in kwargs:
                raise ValueError(f"NSF sets {key} from bins, bound and slope; use MAF for others")
        spline = RationalQuadraticSpline(bins, bound, slope)
        super().__init__(
            features,
            context,
            transforms,
            randperm,
            rngs=rngs,
            univariate=spline,
            shapes=spline.shapes,
            **kwargs,
        )
