"""Two processes of one jax.distributed job on 127.0.0.1, with 2 virtual CPU devices each.

The device count is set in the environment of the processes started here only.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import with_flags
from flax import nnx

from maf_jax.checkpoint import model as checkpoint

ENV = os.environ | {"JAX_PLATFORMS": "cpu", "MAF_JAX_COMPILATION_CACHE": "off"}
# 250 rows in 2 shards of 125: 25 validation rows each, padded to 26 for 2 devices
OPTIONS = ["--transforms", "2", "--hidden", "8", "--batch-size", "16", "--validation", "0.2"]
OPTIONS += ["--lr", "3e-3", "--seed", "3", "--no-progress"]


def devices(count: int) -> dict:
    return ENV | with_flags({"XLA_FLAGS": f"--xla_force_host_platform_device_count={count}"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    rng = np.random.default_rng(0)
    context = rng.normal(size=(250, 1))
    np.save(root / "data.npy", np.concatenate([context * 2, rng.normal(size=(250, 1))], 1) + 1)
    np.save(root / "context.npy", context)
    return root


def fit(files, output, *extra):
    return [sys.executable, "-m", "maf_jax.cli", "fit", str(files / "data.npy"), "-o"] + [
        str(output),
        "--context",
        str(files / "context.npy"),
        *OPTIONS,
        *extra,
    ]


def job(files, output, *extra, timeout=30):
    """The two processes of a job, started."""
    address = f"127.0.0.1:{free_port()}"
    return [
        subprocess.Popen(
            fit(files, output, *extra, "--coordinator", address, "--num-processes", "2")
            + ["--process-id", str(i), "--timeout", str(timeout)],
            env=devices(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def parameters(path):
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(checkpoint.load(path)))]


def test_two_processes_train_like_one_process_with_four_devices_and_like_one_device(
    files, tmp_path
):
    runs = {name: tmp_path / name / "m.npz" for name in ("two", "four", "one")}
    for path in runs.values():
        path.parent.mkdir()
    budget = ["--steps", "30"]
    processes = job(files, runs["two"], *budget)
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0]  # process 0 writes
    single = {"four": (["--devices", "4"], devices(4)), "one": ([], ENV)}
    for name, (extra, env) in single.items():
        command = fit(files, runs[name], *budget, "--shards", "2", *extra)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    summaries = {n: json.loads(p.with_suffix(".json").read_text()) for n, p in runs.items()}
    assert (summaries["two"]["processes"], summaries["two"]["devices"]) == (2, 4)
    assert summaries["four"]["devices"] == 4 and summaries["one"]["devices"] == 1
    for summary in summaries.values():  # the kept parameters are those after every step
        assert summary["steps"] == 30 and summary["best_epoch"] == summary["epochs"] - 1
    reference = parameters(runs["two"])
    for name in ("four", "one"):
        assert summaries[name]["val_nll"] == pytest.approx(summaries["two"]["val_nll"], 1e-5)
        for a, b in zip(parameters(runs[name]), reference, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert sorted(p.name for p in runs["two"].parent.iterdir()) == ["m.json", "m.npz"]


@pytest.mark.parametrize("killed", [1, 0])
def test_a_process_that_dies_ends_the_other_with_an_error(files, tmp_path, killed):
    output = tmp_path / "m.npz"
    long = ["--epochs", "100000", "--patience", "100000", "--checkpoint-every", "20"]
    processes = job(files, output, *long, timeout=10)
    deadline = time.monotonic() + 240
    while not output.with_suffix(".train.npz").exists() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-3000:]
        time.sleep(0.05)
    processes[killed].send_signal(signal.SIGKILL)
    other = processes[1 - killed]
    _, err = other.communicate(timeout=120)  # ends within the heartbeat timeout, not never
    processes[killed].communicate()
    assert other.returncode != 0, err[-3000:]
    # XLA's own words when the heartbeat stops, ours when a collective fails first, or
    # Gloo's abort when the dead peer's connection ends in the middle of a message
    assert (
        "This most likely indicates that another task died" in err
        or "maf-jax fit: error: another process of the job failed or stopped answering" in err
        or ("gloo/transport/tcp" in err and other.returncode == -signal.SIGABRT)
    ), (other.returncode, err[-3000:])


def test_sigterm_to_one_process_stops_both_after_the_same_step_and_the_state_resumes(
    files, tmp_path
):
    output = tmp_path / "m.npz"
    budget = ["--steps", "600", "--patience", "1000", "--checkpoint-every", "10"]
    processes = job(files, output, *budget)
    state = output.with_suffix(".train.npz")
    deadline = time.monotonic() + 240
    while not state.exists() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), processes[0].stderr.read()[-3000:]
        time.sleep(0.01)
    processes[1].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [130, 130], errors[0][-3000:] + errors[1][-3000:]
    steps = {int(err.split("interrupted after step ")[1].split(";")[0]) for err in errors}
    assert len(steps) == 1 and 10 <= min(steps) < 600, errors  # both stopped after one step
    # continued by one process on one device, it ends like a run on one device throughout
    resumed = fit(files, output, *budget, "--shards", "2", "--resume", str(state))
    straight = fit(files, tmp_path / "straight.npz", *budget, "--shards", "2")
    for command in (resumed, straight):
        done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    for a, b in zip(parameters(output), parameters(tmp_path / "straight.npz"), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--process-id", "2"], "process_id must be in [0, 2) for 2 processes, got 2"),
        (["--process-id", "1", "--timeout", "2"], "could not reach the coordinator 127.0.0.1:"),
        (["--coordinator", "nowhere"], "--coordinator: expected HOST:PORT, got 'nowhere'"),
    ],
)
def test_a_job_that_cannot_start_ends_with_one_line(files, tmp_path, extra, message):
    address = f"127.0.0.1:{free_port()}"  # nobody listens there
    command = fit(files, tmp_path / "m.npz", "--coordinator", address, "--num-processes", "2")
    done = subprocess.run(
        command + extra, env=devices(2), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())
