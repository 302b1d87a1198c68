"""MixtureCDF: a Gaussian mixture's CDF onto the standard normal, against float64 NumPy."""

import math
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maf_jax.bijections import MixtureCDF, normal_quantile
from maf_jax.bijections.mixture import LOG_SCALE_BOUND

LOGITS, MEANS, SCALES = [0.3, -0.2, 1.0], [-2.0, 0.5, 3.0], [0.1, -1.0, 0.5]


def reference(x: float, logits=LOGITS, means=MEANS, scales=SCALES) -> float:
    """``Phi^{-1}(F(x))`` in float64 from the smaller tail, and ``log f(x)``."""
    weights = np.exp(logits) / np.exp(logits).sum()
    raw = np.asarray(scales, np.float64)
    sigmas = np.exp(raw / (1 + np.abs(raw) / LOG_SCALE_BOUND))  # soft_bound
    parts = list(zip(weights, means, sigmas))
    cdf = sum(w * 0.5 * math.erfc(-(x - m) / (s * math.sqrt(2))) for w, m, s in parts)
    sf = sum(w * 0.5 * math.erfc((x - m) / (s * math.sqrt(2))) for w, m, s in parts)
    pdf = sum(w * NormalDist(m, s).pdf(x) for w, m, s in parts)
    z = NormalDist().inv_cdf(cdf) if cdf < sf else -NormalDist().inv_cdf(sf)
    return z, math.log(pdf) + 0.5 * z * z + 0.5 * math.log(2 * math.pi)


def mixture():
    return MixtureCDF(jnp.array(LOGITS), jnp.array(MEANS), jnp.array(SCALES))


# compiled once per shape and shared by the tests
FORWARD = jax.jit(lambda x: mixture().forward_and_log_det(x))
INVERSE = jax.jit(lambda z: mixture().inverse_and_log_det(z))
QUANTILE = jax.jit(normal_quantile)


@pytest.mark.parametrize("x", [-30.0, -8.0, -3.0, -1.0, 0.0, 0.5, 2.0, 5.0, 12.0, 40.0])
def test_forward_is_the_normal_quantile_of_the_mixture_cdf(x):
    # -30 and 40 lie where F or 1 - F is below float32's smallest normal number
    z, ladj = FORWARD(jnp.float32(x))
    z_ref, ladj_ref = reference(x)
    np.testing.assert_allclose(float(z), z_ref, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(float(ladj), ladj_ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("log_p", [-500.0, -120.0, -87.0, -20.0, -3.0, -0.7])
def test_normal_quantile_from_either_tail(log_p):
    p = math.exp(log_p)
    z_ref = NormalDist().inv_cdf(p)
    log_q = math.log1p(-p)
    below = float(QUANTILE(jnp.float32(log_p), jnp.float32(log_q)))
    above = float(QUANTILE(jnp.float32(log_q), jnp.float32(log_p)))  # 1 - p
    np.testing.assert_allclose([below, above], [z_ref, -z_ref], rtol=2e-6, atol=1e-6)


def test_normal_quantile_derivative_is_one_over_the_density():
    log_p = jnp.float32(-3.0)
    fn = lambda a: normal_quantile(a, jnp.log1p(-jnp.exp(a)))  # noqa: E731
    z = NormalDist().inv_cdf(math.exp(-3.0))
    expected = math.exp(-3.0) / NormalDist().pdf(z)  # dz/dlog p = p / phi(z)
    np.testing.assert_allclose(float(jax.jit(jax.grad(fn))(log_p)), expected, rtol=1e-5)


def test_inverse_inverts_forward_over_the_float32_range():
    z = jnp.linspace(-13.0, 13.0, 261)
    x, ladj = INVERSE(z)
    z_back, ladj_forward = FORWARD(x)
    np.testing.assert_allclose(z_back, z, rtol=1e-5, atol=2e-5)
    # log f(x) and z^2 / 2 cancel: at |z| = 13 each is about 84, a float32 ulp of 8e-6
    np.testing.assert_allclose(ladj, -ladj_forward, rtol=1e-5, atol=5e-5)
    assert bool(jnp.all(jnp.diff(x) > 0))  # monotonic


def test_log_det_is_the_log_derivative():
    x = jnp.linspace(-6.0, 9.0, 31)
    slopes = jax.jit(jax.vmap(jax.grad(lambda x: FORWARD(x)[0])))(x)
    np.testing.assert_allclose(FORWARD(x)[1], jnp.log(slopes), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_random_mixtures_round_trip_row_by_row(seed):
    # (rows, K) parameters, the shapes an autoregressive transform passes
    keys = jax.random.split(jax.random.key(seed), 4)
    logits, means = (3 * jax.random.normal(k, (50, 6)) for k in keys[:2])
    scales = 2 * jax.random.normal(keys[2], (50, 6))
    z = 3 * jax.random.normal(keys[3], (50,))
    np.testing.assert_allclose(ROUND_TRIP(logits, means, scales, z), z, rtol=1e-4, atol=1e-4)


@jax.jit
def ROUND_TRIP(logits, means, scales, z):  # noqa: N802
    t = MixtureCDF(logits, means, scales)
    return t.forward(t.inverse(z))


def test_non_finite_noise_maps_to_itself():
    x = INVERSE(jnp.array([jnp.nan, -jnp.inf, jnp.inf, 0.0]))[0]
    assert np.isnan(x[0]) and x[1] == -np.inf and x[2] == np.inf and np.isfinite(x[3])
    assert np.isnan(FORWARD(jnp.array([jnp.nan, 0.0, 1.0, 2.0]))[0][0])


def test_gradients_are_finite_in_the_far_tails():
    # where F(x) underflows float32 the smaller tail's ratio p / phi(z) stays finite
    def log_prob_like(params, x):
        t = MixtureCDF(*params)
        z, ladj = t.forward_and_log_det(x)
        return (-0.5 * z**2 + ladj).sum()

    params = (jnp.array(LOGITS), jnp.array(MEANS), jnp.array(SCALES))
    x = jnp.array([-30.0, -8.0, 0.0, 12.0, 40.0])
    grads = jax.jit(jax.grad(log_prob_like, argnums=(0, 1)))(params, x)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
