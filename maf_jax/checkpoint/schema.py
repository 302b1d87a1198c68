"""The configuration a checkpoint stores: what describes a model, its schema, its size.

A configuration read from a file is untrusted: ``check`` verifies every key's type
and range before anything is built, and ``size`` gives the count of numbers it
implies, which a checkpoint compares with the numbers the file holds before any
model is built.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.bijections.autoregressive import DERIVATIVES, INVERSES
from maf_jax.bijections.entries import UNIVARIATES, parameter_shapes
from maf_jax.bijections.registry import entry_of
from maf_jax.bijections.spline import RationalQuadraticSpline
from maf_jax.bijections.support import DEFAULT_LINK, LINKS, Support
from maf_jax.core.graph import check_adjacency, with_diagonal
from maf_jax.core.masks import MadeLayout
from maf_jax.core.network import ACTIVATIONS, PRECISIONS, Wiring, activation_name
from maf_jax.flows.autoregressive import MAF, NSF
from maf_jax.flows.mog import MAFMoG
from maf_jax.flows.standardized import Standardized, unwrapped

__all__ = ["FORMAT", "ConfigError", "build", "check", "describe", "size"]

FORMAT = "maf-jax/1"
DTYPES = ("float32", "float64")
# Settings that older checkpoints lack, and their values then.
DEFAULTS = {
    "precision": "highest",
    "inverse": {"name": "incremental"},
    "unroll": 10,
    "derivative": "implicit",
    "univariate": {"name": "affine"},
    "degrees": None,
    "adjacency": None,
    "residual": False,
    "identity_init": False,
    "bounds": None,
    "link": "logit",  # the only map of two finite bounds before the probit
    "base": {"name": "normal"},
    "batch_norm": False,
}
BASES = {"normal": (), "mog": ("components",)}


class ConfigError(ValueError):
    """A configuration that cannot describe a model, or a model it cannot describe."""


def describe(model) -> dict:
    """The configuration of ``model``, a ``MAF`` (``NSF``, ``MAFMoG``) or a ``Standardized`` one.

    Raises:
        ConfigError: For a model with parts a configuration cannot name (a custom
            activation, univariate transform or inverse).
    """
    flow = unwrapped(model)
    if not isinstance(flow, MAF):
        raise ConfigError(f"can only save a MAF or a Standardized MAF, got {type(flow).__name__}")
    first = flow.transforms.stacked  # its settings are every transform's
    try:
        activation = activation_name(first.hyper.activation)
        univariate = entry_of(first.univariate)
    except ValueError as error:
        raise ConfigError(f"cannot be saved: {error}") from None
    if [list(s) for s in first.shapes] != [list(x) for x in parameter_shapes(univariate)]:
        raise ConfigError(
            f"shapes {first.shapes} cannot be saved: they are not those of univariate {univariate}"
        )
    inverter = first.inverter
    if type(inverter) not in INVERSES.values():
        raise ConfigError(
            f"inverse {inverter!r} cannot be saved; use one of {sorted(INVERSES)} "
            "or maf_jax.Incremental(...)"
        )
    layout = first.layout
    return dict(
        format=FORMAT,
        features=layout.features,
        context=layout.context,
        transforms=len(flow.transforms),
        passes=layout.passes,
        hidden_features=list(layout.hidden_features),
        activation=activation,
        shapes=[list(s) for s in first.shapes],
        param_dtype=jnp.dtype(flow.param_dtype).name,
        standardized=isinstance(model, Standardized),
        precision={v: k for k, v in PRECISIONS.items()}[first.precision],
        inverse=dict(name=inverter.name, **dataclasses.asdict(inverter)),
        unroll=flow.unroll,
        derivative=first.derivative,
        univariate=univariate,
        degrees=None if layout.degrees is None else [list(d) for d in layout.degrees],
        adjacency=None if layout.adjacency is None else with_diagonal(layout.adjacency).tolist(),
        residual=layout.residual,
        identity_init=first.identity_init,
        bounds=None if flow.support is None else flow.support.pairs(),
        link=DEFAULT_LINK if flow.support is None else flow.support.link,
        batch_norm=flow.norms is not None,
        base=(
            dict(name="mog", components=flow.mixture.components)
            if isinstance(flow, MAFMoG)
            else dict(name="normal")
        ),
    )


def _integer(value, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _integers(value, key: str, minimum: int) -> list[int]:
    if not isinstance(value, list):
        raise ConfigError(f"{key} must be a list of integers, got {value!r}")
    return [_integer(v, f"{key}[{i}]", minimum) for i, v in enumerate(value)]


def _choice(value, key: str, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{key} must be one of {sorted(choices)}, got {value!r}")
    return value


def check(config) -> dict:
    """Returns ``config`` with its defaults after checking every key's type and range.

    Raises:
        ConfigError: For anything but a JSON object of this format whose keys all
            hold values of their type and range.
    """
    if not isinstance(config, dict):
        raise ConfigError(f"expected a JSON object, got {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise ConfigError(f"unknown format {config.get('format')!r}, expected {FORMAT!r}")
    config = DEFAULTS | config
    known = {
        "format", "features", "context", "transforms", "passes", "hidden_features",
        "activation", "shapes", "param_dtype", "standardized", *DEFAULTS,
    }  # fmt: skip
    missing, unknown = sorted(known - set(config)), sorted(set(config) - known)
    if missing or unknown:
        raise ConfigError(f"missing keys {missing}, unknown keys {unknown}")
    for key, minimum in [("features", 1), ("context", 0), ("transforms", 1), ("passes", 1)]:
        _integer(config[key], key, minimum)
    _integer(config["unroll"], "unroll", 0)
    _integers(config["hidden_features"], "hidden_features", 1)
    for key in ("standardized", "residual", "identity_init", "batch_norm"):
        if not isinstance(config[key], bool):
            raise ConfigError(f"{key} must be true or false, got {config[key]!r}")
    _check_degrees(config)
    _check_adjacency(config)
    _check_bounds(config)
    _check_base(config["base"])
    _check_univariate(config["univariate"])
    shapes = [list(shape) for shape in parameter_shapes(config["univariate"])]
    if config["shapes"] != shapes:
        raise ConfigError(
            f"shapes must be {shapes} (those of univariate "
            f"{config['univariate']['name']!r}), got {config['shapes']!r}"
        )
    _choice(config["activation"], "activation", ACTIVATIONS)
    _choice(config["param_dtype"], "param_dtype", DTYPES)
    _choice(config["precision"], "precision", PRECISIONS)
    _choice(config["derivative"], "derivative", DERIVATIVES)
    inverse = config["inverse"]
    if not isinstance(inverse, dict):
        raise ConfigError(f"inverse must be an object with a name, got {inverse!r}")
    name = _choice(inverse.get("name"), "inverse name", INVERSES)
    fields = {f.name for f in dataclasses.fields(INVERSES[name])}
    if not set(inverse) - {"name"} <= fields:
        raise ConfigError(f"inverse {name!r} takes options {sorted(fields)}, got {inverse!r}")
    try:
        INVERSES[name](**{k: v for k, v in inverse.items() if k != "name"})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"inverse: {error}") from None
    return config


def _check_degrees(config: dict) -> None:
    """Degrees, if any, as ``MadeLayout`` takes them (after the integer checks)."""
    degrees = config["degrees"]
    if degrees is None:
        return
    if not isinstance(degrees, list) or not all(isinstance(d, list) for d in degrees):
        raise ConfigError(f"degrees must be null or a list of lists of integers, got {degrees!r}")
    for i, layer in enumerate(degrees):
        _integers(layer, f"degrees[{i}]", -1)
    try:
        MadeLayout(
            config["features"],
            config["context"],
            config["passes"],
            tuple(config["hidden_features"]),
            1,
            degrees=degrees,
            residual=config["residual"],
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_adjacency(config: dict) -> None:
    adjacency = config["adjacency"]
    if adjacency is None:
        return
    features, context = config["features"], config["context"]
    rows = isinstance(adjacency, list) and all(isinstance(r, list) for r in adjacency)
    if not rows or not all(isinstance(v, bool) for r in adjacency for v in r):
        raise ConfigError(
            f"adjacency must be null or a list of lists of booleans, got {adjacency!r}"
        )
    if config["passes"] != features or config["degrees"] is not None:
        raise ConfigError("a model with an adjacency has passes = features and no degrees")
    try:
        check_adjacency(adjacency, features, context)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_bounds(config: dict) -> None:
    """Bounds, if any: ``[lower, upper]`` per feature, numbers or null (none)."""
    bounds = config["bounds"]
    if config["link"] not in LINKS:
        raise ConfigError(f"link must be one of {list(LINKS)}, got {config['link']!r}")
    if bounds is None:
        return

    def bound(v) -> bool:
        return v is None or isinstance(v, (int, float)) and not isinstance(v, bool)

    pairs = isinstance(bounds, list) and all(isinstance(p, list) for p in bounds)
    if not pairs or not all(bound(v) for p in bounds for v in p):
        raise ConfigError(
            f"bounds must be null or a list of [lower, upper] pairs of numbers or nulls, "
            f"got {bounds!r}"
        )
    try:
        Support.of(bounds, config["features"], config["link"])
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _check_base(base) -> None:
    if not isinstance(base, dict):
        raise ConfigError(f"base must be an object with a name, got {base!r}")
    name = _choice(base.get("name"), "base name", BASES)
    if set(base) != {"name", *BASES[name]}:
        raise ConfigError(f"base {name!r} takes {list(BASES[name]) or 'no options'}, got {base!r}")
    if name == "mog":
        _integer(base["components"], "base components", 1)


def _check_univariate(univariate) -> None:
    if not isinstance(univariate, dict):
        raise ConfigError(f"univariate must be an object with a name, got {univariate!r}")
    name = _choice(univariate.get("name"), "univariate name", UNIVARIATES)
    if set(univariate) != {"name", *UNIVARIATES[name]}:
        *first, last = UNIVARIATES[name] or ("no options",)
        options = f"{', '.join(first)} and {last}" if first else last
        raise ConfigError(f"univariate {name!r} takes {options}, got {univariate!r}")
    if name == "affine":
        return
    try:
        RationalQuadraticSpline(univariate["bins"], univariate["bound"], univariate["slope"])
    except ValueError as error:
        raise ConfigError(f"univariate: {error}") from None


def size(config: dict) -> int:
    """The count of numbers a checkpoint of ``config`` holds: weights, orders, statistics.

    Statistics: the standardisation's and the batch normalisations' running ones;
    ``link="learned"`` adds its tails, one per feature.
    """
    features, context = config["features"], config["context"]
    total = sum(math.prod(shape) for shape in config["shapes"])
    hidden = config["hidden_features"]
    if config["residual"]:
        hidden = [hidden[i] for i in Wiring.residual(hidden)[1]]
    widths = [features + context, *hidden, features * total]
    per_transform = sum(a * b + b for a, b in zip(widths[:-1], widths[1:])) + features
    statistics = 2 * (features + context) if config["standardized"] else 0
    base = 0
    if config["base"]["name"] == "mog":  # a plain MADE of the same hidden sizes
        widths = [features + context, *config["hidden_features"]]
        widths.append(features * 3 * config["base"]["components"])
        base = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    norms = 4 * features * config["transforms"] if config["batch_norm"] else 0
    learned = config.get("bounds") is not None and config.get("link") == "learned"
    tails = features if learned else 0
    return config["transforms"] * per_transform + statistics + base + norms + tails


def build(config: dict):
    """Builds an untrained model with the structure that a checked ``config`` describes."""
    options = {k: v for k, v in config["inverse"].items() if k != "name"}
    settings = dict(
        transforms=config["transforms"],
        hidden_features=tuple(config["hidden_features"]),
        activation=ACTIVATIONS[config["activation"]],
        param_dtype=jnp.dtype(config["param_dtype"]),
        precision=config["precision"],
        inverse=INVERSES[config["inverse"]["name"]](**options),
        unroll=config["unroll"],
        derivative=config["derivative"],
        degrees=config["degrees"],
        residual=config["residual"],
        identity_init=config["identity_init"],
        bounds=config["bounds"],
        link=config["link"],
        batch_norm=config["batch_norm"],
        rngs=nnx.Rngs(0),
    )
    if config["adjacency"] is not None:
        settings.update(adjacency=np.array(config["adjacency"]))
    else:
        settings.update(passes=config["passes"])
    spline = {k: v for k, v in config["univariate"].items() if k != "name"}
    if config["base"]["name"] == "mog":
        if spline:
            univariate = RationalQuadraticSpline(**spline)
            settings.update(univariate=univariate, shapes=univariate.shapes)
        components = config["base"]["components"]
        flow = MAFMoG(config["features"], config["context"], components=components, **settings)
    elif spline:
        flow = NSF(config["features"], config["context"], **spline, **settings)
    else:
        flow = MAF(config["features"], config["context"], **settings)
    flow.eval()  # a model read from a file evaluates with its running statistics
    if config["standardized"]:
        return Standardized(flow, np.zeros(config["features"]), np.ones(config["features"]))
    return flow
