"""Trained flows to and from zuko (PyTorch): the same densities and samples in either library.

Two ways across. In one process, ``from_zuko`` reads a ``zuko.flows.MAF`` or
``NSF`` and ``to_zuko`` writes one; the process then holds torch beside JAX, which
loads two large native runtimes into it. Through a file, a PyTorch process writes
the zuko flow with ``maf_jax.interop.zuko_file.save`` and a JAX process that never
imports torch reads it with ``load_zuko`` (and back: ``save_zuko``, then
``zuko_file.load``); the file holds plain arrays and a JSON configuration
(``maf_jax.interop.zuko_format``) and is read as untrusted data. torch and zuko are
an optional extra: ``pip install 'maf-jax[interop]'``.

Both libraries build the same masked network up to three permutations: maf_jax sorts
the features by rank and the hidden units by degree, and lays the outputs out in
sorted feature order, where zuko keeps the features in place. zuko names a hidden
unit by the set of inputs it sees, which for a MAF is "the features of rank below
``r``"; that unit has degree ``r - 1`` here. Its ``order`` buffer holds the ranks
``order // ceil(features / passes)``, not the permutation: any permutation with
those ranks gives the same function, and ``from_zuko`` takes the stable one.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.entries import parameter_count
from maf_jax.bijections.registry import entry_of, univariate_of
from maf_jax.bijections.spline import RationalQuadraticSpline
from maf_jax.core.graph import check_adjacency, permutations, unit_labels, with_diagonal
from maf_jax.core.masks import MadeLayout
from maf_jax.core.network import ACTIVATIONS, activation_name
from maf_jax.flows.autoregressive import MAF, NSF
from maf_jax.flows.mog import MAFMoG
from maf_jax.flows.standardized import Standardized
from maf_jax.interop import zuko_file, zuko_format

__all__ = ["from_arrays", "from_zuko", "load_zuko", "save_zuko", "to_arrays", "to_zuko"]


def _zuko_degrees(ranks: np.ndarray, context: int, hidden: tuple[int, ...]) -> list[np.ndarray]:
    """The degrees of zuko's hidden units, in zuko's unit order.

    zuko labels a unit by the inputs it sees (``graph.unit_labels``); for a MAF,
    label "the features of rank below ``r``" (and the context) is degree ``r - 1``.
    """
    context_columns = np.ones((len(ranks), context), bool)
    labels, units, _ = unit_labels(
        np.concatenate([ranks[:, None] > ranks[None, :], context_columns], 1), hidden
    )
    degree = np.where(labels[:, : len(ranks)], ranks[None, :], -1).max(axis=1)
    return [degree[u] for u in units]


def _degree_masks(inputs: np.ndarray, hidden, outputs: np.ndarray) -> list[np.ndarray]:
    """Masks ``(out, in)`` of the degree rule, in any order of the units.

    A unit sees the units below of degree ``<=`` its own; an output of rank ``r``
    sees the units of degree ``< r``.
    """
    degrees = [inputs, *hidden, outputs - 1]
    return [b[:, None] >= a[None, :] for a, b in zip(degrees[:-1], degrees[1:])]


def _least_degrees(masks, inputs: np.ndarray, outputs: np.ndarray, top: int) -> list[np.ndarray]:
    """The least hidden degrees whose degree-rule masks could be ``masks``.

    Each connection is a difference constraint (``d_below <= d_unit``, or ``>`` where
    there is none); raising every degree to the largest lower bound they imply
    until nothing moves gives the least solution, which the caller checks.
    """
    degrees = [inputs, *(np.full(m.shape[0], -1) for m in masks[:-1]), outputs - 1]
    for _ in range((top + 3) * len(masks)):
        moved = False
        for k in range(1, len(degrees) - 1):
            below, above = masks[k - 1], masks[k]
            bound = np.maximum(
                np.where(below, degrees[k - 1][None, :], -1).max(1, initial=-1),
                np.where(above, -1, degrees[k + 1][:, None] + 1).max(0, initial=-1),
            )
            new = np.minimum(np.maximum(degrees[k], bound), top + 1)
            moved |= not np.array_equal(new, degrees[k])
            degrees[k] = new
        if not moved:
            break
    return degrees[1:-1]


def _rank_structure(ranks, passes, masks, hidden, residual, features, context, total):
    """``(passes, None, order, degrees)`` of a zuko network over ranks."""
    order = np.argsort(np.argsort(ranks, kind="stable"))  # a permutation with these ranks
    if len(ranks) != features or not np.array_equal(order // math.ceil(features / passes), ranks):
        raise ValueError(f"order buffer {ranks.tolist()} is not a zuko rank vector")
    inputs = np.concatenate([ranks, np.full(context, -1)])
    outputs = np.repeat(ranks, total)
    sources = MadeLayout(features, context, passes, hidden, total, residual=residual).sources
    least = _least_degrees(masks, inputs, outputs, top=int(ranks.max()) - 1)
    for i in range(len(hidden)):  # the layers of one size share their units
        layers = [k for k, source in enumerate(sources) if source == i]
        for k in layers:
            least[k] = np.max([least[j] for j in layers], axis=0)
    # zuko's construction, or (a model that to_zuko wrote) whatever the masks say
    for degrees in ([_zuko_degrees(ranks, context, hidden)[i] for i in sources], least):
        if all(map(np.array_equal, _degree_masks(inputs, degrees, outputs), masks)):
            return passes, None, order, degrees
    raise ValueError(
        "the masks of this zuko network follow no degrees that maf_jax can express "
        "(built by another zuko version, or edited?)"
    )


def _graph_structure(masks, hidden, residual, features, context, total):
    """``(passes, adjacency, order, degrees)`` of a zuko network built from an adjacency.

    The adjacency is read off the masks (which inputs reach each output); rebuilt
    from it, maf_jax's layout must give zuko's masks unit for unit.
    """
    normal = check_adjacency(np.array(zuko_format.reach(masks, features, total)), features, context)
    layout = MadeLayout(
        features, context, features, hidden, total, adjacency=normal, residual=residual
    )
    degrees, zuko_masks = layout.zuko_units
    if not all(map(np.array_equal, zuko_masks, masks)):
        raise ValueError(
            "the masks of this zuko network are not those its adjacency gives in "
            "maf_jax (built by another zuko version, or edited?)"
        )
    return features, layout.adjacency, layout.graph_order, degrees


def _read_transform(config: dict, arrays: dict, i: int):
    """``(adjacency, order, degrees, layers)`` of transform ``i`` of a zuko description.

    ``layers`` are ``(weight * mask, bias)`` in zuko's layout, ``degrees`` those of the
    units of each layer of the ``Wiring`` in zuko's order.
    """
    count = zuko_format.linear_count(config)
    masks = [arrays[f"{i}/{k}/mask"] for k in range(count)]
    sizes = dict(
        features=config["features"],
        context=config["context"],
        total=parameter_count(config["univariate"]),
    )
    shape = dict(hidden=tuple(config["hidden_features"]), residual=config["residual"])
    if config["passes"] is None:
        _, adjacency, order, degrees = _graph_structure(masks, **shape, **sizes)
    else:
        ranks = arrays[f"{i}/order"]
        _, adjacency, order, degrees = _rank_structure(
            ranks, config["passes"], masks, **shape, **sizes
        )
    layers = [(arrays[f"{i}/{k}/weight"] * masks[k], arrays[f"{i}/{k}/bias"]) for k in range(count)]
    return adjacency, order, degrees, layers


def from_arrays(config: dict, arrays: dict, param_dtype=jnp.float32) -> MAF:
    """The maf_jax ``MAF`` (or ``NSF``) of a zuko flow's configuration and arrays.

    Args:
        config: A checked configuration (``zuko_format.check``).
        arrays: Its arrays, shaped as ``zuko_format.expected(config)`` says.
        param_dtype: The dtype of the imported parameters.

    Raises:
        ValueError: For a part maf_jax cannot express (an activation, masks that
            follow no degrees), naming it.
    """
    if config["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"activation {config['activation']!r} has no maf_jax counterpart; "
            f"one of {sorted(ACTIVATIONS)}"
        )
    univariate = univariate_of(config["univariate"])
    read = [_read_transform(config, arrays, i) for i in range(config["transforms"])]
    adjacency, _, degrees, _ = read[0]
    degrees = [np.sort(d) for d in degrees]
    if any(not all(map(np.array_equal, map(np.sort, r[2]), degrees)) for r in read) or any(
        not np.array_equal(r[0], adjacency) for r in read
    ):
        raise ValueError("transforms with different structures cannot be imported into one MAF")
    hidden, residual = tuple(config["hidden_features"]), config["residual"]
    passes = config["features"] if adjacency is not None else config["passes"]
    sizes = [
        config["features"],
        config["context"],
        passes,
        hidden,
        parameter_count(config["univariate"]),
    ]
    layout = MadeLayout(*sizes, adjacency=adjacency, residual=residual)
    if not all(map(np.array_equal, layout.hidden_degrees, degrees)):  # else maf_jax's own
        first = [layout.sources.index(i) for i in range(len(layout.hidden_features))]
        given = tuple(tuple(int(v) for v in degrees[k]) for k in first)
        layout = MadeLayout(*sizes, degrees=given, residual=residual)
    common = dict(
        hidden_features=hidden,
        residual=residual,
        activation=ACTIVATIONS[config["activation"]],
        param_dtype=param_dtype,
        rngs=nnx.Rngs(0),
    )
    if layout.adjacency is None:
        common.update(passes=layout.passes, degrees=layout.degrees)
    else:
        common.update(adjacency=with_diagonal(layout.adjacency))
    if isinstance(univariate, RationalQuadraticSpline):
        spline = dict(bins=univariate.bins, bound=univariate.bound, slope=univariate.slope)
        out = NSF(layout.features, layout.context, len(read), **spline, **common)
    else:
        out = MAF(layout.features, layout.context, len(read), **common)
    stacked = out.transforms.stacked  # every variable with a leading axis of transforms
    kernels = [[] for _ in stacked.hyper.layers]
    biases = [[] for _ in stacked.hyper.layers]
    for _, order, unit_degrees, layers in read:
        maps = permutations(order, unit_degrees, layout.total, layout.context)
        for k, (weight, bias) in enumerate(layers):
            inputs, outputs = maps[k], maps[k + 1]
            kernels[k].append(weight[np.ix_(outputs, inputs)].T)
            biases[k].append(bias[outputs])
    stacked.order[...] = jnp.asarray(np.stack([r[1] for r in read]), jnp.int32)
    for layer, kernel, bias in zip(stacked.hyper.layers, kernels, biases):
        layer.kernel[...] = jnp.asarray(np.stack(kernel), param_dtype)
        layer.bias[...] = jnp.asarray(np.stack(bias), param_dtype)
    return out


def to_arrays(flow) -> tuple[dict, dict[str, np.ndarray]]:
    """The zuko configuration and arrays of a maf_jax ``MAF`` or ``NSF``.

    Masks are maf_jax's, laid out as zuko's mask buffers, so that the zuko flow
    computes the same function; zuko's own construction spreads hidden units over
    degrees differently. A model from ``from_zuko`` comes back as it was, but for
    the weights its masks zero, which never act.

    Raises:
        ValueError: For a model zuko cannot express (one feature, bounds, a MoG
            base, batch norms, a standardized model, a custom univariate or
            activation), naming it.
    """
    if isinstance(flow, Standardized):
        raise ValueError(
            "a Standardized model has no zuko counterpart: export model.flow and "
            "standardize the data with model.mean and model.std"
        )
    if not isinstance(flow, MAF):
        raise ValueError(f"expected a maf_jax MAF or NSF, got {type(flow).__name__}")
    if isinstance(flow, MAFMoG):
        raise ValueError(
            "a MAF MoG has no zuko counterpart (zuko's flows have a standard normal base)"
        )
    if flow.norms is not None:
        raise ValueError(
            "a flow with batch normalisation has no zuko counterpart (zuko's MAF has no batch norm)"
        )
    if flow.support is not None:
        raise ValueError(
            "a flow with bounds has no zuko counterpart (zuko's MAF has no bounded "
            "support): export a flow built without bounds"
        )
    first = flow.transforms.stacked  # its settings are every transform's
    layout = first.layout
    if layout.features < 2:
        raise ValueError("zuko builds an elementwise transform for features=1: cannot export")
    try:
        activation = activation_name(first.hyper.activation)
        univariate = entry_of(first.univariate)
    except ValueError as error:
        raise ValueError(f"no zuko counterpart: {error}") from None
    config = dict(
        format=zuko_format.FORMAT,
        flow="NSF" if univariate["name"] == "spline" else "MAF",
        features=layout.features,
        context=layout.context,
        transforms=len(flow.transforms),
        passes=None if layout.adjacency is not None else layout.passes,
        adjacency=None if layout.adjacency is None else with_diagonal(layout.adjacency).tolist(),
        hidden_features=list(layout.hidden_features),
        residual=layout.residual,
        activation=activation,
        univariate=univariate,
    )
    # hidden units in zuko's order where the degrees are those zuko builds (an
    # imported model comes back unit for unit), else in maf_jax's
    zuko_degrees = _zuko_degrees(
        np.arange(layout.features) // layout.block, layout.context, layout.hidden_features
    )
    degrees = [
        zuko_degrees[i] if np.array_equal(np.sort(zuko_degrees[i]), d) else d
        for i, d in zip(layout.sources, layout.hidden_degrees)
    ]
    if layout.adjacency is not None:  # built as zuko builds it: zuko's unit order
        degrees = layout.zuko_units[0]
    arrays = {}
    for i, module in enumerate(flow.transforms.unstack()):
        order = np.asarray(module.order[...])
        maps = permutations(order, degrees, layout.total, layout.context)
        if layout.adjacency is None:
            arrays[f"{i}/order"] = (order // layout.block).astype(np.int64)
        for k, layer in enumerate(module.hyper.layers):
            inverse = np.ix_(np.argsort(maps[k]), np.argsort(maps[k + 1]))
            kernel, bias = (np.asarray(a, np.float64) for a in layer.weights)
            arrays[f"{i}/{k}/mask"] = np.asarray(layer.mask)[inverse].T.copy()
            arrays[f"{i}/{k}/weight"] = kernel[inverse].T.copy()
            arrays[f"{i}/{k}/bias"] = bias[np.argsort(maps[k + 1])].copy()
    return config, arrays


def from_zuko(flow, param_dtype=jnp.float32) -> MAF:
    """A maf_jax ``MAF`` (or ``NSF``) with the parameters and orders of a zuko flow.

    ``log_prob`` agrees with zuko's to float32 rounding on the same inputs, and the
    inverse maps the same noise to the same samples. This process then holds torch
    beside JAX; ``load_zuko`` reads a file instead, without torch.

    Args:
        flow: A ``zuko.flows.MAF`` or ``zuko.flows.NSF`` (features >= 2), on any
            device.
        param_dtype: The dtype of the imported parameters.

    Raises:
        ValueError: For a flow or a part of it that maf_jax cannot express, naming it.
        ImportError: Without torch and zuko.
    """
    return from_arrays(*zuko_file.describe(flow), param_dtype)


def to_zuko(flow):
    """A ``zuko.flows.MAF`` (or ``NSF``) with the parameters and orders of ``flow``.

    See ``to_arrays`` for how the layouts correspond; ``save_zuko`` writes a file
    instead, without torch.

    Args:
        flow: A maf_jax ``MAF`` or ``NSF`` with the affine or spline univariate.

    Returns:
        The zuko flow, float32, on the CPU.

    Raises:
        ValueError: For a model zuko cannot express, naming it.
        ImportError: Without torch and zuko.
    """
    return zuko_file.build(*to_arrays(flow))


def load_zuko(path, param_dtype=jnp.float32) -> MAF:
    """Reads a zuko file (``zuko_file.save`` in a torch process) as a maf_jax model.

    Needs neither torch nor zuko. The file is untrusted data: checked before any
    model is built.

    Raises:
        ZukoFileError: If the file is missing, not a zuko file, or malformed.
        ValueError: For a flow maf_jax cannot express, naming the part.
    """
    return from_arrays(*zuko_format.read(path), param_dtype)


def save_zuko(flow, path) -> Path:
    """Writes a maf_jax ``MAF`` or ``NSF`` as a zuko file, atomically; returns the path.

    ``maf_jax.interop.zuko_file.load(path)`` builds the zuko flow in a torch process.
    Needs neither torch nor zuko.

    Raises:
        ValueError: For a model zuko cannot express, naming it.
    """
    return zuko_format.write(path, *to_arrays(flow))
