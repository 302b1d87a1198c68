"""The maf-jax command end to end, and every bad input it must refuse cleanly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from maf_jax import checkpoint
from maf_jax.cli import main

SMALL = [
    "--epochs",
    "2",
    "--transforms",
    "2",
    "--hidden",
    "8",
    "--batch-size",
    "32",
    "--no-progress",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    data = (
        rng.normal(size=(200, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]])
        + 4
    )
    np.save(root / "data.npy", data)
    np.savetxt(root / "data.csv", data, delimiter=",", header="a,b,c", comments="")
    np.save(root / "context.npy", rng.normal(size=(200, 2)))
    return root


@pytest.fixture(scope="module")
def fitted(files):
    assert main(["fit", str(files / "data.csv"), "-o", str(files / "model.npz"), *SMALL]) == 0
    return files / "model.npz"


def test_fit_writes_checkpoint_and_summary(fitted):
    summary = json.loads(fitted.with_suffix(".json").read_text())
    assert summary["rows"] == 200 and summary["features"] == 3 and summary["epochs"] == 2
    assert np.isfinite(summary["val_nll"])
    assert checkpoint.load(fitted).features == 3


def test_eval_prints_log_likelihood(fitted, files, capsys):
    assert main(["eval", str(fitted), str(files / "data.npy")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rows"] == 200 and result["standard_error"] > 0
    # 3 features around 4 with unit-ish scales: far above a badly scaled model
    assert -15 < result["log_likelihood"] < 0


def test_sample_and_plot(fitted, files):
    out = files / "samples.npy"
    assert main(["sample", str(fitted), "-n", "50", "-o", str(out)]) == 0
    samples = np.load(out)
    assert samples.shape == (50, 3) and np.abs(samples.mean(0) - 4).max() < 2.5
    png = files / "plot.png"
    assert main(["plot", str(fitted), "--data", str(files / "data.npy"), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_conditional_fit_and_sample(files):
    model = files / "conditional.npz"
    args = [
        "fit",
        str(files / "data.npy"),
        "--context",
        str(files / "context.npy"),
        "-o",
        str(model),
    ]
    assert main([*args, *SMALL]) == 0
    np.save(files / "one_context.npy", np.zeros((2, 2)))
    out = files / "conditional_samples.npy"
    assert (
        main(
            [
                "sample",
                str(model),
                "-n",
                "4",
                "-o",
                str(out),
                "--context",
                str(files / "one_context.npy"),
            ]
        )
        == 0
    )
    assert np.load(out).shape == (4, 2, 3)


def test_console_script_reports_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "maf_jax.cli", "eval", str(tmp_path / "none.npz"), "two_moons"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no such checkpoint" in result.stderr


def bad_inputs(root):
    np.save(root / "nan.npy", np.array([[1.0, 2.0, 3.0], [np.nan, 1.0, 1.0]] * 20))
    np.save(root / "flat.npy", np.ones((3, 4, 5)))
    (root / "words.csv").write_text("a,b\n1,2\n3,oops\n")
    np.save(root / "few.npy", np.ones((1, 3)))
    np.save(root / "short_context.npy", np.ones((10, 2)))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    return [
        (["fit", str(root / "missing.npy")], "no such file"),
        (["fit", str(root / "nan.npy")], "row\\(s\\) hold NaN or inf \\(first: row 1\\)"),
        (["fit", str(root / "flat.npy")], "expected a 2-D array \\(rows, features\\)"),
        (["fit", str(root / "words.csv")], "row 3, column 2 is not a number: 'oops'"),
        (["fit", str(root / "few.npy")], "too few to split"),
        (
            ["fit", str(root / "data.npy"), "--context", str(root / "short_context.npy")],
            "has 10 rows but the data has 200",
        ),
        (
            ["eval", str(root / "corrupt.npz"), str(root / "data.npy")],
            "not a readable maf-jax checkpoint",
        ),
        (["eval", str(root / "model.npz"), str(root / "short_context.npy")], "expected 3 features"),
        (
            ["sample", str(root / "model.npz"), "-n", "0", "-o", str(root / "s.npy")],
            "positive number of samples",
        ),
        (["fit", "sklearn:iris"], "unknown scikit-learn data set"),
    ]


def test_bad_inputs_fail_cleanly_and_overwrite_nothing(fitted, files, capsys):
    before = fitted.read_bytes()
    for argv, message in bad_inputs(files):
        if argv[0] == "fit":
            argv = [*argv, "-o", str(fitted), *SMALL]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err, err
        assert __import__("re").search(message, err), (message, err)
    assert fitted.read_bytes() == before  # nothing overwritten


@pytest.mark.parametrize(
    "flag,setting,kept",
    [([], "{cache}", True), (["--no-compilation-cache"], "{cache}", False), ([], "off", False)],
)
def test_the_command_keeps_compiled_programs_unless_told_not_to(
    fitted, tmp_path, flag, setting, kept
):
    cache = tmp_path / "cache"
    env = os.environ | {"MAF_JAX_COMPILATION_CACHE": setting.format(cache=cache)}
    command = [sys.executable, "-m", "maf_jax.cli", *flag, "sample", str(fitted), "-n", "5"]
    result = subprocess.run(
        [*command, "-o", str(tmp_path / "s.npy")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (cache.is_dir() and any(cache.iterdir())) == kept
