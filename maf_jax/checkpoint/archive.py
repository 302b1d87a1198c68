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

__all__ = ["check_headers", "read_headers", "read_record", "write"]


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
