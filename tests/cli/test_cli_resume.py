"""maf-jax fit stopped by SIGTERM or killed, then resumed, ends like a run never stopped."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

from maf_jax.checkpoint import model as checkpoint
from maf_jax.checkpoint import training as resume
from maf_jax.cli.main import main

ENV = os.environ | {"MAF_JAX_COMPILATION_CACHE": "off", "JAX_PLATFORMS": "cpu"}
# 216 training rows in batches of 16: 13 steps an epoch, 1560 steps in all
OPTIONS = ["--transforms", "1", "--hidden", "8", "--batch-size", "16", "--epochs", "120"]
OPTIONS += ["--patience", "1000", "--no-progress", "--checkpoint-every", "50"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "data.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(size=(240, 2)) * [2.0, 0.5] + [1.0, 3.0])
    return path


def command(data, output, *extra):
    return [sys.executable, "-m", "maf_jax.cli", "fit", str(data), "-o", str(output)] + [
        *OPTIONS,
        *extra,
    ]


@pytest.fixture(scope="module")
def straight(data, tmp_path_factory):
    output = tmp_path_factory.mktemp("straight") / "m.npz"
    done = subprocess.run(command(data, output), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not output.with_suffix(".train.npz").exists()  # removed once the model is written
    return output


def parameters(path):
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(checkpoint.load(path)))]


def stop_after_a_checkpoint(data, output, signum):
    """Starts a fit and sends it ``signum`` once it has written its training state."""
    process = subprocess.Popen(
        command(data, output), env=ENV, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    state, deadline = output.with_suffix(".train.npz"), time.monotonic() + 120
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def assert_same_run(resumed, straight):
    for a, b in zip(parameters(resumed), parameters(straight), strict=True):
        np.testing.assert_array_equal(a, b)
    summaries = [json.loads(p.with_suffix(".json").read_text()) for p in (resumed, straight)]
    for key in ("steps", "epochs", "best_epoch", "train_nll", "val_nll"):
        assert summaries[0][key] == summaries[1][key], key


def test_sigterm_writes_the_training_state_and_resume_ends_like_the_straight_run(
    data, straight, tmp_path
):
    output = tmp_path / "m.npz"
    output.write_bytes(b"a model saved before")
    code, err = stop_after_a_checkpoint(data, output, signal.SIGTERM)
    state = output.with_suffix(".train.npz")
    assert code == 130, err
    step = resume.read_record(state)[0]["step"]
    assert 50 <= step < 1560
    assert err.strip().splitlines()[-1] == (
        f"maf-jax fit: interrupted after step {step}; the training state is in {state}: "
        f"continue with --resume {state}"
    )
    assert output.read_bytes() == b"a model saved before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "m.train.npz"]
    # a new run must not overwrite the stopped run's state
    assert main(["fit", str(data), "-o", str(output), *OPTIONS]) == 2
    assert state.exists()
    assert main(["fit", str(data), "-o", str(output), *OPTIONS, "--resume", str(state)]) == 0
    assert_same_run(output, straight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npz"]


def test_a_killed_fit_resumes_from_its_last_checkpoint(data, straight, tmp_path):
    output = tmp_path / "m.npz"
    code, err = stop_after_a_checkpoint(data, output, signal.SIGKILL)
    assert code == -signal.SIGKILL, err
    state = output.with_suffix(".train.npz")
    record = resume.read_record(state)[0]  # whole: written atomically
    assert record["step"] % 50 == 0 and record["step"] < 1560
    assert not output.exists()
    done = subprocess.run(
        command(data, output, "--resume", str(state)), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert_same_run(output, straight)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".tmp"))
    assert left == ["m.json", "m.npz"]  # a temporary may remain if the kill hit a write


def test_resume_errors_are_one_line(data, straight, tmp_path, capsys):
    argv = ["fit", str(data), "-o", str(tmp_path / "m.npz"), *OPTIONS]
    cases = [
        (["--resume", str(straight)], "a model checkpoint: fit --resume takes the .train.npz"),
        (["--resume", str(tmp_path / "none.npz")], "no such training checkpoint"),
        (["--train-checkpoint", str(tmp_path / "m.npz")], "is written twice"),
        (["--checkpoint-every", "0"], "--checkpoint-every: expected an integer >= 1"),
    ]
    for extra, message in cases:
        assert main([*argv, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
