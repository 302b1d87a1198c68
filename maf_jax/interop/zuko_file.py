"""The torch side of zuko interop: a zuko flow to and from a file, without JAX.

Run these in a PyTorch process; ``maf_jax.interop.load_zuko`` and ``save_zuko`` read
and write the same files in a JAX process that never loads torch. This module
imports torch and zuko when a function needs them, and never JAX or Flax.

In a torch process, ``zuko_file.save(trained, "flow.npz")``; then, in a JAX
process, ``maf_jax.interop.load_zuko("flow.npz")`` (``tests/interop/test_zuko_file.py``
runs both sides, each in its own process).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from maf_jax.bijections.entries import parameter_count, parameter_shapes
from maf_jax.interop import zuko_format
from maf_jax.interop.zuko_format import ZukoFileError

__all__ = ["ZukoFileError", "build", "describe", "load", "save"]

# torch activation modules (with their settings) and the names of ACTIVATIONS
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


def modules():
    """``(torch, zuko)``, or an ``ImportError`` that says how to install them."""
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


def _torch_activation(name: str):
    torch, _ = modules()
    for (kind, settings), known in _ACTIVATIONS.items():
        if known == name:
            return functools.partial(getattr(torch.nn, kind), **dict(settings))
    raise ValueError(f"activation {name!r} has no torch counterpart")


def _univariate(t) -> dict:
    """The ``univariate`` entry of a zuko transform's ``univariate`` and ``shapes``."""
    _, zuko = modules()
    univariate, shapes = t.univariate, [tuple(s) for s in t.shapes]
    options = {}
    if isinstance(univariate, functools.partial) and not univariate.args:
        univariate, options = univariate.func, dict(univariate.keywords)
    if univariate is zuko.transforms.MonotonicAffineTransform and shapes == [(), ()]:
        if options.get("slope", 1e-3) == 1e-3 and set(options) <= {"slope"}:
            return {"name": "affine"}
    if univariate is zuko.transforms.MonotonicRQSTransform and set(options) <= {"bound", "slope"}:
        if len(shapes) == 3 and shapes[0] == shapes[1] and len(shapes[0]) == 1:
            spline = {"name": "spline", "bins": shapes[0][0], "bound": 5.0, "slope": 1e-3}
            spline |= {k: float(v) for k, v in options.items()}
            if shapes == list(parameter_shapes(spline)):
                return spline
    raise ValueError(
        f"univariate {t.univariate!r} with shapes {shapes} has no maf_jax counterpart: "
        "MonotonicAffineTransform (slope 1e-3) or MonotonicRQSTransform are"
    )


def network(hyper):
    """``(linears, activations, hidden_features, residual)`` of a zuko ``MaskedMLP``.

    The linear layers come in the order of maf_jax's ``Wiring``, those of residual
    blocks included.
    """
    _, zuko = modules()
    items = list(hyper)
    residual = any(isinstance(m, zuko.nn.Residual) for m in items)
    if not residual:
        linears = [m for m in items if isinstance(m, zuko.nn.MaskedLinear)]
        others = [m for m in items if not isinstance(m, zuko.nn.MaskedLinear)]
        return linears, others, tuple(m.out_features for m in linears[:-1]), False
    blocks = [m for m in items if isinstance(m, zuko.nn.Residual)]
    hidden = tuple(block[0].in_features for block in blocks)
    expected = []
    for i, size in enumerate(hidden):
        expected += ["MaskedLinear"] * (i == 0 or size != hidden[i - 1]) + ["Residual"]
    found = [type(m).__name__ for m in items]
    if found != [*expected, "MaskedLinear"] or any(
        len(b) != 3 or not isinstance(b[0], zuko.nn.MaskedLinear) or type(b[2]) is not type(b[0])
        for b in blocks
    ):
        raise ValueError(
            f"a residual zuko network is {expected + ['MaskedLinear']} with blocks of "
            f"(MaskedLinear, activation, MaskedLinear), got {found}"
        )
    linears = [n for m in items for n in (m if isinstance(m, zuko.nn.Residual) else [m])]
    others = [n for n in linears if not isinstance(n, zuko.nn.MaskedLinear)]
    linears = [n for n in linears if isinstance(n, zuko.nn.MaskedLinear)]
    return linears, others, hidden, True


def _check_base(flow) -> None:
    _, zuko = modules()
    base = flow.base()
    if not (
        isinstance(base, zuko.distributions.DiagNormal)
        and base.mean.eq(0).all()
        and base.stddev.eq(1).all()
    ):
        raise ValueError(f"only a standard normal base can be imported, got {base}")


def describe(flow) -> tuple[dict, dict[str, np.ndarray]]:
    """The configuration and arrays of a ``zuko.flows.MAF`` or ``NSF``, in zuko's layout.

    Returns:
        ``(config, arrays)`` as ``maf_jax.interop.zuko_format`` defines them: the
        flow's settings, and per transform ``i`` its rank buffer ``"i/order"``
        (none for a flow built from an adjacency) and per linear layer ``k`` of
        the network ``"i/k/weight"`` (masked), ``"i/k/bias"`` and ``"i/k/mask"``.

    Raises:
        ValueError: For a flow or a part of it that maf_jax cannot express, naming it.
    """
    torch, zuko = modules()
    if not isinstance(flow, zuko.flows.MAF):
        raise ValueError(f"expected a zuko.flows.MAF or NSF, got {type(flow).__name__}")
    _check_base(flow)
    config, arrays = None, {}
    for i, t in enumerate(flow.transform.transforms):
        if not isinstance(t, zuko.flows.autoregressive.MaskedAutoregressiveTransform):
            raise ValueError(
                f"transform {type(t).__name__} is not a masked autoregressive transform "
                "(zuko builds an elementwise one for features=1, which maf_jax does not import)"
            )
        linears, others, hidden, residual = network(t.hyper)
        names = {_activation_name(m) for m in others}
        if len(names) > 1:
            raise ValueError(f"transforms with different activations cannot be imported: {names}")
        univariate = _univariate(t)
        total = parameter_count(univariate)
        features = linears[-1].out_features // total
        settings = dict(
            format=zuko_format.FORMAT,
            flow="NSF" if univariate["name"] == "spline" else "MAF",
            features=features,
            context=linears[0].in_features - features,
            transforms=len(flow.transform.transforms),
            passes=None if t.order is None else int(t.passes),
            adjacency=None,
            hidden_features=list(hidden),
            residual=residual,
            activation=next(iter(names), "relu" if config is None else config["activation"]),
            univariate=univariate,
        )
        if config is not None and settings != config:
            raise ValueError("transforms with different structures cannot be imported into one MAF")
        config = config or settings
        with torch.no_grad():
            if t.order is not None:
                arrays[f"{i}/order"] = t.order.cpu().numpy().astype(np.int64)
            for k, m in enumerate(linears):
                mask = m.mask.cpu().numpy().astype(bool)
                arrays[f"{i}/{k}/weight"] = (m.weight * m.mask).double().cpu().numpy()
                arrays[f"{i}/{k}/bias"] = m.bias.double().cpu().numpy()
                arrays[f"{i}/{k}/mask"] = mask
    if config["passes"] is None:  # the graph, read off the first transform's masks
        config["adjacency"] = zuko_format.reach(
            [arrays[f"0/{k}/mask"] for k in range(zuko_format.linear_count(config))],
            config["features"],
            parameter_count(config["univariate"]),
        )
    return config, arrays


def build(config: dict, arrays: dict[str, np.ndarray]):
    """The ``zuko.flows.MAF`` (or ``NSF``) that ``config`` and ``arrays`` describe.

    Args:
        config: Checked as ``zuko_format.check`` does.
        arrays: Shaped as ``zuko_format.expected(config)`` says.

    Returns:
        The zuko flow, float32, on the CPU, with these orders, masks and weights.
    """
    torch, zuko = modules()
    kwargs = dict(
        hidden_features=tuple(config["hidden_features"]),
        activation=_torch_activation(config["activation"]),
        residual=config["residual"],
    )
    if config["passes"] is None:
        kwargs.update(adjacency=torch.as_tensor(np.array(config["adjacency"], bool)))
    else:
        kwargs.update(passes=config["passes"])
    univariate = config["univariate"]
    sizes = (config["features"], config["context"])
    if univariate["name"] == "affine":
        flow = zuko.flows.MAF(*sizes, config["transforms"], **kwargs)
    else:
        flow = zuko.flows.NSF(
            *sizes, univariate["bins"], univariate["slope"],
            transforms=config["transforms"], **kwargs,
        )  # fmt: skip
        for t in flow.transform.transforms:
            t.univariate = functools.partial(
                zuko.transforms.MonotonicRQSTransform,
                bound=univariate["bound"],
                slope=univariate["slope"],
            )
    with torch.no_grad():
        for i, t in enumerate(flow.transform.transforms):
            if config["passes"] is not None:
                t.order = torch.as_tensor(arrays[f"{i}/order"], dtype=torch.int64)
            for k, linear in enumerate(network(t.hyper)[0]):
                linear.mask = torch.as_tensor(arrays[f"{i}/{k}/mask"].astype(bool))
                linear.weight.copy_(torch.as_tensor(arrays[f"{i}/{k}/weight"]))
                linear.bias.copy_(torch.as_tensor(arrays[f"{i}/{k}/bias"]))
    return flow


def save(flow, path) -> Path:
    """Writes a ``zuko.flows.MAF`` or ``NSF`` to ``path`` (``.npz``), atomically.

    ``maf_jax.interop.load_zuko(path)`` reads it as a maf_jax model in a process
    without torch.

    Raises:
        ValueError: For a flow maf_jax cannot express, naming the part.
    """
    return zuko_format.write(path, *describe(flow))


def load(path):
    """Reads a file written by ``maf_jax.interop.save_zuko`` (or ``save``) as a zuko flow.

    The file is untrusted data: its configuration and arrays are checked before
    any flow is built.

    Raises:
        ZukoFileError: If the file is missing, not a zuko file, or malformed.
    """
    return build(*zuko_format.read(path))
