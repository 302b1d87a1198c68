"""An archive: a ``.npz`` of plain arrays beside one JSON record, read as untrusted data.

Model checkpoints, training states and zuko files are archives. Reading one checks
the record's size before reading it and every array's name, shape and dtype before
reading any data, so a tampered file fails fast in bounded memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from maf_jax.checkpoint.arrays import ArrayFileError, Header, read_npz, read_npz_headers

__all__ = ["check_headers", "read_arrays", "read_headers", "read_record", "write"]

# A flow's transforms are one stack (maf_jax.nn.Stack): "transforms/stacked/hyper/..."
# holds every transform's array on a leading axis. Files written before the stack hold
# one array per transform, "transforms/<i>/hyper/...", and still load.
STACKED = "transforms/stacked/"


def write(file, arrays: dict[str, np.ndarray], name: str, record: dict) -> None:
    """Writes ``arrays`` and the JSON ``record`` (as the member ``name``) to ``file``."""
    text = json.dumps(record, allow_nan=False).encode()
    np.savez(file, **arrays, **{name: np.frombuffer(text, np.uint8)})


def read_headers(path: Path) -> dict[str, Header]:
    """The header of every array of the archive at ``path``, data unread.

    Raises:
        ArrayFileError: If the file is not a readable, uncompressed ``.npz``.
    """
    return read_npz_headers(path, stored=True)


def read_record(path: Path, headers: dict[str, Header], name: str, what: str, max_bytes: int):
    """Pops the member ``name`` (the ``what``) from ``headers``; returns it parsed from JSON.

    Raises:
        ArrayFileError: If the member is missing, not bytes, larger than
            ``max_bytes`` or not JSON.
    """
    header = headers.pop(name, None)
    if header is None or header.dtype != np.uint8 or len(header.shape) != 1:
        raise ArrayFileError(f"has no {what}")
    if header.shape[0] > max_bytes:
        raise ArrayFileError(f"the {what} of {header.shape[0]} bytes is too large")
    raw = read_npz(path, [name], stored=True)[name]
    try:
        return json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ArrayFileError(f"the {what} is not JSON ({error})") from None


def check_headers(headers: dict[str, Header], expected: dict) -> None:
    """Checks that ``headers`` name exactly the arrays of ``expected``, shapes and dtypes.

    Args:
        headers: From ``read_headers`` (the record popped).
        expected: Each array's name and an object with ``shape`` and ``dtype``.

    Raises:
        ArrayFileError: Naming the first missing, unexpected or mismatched arrays.
    """
    missing = sorted(set(expected) - set(headers))
    extra = sorted(set(headers) - set(expected))
    if missing or extra:
        raise ArrayFileError(f"missing {missing[:3]}, unexpected {extra[:3]}")
    for name, want in expected.items():
        shape, dtype = tuple(want.shape), np.dtype(want.dtype)
        found = headers[name]
        if (found.shape, found.dtype) != (shape, dtype):
            raise ArrayFileError(
                f"{name} has shape {found.shape} and dtype {found.dtype}, "
                f"expected {shape} and {dtype}"
            )


def _slices(name: str, count: int) -> list[str]:
    """The names that files from before the stacked layout give the slices of ``name``."""
    head, _, tail = name.partition(STACKED)
    return [f"{head}transforms/{i}/{tail}" for i in range(count)]


def read_arrays(path: Path, headers: dict[str, Header], expected: dict) -> dict[str, np.ndarray]:
    """Reads exactly the arrays of ``expected`` after checking every header.

    A stacked array (``.../transforms/stacked/...``, leading axis ``n``) missing from
    a file that holds its ``n`` slices under the names of the older layout
    (``.../transforms/0/...``) is read from them and stacked.

    Args:
        path: The archive.
        headers: From ``read_headers`` (the record popped).
        expected: Each array's name and an object with ``shape`` and ``dtype``.

    Raises:
        ArrayFileError: As ``check_headers`` (the older names, where the file has
            them), or for a corrupt member.
    """
    slices = {
        name: _slices(name, want.shape[0])
        for name, want in expected.items()
        if STACKED in name and name not in headers and len(want.shape) > 0
    }
    slices = {n: parts for n, parts in slices.items() if all(p in headers for p in parts)}
    wanted = {n: w for n, w in expected.items() if n not in slices}
    for name, parts in slices.items():
        want = expected[name]
        wanted |= {p: _Slice(tuple(want.shape[1:]), want.dtype) for p in parts}
    check_headers(headers, wanted)
    arrays = read_npz(path, wanted, stored=True)
    for name, parts in slices.items():
        arrays[name] = np.stack([arrays.pop(p) for p in parts])
    return arrays


class _Slice:
    """The shape and dtype of one slice of a stacked array."""

    def __init__(self, shape: tuple[int, ...], dtype):
        self.shape, self.dtype = shape, dtype
