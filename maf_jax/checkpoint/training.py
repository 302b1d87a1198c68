"""Training checkpoints: what ``fit`` needs to continue, in one ``.npz`` file.

A training checkpoint is a zip of uncompressed ``.npy`` arrays and a JSON record;
like a model checkpoint it holds no code. It is read as untrusted data: the record
is bounded in size and checked key by key, then every array's name, shape and
dtype must be a template's (the arrays ``fit`` would hold, as ``jax.eval_shape``
gives them) before any array is read, so reading allocates no more than the file
holds and a file of another model or optimiser is refused at its first difference.
Arrays must be finite, orders permutations and standard deviations positive.
Writes are atomic (``maf_jax.checkpoint.files``).
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np

from maf_jax.checkpoint import archive
from maf_jax.checkpoint.arrays import ArrayFileError
from maf_jax.checkpoint.files import atomic_write
from maf_jax.checkpoint.model import CONFIG, CheckpointError, check_values

__all__ = ["FORMAT", "flatten", "path_name", "read_arrays", "read_record", "save"]

FORMAT = "maf-jax-training/1"
RECORD = "__training__"
MAX_RECORD_BYTES = 1 << 20
# The record's keys and their types; counts are integers >= 0 (best_epoch >= -1).
SCHEMA = {
    "format": str,
    "step": int,
    "epoch": int,
    "position": int,
    "steps": int,
    "best_epoch": int,
    "waited": int,
    "best": (float, type(None)),
    "settings": dict,
    "config": (dict, type(None)),
}


def _name(key) -> str:
    for attribute in ("key", "idx", "name"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def path_name(path, group: str | None = None) -> str:
    """A pytree path as a name, ``flow/transforms/stacked/...`` (without ``value``)."""
    names = [*([group] if group else []), *map(_name, path)]
    return "/".join(names).removesuffix("/value")


def _leaves(group: str, tree) -> tuple[list, list, object]:
    """The names (``group/flow/transforms/stacked/...``), leaves and structure of ``tree``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [path_name(p, group) for p, _ in leaves], [leaf for _, leaf in leaves], treedef


def flatten(trees: dict) -> dict:
    """The leaves of named pytrees by path, e.g. ``params/flow/transforms/stacked/...``."""
    flat = {}
    for group, tree in trees.items():
        names, leaves, _ = _leaves(group, tree)
        flat.update(zip(names, leaves))
    return flat


def save(path, trees: dict, record: dict) -> None:
    """Writes named pytrees of arrays and a JSON ``record`` to ``path`` atomically."""
    arrays = {name: np.asarray(leaf) for name, leaf in flatten(trees).items()}
    with atomic_write(path) as f:
        archive.write(f, arrays, RECORD, record | {"format": FORMAT})


def _check_record(path: Path, record) -> dict:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a maf-jax training checkpoint (format {FORMAT})")
    for key, kind in SCHEMA.items():
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: training record: {key} is missing or malformed")
        if isinstance(value, int) and value < (-1 if key == "best_epoch" else 0):
            raise CheckpointError(f"{path}: training record: {key} is negative ({value})")
        if isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{path}: training record: {key} is not finite")
    return record


def read_record(path) -> tuple[dict, dict]:
    """The record of a training checkpoint and the headers of its arrays, data unread.

    Raises:
        CheckpointError: If the file is missing, not a readable training checkpoint,
            or its record is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such training checkpoint: {path}")
    try:
        headers = archive.read_headers(path)
    except ArrayFileError as error:
        raise CheckpointError(f"{path}: not a readable training checkpoint ({error})") from None
    if RECORD not in headers:
        what = "a model checkpoint" if CONFIG in headers else "not a training checkpoint"
        raise CheckpointError(f"{path}: {what}: fit --resume takes the .train.npz file it wrote")
    try:
        record = archive.read_record(path, headers, RECORD, "training record", MAX_RECORD_BYTES)
    except ArrayFileError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return _check_record(path, record), headers


def read_arrays(path, headers: dict, template: dict) -> dict:
    """The arrays of a training checkpoint, as named pytrees shaped like ``template``.

    Args:
        path: The file.
        headers: Its array headers, from ``read_record``.
        template: Named pytrees of ``jax.ShapeDtypeStruct`` (or arrays): the names,
            shapes and dtypes the file must hold, no more and no fewer.

    Raises:
        CheckpointError: For a missing, extra or differently shaped array, a corrupt
            member, or values no training state holds.
    """
    path = Path(path)
    expected = flatten(template)
    try:
        arrays = archive.read_arrays(path, headers, expected)
    except ArrayFileError as error:
        raise CheckpointError(f"{path}: {error}: written for another model or optimiser") from None
    for name, array in arrays.items():
        if array.dtype.kind == "f" or name.endswith(("order", "std")):
            check_values(path, name, array, array.shape[-1] if array.ndim else 0)
    trees = {}
    for group, tree in template.items():
        names, _, treedef = _leaves(group, tree)
        trees[group] = jax.tree_util.tree_unflatten(treedef, [arrays[n] for n in names])
    return trees
