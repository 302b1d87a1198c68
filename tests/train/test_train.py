"""fit: standardisation with its Jacobian, early stopping, non-finite losses, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from maf_jax import MAF
from maf_jax.data.loaders import DataError, split
from maf_jax.flows.standardized import Standardized
from maf_jax.train.fitting import fit, mean_log_prob


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(600, 2)) * [10.0, 0.1] + [100.0, -3.0]


def test_standardisation_is_undone_with_its_jacobian(data):
    model = Standardized.from_data(MAF(2, transforms=2, rngs=nnx.Rngs(0)), data)
    mean, std = data.mean(0), data.std(0)
    x = jnp.asarray(data[:5], jnp.float32)
    z = (x - mean) / std
    expected = model.flow().log_prob(z) - np.log(std).sum()
    np.testing.assert_allclose(model().log_prob(x), expected, rtol=1e-5)
    samples = model().sample(jax.random.key(0), (4000,))
    np.testing.assert_allclose(samples.mean(0), mean, rtol=0.02)  # back in data units
    np.testing.assert_allclose(samples.std(0), std, rtol=0.1)


def test_fit_reaches_the_gaussian_likelihood(data):
    model, history = fit(
        MAF(2, transforms=2, hidden_features=(16,), rngs=nnx.Rngs(0)),
        data,
        key=jax.random.key(0),
        epochs=15,
        batch_size=64,
        patience=None,
        progress=False,
    )
    # exact entropy of the generating Gaussian: log(2 pi e) + log(10 * 0.1)
    entropy = math.log(2 * math.pi * math.e)
    mean, stderr = mean_log_prob(model, data)
    assert abs(mean + entropy) < 0.1, (mean, -entropy)
    assert stderr > 0
    assert history.stopped == "completed" and len(history.val_nll) == 15
    assert history.val_nll[history.best_epoch] == min(history.val_nll)


def test_early_stopping_keeps_the_best_parameters(data):
    model, history = fit(
        MAF(2, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0)),
        data,
        key=jax.random.key(1),
        epochs=200,
        patience=2,
        batch_size=64,
        optimizer=optax.adam(0.3),
        progress=False,
    )
    assert history.stopped == "early stopping" and len(history.val_nll) < 200
    assert history.best_epoch == len(history.val_nll) - 3
    split_key = jax.random.split(jax.random.key(1))[0]  # shard 0 of 1 splits with fold_in(., 0)
    _, val = split(len(data), (0.9, 0.1), jax.random.fold_in(split_key, 0))
    nll = -float(model().log_prob(jnp.asarray(data[val], jnp.float32)).mean())
    assert nll == pytest.approx(history.val_nll[history.best_epoch], rel=1e-5)


def test_non_finite_loss_stops_and_keeps_last_good_parameters(data):
    flow = MAF(2, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0))
    with pytest.warns(RuntimeWarning, match="non-finite training loss at epoch 0"):
        model, history = fit(
            flow,
            data,
            key=jax.random.key(0),
            epochs=3,
            progress=False,
            optimizer=optax.sgd(float("nan")),
        )
    assert history.steps == 0 and history.train_loss == []
    params = nnx.state(model, nnx.Param)
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))


def test_the_arrays_a_user_holds_outlive_the_donated_steps(data):
    """The train step donates its buffers; the flow's arrays before fit stay valid."""
    flow = MAF(2, transforms=2, hidden_features=(8,), rngs=nnx.Rngs(0))
    before = jax.tree.leaves(nnx.state(flow))
    values = [np.array(a) for a in before]
    model, history = fit(flow, data, key=jax.random.key(0), epochs=2, progress=False)
    assert history.steps > 2
    assert not any(a.is_deleted() for a in before)
    for a, value in zip(before, values, strict=True):
        np.testing.assert_array_equal(a, value)
    trained = jax.tree.leaves(nnx.state(model.flow, nnx.Param))
    assert not any(a.is_deleted() for a in trained)
    assert not all(np.array_equal(a, b) for a, b in zip(trained, values))


def test_steps_budget_and_conditional_fit():
    rng = np.random.default_rng(1)
    c = rng.normal(size=(300, 1))
    x = c * 2 + 0.1 * rng.normal(size=(300, 1))
    x = np.concatenate([x, rng.normal(size=(300, 1))], axis=1)
    model, history = fit(
        MAF(2, context=1, transforms=2, rngs=nnx.Rngs(0)),
        x,
        context=c,
        key=jax.random.key(0),
        steps=25,
        batch_size=32,
        progress=False,
    )
    assert history.steps == 25
    far = model(jnp.array([[3.0]])).log_prob(jnp.array([[6.0, 0.0], [-6.0, 0.0]]))
    assert far[0] > far[1]  # the context moved the density


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(context=np.ones((600, 1))), "unconditional"),
        (dict(validation=1.0), "fraction in \\[0, 1\\)"),
        (dict(epochs=1, steps=1), "epochs or steps, not both"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(batch_size=25, shards=2), "batch_size 25 must be a multiple of the 2 shards"),
        (dict(shards=0), "shards must be a positive integer"),
        (dict(checkpoint_every=5), "checkpoint_every must be a positive integer, with a"),
    ],
)
def test_fit_errors(data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(
            MAF(2, transforms=1, rngs=nnx.Rngs(0)),
            data,
            key=jax.random.key(0),
            progress=False,
            **kwargs,
        )


def test_a_bounded_flow_is_fitted_on_its_support():
    rng = np.random.default_rng(0)
    data, test = (
        np.stack([rng.beta(2.0, 5.0, n), rng.gamma(2.0, 1.0, n)], 1) for n in (1000, 2000)
    )
    # Beta(2, 5) times Gamma(2, 1): 30 x (1 - x)^4 y e^-y
    true = np.log(30 * test[:, 0] * (1 - test[:, 0]) ** 4) + np.log(test[:, 1]) - test[:, 1]
    flow = MAF(
        2, transforms=2, hidden_features=(16, 16), bounds=[(0, 1), (0, None)], rngs=nnx.Rngs(0)
    )
    model, _ = fit(
        flow, data, key=jax.random.key(0), steps=300, batch_size=100, patience=None,
        optimizer=optax.adam(3e-3), progress=False,
    )  # fmt: skip
    held_out = -float(model().log_prob(jnp.asarray(test, jnp.float32)).mean())
    assert held_out < -true.mean() + 0.1, (held_out, -true.mean())
    x = np.asarray(model().sample(jax.random.key(1), (5000,)))
    assert (x > 0).all() and (x[:, 0] < 1).all()
    on_bound = np.where(np.arange(1000)[:, None] == 3, 0.0, data)
    with pytest.raises(DataError, match=r"feature 0 on or beyond its lower bound 0.0 \(rows 3, c"):
        fit(flow, on_bound, key=jax.random.key(0), progress=False)


def test_fit_context_errors(data):
    flow = MAF(2, context=1, transforms=1, rngs=nnx.Rngs(0))
    with pytest.raises(DataError, match="conditional"):
        fit(flow, data, key=jax.random.key(0), progress=False)
    with pytest.raises(DataError, match="context has 5 rows but data has 600"):
        fit(flow, data, context=np.ones((5, 1)), key=jax.random.key(0), progress=False)


def test_top_level_exports_used_in_the_readme(tmp_path):
    import maf_jax

    assert maf_jax.fit is fit and maf_jax.mean_log_prob is mean_log_prob
    flow = maf_jax.MAF(2, transforms=1, rngs=nnx.Rngs(0))
    path = maf_jax.checkpoint.save(tmp_path / "m.npz", flow)
    assert isinstance(maf_jax.checkpoint.load(path), maf_jax.MAF)
