"""The zuko file: a zuko MAF or NSF as plain arrays in zuko's layout and a JSON configuration.

Written and read on both sides, a torch process (``zuko_file``) and a JAX process
(``load_zuko``, ``save_zuko``), with NumPy alone: the file is an archive
(``maf_jax.checkpoint.archive``) holding no code. Reading it treats it as untrusted:
the configuration's types are checked, then the count, names, shapes and dtypes of
the arrays it implies, before any array is read; values are checked after.

Arrays, per transform ``i`` and linear layer ``k`` in the order of maf_jax's
``Wiring``: ``"i/order"`` (zuko's ranks, int64; absent for a flow built from an
adjacency), ``"i/k/weight"`` (``(out, in)``, masked, float64), ``"i/k/bias"``
(float64) and ``"i/k/mask"`` (bool). The masks rule: a flow without ``passes`` keeps
its ``adjacency`` for zuko's constructor, but the graph maf_jax builds is the one
the masks realise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maf_jax.bijections.entries import parameter_count
from maf_jax.checkpoint import archive
from maf_jax.checkpoint.arrays import ArrayFileError, Header, read_npz
from maf_jax.checkpoint.files import atomic_write

__all__ = [
    "FORMAT",
    "ZukoFileError",
    "check",
    "expected",
    "linear_count",
    "reach",
    "read",
    "write",
]

FORMAT = "maf-jax-zuko/1"
RECORD = "__zuko__"
MAX_RECORD_BYTES = 1 << 24  # an adjacency of a few thousand features


class ZukoFileError(ValueError):
    """A zuko file that cannot be read or written, with the reason."""


def _layer_shapes(config: dict) -> list[tuple[int, int]]:
    """``(out, in)`` of each linear layer, in the order of ``Wiring``."""
    hidden = config["hidden_features"]
    previous, layers = config["features"] + config["context"], []
    for j, size in enumerate(hidden):
        if not config["residual"]:
            layers.append((size, previous))
        else:  # a layer into each new size, then the block's two
            if j == 0 or size != hidden[j - 1]:
                layers.append((size, previous))
            layers += [(size, size), (size, size)]
        previous = size
    return [*layers, (config["features"] * parameter_count(config["univariate"]), previous)]


def linear_count(config: dict) -> int:
    """The number of linear layers of each transform's network."""
    return len(_layer_shapes(config))


def expected(config: dict) -> dict[str, Header]:
    """The shape and dtype of each array of a file of ``config``."""
    arrays = {}
    layers = _layer_shapes(config)
    for i in range(config["transforms"]):
        if config["passes"] is not None:
            arrays[f"{i}/order"] = Header((config["features"],), np.dtype(np.int64))
        for k, (out, inputs) in enumerate(layers):
            arrays[f"{i}/{k}/weight"] = Header((out, inputs), np.dtype(np.float64))
            arrays[f"{i}/{k}/bias"] = Header((out,), np.dtype(np.float64))
            arrays[f"{i}/{k}/mask"] = Header((out, inputs), np.dtype(np.bool_))
    return arrays


def reach(masks: list[np.ndarray], features: int, per_feature: int) -> list[list[bool]]:
    """The adjacency a network's masks ``(out, in)`` realise: which inputs reach each feature.

    Ones on the diagonal, as zuko's ``adjacency`` has them.
    """
    reached = masks[0].astype(np.int64)
    for mask in masks[1:]:
        reached = (mask.astype(np.int64) @ reached > 0).astype(np.int64)
    adjacency = reached[::per_feature] > 0
    adjacency[np.arange(features), np.arange(features)] = True
    return adjacency.tolist()


def _integer(config: dict, key: str, minimum: int) -> None:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ZukoFileError(f"{key} must be an integer >= {minimum}, got {value!r}")


def check(config) -> dict:
    """Checks the configuration's keys and types; returns it.

    Values that need maf_jax or zuko to judge (an activation's name, an adjacency
    that is a DAG, spline settings) are checked by the side that builds the flow.

    Raises:
        ZukoFileError: For anything that is not a configuration of this format.
    """
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ZukoFileError(f"not a zuko file of format {FORMAT!r}")
    keys = {
        "format", "flow", "features", "context", "transforms", "passes", "adjacency",
        "hidden_features", "residual", "activation", "univariate",
    }  # fmt: skip
    if set(config) != keys:
        missing, unknown = sorted(keys - set(config)), sorted(set(config) - keys)
        raise ZukoFileError(f"missing keys {missing}, unknown keys {unknown}")
    _integer(config, "features", 2)
    _integer(config, "context", 0)
    _integer(config, "transforms", 1)
    hidden = config["hidden_features"]
    if not isinstance(hidden, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ZukoFileError(f"hidden_features must be a list of integers >= 1, got {hidden!r}")
    if not isinstance(config["residual"], bool) or not isinstance(config["activation"], str):
        raise ZukoFileError("residual must be true or false and activation a name")
    if config["passes"] is None:
        adjacency = config["adjacency"]
        if not isinstance(adjacency, list) or not all(
            isinstance(row, list) and all(isinstance(v, bool) for v in row) for row in adjacency
        ):
            raise ZukoFileError("without passes, adjacency must be a list of lists of booleans")
    else:
        _integer(config, "passes", 1)
        if config["adjacency"] is not None:
            raise ZukoFileError("a flow with passes has no adjacency")
    univariate = config["univariate"]
    affine = univariate == {"name": "affine"}
    spline = (
        isinstance(univariate, dict)
        and set(univariate) == {"name", "bins", "bound", "slope"}
        and univariate["name"] == "spline"
        and isinstance(univariate["bins"], int)
        and univariate["bins"] >= 2
        and all(isinstance(univariate[k], float) for k in ("bound", "slope"))
    )
    if not (affine and config["flow"] == "MAF" or spline and config["flow"] == "NSF"):
        raise ZukoFileError(
            f"flow {config['flow']!r} with univariate {univariate!r}: expected MAF with "
            "{'name': 'affine'} or NSF with a spline's name, bins, bound and slope"
        )
    return config


def write(path, config: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Writes a zuko file atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        archive.write(f, arrays, RECORD, check(config))
    return path


def read(path) -> tuple[dict, dict[str, np.ndarray]]:
    """Reads and checks a zuko file: ``(config, arrays)``.

    Raises:
        ZukoFileError: If the file is missing, not a zuko file, its arrays are not
            those its configuration implies, or they hold NaN, inf or a mask that
            is not boolean.
    """
    path = Path(path)
    if not path.is_file():
        raise ZukoFileError(f"no such zuko file: {path}")
    try:
        headers = archive.read_headers(path)
        config = check(
            archive.read_record(path, headers, RECORD, "configuration", MAX_RECORD_BYTES)
        )
        per_transform = 3 * linear_count(config) + (config["passes"] is not None)
        if len(headers) != config["transforms"] * per_transform:
            raise ArrayFileError(
                f"holds {len(headers)} arrays where its configuration implies "
                f"{config['transforms']} transforms of {per_transform}"
            )
        specs = expected(config)
        archive.check_headers(headers, specs)
        arrays = read_npz(path, specs, stored=True)
    except (ArrayFileError, ZukoFileError) as error:
        raise ZukoFileError(f"{path}: not a readable zuko file ({error})") from None
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ZukoFileError(f"{path}: {name} holds NaN or inf")
    return config, arrays
