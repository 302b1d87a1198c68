"""Resumable training: stopped after any step and resumed, fit ends where it would have."""

import json
import shutil
import zipfile

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from test_checkpoint import unstacked

from maf_jax import MAF, fit
from maf_jax.checkpoint import training as resume
from maf_jax.checkpoint.model import CheckpointError

STEPS_PER_EPOCH = 6  # 150 training rows in batches of 25


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(200, 2)) * [3.0, 0.5] + [1.0, -2.0]


def run(values=None, **kwargs):
    """A small fit that stops early after 7 epochs (42 steps), best epoch 4."""
    flow = MAF(2, transforms=2, hidden_features=(8,), rngs=nnx.Rngs(0))
    settings = dict(
        key=jax.random.key(0), epochs=12, batch_size=25, validation=0.25, patience=2,
        optimizer=optax.adam(0.03), progress=False,
    )  # fmt: skip
    return fit(flow, data() if values is None else values, **(settings | kwargs))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run, its state saved after every step."""
    folder = tmp_path_factory.mktemp("straight")
    saved = []
    original = resume.save

    def save_and_keep(path, trees, record):
        original(path, trees, record)
        shutil.copy(path, folder / f"step-{record['step']}.npz")
        saved.append(record["step"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume, "save", save_and_keep)
        model, history = run(checkpoint=folder / "state.npz", checkpoint_every=1)
    assert saved == list(range(1, 43))
    return folder, model, history


def params(model):
    return [np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_the_straight_run_stops_early_with_a_best_epoch_before_the_last(straight):
    _, model, history = straight
    assert history.stopped == "early stopping" and history.steps == 42
    assert history.best_epoch == 4 and len(history.val_nll) == 7
    _, plain = run()  # writing checkpoints changes nothing
    assert plain == history


@pytest.mark.parametrize(
    "step",
    [
        3,  # mid-epoch, first epoch
        12,  # epoch boundary, one epoch without improvement
        15,  # mid-epoch while waiting: the best parameters differ from the current ones
        38,  # mid-epoch of the last epoch
        42,  # after the last epoch: early stopping already decided
    ],
)
def test_resuming_after_any_step_ends_bit_for_bit_like_the_straight_run(straight, step):
    folder, model, history = straight
    state = resume.read_record(folder / f"step-{step}.npz")[0]
    # the epoch of the step, still open: a run resumed from it closes it first
    epoch, position = divmod(step - 1, STEPS_PER_EPOCH)
    assert (state["epoch"], state["position"]) == (epoch, position + 1)
    resumed, resumed_history = run(resume=folder / f"step-{step}.npz")
    assert resumed_history == history
    for a, b in zip(params(resumed), params(model), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def budget(tmp_path_factory):
    """A run of 20 steps (3 epochs and 2 steps of a fourth), its last state written."""
    path = tmp_path_factory.mktemp("budget") / "state.npz"
    return path, run(steps=20, epochs=None, patience=None, checkpoint=path, checkpoint_every=20)


@pytest.mark.parametrize("steps", [20, 21, 24, 30])
def test_a_step_budget_resumed_with_a_larger_one_ends_like_the_straight_run(budget, steps):
    """The budget's last state is mid-epoch: a larger budget goes on with that epoch
    (whole epochs of 6 steps then, the last one cut short), the same one ends at once."""
    path, _ = budget
    model, history = run(steps=steps, epochs=None, patience=None)
    assert history.steps == steps and len(history.train_loss) == -(-steps // STEPS_PER_EPOCH)
    resumed, resumed_history = run(steps=steps, epochs=None, patience=None, resume=path)
    assert resumed_history == history
    for a, b in zip(params(resumed), params(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_step_budget_below_the_resumed_step_is_refused(budget):
    with pytest.raises(ValueError, match="at step 20, past this run's steps=19"):
        run(steps=19, epochs=None, patience=None, resume=budget[0])


def test_the_stored_state_is_the_runs_own(straight):
    folder, _, history = straight
    record, headers = resume.read_record(folder / "step-15.npz")
    assert record["waited"] == 1 and record["best_epoch"] == 0 and record["steps"] == 12
    assert record["best"] == pytest.approx(history.val_nll[0], rel=0, abs=0)
    assert headers["epoch_losses"].shape == (3,) and headers["train_loss"].shape == (2,)
    assert any(name.startswith("opt_state/") for name in headers)


def rewrite(src, dst, change):
    with np.load(src) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(dst, **arrays)


def record_update(**updates):
    def change(arrays):
        record = json.loads(arrays["__training__"].tobytes()) | updates
        arrays["__training__"] = np.frombuffer(json.dumps(record).encode(), np.uint8)

    return change


KERNEL = "params/flow/transforms/stacked/hyper/layers/0/kernel"  # (transforms, in, out)
ORDER = "rest/flow/transforms/stacked/order"  # (transforms, features)


@pytest.mark.parametrize(
    "change,kwargs,message",
    [
        (None, dict(batch_size=50), "written with batch_size 25, this run has 50"),
        (None, dict(key=jax.random.key(1)), "written by a run with another key"),
        (None, dict(validation=0.2), "written with validation 0.25, this run has 0.2"),
        (None, dict(values=data() + 1e-9), "written for other data"),
        (None, dict(batch_size=24, shards=2), "written with batch_size 25, this run has 24"),
        (record_update(position=7), {}, "position 7 is past the epoch's 6 steps"),
        (record_update(step=-1), {}, "step is negative"),
        (record_update(best="x"), {}, "best is missing or malformed"),
        (record_update(format="other"), {}, "not a maf-jax training checkpoint"),
        (
            lambda a: a.update({"__training__": np.frombuffer(b"[" * 100_000, np.uint8)}),
            {},
            "the training record is not JSON",
        ),
        (lambda a: a.pop(KERNEL), {}, "missing \\['params/flow/transforms/stacked/hyper/layers/0"),
        (lambda a: a.update({KERNEL: a[KERNEL][:1]}), {}, "kernel has shape \\(1, 2, 8\\)"),
        (lambda a: a.update({KERNEL: a[KERNEL] * np.nan}), {}, "kernel holds NaN or inf"),
        (lambda a: a.update({ORDER: np.zeros_like(a[ORDER])}), {}, "order: .*permutation"),
        (lambda a: a.update({"epoch_losses": np.ones(5, np.float32)}), {}, "epoch_losses has"),
    ],
)
def test_a_checkpoint_of_another_run_or_tampered_with_is_refused(
    straight, tmp_path, change, kwargs, message
):
    folder = straight[0]
    path = folder / "step-15.npz"
    if change is not None:
        rewrite(path, tmp_path / "x.npz", change)
        path = tmp_path / "x.npz"
    with pytest.raises(CheckpointError, match=message):
        run(resume=path, **kwargs)


def test_a_state_written_before_the_stacked_layout_resumes_bit_for_bit(straight, tmp_path):
    folder, model, history = straight
    rewrite(folder / "step-15.npz", tmp_path / "old.npz", unstacked)
    with np.load(tmp_path / "old.npz") as old:  # parameters, optimiser state, best ones
        names = old.files
    assert "params/flow/transforms/1/hyper/layers/0/kernel" in names
    assert "opt_state/0/mu/flow/transforms/0/hyper/layers/1/bias" in names
    assert not any("stacked" in name for name in names)
    resumed, resumed_history = run(resume=tmp_path / "old.npz")
    assert resumed_history == history
    for a, b in zip(params(resumed), params(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_another_model_or_a_model_checkpoint_is_refused(straight, tmp_path):
    folder = straight[0]
    bigger = MAF(2, transforms=2, hidden_features=(16,), rngs=nnx.Rngs(0))
    with pytest.raises(CheckpointError, match="model with hidden_features \\[8\\], this one"):
        fit(bigger, data(), key=jax.random.key(0), epochs=12, batch_size=25,
            validation=0.25, progress=False, resume=folder / "step-15.npz")  # fmt: skip
    from maf_jax import checkpoint

    model_file = checkpoint.save(tmp_path / "model.npz", straight[1])
    with pytest.raises(CheckpointError, match="a model checkpoint: fit --resume takes"):
        run(resume=model_file)
    with pytest.raises(CheckpointError, match="no such training checkpoint"):
        run(resume=tmp_path / "none.npz")


def test_a_compressed_checkpoint_is_refused_unread(straight, tmp_path):
    with np.load(straight[0] / "step-15.npz") as archive:
        np.savez_compressed(tmp_path / "z.npz", **{k: archive[k] for k in archive.files})
    with pytest.raises(CheckpointError, match="compressed or mislabelled"):
        run(resume=tmp_path / "z.npz")
    with zipfile.ZipFile(tmp_path / "z.npz") as archive:  # the member was there to read
        assert "__training__.npy" in archive.namelist()


def test_a_failed_write_keeps_the_previous_checkpoint(straight, tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    shutil.copy(straight[0] / "step-12.npz", path)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        run(checkpoint=path, checkpoint_every=1)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.npz"]  # no temporary left
