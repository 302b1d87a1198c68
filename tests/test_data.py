"""Loaders, checks and splits of data sets."""

import jax
import numpy as np
import pytest

from maf_jax.data import DataError, check_rows, load, load_file, load_sklearn, split
from maf_jax.toy import TOY_DENSITIES


def test_file_formats_round_trip(tmp_path):
    data = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "a.npy", data)
    np.savez(tmp_path / "one.npz", x=data)
    np.savez(tmp_path / "two.npz", x=data, y=data + 1)
    (tmp_path / "h.csv").write_text("a,b,c\n" + "\n".join(",".join(map(str, r)) for r in data))
    (tmp_path / "n.csv").write_text("\n".join(",".join(map(str, r)) for r in data) + "\n\n")
    for name in ("a.npy", "one.npz", "h.csv", "n.csv"):
        np.testing.assert_array_equal(load_file(tmp_path / name), data)
    np.testing.assert_array_equal(load_file(tmp_path / "two.npz", key="y"), data + 1)
    with pytest.raises(DataError, match="holds arrays \\['x', 'y'\\]; name one"):
        load_file(tmp_path / "two.npz")


@pytest.mark.parametrize(
    "content,match",
    [
        (b"1,2\n3,4,5\n", "row 2 has 3 columns, expected 2"),
        (b"a,b\n", "has a header but no data rows"),
        (b"", "has no rows"),
        (b"1,2\nx,4\n", "row 2, column 1 is not a number: 'x'"),
    ],
)
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_file(tmp_path / "bad.csv")


def test_pickled_and_unknown_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read as an array"):
        load_file(tmp_path / "obj.npy")
    (tmp_path / "x.parquet").write_bytes(b"x")
    with pytest.raises(DataError, match="unknown file type"):
        load_file(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "missing.npy")


@pytest.mark.parametrize(
    "data,features,match",
    [
        (np.ones((3, 4, 2)), None, "expected a 2-D array"),
        (np.ones((3, 4)), 5, "expected 5 features \\(columns\\), got 4"),
        (np.ones((0, 4)), None, "has no rows"),
        (
            np.array([[1.0, 2.0], [np.inf, 0.0], [np.nan, 1.0]]),
            None,
            "2 row\\(s\\) hold NaN or inf \\(first: row 1\\)",
        ),
    ],
)
def test_check_rows(data, features, match):
    with pytest.raises(DataError, match=match):
        check_rows(data, "data", features)


def test_split_sizes_and_errors():
    train, val, test = split(100, (0.8, 0.1, 0.1), jax.random.key(0))
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    with pytest.raises(DataError, match="too few to split"):
        split(3, (0.9, 0.1), jax.random.key(0))


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_builtin_densities(name):
    data = load(name, jax.random.key(0), n=500)
    assert data.shape == (500, 2) and np.isfinite(data).all()
    assert 0.3 < data.std(0).min() and data.std(0).max() < 5  # spread, not degenerate
    np.testing.assert_array_equal(load(name, jax.random.key(0), n=500), data)  # keyed


def test_sklearn_digits_are_dequantised():
    digits = load_sklearn("digits", jax.random.key(0))
    assert digits.shape == (1797, 64)
    frac = digits - np.floor(digits)
    assert 0.4 < frac.mean() < 0.6  # uniform noise on each integer pixel
    assert len(np.unique(digits)) > 100_000
    assert load("sklearn:wine", jax.random.key(0)).shape == (178, 13)
