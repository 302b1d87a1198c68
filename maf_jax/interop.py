"""Trained flows to and from zuko (PyTorch): the same densities and samples in either library.

``from_zuko`` reads a ``zuko.flows.MAF`` or ``zuko.flows.NSF``; ``to_zuko`` writes one.
torch and zuko are an optional extra: ``pip install 'maf-jax[interop]'``.

Both libraries build the same masked network up to three permutations: maf_jax sorts
the features by rank and the hidden units by degree, and lays the outputs out in
sorted feature order, where zuko keeps the features in place. zuko names a hidden
unit by the set of inputs it sees, which for a MAF is "the features of rank below
``r``"; that unit has degree ``r - 1`` here. Its ``order`` buffer holds the ranks
``order // ceil(features / passes)``, not the permutation: any permutation with
those ranks gives the same function, and ``from_zuko`` takes the stable one.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.config import ACTIVATIONS
from maf_jax.flows import MAF, NSF
from maf_jax.graph import check_adjacency, permutations, unit_labels, with_diagonal
from maf_jax.masks import MadeLayout
from maf_jax.spline import RationalQuadraticSpline
from maf_jax.standardized import Standardized
from maf_jax.univariate import MonotonicAffineTransform

__all__ = ["from_zuko", "to_zuko"]

# torch activation modules and the names of maf_jax.config.ACTIVATIONS
_ACTIVATIONS = {
    ("ReLU", ()): "relu",
    ("ELU", (("alpha", 1.0),)): "elu",
    ("SiLU", ()): "silu",
    ("Tanh", ()): "tanh",
    ("LeakyReLU", (("negative_slope", 0.01),)): "leaky_relu",
    ("GELU", (("approximate", "tanh"),)): "gelu",
    ("GELU", (("approximate", "none"),)): "gelu_exact",
}
_SETTINGS = {"ELU": ("alpha",), "LeakyReLU": ("negative_slope",), "GELU": ("approximate",)}


def _modules():
    try:
        import torch
        import zuko
    except ImportError:
        raise ImportError(
            "zuko interop needs torch and zuko: pip install 'maf-jax[interop]'"
        ) from None
    return torch, zuko


def _activation_name(module) -> str:
    kind = type(module).__name__
    key = (kind, tuple((k, getattr(module, k)) for k in _SETTINGS.get(kind, ())))
    if key not in _ACTIVATIONS:
        supported = sorted({k for k, _ in _ACTIVATIONS})
        raise ValueError(f"activation {module!r} has no maf_jax counterpart; one of {supported}")
    return _ACTIVATIONS[key]


def _univariate(t):
    """The maf_jax univariate of a zuko transform's ``univariate`` and ``shapes``."""
    _, zuko = _modules()
    univariate, shapes = t.univariate, [tuple(s) for s in t.shapes]
    options = {}
    if isinstance(univariate, functools.partial) and not univariate.args:
        univariate, options = univariate.func, dict(univariate.keywords)
    if univariate is zuko.transforms.MonotonicAffineTransform and shapes == [(), ()]:
        if options.get("slope", 1e-3) == 1e-3 and set(options) <= {"slope"}:
            return MonotonicAffineTransform
    if univariate is zuko.transforms.MonotonicRQSTransform and set(options) <= {"bound", "slope"}:
        if len(shapes) == 3 and shapes[0] == shapes[1] and len(shapes[0]) == 1:
            spline = RationalQuadraticSpline(shapes[0][0], **options)
            if shapes == [tuple(s) for s in spline.shapes]:
                return spline
    raise ValueError(
        f"univariate {t.univariate!r} with shapes {shapes} has no maf_jax counterpart: "
        "MonotonicAffineTransform (slope 1e-3) or MonotonicRQSTransform are"
    )


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


def _network(hyper):
    """``(linears, activations, hidden_features, residual)`` of a zuko ``MaskedMLP``.

    The linear layers come in the order of ``Wiring``'s layers, those of residual
    blocks included.
    """
    _, zuko = _modules()
    modules = list(hyper)
    residual = any(isinstance(m, zuko.nn.Residual) for m in modules)
    if not residual:
        linears = [m for m in modules if isinstance(m, zuko.nn.MaskedLinear)]
        others = [m for m in modules if not isinstance(m, zuko.nn.MaskedLinear)]
        return linears, others, tuple(m.out_features for m in linears[:-1]), False
    blocks = [m for m in modules if isinstance(m, zuko.nn.Residual)]
    hidden = tuple(block[0].in_features for block in blocks)
    expected = []
    for i, size in enumerate(hidden):
        expected += ["MaskedLinear"] * (i == 0 or size != hidden[i - 1]) + ["Residual"]
    found = [type(m).__name__ for m in modules]
    if found != [*expected, "MaskedLinear"] or any(
        len(b) != 3 or not isinstance(b[0], zuko.nn.MaskedLinear) or type(b[2]) is not type(b[0])
        for b in blocks
    ):
        raise ValueError(
            f"a residual zuko network is {expected + ['MaskedLinear']} with blocks of "
            f"(MaskedLinear, activation, MaskedLinear), got {found}"
        )
    linears = [n for m in modules for n in (m if isinstance(m, zuko.nn.Residual) else [m])]
    others = [n for n in linears if not isinstance(n, zuko.nn.MaskedLinear)]
    linears = [n for n in linears if isinstance(n, zuko.nn.MaskedLinear)]
    return linears, others, hidden, True


def _read_transform(t, activation: str | None):
    """``(settings, order, degrees, layers)`` of a zuko ``MaskedAutoregressiveTransform``.

    ``layers`` are NumPy ``(weight * mask, bias)`` in zuko's layout, ``degrees``
    those of the units of each layer of the ``Wiring`` in zuko's order.
    """
    torch, zuko = _modules()
    if not isinstance(t, zuko.flows.autoregressive.MaskedAutoregressiveTransform):
        raise ValueError(
            f"transform {type(t).__name__} is not a masked autoregressive transform "
            "(zuko builds an elementwise one for features=1, which maf_jax does not import)"
        )
    linears, others, hidden, residual = _network(t.hyper)
    names = {_activation_name(m) for m in others}
    if len(names) > 1 or (activation is not None and names - {activation}):
        raise ValueError(f"transforms with different activations cannot be imported: {names}")
    masks = [m.mask.cpu().numpy() for m in linears]
    features = linears[-1].out_features // t.total
    sizes = dict(features=features, context=linears[0].in_features - features, total=t.total)
    shape = dict(hidden=hidden, residual=residual)
    if t.order is None:
        structure = _graph_structure(masks, **shape, **sizes)
    else:
        ranks = t.order.cpu().numpy().astype(np.int64)
        structure = _rank_structure(ranks, t.passes, masks, **shape, **sizes)
    passes, adjacency, order, degrees = structure
    settings = dict(
        passes=passes,
        adjacency=adjacency,
        hidden_features=hidden,
        residual=residual,
        activation=next(iter(names), activation or "relu"),
        univariate=_univariate(t),
    )
    with torch.no_grad():
        layers = [
            tuple(a.detach().cpu().double().numpy() for a in (m.weight * m.mask, m.bias))
            for m in linears
        ]
    return settings | sizes, order, degrees, layers


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
    reach = masks[0]
    for mask in masks[1:]:
        reach = (mask.astype(int) @ reach.astype(int)) > 0
    normal = check_adjacency(with_diagonal(reach[::total]), features, context)
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


def from_zuko(flow, param_dtype=jnp.float32) -> MAF:
    """A maf_jax ``MAF`` (or ``NSF``) with the parameters and orders of a zuko flow.

    ``log_prob`` agrees with zuko's to float32 rounding on the same inputs, and the
    inverse maps the same noise to the same samples.

    Args:
        flow: A ``zuko.flows.MAF`` or ``zuko.flows.NSF`` (features >= 2), on any
            device.
        param_dtype: The dtype of the imported parameters.

    Raises:
        ValueError: For a flow or a part of it that maf_jax cannot express, naming it.
        ImportError: Without torch and zuko.
    """
    _, zuko = _modules()
    if not isinstance(flow, zuko.flows.MAF):
        raise ValueError(f"expected a zuko.flows.MAF or NSF, got {type(flow).__name__}")
    base = flow.base()
    if not (
        isinstance(base, zuko.distributions.DiagNormal)
        and base.mean.eq(0).all()
        and base.stddev.eq(1).all()
    ):
        raise ValueError(f"only a standard normal base can be imported, got {base}")
    transforms = list(flow.transform.transforms)
    read, activation = [], None
    for t in transforms:
        read.append(_read_transform(t, activation))
        activation = read[-1][0]["activation"]
    settings, _, degrees, _ = read[0]
    degrees = [np.sort(d) for d in degrees]
    if any(
        r[0] != settings or not all(map(np.array_equal, map(np.sort, r[2]), degrees)) for r in read
    ):
        raise ValueError("transforms with different structures cannot be imported into one MAF")
    sizes = [settings[k] for k in ("features", "context", "passes", "hidden_features", "total")]
    residual = settings["residual"]
    layout = MadeLayout(*sizes, adjacency=settings["adjacency"], residual=residual)
    if not all(map(np.array_equal, layout.hidden_degrees, degrees)):  # else maf_jax's own
        first = [layout.sources.index(i) for i in range(len(layout.hidden_features))]
        given = tuple(tuple(int(v) for v in degrees[k]) for k in first)
        layout = MadeLayout(*sizes, degrees=given, residual=residual)
    common = dict(
        hidden_features=settings["hidden_features"],
        residual=residual,
        activation=ACTIVATIONS[settings["activation"]],
        param_dtype=param_dtype,
        rngs=nnx.Rngs(0),
    )
    if layout.adjacency is None:
        common.update(passes=layout.passes, degrees=layout.degrees)
    else:
        common.update(adjacency=with_diagonal(layout.adjacency))
    univariate = settings["univariate"]
    if isinstance(univariate, RationalQuadraticSpline):
        spline = dict(bins=univariate.bins, bound=univariate.bound, slope=univariate.slope)
        out = NSF(layout.features, layout.context, len(transforms), **spline, **common)
    else:
        out = MAF(layout.features, layout.context, len(transforms), **common)
    for module, (_, order, unit_degrees, layers) in zip(out.transforms, read):
        maps = permutations(order, unit_degrees, layout.total, layout.context)
        module.order[...] = jnp.asarray(order, jnp.int32)
        for k, (layer, (weight, bias)) in enumerate(zip(module.hyper.layers, layers)):
            inputs, outputs = maps[k], maps[k + 1]
            layer.kernel[...] = jnp.asarray(weight[np.ix_(outputs, inputs)].T, param_dtype)
            layer.bias[...] = jnp.asarray(bias[outputs], param_dtype)
    return out


def _torch_activation(activation):
    torch, _ = _modules()
    name = {fn: name for name, fn in ACTIVATIONS.items()}.get(activation)
    modules = {
        "relu": torch.nn.ReLU,
        "elu": torch.nn.ELU,
        "silu": torch.nn.SiLU,
        "tanh": torch.nn.Tanh,
        "leaky_relu": torch.nn.LeakyReLU,
        "gelu": functools.partial(torch.nn.GELU, approximate="tanh"),
        "gelu_exact": torch.nn.GELU,
    }
    if name not in modules:
        raise ValueError(
            f"activation {activation!r} has no torch counterpart; one of {sorted(modules)}"
        )
    return modules[name]


def to_zuko(flow):
    """A ``zuko.flows.MAF`` (or ``NSF``) with the parameters and orders of ``flow``.

    Its masks are maf_jax's, stored in zuko's mask buffers (and state dict), so
    that it computes the same function; zuko's own construction spreads hidden
    units over degrees differently. A model from ``from_zuko`` comes back as it
    was, but for the weights its masks zero, which never act.

    Args:
        flow: A maf_jax ``MAF`` or ``NSF`` with the affine or spline univariate.

    Returns:
        The zuko flow, float32, on the CPU.

    Raises:
        ValueError: For a model zuko cannot express (one feature, a standardized
            model, a custom univariate or activation), naming it.
        ImportError: Without torch and zuko.
    """
    torch, zuko = _modules()
    if isinstance(flow, Standardized):
        raise ValueError(
            "a Standardized model has no zuko counterpart: export model.flow and "
            "standardize the data with model.mean and model.std"
        )
    if not isinstance(flow, MAF):
        raise ValueError(f"expected a maf_jax MAF or NSF, got {type(flow).__name__}")
    first = flow.transforms[0]
    layout = first.layout
    if layout.features < 2:
        raise ValueError("zuko builds an elementwise transform for features=1: cannot export")
    kwargs = dict(
        hidden_features=layout.hidden_features,
        activation=_torch_activation(first.hyper.activation),
        residual=layout.residual,
    )
    if layout.adjacency is None:
        kwargs.update(passes=layout.passes)
    else:
        kwargs.update(adjacency=torch.as_tensor(with_diagonal(layout.adjacency)))
    if first.univariate is MonotonicAffineTransform:
        out = zuko.flows.MAF(layout.features, layout.context, len(flow.transforms), **kwargs)
    elif isinstance(first.univariate, RationalQuadraticSpline):
        spline = first.univariate
        out = zuko.flows.NSF(
            layout.features, layout.context, spline.bins, spline.slope,
            transforms=len(flow.transforms), **kwargs,
        )  # fmt: skip
        for t in out.transform.transforms:
            t.univariate = functools.partial(
                zuko.transforms.MonotonicRQSTransform, bound=spline.bound, slope=spline.slope
            )
    else:
        raise ValueError(f"univariate {first.univariate!r} has no zuko counterpart")
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
    for module, t in zip(flow.transforms, out.transform.transforms):
        order = np.asarray(module.order[...])
        maps = permutations(order, degrees, layout.total, layout.context)
        linears = _network(t.hyper)[0]
        with torch.no_grad():
            if layout.adjacency is None:
                t.order = torch.as_tensor(order // layout.block, dtype=torch.int64)
            for k, (layer, linear) in enumerate(zip(module.hyper.layers, linears)):
                inverse = [np.argsort(maps[k]), np.argsort(maps[k + 1])]
                kernel, bias = (np.asarray(a, np.float32) for a in layer.weights)
                mask = np.asarray(layer.mask)
                linear.mask = torch.as_tensor(mask[np.ix_(*inverse)].T.copy())
                linear.weight.copy_(torch.as_tensor(kernel[np.ix_(*inverse)].T.copy()))
                linear.bias.copy_(torch.as_tensor(bias[inverse[1]].copy()))
    return out
