"""Data sets: files (.npy, .npz, CSV), the built-in 2-D densities and scikit-learn's."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import numpy as np

from maf_jax.toy import TOY_DENSITIES

__all__ = ["DataError", "check_rows", "load", "load_file", "load_sklearn", "split"]

SKLEARN = ("digits", "breast_cancer", "wine")


class DataError(ValueError):
    """A data set that cannot be used, with a message that says why."""


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path}: the file has no rows")

    def number(cell):
        try:
            return float(cell)
        except ValueError:
            return None

    header = any(number(cell) is None for cell in rows[0])
    rows = rows[header:]
    width = len(rows[0]) if rows else 0
    values = []
    for i, row in enumerate(rows, start=1 + header):
        if len(row) != width:
            raise DataError(f"{path}: row {i} has {len(row)} columns, expected {width}")
        parsed = [number(cell) for cell in row]
        if None in parsed:
            j = parsed.index(None)
            raise DataError(f"{path}: row {i}, column {j + 1} is not a number: {row[j]!r}")
        values.append(parsed)
    if not values:
        raise DataError(f"{path}: the file has a header but no data rows")
    return np.asarray(values, dtype=np.float64)


def load_file(path, key: str | None = None) -> np.ndarray:
    """Loads an array from ``.npy``, ``.npz`` (one array, or ``key``) or CSV.

    Pickled objects are never loaded. CSV files may start with a header row.

    Raises:
        DataError: If the file is missing or its content is not a numeric array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.keys())
                if key is None and len(names) != 1:
                    raise DataError(f"{path}: holds arrays {names}; name one with a key")
                if key is not None and key not in names:
                    raise DataError(f"{path}: has no array {key!r}; it holds {names}")
                array = archive[key or names[0]]
        elif suffix in (".csv", ".txt", ".tsv"):
            array = _read_csv(path)
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .npy, .npz or .csv")
    except (ValueError, OSError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: cannot be read as an array ({error})") from None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DataError(f"{path}: expected a real numeric array, got dtype {array.dtype}")
    return array


def check_rows(data, name: str = "data", features: int | None = None) -> np.ndarray:
    """Returns ``data`` as float64 ``(rows, features)`` after checking it.

    Raises:
        DataError: For a shape other than ``(rows, features)``, a wrong number of
            features, no rows, or rows with NaN or inf.
    """
    data = np.asarray(data)
    if data.ndim == 1 and features == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (rows, features), got shape {data.shape}")
    if features is not None and data.shape[1] != features:
        raise DataError(f"{name}: expected {features} features (columns), got {data.shape[1]}")
    if data.shape[0] == 0:
        raise DataError(f"{name}: has no rows")
    data = data.astype(np.float64)
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        raise DataError(
            f"{name}: {bad.sum()} row(s) hold NaN or inf (first: row {np.flatnonzero(bad)[0]})"
        )
    return data


def load_sklearn(name: str, key: jax.Array) -> np.ndarray:
    """A data set bundled with scikit-learn.

    ``digits`` (1797 x 64, pixels dequantised with uniform noise), ``breast_cancer``
    (569 x 30) or ``wine`` (178 x 13).

    Raises:
        DataError: For an unknown name or when scikit-learn is not installed.
    """
    try:
        from sklearn import datasets
    except ImportError:
        raise DataError("scikit-learn is needed: pip install 'maf-jax[data]'") from None
    if name not in SKLEARN:
        raise DataError(f"unknown scikit-learn data set {name!r}; expected one of {SKLEARN}")
    data = getattr(datasets, f"load_{name}")().data.astype(np.float64)
    if name == "digits":  # integer pixels 0..16: spread each over its unit interval
        data = data + np.asarray(jax.random.uniform(key, data.shape, dtype=np.float32))
    return data


def load(source: str, key: jax.Array, n: int = 10_000) -> np.ndarray:
    """Loads a file path, a built-in 2-D density (``n`` rows) or ``sklearn:NAME``.

    Args:
        source: A path, one of ``two_moons``, ``checkerboard``, ``eight_gaussians``,
            ``pinwheel``, ``spirals``, or ``sklearn:digits`` and the like.
        key: PRNG key for generated data and dequantisation noise.
        n: Number of rows of a built-in density.
    """
    if source in TOY_DENSITIES:
        return np.asarray(TOY_DENSITIES[source](key, n), np.float64)
    if source.startswith("sklearn:"):
        return load_sklearn(source.split(":", 1)[1], key)
    return load_file(source)


def split(n: int, fractions, key: jax.Array) -> list[np.ndarray]:
    """Shuffled index sets of sizes ``round(f * n)``; the first takes the rest.

    Raises:
        DataError: If a requested part would be empty.
    """
    perm = np.asarray(jax.random.permutation(key, n))
    sizes = [int(round(f * n)) for f in fractions[1:]]
    first = n - sum(sizes)
    if first < 1 or any(size < 1 for size, f in zip(sizes, fractions[1:]) if f > 0):
        raise DataError(
            f"{n} rows are too few to split into fractions {list(fractions)}: every part "
            "needs at least one row"
        )
    return np.split(perm, np.cumsum([first, *sizes])[:-1])
