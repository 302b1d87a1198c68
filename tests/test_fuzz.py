"""Fuzzing the command line with malformed files and extreme numbers.

The invariant, for every subcommand and every input: the command returns, and
succeeds (exit 0) or refuses with exit status 2 and one line on stderr; never a
traceback; no file but the requested output changes; and the process's memory
stays bounded however large a tampered file claims to be. How long a command
takes is not asserted: that depends on the machine's load. The default run tries
a few hundred inputs; ``python -m pytest tests/test_fuzz.py
--hypothesis-profile=long`` tries thousands.
"""

import contextlib
import io
import json
import resource
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maf_jax.cli.main import main

EXAMPLES = 3 * settings().max_examples  # 90 per test by default, 1500 with --long
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = ["--epochs", "1", "--transforms", "1", "--hidden", "4", "--no-progress"]


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """A trained checkpoint and its data, as bytes to write into each example's folder."""
    root = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    np.save(root / "data.npy", rng.normal(size=(64, 3)))
    np.save(root / "context.npy", rng.normal(size=(64, 2)))
    argv = ["fit", str(root / "data.npy"), "--context", str(root / "context.npy")]
    assert main([*argv, "-o", str(root / "model.npz"), *SMALL]) == 0
    return {name: (root / name).read_bytes() for name in ("data.npy", "context.npy", "model.npz")}


@pytest.fixture(scope="module")
def memory():
    """The process's peak memory before fuzzing; checked once every test has run."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 1024, f"peak memory grew by {grown_mb:.0f} MB while fuzzing"


@contextlib.contextmanager
def folder(valid):
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        for name, content in valid.items():
            (root / name).write_bytes(content)
        yield root
    finally:
        shutil.rmtree(root)


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def check(argv: list[str], root: Path, output: str | None = None) -> int:
    """Runs ``maf-jax argv`` in this process and asserts the invariant."""
    before = snapshot(root)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    message = err.getvalue()
    assert "Traceback" not in message, message
    assert status in (0, 2), (status, message)
    if status == 2:
        lines = message.splitlines()
        assert len(lines) == 1 and lines[0].startswith("maf-jax"), message
        assert ": error: " in lines[0], message
    after = snapshot(root)
    changed = {n for n in before.keys() | after.keys() if before.get(n) != after.get(n)}
    allowed = {output, Path(output).with_suffix(".json").name} if output and status == 0 else set()
    assert changed <= allowed, (changed, message)
    return status


COMMANDS = {
    "fit": lambda r, data: ["fit", data, "-o", str(r / "out.npz"), *SMALL],
    "fit_context": lambda r, data: [
        "fit", str(r / "data.npy"), "--context", data, "-o", str(r / "out.npz"), *SMALL
    ],
    "eval": lambda r, data: [
        "eval", str(r / "model.npz"), data, "--context", str(r / "context.npy")
    ],
    "sample": lambda r, context: [
        "sample", str(r / "model.npz"), "-n", "3", "--context", context, "-o", str(r / "out.npy")
    ],
    "plot": lambda r, data: [
        "plot", str(r / "model.npz"), "--data", data, "--context", str(r / "one.npy"),
        "-o", str(r / "out.png"),
    ],
}  # fmt: skip
OUTPUTS = {"fit": "out.npz", "fit_context": "out.npz", "sample": "out.npy", "plot": "out.png"}
SUFFIXES = [".npy", ".npz", ".csv", ".txt"]


@FUZZ
@given(
    content=st.binary(max_size=600),
    suffix=st.sampled_from(SUFFIXES),
    command=st.sampled_from(sorted(COMMANDS)),
)
def test_random_bytes_as_a_data_file(valid, memory, content, suffix, command):
    with folder(valid) as root:
        np.save(root / "one.npy", np.zeros((1, 2)))
        path = root / f"input{suffix}"
        path.write_bytes(content)
        check(COMMANDS[command](root, str(path)), root, OUTPUTS.get(command))


def checkpoint_commands(root: Path) -> list[tuple[list[str], str | None]]:
    model, data, context = (str(root / n) for n in ("model.npz", "data.npy", "context.npy"))
    return [
        (["eval", model, data, "--context", context], None),
        (["sample", model, "-n", "2", "--context", context, "-o", str(root / "s.npy")], "s.npy"),
    ]


@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True), which=st.integers(0, 1))
def test_truncated_checkpoints_are_refused(valid, memory, cut, which):
    with folder(valid) as root:
        full = valid["model.npz"]
        (root / "model.npz").write_bytes(full[: int(cut * len(full))])
        argv, output = checkpoint_commands(root)[which]
        assert check(argv, root, output) == 2


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    *("features", "context", "transforms", "passes", "hidden_features", "activation"),
    *("shapes", "param_dtype", "standardized", "precision", "inverse", "unroll", "format"),
]


def rewrite(root: Path, change) -> None:
    with np.load(root / "model.npz") as archive:
        arrays = dict(archive)
    change(arrays)
    np.savez(root / "model.npz", **arrays)


@FUZZ
@given(
    updates=st.dictionaries(st.sampled_from(KEYS), JSON, min_size=1, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS), st.integers(-(2**70), 2**70), min_size=1),
    replace=st.booleans(),
    which=st.integers(0, 1),
)
def test_random_configurations(valid, memory, updates, replace, which):
    def change(arrays):
        config = {} if replace else json.loads(arrays["__config__"].tobytes())
        text = json.dumps(config | updates)
        arrays["__config__"] = np.frombuffer(text.encode(), np.uint8)

    with folder(valid) as root:
        rewrite(root, change)
        argv, output = checkpoint_commands(root)[which]
        check(argv, root, output)


@FUZZ
@given(
    index=st.integers(0, 10**6),
    shape=st.lists(st.integers(0, 40), max_size=3),
    dtype=st.sampled_from(["float32", "float64", "int32", "uint8", "bool", "float16"]),
    which=st.integers(0, 1),
)
def test_random_array_shapes_in_a_checkpoint(valid, memory, index, shape, dtype, which):
    def change(arrays):
        names = sorted(arrays)
        arrays[names[index % len(names)]] = np.ones(shape, dtype)

    with folder(valid) as root:
        rewrite(root, change)
        argv, output = checkpoint_commands(root)[which]
        check(argv, root, output)


EXTREMES = st.sampled_from(
    [np.nan, np.inf, -np.inf, 1e39, -1e39, 3e38, -3e38, 1e30, 1e-45, 0.0, -0.0, 1e15]
) | st.floats(-1e6, 1e6)


@FUZZ
@given(
    values=st.lists(st.lists(EXTREMES, min_size=3, max_size=3), min_size=1, max_size=6),
    text=st.booleans(),
    command=st.sampled_from(["eval", "plot", "fit"]),
)
def test_numeric_extremes_in_data(valid, memory, values, text, command):
    with folder(valid) as root:
        np.save(root / "one.npy", np.zeros((1, 2)))
        path = root / ("extreme.csv" if text else "extreme.npy")
        array = np.asarray(values, np.float64)
        if command == "fit":  # enough rows to split, the extremes among them
            array = np.concatenate([np.load(root / "data.npy")[: 40 - len(array)], array])
        np.save(root / "context.npy", np.zeros((len(array), 2)))  # eval's, one per row
        if text:
            np.savetxt(path, array, delimiter=",")
        else:
            np.save(path, array)
        check(COMMANDS[command](root, str(path)), root, OUTPUTS.get(command))
