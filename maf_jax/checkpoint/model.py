"""Checkpoints: configuration, parameters and standardisation in one ``.npz`` file.

A checkpoint is a zip of plain ``.npy`` arrays and a JSON configuration; it holds
no code. Loading treats it as untrusted data: pickles are never loaded, the
configuration is schema-checked (``maf_jax.checkpoint.schema``), the count of numbers it
implies must equal the count the file holds, and every array's name, shape and
dtype must be the model's, all before an array is read or a model built, so a
tampered file fails fast in bounded memory. Parameters and statistics must be
finite, standard deviations positive and orders permutations. Writes are atomic
(``maf_jax.checkpoint.files``): a crash never leaves a half-written file in place of the old one.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.checkpoint import archive
from maf_jax.checkpoint import schema as configuration
from maf_jax.checkpoint.arrays import ArrayFileError
from maf_jax.checkpoint.files import atomic_write
from maf_jax.checkpoint.schema import ConfigError
from maf_jax.core.masks import check_order
from maf_jax.flows.standardized import Standardization
from maf_jax.flows.transform import Order

__all__ = ["CheckpointError", "check_values", "load", "save", "write"]

SAVED = (nnx.Param, nnx.BatchStat, Order, Standardization)
CONFIG = "__config__"
MAX_CONFIG_BYTES = 1 << 16


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read back, with the reason."""


def _flat_state(model) -> dict[str, np.ndarray]:
    state = nnx.state(model, SAVED)
    return {
        "/".join(map(str, path)): np.asarray(variable[...])
        for path, variable in nnx.to_flat_state(state)
    }


def write(file, model) -> None:
    """Writes ``model`` to an open binary ``file``; ``save`` is the atomic way to a path.

    Raises:
        CheckpointError: For a model that a configuration cannot describe.
    """
    try:
        config = configuration.describe(model)
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    archive.write(file, _flat_state(model), CONFIG, config)


def save(path, model) -> Path:
    """Writes ``model`` (a ``MAF`` or a ``Standardized`` MAF) to ``path`` atomically.

    Returns:
        The path written.

    Raises:
        CheckpointError: For a model that a configuration cannot describe.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        write(f, model)
    return path


def check_values(path: Path, name: str, array: np.ndarray, features: int) -> None:
    """Refuses values no trained model holds: NaN or inf, bad orders, non-positive scales.

    Scales: the standardisation's ``std`` and the batch norms' running ``var``.
    """
    if name.endswith("order"):  # one order per transform of a stack
        try:
            for order in array.reshape(-1, array.shape[-1] if array.ndim else 1):
                check_order(order, features)
        except ValueError as error:
            raise CheckpointError(f"{path}: {name}: {error}") from None
    elif not np.isfinite(array).all():
        raise CheckpointError(f"{path}: {name} holds NaN or inf")
    elif name.endswith(("std", "norms/stacked/var")) and not (array > 0).all():
        raise CheckpointError(f"{path}: {name} must be positive, holds {array.min()}")


def load(path):
    """Reads a model written by ``save``, checking it as untrusted data.

    Raises:
        CheckpointError: If the file is missing, not a checkpoint, corrupt, or
            tampered with: a configuration out of its schema, arrays that do not
            match it, or values that no trained model holds.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint: {path}")
    try:
        headers = archive.read_headers(path)
        config = configuration.check(
            archive.read_record(path, headers, CONFIG, "configuration", MAX_CONFIG_BYTES)
        )
    except (ArrayFileError, ConfigError) as error:
        raise CheckpointError(f"{path}: not a readable maf-jax checkpoint ({error})") from None
    implied, held = configuration.size(config), sum(math.prod(h.shape) for h in headers.values())
    if implied != held:
        raise CheckpointError(
            f"{path}: arrays do not match the configuration, which describes {implied} "
            f"numbers where the file holds {held}"
        )
    if config["param_dtype"] == "float64" and not jax.config.jax_enable_x64:
        raise CheckpointError(f"{path}: a float64 model; load it with JAX_ENABLE_X64=1")
    # Bounded now: the model has as many numbers as the file.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: configuration.build(config)))
    variables = {"/".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
    expected = {n: v.get_value() for n, v in variables.items()}
    for name, variable in variables.items():
        # statistics of a float64 model were float32 before the model's dtype was
        # theirs: such a file still loads, its statistics widened
        if isinstance(variable, Standardization) and name in headers:
            if (headers[name].dtype, expected[name].dtype) == (np.float32, np.float64):
                expected[name] = headers[name]
    try:
        arrays = archive.read_arrays(path, headers, expected)
    except ArrayFileError as error:
        raise CheckpointError(f"{path}: {error}") from None
    for name, variable in variables.items():
        check_values(path, name, arrays[name], config["features"])
        variable.set_value(jnp.asarray(arrays[name], variable.get_value().dtype))
    return nnx.merge(graphdef, state)
