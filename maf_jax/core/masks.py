"""Degrees and boolean masks of masked autoregressive networks (MADE)."""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Sequence

import numpy as np

from maf_jax.core import graph
from maf_jax.core.network import Wiring

__all__ = ["DegreeLayout", "MadeLayout", "autoregressive_adjacency", "check_order", "ranks"]


def check_order(order, features: int) -> np.ndarray:
    """Validates that ``order`` is a permutation of ``range(features)``.

    Args:
        order: Integer sequence of shape ``(features,)``.
        features: The number of features.

    Returns:
        The order as a NumPy integer array.

    Raises:
        ValueError: If ``order`` is not a permutation of ``range(features)``.
    """
    order = np.asarray(order)
    if order.shape != (features,) or not np.issubdtype(order.dtype, np.integer):
        raise ValueError(
            f"order must be an integer permutation of range({features}), got "
            f"shape {order.shape} and dtype {order.dtype}"
        )
    if not np.array_equal(np.sort(order), np.arange(features)):
        raise ValueError(f"order must be a permutation of range({features}), got {order.tolist()}")
    return order.astype(np.int32)


def ranks(order, passes: int) -> np.ndarray:
    """Rank of each feature: ``order // ceil(features / passes)``.

    Feature ``i`` may depend on feature ``j`` only if ``rank[j] < rank[i]``, so the
    inverse is exact after one pass per distinct rank.

    Args:
        order: Permutation of ``range(features)``, shape ``(features,)``.
        passes: Number of passes of the inverse, at least 1.

    Returns:
        Integer array of shape ``(features,)`` with values in ``[0, passes)``.
    """
    order = np.asarray(order)
    return order // math.ceil(len(order) / passes)


def autoregressive_adjacency(order, passes: int, context: int = 0) -> np.ndarray:
    """Boolean adjacency ``A[i, j]``: output ``i`` may depend on input ``j``.

    Inputs are the ``features`` followed by the ``context`` features; every output
    depends on every context feature.

    Returns:
        Boolean array of shape ``(features, features + context)``.
    """
    rank = ranks(order, passes)
    adjacency = rank[:, None] > rank[None, :]
    return np.concatenate([adjacency, np.ones((len(rank), context), bool)], axis=1)


@dataclasses.dataclass(frozen=True)
class MadeLayout:
    """The structure of a masked MLP in the rank-sorted feature space.

    Features are sorted by ``order`` so that feature ``p`` has rank ``p // block``.
    Every hidden unit has a degree ``d``: it sees inputs of rank ``<= d`` (context
    inputs have degree -1) and feeds outputs of rank ``> d``. Units are laid out by
    ascending degree, a permutation that does not change the function, so that the
    units that become final at each step of the inverse are contiguous.

    Attributes:
        features: The number of features ``D``.
        context: The number of context features ``C``.
        passes: The number of passes requested (clamped to ``features``).
        hidden_features: Sizes of the hidden layers.
        total: Number of univariate parameters per feature.
        degrees: The degrees of each hidden layer's units, ascending, in
            ``[-1, steps - 2]``; ``None`` (the default) spreads them evenly (see
            ``hidden_degrees``). Models imported from zuko keep zuko's.
        adjacency: A DAG over the features, ``(features, features + context)`` in
            their original order with a zero diagonal (``graph.check_adjacency``),
            or ``None``. With one, ``passes`` is ``features`` (one feature per rank,
            in ``graph_order``), units are labelled as zuko labels them
            (``maf_jax.core.graph``) and each output sees exactly its row.
        residual: zuko's masked residual network (``Wiring.residual``): each
            hidden size is computed by a linear layer and a residual block, three
            layers of the same units, which ``hidden_degrees`` and ``masks`` list.
    """

    features: int
    context: int
    passes: int
    hidden_features: tuple[int, ...]
    total: int
    degrees: tuple[tuple[int, ...], ...] | None = None
    adjacency: tuple[tuple[bool, ...], ...] | None = None
    residual: bool = False

    def __post_init__(self):
        for name in ("features", "passes", "total"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.context, (int, np.integer)) or self.context < 0:
            raise ValueError(f"context must be a non-negative integer, got {self.context!r}")
        if not isinstance(self.hidden_features, Sequence) or any(
            not isinstance(h, (int, np.integer)) or h < 1 for h in self.hidden_features
        ):
            raise ValueError(
                "hidden_features must be a sequence of positive integers (a hidden "
                f"layer needs at least one unit), got {self.hidden_features!r}"
            )
        object.__setattr__(self, "passes", min(int(self.passes), int(self.features)))
        object.__setattr__(self, "hidden_features", tuple(map(int, self.hidden_features)))
        if not isinstance(self.residual, (bool, np.bool_)):
            raise ValueError(f"residual must be True or False, got {self.residual!r}")
        # without hidden layers, a residual network is the linear one
        object.__setattr__(self, "residual", bool(self.residual and self.hidden_features))
        if self.degrees is not None:
            object.__setattr__(self, "degrees", self._check_degrees(self.degrees))
        if self.adjacency is not None:
            self._check_adjacency()

    def _check_adjacency(self) -> None:
        a = np.asarray(self.adjacency, dtype=object)
        shape = (self.features, self.features + self.context)
        if a.shape != shape or not all(isinstance(v, (bool, np.bool_)) for v in a.flat):
            raise ValueError(f"adjacency must be booleans of shape {shape}, got {a.shape}")
        a = a.astype(bool)
        if a.diagonal().any() or self.degrees is not None or self.passes != self.features:
            raise ValueError(
                "a layout with adjacency has a zero diagonal, passes=features and no degrees"
            )
        graph.generations(a[:, : self.features])  # raises on a cycle
        object.__setattr__(self, "adjacency", tuple(map(tuple, a.tolist())))

    def _check_degrees(self, degrees) -> tuple[tuple[int, ...], ...]:
        """``degrees`` as tuples, each layer ascending in ``[-1, steps - 2]``."""
        top = max(self.steps - 2, -1)
        expected = (
            f"one ascending sequence of integers in [-1, {top}] per hidden layer, of "
            f"sizes {self.hidden_features}"
        )
        try:
            degrees = tuple(tuple(operator.index(d) for d in layer) for layer in degrees)
        except TypeError:
            raise ValueError(f"degrees must be {expected}, got {degrees!r}") from None
        if tuple(map(len, degrees)) != self.hidden_features or any(
            any(a > b for a, b in zip(layer[:-1], layer[1:]))
            or not -1 <= layer[0] <= layer[-1] <= top
            for layer in degrees
        ):
            raise ValueError(f"degrees must be {expected}, got {degrees!r}")
        if self.residual and any(
            len(a) == len(b) and a != b for a, b in zip(degrees[:-1], degrees[1:])
        ):  # a residual block adds its input: consecutive layers of one size share units
            raise ValueError(
                "with residual=True, consecutive hidden layers of one size have the same "
                f"degrees, got {degrees!r}"
            )
        return degrees

    @property
    def block(self) -> int:
        """Features per rank, ``ceil(features / passes)``."""
        return math.ceil(self.features / self.passes)

    @property
    def steps(self) -> int:
        """Number of distinct ranks, the steps of an exact inverse."""
        return math.ceil(self.features / self.block)

    @functools.cached_property
    def input_degrees(self) -> np.ndarray:
        """Degrees of the inputs: sorted feature ranks, then -1 for context."""
        rank = np.arange(self.features) // self.block
        return np.concatenate([rank, np.full(self.context, -1)])

    @functools.cached_property
    def output_ranks(self) -> np.ndarray:
        """Rank of each output unit, shape ``(features * total,)``.

        Output ``p * total + q`` is parameter ``q`` of feature ``p``.
        """
        return np.repeat(np.arange(self.features) // self.block, self.total)

    @functools.cached_property
    def _wiring(self) -> tuple[Wiring, tuple[int, ...]]:
        if self.residual:
            return Wiring.residual(self.hidden_features)
        layers = len(self.hidden_features)
        return Wiring.plain(layers), tuple(range(layers))

    @property
    def wiring(self) -> Wiring:
        """How the network's hidden layers connect (``hidden_degrees`` lists them)."""
        return self._wiring[0]

    @property
    def sources(self) -> tuple[int, ...]:
        """For each layer of ``wiring``, the index of the hidden size whose units it has."""
        return self._wiring[1]

    @functools.cached_property
    def hidden_degrees(self) -> tuple[np.ndarray, ...]:
        """Ascending degrees of the units of each layer the network computes.

        One per hidden size, or with ``residual`` one per layer of ``wiring``.
        """
        if self.adjacency is not None:
            return tuple(np.sort(d, kind="stable") for d in self.zuko_units[0])
        return tuple(self._size_degrees[i] for i in self.sources)

    @functools.cached_property
    def _size_degrees(self) -> tuple[np.ndarray, ...]:
        """Ascending degrees of the units of each hidden size.

        The first layer gives each useful degree (from -1 with context, or 0, up to
        ``steps - 2``) the same number of units, the remainder going to the lowest
        degree, so that every step of the inverse computes as many units; a layer
        with fewer units than degrees spreads them evenly. Deeper layers use the
        degrees of the layer below. The lowest degree is always present, so every
        output that can have inputs has some. Given ``degrees`` replace all this.
        """
        if self.degrees is not None:
            return tuple(np.asarray(layer) for layer in self.degrees)
        useful = np.arange(-1 if self.context else 0, self.steps - 1)
        if useful.size == 0:  # a single rank and no context: outputs are constants
            useful = np.array([-1])
        degrees = []
        for size in self.hidden_features:
            if size >= useful.size:
                counts = np.full(useful.size, size // useful.size)
                counts[0] += size % useful.size
                degree = np.repeat(useful, counts)
            else:
                degree = useful[(np.arange(size) * useful.size) // size]
            degrees.append(degree)
            useful = np.unique(degree)
        return tuple(degrees)

    @functools.cached_property
    def graph_order(self) -> np.ndarray:
        """With ``adjacency``, the feature order it implies (``graph.topological_order``)."""
        return graph.topological_order(np.asarray(self.adjacency)[:, : self.features])

    @functools.cached_property
    def zuko_units(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """With ``adjacency``: each computed layer's degrees and masks, in zuko's unit order.

        Masks are ``(out, in)`` over the features in their original order; a unit's
        degree is the last sorted position among the features its label holds.
        """
        a = np.asarray(self.adjacency)
        rows = np.repeat(a, self.total, axis=0)
        labels, units, outputs = graph.unit_labels(rows, self.hidden_features)
        units = [units[i] for i in self.sources]
        subset = graph.subsets(labels)
        position = np.concatenate([self.graph_order, np.full(self.context, -1)])
        label_degrees = np.where(labels, position[None, :], -1).max(axis=1, initial=-1)
        masks = [labels[units[0]] if units else rows]
        masks += [subset[u][:, v] for v, u in zip(units[:-1], units[1:])]
        if units:
            masks.append(subset[outputs][:, units[-1]])
        return [label_degrees[u] for u in units], masks

    @functools.cached_property
    def masks(self) -> tuple[np.ndarray, ...]:
        """Boolean masks ``(in, out)`` of every layer, in the rank-sorted space."""
        if self.adjacency is not None:
            degrees, masks = self.zuko_units
            maps = graph.permutations(self.graph_order, degrees, self.total, self.context)
            masks = [m[np.ix_(b, a)].T for m, a, b in zip(masks, maps[:-1], maps[1:])]
        else:
            degrees = (self.input_degrees, *self.hidden_degrees)
            masks = [a[:, None] <= b[None, :] for a, b in zip(degrees[:-1], degrees[1:])]
            masks.append(degrees[-1][:, None] < self.output_ranks[None, :])
        for mask in masks:  # shared by every module built from this layout
            mask.flags.writeable = False
        return tuple(masks)


@dataclasses.dataclass(frozen=True)
class DegreeLayout:
    """A masked network given by its degrees, for the incremental schedule.

    Inputs are ``features`` in ``steps`` ranks of ``block``; hidden unit degrees
    are given layer by layer, ascending, with a unit of degree ``d`` seeing the
    units below of degree ``<= d`` (inputs: rank ``<= d``); outputs are ``total``
    per feature, each seeing degrees below its feature's rank. ``MadeLayout``
    derives its degrees; the transposed network of ``maf_jax.inverses.implicit`` has its own.

    Attributes:
        features: The number of inputs (and of output groups).
        total: Outputs per feature.
        block: Features per rank; ``features`` must be a multiple of it.
        degrees: The ascending degrees of each hidden layer's units.
        wiring: How the hidden layers connect; ``None`` for a plain MLP.
    """

    features: int
    total: int
    block: int
    degrees: tuple[tuple[int, ...], ...]
    wiring: Wiring | None = None

    def __post_init__(self):
        if self.wiring is None:
            object.__setattr__(self, "wiring", Wiring.plain(len(self.degrees)))
        if self.features % self.block:
            raise ValueError(f"features={self.features} is not a multiple of block={self.block}")

    @property
    def steps(self) -> int:
        """The number of ranks."""
        return self.features // self.block

    @property
    def hidden_features(self) -> tuple[int, ...]:
        """The sizes of the hidden layers."""
        return tuple(len(d) for d in self.degrees)

    @functools.cached_property
    def hidden_degrees(self) -> tuple[np.ndarray, ...]:
        """The degrees as arrays."""
        return tuple(np.asarray(d, dtype=np.int64) for d in self.degrees)
