"""The maf-jax command end to end, and every bad input it must refuse cleanly."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import batch_norm_inputs, with_flags

from maf_jax.checkpoint import model as checkpoint
from maf_jax.cli import main as cli
from maf_jax.cli.main import main

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


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_runs_of_several_batches_show_progress_unless_told_not_to(
    fitted, files, capsys, monkeypatch, command
):
    """As fit does: a bar on stderr, none with --no-progress; stdout and files the same."""
    monkeypatch.setattr(cli, "SAMPLE_BATCH", 16)  # 50 samples in 4 batches
    monkeypatch.setattr(cli, "EVAL_BATCH", 64, raising=False)  # 200 rows in 4 batches
    out = files / "progress.npy"
    argv = {
        "sample": ["sample", str(fitted), "-n", "50", "-o", str(out)],
        "eval": ["eval", str(fitted), str(files / "data.npy")],
    }[command]
    runs = {}
    for flags in ([], ["--no-progress"]):
        assert main([*argv, *flags]) == 0
        runs[bool(flags)] = capsys.readouterr(), out.read_bytes() if command == "sample" else b""
    (shown, written), (quiet, quiet_written) = runs[False], runs[True]
    assert shown.out == quiet.out and written == quiet_written
    unit = {"sample": "sample", "eval": "row"}[command]
    assert "100%" in shown.err and f"{unit}/s" in shown.err, shown.err
    lines = {"sample": "", "eval": "mean log-likelihood"}[command]
    assert "%" not in quiet.err and quiet.err.startswith(lines), quiet.err
    assert quiet.err.count("\n") == (1 if command == "eval" else 0)


def test_a_residual_identity_started_spline_flow_is_fitted_saved_and_sampled(files, capsys):
    model = files / "nsf.npz"
    argv = ["fit", str(files / "data.npy"), "-o", str(model), "--flow", "nsf", "--bins", "5"]
    assert main([*argv, "--residual", "--identity-init", *SMALL]) == 0
    flow = checkpoint.load(model).flow
    settings = flow.transforms.stacked  # every transform's
    assert type(flow).__name__ == "NSF" and settings.univariate.bins == 5
    assert settings.layout.residual and settings.identity_init
    out = files / "nsf_samples.npy"
    assert main(["sample", str(model), "-n", "20", "-o", str(out)]) == 0
    assert np.load(out).shape == (20, 3) and np.isfinite(np.load(out)).all()
    assert main(["fit", str(files / "data.npy"), "--bins", "1", *SMALL]) == 2
    assert "--bins: expected an integer >= 2" in capsys.readouterr().err


def test_a_flow_on_bounds_is_fitted_saved_and_sampled_inside(files, capsys):
    model = files / "bounded.npz"
    argv = ["fit", str(files / "data.npy"), "-o", str(model), *SMALL]
    assert main([*argv, "--bounds=-10:,:,-20:30", "--link", "logit"]) == 0
    support = checkpoint.load(model).flow.support
    assert (support.lower, support.upper) == ((-10.0, -np.inf, -20.0), (np.inf, np.inf, 30.0))
    assert support.link == "logit"
    out = files / "bounded_samples.npy"
    assert main(["sample", str(model), "-n", "20000", "-o", str(out), "--no-progress"]) == 0
    x = np.load(out)
    assert (x[:, 0] > -10).all() and (x[:, 2] > -20).all() and (x[:, 2] < 30).all()
    assert main([*argv, "--bounds", "0:4"]) == 2  # one pair for all: the rows pass 4
    assert "feature 0 on or beyond its upper bound 4.0" in capsys.readouterr().err
    assert main([*argv, "--bounds", "0:1,0:1"]) == 2
    assert "one pair per feature (shape (3, 2))" in capsys.readouterr().err
    assert main([*argv, "--bounds", "0-1"]) == 2
    assert "--bounds: expected LOW:HIGH pairs" in capsys.readouterr().err
    assert main([*argv, "--bounds", "0:1", "--link", "tanh"]) == 2
    assert "--link: invalid choice: 'tanh' (choose from" in capsys.readouterr().err


def test_a_maf_mog_is_fitted_saved_and_sampled(files):
    model = files / "mog.npz"
    argv = ["fit", str(files / "data.npy"), "-o", str(model), "--flow", "maf-mog"]
    assert main([*argv, "--components", "3", *SMALL]) == 0
    flow = checkpoint.load(model).flow
    assert type(flow).__name__ == "MAFMoG" and flow.mixture.components == 3
    out = files / "mog_samples.npy"
    assert main(["sample", str(model), "-n", "20", "-o", str(out), "--no-progress"]) == 0
    assert np.load(out).shape == (20, 3) and np.isfinite(np.load(out)).all()


@pytest.mark.parametrize("statistics", ["running", "data"])
def test_a_batch_normalised_maf_is_fitted_saved_and_evaluated(files, capsys, statistics):
    model = files / f"norms_{statistics}.npz"
    argv = ["fit", str(files / "data.npy"), "-o", str(model), "--batch-norm", *SMALL]
    argv += ["--batch-norm-statistics", statistics, "--validation", "0"]
    assert main(argv) == 0
    saved = checkpoint.load(model)
    flow = saved.flow
    assert flow.norms is not None and flow.norms.stacked.use_running_average
    u, _ = saved._flow_inputs(jnp.asarray(np.load(files / "data.npy"), jnp.float32), None)
    means = [y.mean(0) for y in batch_norm_inputs(flow, u)]  # of every row: none held out
    if statistics == "data":
        np.testing.assert_allclose(flow.norms.stacked.mean[...], means, atol=1e-5)
    else:  # averaged over the steps
        assert not np.allclose(flow.norms.stacked.var[...], 1.0)
        assert not np.allclose(flow.norms.stacked.mean[...], means, atol=1e-3)
    capsys.readouterr()
    assert main(["eval", str(model), str(files / "data.npy"), "--no-progress"]) == 0
    assert np.isfinite(json.loads(capsys.readouterr().out.splitlines()[0])["log_likelihood"])


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
    np.save(root / "huge.npy", np.array([[1.0, 2.0, 3.0]] * 5 + [[1e39, 0.0, 0.0]]))
    np.save(root / "flat.npy", np.ones((3, 4, 5)))
    (root / "words.csv").write_text("a,b\n1,2\n3,oops\n")
    (root / "bad_first_row.csv").write_text("1,oops,3\n4,5,6\n")
    np.save(root / "few.npy", np.ones((1, 3)))
    np.save(root / "short_context.npy", np.ones((10, 2)))
    np.save(root / "one_context.npy", np.ones((1, 2)))
    (root / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    (root / "empty.npy").write_bytes(b"")
    np.savez(root / "two.npz", a=np.ones((50, 3)), b=np.ones((50, 3)))
    full = (root / "model.npz").read_bytes()
    (root / "cut.npz").write_bytes(full[: len(full) // 3])
    with np.load(root / "model.npz") as archive:
        arrays = dict(archive)
    arrays["__config__"] = np.frombuffer(b"[1, 2]", np.uint8)
    np.savez(root / "list_config.npz", **arrays)
    model, data = str(root / "model.npz"), str(root / "data.npy")
    return [
        (["fit", str(root / "missing.npy")], "no such file"),
        (
            ["fit", str(root / "nan.npy")],
            "20 row\\(s\\) hold NaN or inf \\(rows 1, 3, 5, 7, 9, \\.\\.\\.",
        ),
        (["fit", str(root / "flat.npy")], "expected a 2-D array \\(rows, features\\)"),
        (["fit", str(root / "words.csv")], "line 3, column 2 is not a number: 'oops'"),
        (["fit", str(root / "bad_first_row.csv")], "line 1, column 2 is not a number: 'oops'"),
        (["fit", str(root / "few.npy")], "too few to split"),
        (["fit", str(root / "empty.npy")], "empty.npy: not a .npy array"),
        (["fit", str(root / "cut.npz")], "cut.npz"),
        (["fit", str(root / "two.npz")], "holds arrays \\['a', 'b'\\]; name one \\(--key NAME\\)"),
        (["fit", str(root / "two.npz"), "--key", "c"], "has no array 'c'"),
        (["fit", data, "--key", "a"], "a key names an array of a .npz file"),
        (
            ["fit", data, "--context", str(root / "short_context.npy")],
            "has 10 rows but the data has 200",
        ),
        (["fit", "sklearn:iris"], "unknown scikit-learn data set"),
        (["fit", data, "--rows", "-5"], "argument --rows: expected an integer >= 1, got -5"),
        (["fit", data, "--lr", "0"], "argument --lr: expected a number in \\(0, inf\\)"),
        (["fit", data, "--validation", "1"], "expected a number in \\[0, 1\\)"),
        (["fit", data, "--batch-norm-statistics", "data"], "add --batch-norm"),
        (["eval", str(root / "corrupt.npz"), data], "not a readable maf-jax checkpoint"),
        (["eval", str(root / "cut.npz"), data], "not a readable maf-jax checkpoint"),
        (["eval", data, data], "not a readable maf-jax checkpoint"),
        (["eval", str(root / "list_config.npz"), data], "expected a JSON object, got list"),
        (["eval", model, str(root / "short_context.npy")], "expected 3 features"),
        (
            ["eval", model, str(root / "huge.npy")],
            "1 row\\(s\\) hold values beyond float32's range",
        ),
        (["sample", model, "-n", "0", "-o", str(root / "s.npy")], "-n: expected an integer >= 1"),
        (["sample", model, "-n", "5", "-o", str(root / "s.txt")], "ending in .npy"),
        (["sample", model, "-n", "5", "-o", str(root)], "ending in .npy"),
        (
            ["sample", model, "-n", "5", "-o", str(root / "no" / "s.npy")],
            "folder .* does not exist",
        ),
        (["sample", model, "-n", "5", "-o", model], "ending in .npy"),
        (
            [
                "sample",
                model,
                "-n",
                "5",
                "--context",
                str(root / "one_context.npy"),
                "-o",
                str(root / "one_context.npy"),
            ],
            "is also an input",
        ),
        (["plot", model, "-o", str(root / "p.gif")], "ending in .png or .pdf or .svg"),
    ]


def test_bad_inputs_fail_cleanly_and_overwrite_nothing(fitted, files, capsys):
    cases = bad_inputs(files)
    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    for argv, message in cases:
        if argv[0] == "fit":
            argv = [*argv, "-o", str(fitted), *SMALL]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err, err
        assert __import__("re").search(message, err), (message, err)
    for name, content in before.items():
        assert (files / name).read_bytes() == content, name  # nothing overwritten


@pytest.mark.parametrize(
    "argv,message",
    [
        (["-o", "{root}/m.json"], "ending in .npz"),
        (["-o", "{root}/m.npz", "--summary", "{root}/m.npz"], "ending in .json"),
        (["-o", "{root}/d.npz", "--key", "x"], "is also an input"),
        (["-o", "{root}/m.npz", "--summary", "{root}/d.npz"], "ending in .json"),
    ],
)
def test_fit_checks_its_outputs_before_training(tmp_path, capsys, argv, message):
    np.savez(tmp_path / "d.npz", x=np.ones((20, 2)))
    (tmp_path / "m.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    argv = [a.format(root=tmp_path) for a in argv]
    assert main(["fit", str(tmp_path / "d.npz"), *argv, *SMALL]) == 2
    assert message in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_model_too_large_for_the_machine_is_refused_before_it_is_built(files, capsys):
    argv = ["fit", str(files / "data.npy"), "--hidden", "1000000000", "--no-progress"]
    assert main([*argv, "-o", str(files / "huge.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs about" in err and "GiB to train, more than" in err
    assert not (files / "huge.npz").exists()


def test_an_interrupted_fit_says_so_and_leaves_the_old_model(fitted, files, capsys, monkeypatch):
    import maf_jax.cli.main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(maf_jax.cli.main, "fit", interrupted)
    before = fitted.read_bytes()
    assert main(["fit", str(files / "data.npy"), "-o", str(fitted), *SMALL]) == 130
    assert capsys.readouterr().err == "maf-jax fit: interrupted; no file was written or changed\n"
    assert fitted.read_bytes() == before


def test_text_data_in_every_layout(tmp_path, capsys):
    rows = np.random.default_rng(1).normal(size=(60, 2))
    np.savetxt(tmp_path / "spaces.txt", rows)  # NumPy's default: spaces, no header
    np.savetxt(tmp_path / "header.csv", rows, delimiter=",", header="a,b")  # '# a,b'
    np.savetxt(tmp_path / "tabs.tsv", rows, delimiter="\t")
    from maf_jax.data.loaders import load_file

    for name in ("spaces.txt", "header.csv", "tabs.tsv"):
        np.testing.assert_allclose(load_file(tmp_path / name), rows, rtol=1e-15)


def test_multi_array_npz_and_built_in_plot_data(fitted, files, tmp_path, capsys):
    np.savez(tmp_path / "both.npz", train=np.load(files / "data.npy"), other=np.ones((4, 3)))
    model = tmp_path / "m.npz"
    argv = ["fit", str(tmp_path / "both.npz"), "--key", "train", "-o", str(model), *SMALL]
    assert main(argv) == 0
    assert checkpoint.load(model).features == 3
    two_d = tmp_path / "two_d.npz"
    assert main(["fit", "two_moons", "--rows", "300", "-o", str(two_d), *SMALL]) == 0
    png = tmp_path / "p.png"
    assert main(["plot", str(two_d), "--data", "two_moons", "--rows", "500", "-o", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_eval_output_is_standard_json_even_for_one_row(fitted, tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.full((1, 3), 4.0))
    assert main(["eval", str(fitted), str(tmp_path / "one.npy")]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))
    assert result["rows"] == 1 and result["standard_error"] is None
    assert np.isfinite(result["log_likelihood"])


def test_early_stopping_is_reported(files, tmp_path, capsys):
    argv = ["fit", str(files / "data.npy"), "-o", str(tmp_path / "m.npz"), "--patience", "1"]
    assert main([*argv, *SMALL[:1], "30", *SMALL[2:]]) == 0
    summary = json.loads((tmp_path / "m.json").read_text())
    assert summary["stopped"] == "early stopping" and summary["epochs"] < 30
    assert "early stopping after epoch" in capsys.readouterr().err


def test_help_documents_every_option_and_version(capsys):
    from maf_jax.cli.options import parser as make_parser

    parser = make_parser()
    subparsers = next(
        a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)
    )
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("maf-jax ")
    # the choices the options offer are the library's
    from maf_jax.bijections.autoregressive import INVERSES
    from maf_jax.checkpoint.schema import ACTIVATIONS
    from maf_jax.core.network import PRECISIONS

    fit = subparsers.choices["fit"]
    choices = {a.dest: a.choices for a in fit._actions if a.choices}
    assert set(choices["inverse"]) == set(INVERSES)
    assert set(choices["precision"]) == set(PRECISIONS)
    assert all(
        name in next(a.help for a in fit._actions if a.dest == "activation") for name in ACTIVATIONS
    )


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


def test_fit_on_several_devices(tmp_path):
    """--devices N: data-parallel over N of the process's devices (4 virtual CPUs here)."""
    env = with_flags(
        {
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_PLATFORMS": "cpu",
            "MAF_JAX_COMPILATION_CACHE": "off",
        }
    )
    argv = [sys.executable, "-m", "maf_jax.cli", "fit", "two_moons", "--rows", "400"]
    argv += ["--batch-size", "32", "--epochs", "2", "--transforms", "2", "--hidden", "8"]
    argv += ["--no-progress", "-o", str(tmp_path / "m.npz")]
    ok = subprocess.run([*argv, "--devices", "4"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert checkpoint.load(tmp_path / "m.npz").features == 2
    too_many = subprocess.run([*argv, "--devices", "8"], env=env, capture_output=True, text=True)
    assert too_many.returncode == 2
    assert (
        too_many.stderr.strip() == "maf-jax fit: error: --devices 8: this process has 4 device(s)"
    )
