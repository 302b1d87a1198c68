"""The batch normalisation bijection: its formula, log-determinant, inverse, statistics."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maf_jax.bijections.batch_norm import BatchNormalization, batch_statistics

X = jax.random.normal(jax.random.key(0), (64, 3)) * jnp.array([2.0, 0.5, 1.0]) + 3.0
NORM = BatchNormalization(
    log_gamma=jnp.array([0.3, -0.2, 0.0]),
    beta=jnp.array([1.0, 0.0, -2.0]),
    mean=jnp.array([2.5, 3.5, 3.0]),
    var=jnp.array([3.0, 0.2, 1.5]),
)


@pytest.mark.parametrize("batch", [False, True])
def test_forward_is_the_formula_with_running_or_batch_statistics(batch):
    norm = dataclasses.replace(NORM, batch=batch)
    y, ladj = norm.forward_and_log_det(X)
    x = np.asarray(X, np.float64)
    mean, var = (x.mean(0), x.var(0)) if batch else (np.asarray(NORM.mean), np.asarray(NORM.var))
    gamma = np.exp(np.asarray(NORM.log_gamma, np.float64))
    expected = gamma * (x - mean) / np.sqrt(var + 1e-5) + np.asarray(NORM.beta)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ladj, np.log(gamma / np.sqrt(var + 1e-5)).sum(), rtol=1e-6)
    assert ladj.shape == (64,)


def test_log_det_is_the_jacobians_and_the_inverse_is_exact():
    jacobian = jax.jacfwd(NORM.forward)(X[0])
    _, ladj = NORM.forward_and_log_det(X[0])
    np.testing.assert_allclose(ladj, jnp.linalg.slogdet(jacobian)[1], rtol=1e-6)
    x, inverse_ladj = NORM.inverse_and_log_det(NORM.forward(X))
    np.testing.assert_allclose(x, X, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(inverse_ladj, -NORM.forward_and_log_det(X)[1], rtol=1e-6)


def test_the_inverse_of_a_training_norm_uses_the_running_statistics():
    training = dataclasses.replace(NORM, batch=True)
    y = jax.random.normal(jax.random.key(1), (5, 3))
    np.testing.assert_array_equal(training.inverse(y), NORM.inverse(y))


def test_batch_statistics_average_over_a_named_axis():
    # 4 devices of 16 rows each, mapped with an axis name as pmap maps them
    shards = X.reshape(4, 16, 3)
    means, variances = jax.vmap(lambda x: batch_statistics(x, "devices"), axis_name="devices")(
        shards
    )
    for got, want in ((means, X.mean(0)), (variances, X.var(0))):
        np.testing.assert_allclose(got, jnp.broadcast_to(want, got.shape), rtol=1e-5, atol=1e-6)
    local = batch_statistics(shards[0])[0]
    assert not np.allclose(local, X.mean(0), rtol=1e-3)  # the shard alone differs
