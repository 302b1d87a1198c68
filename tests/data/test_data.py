"""Loaders, checks and splits of data sets."""

import jax
import numpy as np
import pytest

from maf_jax.data.loaders import DataError, check_rows, load, load_file, load_sklearn, split
from maf_jax.data.toy import TOY_DENSITIES


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
        (b"1,2\n3,4,5\n", "line 2 has 3 columns, expected 2"),
        (b"a,b\n", "has no data rows"),
        (b"", "has no data rows"),
        (b"# only a comment\n\n", "has no data rows"),
        (b"1,2\nx,4\n", "line 2, column 1 is not a number: 'x'"),
        (b"1 2\n3 x\n", "line 2, column 2 is not a number: 'x'"),
        (b"1,x,3\n4,5,6\n", "line 1, column 2 is not a number: 'x'"),  # not a header
        (b"\xff\xfe\x00garbage", "not a text file of numbers"),
    ],
)
def test_bad_csv(tmp_path, content, match):
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_file(tmp_path / "bad.csv")


def test_pickled_and_unknown_files_are_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="expected a numeric array, got dtype object"):
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
            "2 row\\(s\\) hold NaN or inf \\(rows 1, 2, counting from 0\\)",
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


def test_arrays_cannot_claim_more_than_the_file_holds(tmp_path):
    header = np.lib.format
    with (tmp_path / "claims.npy").open("wb") as f:  # 10^12 floats declared, 16 bytes held
        header.write_array_header_1_0(f, dict(descr="<f8", fortran_order=False, shape=(10**12,)))
        f.write(b"\x00" * 16)
    with pytest.raises(DataError, match="declares shape \\(1000000000000,\\) .* but holds"):
        load_file(tmp_path / "claims.npy")
    np.save(tmp_path / "ok.npy", np.ones((4, 2)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:-8])
    with pytest.raises(DataError, match="declares shape \\(4, 2\\)"):
        load_file(tmp_path / "cut.npy")


def test_compressed_archives_load_and_bombs_do_not(tmp_path):
    import zipfile

    data = np.arange(12.0).reshape(4, 3)
    np.savez_compressed(tmp_path / "small.npz", x=data)
    np.testing.assert_array_equal(load_file(tmp_path / "small.npz"), data)
    # a member that claims to expand past deflate's largest ratio (~1000x) is refused
    # before anything is inflated: 8 MB of zeros, re-labelled as 10 GB
    np.savez_compressed(tmp_path / "zeros.npz", x=np.zeros((1000, 1000)))
    raw = bytearray((tmp_path / "zeros.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "zeros.npz") as archive:
        info = archive.infolist()[0]
    size = info.file_size.to_bytes(4, "little")
    forged = (10**10 % 2**32).to_bytes(4, "little")
    raw = raw.replace(size, forged)  # local and central headers both claim more
    (tmp_path / "forged.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="forged.npz: declares 1410065408 bytes in a"):
        load_file(tmp_path / "forged.npz")
