"""Checkpoints: configuration, parameters and standardisation in one ``.npz`` file.

The file holds plain arrays and a JSON configuration; loading never unpickles, so
a checkpoint cannot execute code. Writes go to a temporary file in the same folder
that is then renamed over the target, so a crash never leaves a half-written file
in place of the old one.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.autoregressive import INVERSES
from maf_jax.files import atomic_write
from maf_jax.flows import MAF, Order
from maf_jax.masks import check_order
from maf_jax.network import PRECISIONS
from maf_jax.standardized import Standardization, Standardized
from maf_jax.univariate import MonotonicAffineTransform

__all__ = ["ACTIVATIONS", "CheckpointError", "load", "save"]

FORMAT = "maf-jax/1"
ACTIVATIONS = {
    "relu": jax.nn.relu,
    "elu": jax.nn.elu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "leaky_relu": jax.nn.leaky_relu,
}
SAVED = (nnx.Param, Order, Standardization)


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read back, with the reason."""


def _config(model) -> dict:
    flow = model.flow if isinstance(model, Standardized) else model
    if not isinstance(flow, MAF):
        raise CheckpointError(
            f"can only save a MAF or a Standardized MAF, got {type(flow).__name__}"
        )
    first = flow.transforms[0]
    names = {fn: name for name, fn in ACTIVATIONS.items()}
    activation = names.get(first.hyper.activation)
    if activation is None:
        raise CheckpointError(
            f"activation {first.hyper.activation!r} cannot be saved; "
            f"use one of {sorted(ACTIVATIONS)}"
        )
    if first.univariate is not MonotonicAffineTransform:
        raise CheckpointError("only the default MonotonicAffineTransform univariate can be saved")
    layout = first.layout
    precisions = {value: name for name, value in PRECISIONS.items()}
    inverter = first.inverter
    if type(inverter) not in INVERSES.values():
        raise CheckpointError(
            f"inverse {inverter!r} cannot be saved; use one of {sorted(INVERSES)} "
            "or maf_jax.Incremental(...)"
        )
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
        precision=precisions[first.precision],
        inverse=dict(name=inverter.name, **dataclasses.asdict(inverter)),
        unroll=flow.unroll,
    )


def _flat_state(model) -> dict[str, np.ndarray]:
    state = nnx.state(model, SAVED)
    return {
        "/".join(map(str, path)): np.asarray(variable[...])
        for path, variable in nnx.to_flat_state(state)
    }


def save(path, model) -> Path:
    """Writes ``model`` (a ``MAF`` or a ``Standardized`` MAF) to ``path`` atomically.

    Returns:
        The path written.
    """
    path = Path(path)
    arrays = _flat_state(model)
    arrays["__config__"] = np.frombuffer(json.dumps(_config(model)).encode(), np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def build(config: dict):
    """Builds an untrained model with the structure that ``config`` describes.

    Settings that older checkpoints lack take their defaults.
    """
    inverse = dict(config.get("inverse", {"name": "incremental"}))
    name = inverse.pop("name")
    if name not in INVERSES:
        raise ValueError(f"inverse must be one of {sorted(INVERSES)}, got {name!r}")
    flow = MAF(
        config["features"],
        config["context"],
        transforms=config["transforms"],
        passes=config["passes"],
        hidden_features=tuple(config["hidden_features"]),
        activation=ACTIVATIONS[config["activation"]],
        shapes=tuple(tuple(s) for s in config["shapes"]),
        param_dtype=jnp.dtype(config["param_dtype"]),
        precision=config.get("precision", "highest"),
        inverse=INVERSES[name](**inverse),
        unroll=config.get("unroll", 10),
        rngs=nnx.Rngs(0),
    )
    if config["standardized"]:
        return Standardized(flow, np.zeros(config["features"]), np.ones(config["features"]))
    return flow


def load(path):
    """Reads a model written by ``save``.

    Raises:
        CheckpointError: If the file is missing, corrupt, of another format, or
            its arrays do not match the configuration it declares.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        config = json.loads(arrays.pop("__config__").tobytes().decode())
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as error:
        raise CheckpointError(f"{path}: not a readable maf-jax checkpoint ({error})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unknown checkpoint format {config.get('format')!r}, expected {FORMAT!r}"
        )
    try:
        model = build(config)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: invalid configuration ({error})") from None
    expected = _flat_state(model)
    if set(expected) != set(arrays):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        raise CheckpointError(
            f"{path}: arrays do not match the configuration "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for name, array in arrays.items():
        if array.shape != expected[name].shape:
            raise CheckpointError(
                f"{path}: {name} has shape {array.shape}, expected {expected[name].shape}"
            )
        if name.endswith("order"):
            try:
                check_order(array, config["features"])
            except ValueError as error:
                raise CheckpointError(f"{path}: {name}: {error}") from None
    state = nnx.state(model, SAVED)
    for keypath, variable in nnx.to_flat_state(state):
        name = "/".join(map(str, keypath))
        variable[...] = jnp.asarray(arrays[name], dtype=variable[...].dtype)
    nnx.update(model, state)
    return model
