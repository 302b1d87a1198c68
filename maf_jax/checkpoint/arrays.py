"""Arrays from ``.npy`` and ``.npz`` files read as untrusted data.

Every array's header is read first and checked against the bytes that hold it: a
file cannot declare more data than it has, so reading allocates no more than the
file's size (for compressed archive members, no more than deflate's largest ratio
allows). Pickled objects are never loaded.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["ArrayFileError", "Header", "read_npy", "read_npz", "read_npz_headers"]

# Deflate expands at most about 1032:1; a member claiming more is a bomb.
MAX_DEFLATE_RATIO = 1032
KINDS = "biuf"  # bool, signed and unsigned integers, floats


class ArrayFileError(ValueError):
    """A file that does not hold the arrays it declares, with the reason."""


class Header(NamedTuple):
    """What a ``.npy`` header declares."""

    shape: tuple[int, ...]
    dtype: np.dtype


def _read_header(f, size: int, name: str) -> Header:
    """Reads a ``.npy`` header from ``f`` and checks it against the ``size`` bytes."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ArrayFileError(f"{name}: unsupported .npy format version {version}")
    except ArrayFileError:
        raise
    except (ValueError, OSError, EOFError, SyntaxError, zlib.error) as error:
        raise ArrayFileError(f"{name}: not a .npy array ({error})") from None
    if dtype.hasobject or dtype.kind not in KINDS or dtype.fields is not None:
        raise ArrayFileError(f"{name}: expected a numeric array, got dtype {dtype}")
    expected = f.tell() + math.prod(shape) * dtype.itemsize
    if expected != size:
        raise ArrayFileError(
            f"{name}: declares shape {shape} of {dtype} ({expected} bytes) but holds {size}"
        )
    return Header(tuple(shape), dtype)


def read_npy(path) -> np.ndarray:
    """Reads a ``.npy`` file whose header matches its size.

    Raises:
        ArrayFileError: If it is not a numeric ``.npy`` array of the size it declares.
    """
    path = Path(path)
    with path.open("rb") as f:
        _read_header(f, path.stat().st_size, path.name)
        f.seek(0)
        return np.lib.format.read_array(f, allow_pickle=False)


def _members(archive: zipfile.ZipFile, path: Path, stored: bool) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by array name, their declared sizes checked.

    With ``stored``, members must be uncompressed (as ``np.savez`` writes them), each
    holding in the file the bytes it declares, so that reading allocates no more than
    the file's size; otherwise deflated members may expand up to deflate's ratio.
    """
    size = path.stat().st_size
    total, members = 0, {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy") or info.is_dir():
            raise ArrayFileError(f"{path.name}: {info.filename!r} is not a .npy array")
        if stored and (
            info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size
        ):
            raise ArrayFileError(f"{path.name}: {info.filename!r} is compressed or mislabelled")
        total += info.file_size
        members[info.filename[: -len(".npy")]] = info
    if total > (1 if stored else MAX_DEFLATE_RATIO) * max(size, 1):
        raise ArrayFileError(f"{path.name}: declares {total} bytes in a {size}-byte file")
    return members


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise ArrayFileError(f"{path.name}: not a readable .npz archive ({error})") from None


def read_npz_headers(path, stored: bool = False) -> dict[str, Header]:
    """The name, shape and dtype of every array of a ``.npz`` file, data unread.

    ``stored`` requires uncompressed members (see ``_members``).

    Raises:
        ArrayFileError: If the file is not an archive of numeric arrays of the sizes
            their headers declare.
    """
    path = Path(path)
    with _open(path) as archive:
        headers = {}
        for name, info in _members(archive, path, stored).items():
            try:
                with archive.open(info) as f:
                    headers[name] = _read_header(f, info.file_size, f"{path.name}:{name}")
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
                raise ArrayFileError(f"{path.name}:{name}: unreadable ({error})") from None
        return headers


def read_npz(path, names=None, stored: bool = False) -> dict[str, np.ndarray]:
    """Reads the arrays ``names`` (all if ``None``) of a ``.npz`` file.

    Raises:
        ArrayFileError: As ``read_npz_headers``, or for a member whose data is
            corrupt (its checksum fails) or that is missing.
    """
    path = Path(path)
    headers = read_npz_headers(path, stored)
    names = list(headers) if names is None else list(names)
    missing = [name for name in names if name not in headers]
    if missing:
        raise ArrayFileError(f"{path.name}: has no array {missing[0]!r}; it holds {list(headers)}")
    arrays = {}
    with _open(path) as archive:
        for name in names:
            try:
                with archive.open(f"{name}.npy") as f:
                    arrays[name] = np.lib.format.read_array(f, allow_pickle=False)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error) as error:
                raise ArrayFileError(f"{path.name}:{name}: unreadable ({error})") from None
    return arrays
