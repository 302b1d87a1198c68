"""MAF with batch normalisation: modes, running averages, the paper's statistics, fitting."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import batch_norm_inputs, scramble
from flax import nnx

from maf_jax import MAF, fit
from maf_jax.flows.standardized import Standardized

ROWS = jax.random.normal(jax.random.key(0), (256, 2)) * jnp.array([3.0, 0.5]) + 1.0


def built(gain=1.0, axis=None):
    flow = MAF(
        2, transforms=3, hidden_features=(16,), batch_norm=True, batch_norm_axis=axis,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    return scramble(flow, gain=gain)


def test_a_flow_is_built_training_and_switches_modes():
    flow = built()
    assert flow.norms.stacked.use_running_average is False
    training = flow().log_prob(ROWS)
    flow.eval()
    running = flow().log_prob(ROWS)  # mean 0, variance 1 as built: no normalisation
    assert not np.allclose(training, running, atol=1e-2)
    flow.train()
    np.testing.assert_array_equal(flow().log_prob(ROWS), training)


def test_update_moves_the_running_averages_toward_each_norms_input_statistics():
    flow = built()
    inputs = batch_norm_inputs(flow, ROWS)
    flow.update_batch_norms(ROWS)
    means = np.stack([y.mean(0) for y in inputs])
    variances = np.stack([y.var(0) for y in inputs])
    np.testing.assert_allclose(flow.norms.stacked.mean[...], 0.1 * means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flow.norms.stacked.var[...], 0.9 + 0.1 * variances, rtol=1e-4)


def test_set_statistics_make_the_evaluation_density_the_training_one_on_those_rows():
    flow = built()
    training = flow().log_prob(ROWS)
    flow.set_batch_norms(ROWS)
    flow.eval()
    np.testing.assert_allclose(flow().log_prob(ROWS), training, rtol=1e-4, atol=1e-4)
    means = np.stack([y.mean(0) for y in batch_norm_inputs(built(), ROWS)])
    np.testing.assert_allclose(flow.norms.stacked.mean[...], means, rtol=1e-4, atol=1e-5)


def test_in_evaluation_the_density_integrates_to_one_and_samples_agree():
    flow = built(gain=0.6)  # tails that the grid holds
    flow.set_batch_norms(ROWS)
    flow.eval()
    grid = jnp.linspace(-14.0, 16.0, 1201)
    cell = float(grid[1] - grid[0]) ** 2
    xy = jnp.stack(jnp.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    mass = float(jnp.exp(jax.jit(lambda x: flow().log_prob(x))(xy)).sum()) * cell
    assert abs(mass - 1) < 2e-3, mass
    x, log_prob = flow().sample_and_log_prob(jax.random.key(1), (100,))
    np.testing.assert_allclose(flow().log_prob(x), log_prob, rtol=1e-4, atol=1e-4)
    evaluation = flow().sample(jax.random.key(1), (100,))
    flow.train()  # sampling always uses the running statistics
    np.testing.assert_array_equal(flow().sample(jax.random.key(1), (100,)), evaluation)


def test_fit_trains_with_batch_statistics_and_returns_a_model_that_evaluates():
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(size=2000), rng.normal(size=2000) ** 2], 1)
    flow = MAF(2, transforms=3, hidden_features=(16,), batch_norm=True, rngs=nnx.Rngs(0))
    model, history = fit(
        flow, data, key=jax.random.key(0), epochs=4, optimizer=optax.adam(3e-3), progress=False
    )
    assert isinstance(model, Standardized) and model.flow.norms.stacked.use_running_average
    assert not np.allclose(model.flow.norms.stacked.var[...], 1.0)  # the averages moved
    # validation used the running averages: the returned model gives its figure
    assert np.isfinite(history.val_nll).all() and min(history.val_nll[1:]) < history.val_nll[0]
    u, _ = model._flow_inputs(jnp.asarray(data, jnp.float32), None)
    assert np.isfinite(np.asarray(model().log_prob(jnp.asarray(data[:5], jnp.float32)))).all()
    before = model.flow.norms.stacked.mean[...]
    model.set_batch_norms(jnp.asarray(data, jnp.float32))
    means = np.stack([y.mean(0) for y in batch_norm_inputs(model.flow, u)])
    np.testing.assert_allclose(model.flow.norms.stacked.mean[...], means, rtol=1e-3, atol=1e-4)
    assert not np.allclose(before, means, atol=1e-4)


@pytest.mark.parametrize(
    "shards,bounds,context",
    [
        (1, None, 0),  # 5,000 rows: two chunks of 4,096, the last one padded
        (2, None, 0),  # two shards of 2,500 rows, one padded chunk each
        (1, (-6.0, 30.0), 0),  # the rows carried onto the real line, then standardised
        (1, None, 1),  # a context row for every data row
    ],
)
def test_fit_sets_the_statistics_of_every_training_row_when_asked(shards, bounds, context):
    rng = np.random.default_rng(0)
    data = np.stack([rng.normal(size=5000), rng.normal(size=5000) ** 2], 1)
    c = data[:, :1] + rng.normal(size=(5000, 1)) if context else None
    flow = MAF(
        2, context, transforms=3, hidden_features=(16,), batch_norm=True, bounds=bounds,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    model, _ = fit(
        flow, data, context=c, key=jax.random.key(0), epochs=2, validation=0.0,
        shards=shards, optimizer=optax.adam(3e-3), progress=False,
        batch_norm_statistics="data",
    )  # fmt: skip
    assert model.flow.norms.stacked.use_running_average
    u, c = model._flow_inputs(jnp.asarray(data, jnp.float32), c if c is None else jnp.asarray(c))
    inputs = batch_norm_inputs(model.flow, u, c)  # every row's, each norm with its own statistics
    stats = model.flow.norms.stacked
    np.testing.assert_allclose(stats.mean[...], [y.mean(0) for y in inputs], atol=1e-5)
    np.testing.assert_allclose(stats.var[...], [y.var(0) for y in inputs], rtol=1e-4)


def test_the_paper_s_statistics_need_batch_norms_and_a_known_name():
    data = np.asarray(ROWS)
    with pytest.raises(ValueError, match="batch_norm_statistics must be one of"):
        fit(built(), data, key=jax.random.key(0), batch_norm_statistics="paper")
    with pytest.raises(ValueError, match="build the flow with batch_norm=True"):
        fit(MAF(2, rngs=nnx.Rngs(0)), data, key=jax.random.key(0), batch_norm_statistics="data")


BOX = jax.random.uniform(jax.random.key(2), (256, 2), minval=0.02, maxval=0.98) ** jnp.array(
    [1.0, 3.0]
)


def bounded():
    flow = MAF(
        2, transforms=2, hidden_features=(16,), batch_norm=True, bounds=(0.0, 1.0),
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    return scramble(flow)


@pytest.mark.parametrize("how", ["method", "fit"])
def test_a_bounded_flows_averages_move_with_its_rows_on_the_real_line(how):
    """The norms see the data carried onto the real line, whether the averages move
    by the method or in ``fit`` (one step on every row, without standardising)."""
    flow = bounded()
    u = flow.support.forward(BOX)
    means = np.stack([y.mean(0) for y in batch_norm_inputs(flow, u)])
    if how == "method":
        flow.update_batch_norms(BOX)
    else:
        flow, _ = fit(
            flow, np.asarray(BOX), key=jax.random.key(0), steps=1, batch_size=256,
            validation=0.0, standardize=False, progress=False,
        )  # fmt: skip
    np.testing.assert_allclose(flow.norms.stacked.mean[...], 0.1 * means, rtol=1e-4, atol=1e-5)


def test_a_bounded_flows_set_statistics_are_those_of_its_rows_on_the_real_line():
    flow = bounded()
    means = np.stack([y.mean(0) for y in batch_norm_inputs(bounded(), flow.support.forward(BOX))])
    flow.set_batch_norms(BOX)
    np.testing.assert_allclose(flow.norms.stacked.mean[...], means, rtol=1e-4, atol=1e-5)


def test_under_a_named_axis_the_batch_statistics_are_every_devices():
    flow = built(axis="devices")  # as under jax.pmap(..., axis_name="devices")
    graphdef, state = nnx.split(flow)
    shards = ROWS.reshape(4, 64, 2)
    mapped = jax.vmap(lambda x: nnx.merge(graphdef, state)().log_prob(x), axis_name="devices")
    whole = built()().log_prob(ROWS)
    np.testing.assert_allclose(mapped(shards).reshape(-1), whole, rtol=1e-5, atol=1e-5)
    alone = built()().log_prob(shards[0])  # a shard's own statistics differ
    assert not np.allclose(alone, whole[:64], atol=1e-3)


def test_batch_norm_must_be_a_boolean_and_a_flow_without_has_no_statistics():
    with pytest.raises(ValueError, match="batch_norm must be True or False, got 1"):
        MAF(2, batch_norm=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="batch_norm_axis names the batch norms' axis"):
        MAF(2, batch_norm_axis="devices", rngs=nnx.Rngs(0))
    for method in ("update_batch_norms", "set_batch_norms"):
        with pytest.raises(ValueError, match="no batch normalisation: build it with batch_norm"):
            getattr(MAF(2, rngs=nnx.Rngs(0)), method)(ROWS)
