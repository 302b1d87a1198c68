"""Data sets: files (.npy, .npz, text), the built-in 2-D densities and scikit-learn's."""

from __future__ import annotations

import csv
from pathlib import Path

import jax
import numpy as np

from maf_jax.checkpoint.arrays import ArrayFileError, read_npy, read_npz, read_npz_headers
from maf_jax.data.toy import TOY_DENSITIES

__all__ = ["DataError", "check_rows", "load", "load_file", "load_sklearn", "split"]

SKLEARN = ("digits", "breast_cancer", "wine")
TEXT = (".csv", ".txt", ".tsv", ".dat")


class DataError(ValueError):
    """A data set that cannot be used, with a message that says why."""


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _split(line: str) -> list[str]:
    """Cells of a line: comma-, tab- or whitespace-separated (NumPy's ``savetxt``)."""
    for delimiter in (",", "\t"):
        if delimiter in line:
            return [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter))]
    return line.split()


def _read_text(path: Path) -> np.ndarray:
    """Rows of numbers; ``#`` comments and blank lines skipped, one optional header row.

    A first row is a header only if none of its cells is a number, so that a
    malformed first data row is reported rather than skipped.
    """
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file of numbers") from None
    rows = [
        (i, _split(line))
        for i, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if rows and all(_number(cell) is None for cell in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path}: the file has no data rows")
    width = len(rows[0][1])
    values = []
    for i, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: line {i} has {len(row)} columns, expected {width}")
        parsed = [_number(cell) for cell in row]
        if None in parsed:
            j = parsed.index(None)
            raise DataError(f"{path}: line {i}, column {j + 1} is not a number: {row[j]!r}")
        values.append(parsed)
    return np.asarray(values, dtype=np.float64)


def load_file(path, key: str | None = None) -> np.ndarray:
    """Loads an array from ``.npy``, ``.npz`` (one array, or ``key``) or text.

    Text files (``.csv``, ``.txt``, ``.tsv``, ``.dat``) hold one row per line, cells
    separated by commas, tabs or spaces, with an optional header row and ``#``
    comments. Files are untrusted: pickled objects are never loaded, and an
    array's declared size is checked against the file before it is read.

    Raises:
        DataError: If the file is missing or its content is not a numeric array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if key is not None and suffix != ".npz":
        raise DataError(f"{path}: a key names an array of a .npz file, not of a {suffix} file")
    try:
        if suffix == ".npy":
            array = read_npy(path)
        elif suffix == ".npz":
            names = list(read_npz_headers(path))
            if key is None and len(names) != 1:
                raise DataError(f"{path}: holds arrays {names}; name one (--key NAME)")
            array = read_npz(path, [key or names[0]])[key or names[0]]
        elif suffix in TEXT:
            array = _read_text(path)
        else:
            raise DataError(
                f"{path}: unknown file type {suffix!r}; use .npy, .npz or text ({', '.join(TEXT)})"
            )
    except ArrayFileError as error:
        raise DataError(str(error)) from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    if np.issubdtype(array.dtype, np.bool_):
        raise DataError(f"{path}: expected a real numeric array, got dtype {array.dtype}")
    return array


def check_rows(data, name: str = "data", features: int | None = None, dtype=np.float32):
    """Returns ``data`` as float64 ``(rows, features)`` after checking it.

    Args:
        data: The array.
        name: What it is, for the messages.
        features: The number of columns expected, if known.
        dtype: The dtype the model computes in: values beyond its range are refused.

    Raises:
        DataError: For a shape other than ``(rows, features)``, a wrong number of
            features, no rows, or rows with NaN, inf or values beyond ``dtype``.
    """
    data = np.asarray(data)
    if data.ndim == 1 and features == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise DataError(f"{name}: expected a 2-D array (rows, features), got shape {data.shape}")
    if features is not None and data.shape[1] != features:
        raise DataError(f"{name}: expected {features} features (columns), got {data.shape[1]}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise DataError(f"{name}: has no {'rows' if data.shape[0] == 0 else 'columns'}")
    data = data.astype(np.float64)
    _refuse_rows(~np.isfinite(data).all(axis=1), name, "hold NaN or inf")
    limit = float(np.finfo(dtype).max)
    _refuse_rows(
        (np.abs(data) > limit).any(axis=1),
        name,
        f"hold values beyond {np.dtype(dtype).name}'s range (±{limit:.3g})",
    )
    return data


def _refuse_rows(bad: np.ndarray, name: str, what: str) -> None:
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
        raise DataError(f"{name}: {len(rows)} row(s) {what} (rows {shown}, counting from 0)")


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


def load(source: str, key: jax.Array, n: int = 10_000, array: str | None = None) -> np.ndarray:
    """Loads a file path, a built-in 2-D density (``n`` rows) or ``sklearn:NAME``.

    Args:
        source: A path, one of ``two_moons``, ``checkerboard``, ``eight_gaussians``,
            ``pinwheel``, ``spirals``, or ``sklearn:digits`` and the like.
        key: PRNG key for generated data and dequantisation noise.
        n: Number of rows of a built-in density.
        array: The array of a ``.npz`` file that holds several.
    """
    if source in TOY_DENSITIES:
        return np.asarray(TOY_DENSITIES[source](key, n), np.float64)
    if source.startswith("sklearn:"):
        return load_sklearn(source.split(":", 1)[1], key)
    return load_file(source, array)


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
