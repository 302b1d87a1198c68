"""MAF MoG: the MADE MoG base's density, its sampler, its start, and fitting with it."""

import dataclasses
import math
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import scramble
from flax import nnx

from maf_jax import MAF, MAFMoG, fit
from maf_jax.flows import MADEMoG


@pytest.fixture(scope="module")
def flow():
    # one transform on a 3-component base: generic, multimodal
    return scramble(
        MAFMoG(2, transforms=1, components=3, hidden_features=(16, 16), rngs=nnx.Rngs(0))
    )


@pytest.fixture(scope="module")
def grid_density(flow):
    grid = np.linspace(-10, 10, 801)
    cell = grid[1] - grid[0]
    xy = jnp.asarray(np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2))
    density = np.exp(np.asarray(jax.jit(lambda x: flow().log_prob(x))(xy), np.float64))
    return grid, cell, density.reshape(len(grid), len(grid))


def test_density_integrates_to_one(grid_density):
    _, cell, density = grid_density
    assert abs(density.sum() * cell**2 - 1) < 2e-3, density.sum() * cell**2


def test_each_features_mixture_sees_only_the_features_before_it(flow):
    base = flow().base
    u = jax.random.normal(jax.random.key(0), (2,))
    for part in range(3):  # log-weights, means, log-scales: (features, K) each
        jacobian = jax.jacfwd(lambda u, p=part: base.mixture(u)[p])(u)  # (2, K, 2)
        assert float(jnp.abs(jacobian[0]).max()) == 0  # feature 0 sees neither
        assert float(jnp.abs(jacobian[1, :, 1]).max()) == 0  # feature 1 not itself
        assert float(jnp.abs(jacobian[1, :, 0]).max()) > 1e-3  # but feature 0


def test_samples_follow_the_density_feature_by_feature(flow, grid_density):
    grid, cell, density = grid_density
    x = np.asarray(flow().sample(jax.random.key(1), (20_000,)))
    for feature in (0, 1):  # feature 1's marginal needs feature 0 drawn first
        marginal = density.sum(axis=1 - feature) * cell
        cdf = np.cumsum(marginal) * cell
        empirical = np.searchsorted(np.sort(x[:, feature]), grid) / len(x)
        assert np.abs(cdf - empirical).max() < 0.015  # Kolmogorov-Smirnov at n=20000


def test_sample_and_log_prob_agree_with_log_prob():
    flow = MAFMoG(3, context=2, transforms=2, components=4, rngs=nnx.Rngs(1))
    c = jax.random.normal(jax.random.key(0), (5, 2))
    x, log_prob = flow(c).sample_and_log_prob(jax.random.key(1), (7,))
    assert x.shape == (7, 5, 3) and log_prob.shape == (7, 5)
    np.testing.assert_allclose(flow(c).log_prob(x), log_prob, rtol=1e-5, atol=1e-5)
    # one context at a time under vmap: the batch's densities
    one = jax.vmap(lambda c, x: flow(c).log_prob(x), in_axes=(0, 1), out_axes=1)(c, x)
    np.testing.assert_allclose(one, log_prob, rtol=1e-5, atol=1e-5)


def test_a_new_base_is_a_standard_normal_made_of_distinct_components():
    base = MADEMoG(1, components=10, hidden_features=(8,), rngs=nnx.Rngs(0))()
    grid = jnp.linspace(-10, 10, 4001)[:, None]
    density = np.exp(np.asarray(base.log_prob(grid), np.float64))
    cell = float(grid[1, 0] - grid[0, 0])
    moments = [float((density * grid[:, 0] ** k).sum() * cell) for k in range(3)]
    np.testing.assert_allclose(moments, [1.0, 0.0, 1.0], atol=2e-3)
    _, means, _ = base.mixture(jnp.zeros(1))
    assert np.diff(np.asarray(means[0])).min() > 0.1  # spread, in order


def test_a_bimodal_density_is_fitted_where_a_maf_cannot_be():
    # in one dimension every MAF is a Gaussian; a MAF MoG with two components is not
    rng = np.random.default_rng(0)
    data = np.where(rng.random((3000, 1)) < 0.3, -2.0, 3.0) + 0.4 * rng.normal(size=(3000, 1))
    test = data[2000:]
    held_out = {}
    for name, cls in [("maf", MAF), ("mog", MAFMoG)]:
        extra = {"components": 2} if name == "mog" else {}
        flow = cls(1, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0), **extra)
        model, _ = fit(
            flow, data[:2000], key=jax.random.key(0), steps=600, batch_size=200,
            optimizer=optax.adam(1e-2), patience=None, progress=False,
        )  # fmt: skip
        held_out[name] = -float(model().log_prob(jnp.asarray(test, jnp.float32)).mean())
    # the true density's NLL: -log(0.3 N(x; -2, 0.4) + 0.7 N(x; 3, 0.4))
    log_normal = lambda m: -0.5 * ((test - m) / 0.4) ** 2 - math.log(0.4 * math.sqrt(2 * math.pi))  # noqa: E731
    true = -np.logaddexp(math.log(0.3) + log_normal(-2), math.log(0.7) + log_normal(3)).mean()
    assert held_out["mog"] < true + 0.05, (held_out, true)
    assert held_out["maf"] > true + 0.8, (held_out, true)  # a Gaussian over both modes


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(components=0), "components must be"),
        (dict(components=2.5), "components must be"),
    ],
)
def test_bad_components_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MAFMoG(2, rngs=nnx.Rngs(0), **kwargs)


def test_the_base_draws_each_feature_at_its_mixtures_quantile_of_the_noise(flow):
    # u = T^{-1}(z): given u_<i, feature i's mixture CDF (from the density's own pass,
    # in float64) at u_i is Phi(z_i), each side computed from its own tail
    base = flow().base
    z = np.asarray(jax.random.normal(jax.random.key(3), (500, 2)) * 3)
    u = jax.jit(lambda z: base.transform().inverse(z))(jnp.asarray(z))
    log_weights, means, log_scales = (np.asarray(a, np.float64) for a in base.mixture(u))
    scaled = (np.asarray(u, np.float64)[..., None] - means) / np.exp(log_scales)
    tails = [
        (np.exp(log_weights) * 0.5 * np.vectorize(math.erfc)(sign * scaled / math.sqrt(2))).sum(-1)
        for sign in (-1, 1)
    ]
    quantile = np.vectorize(NormalDist().inv_cdf)
    back = np.where(z < 0, 1, -1) * quantile(np.where(z < 0, tails[0], tails[1]))
    np.testing.assert_allclose(back, z, atol=1e-4)  # u holds a float32's 7 digits


def test_samples_are_differentiable_in_the_mixture_weights(flow):
    # d mean(u^2) / d logit by the implicit derivative, against central differences
    base = flow().base
    *hidden, (kernel, bias) = base.weights
    key = jax.random.key(4)

    @jax.jit
    def loss(bias):
        weights = (*hidden, (kernel, bias))
        return (dataclasses.replace(base, weights=weights).sample(key, (256,)) ** 2).mean()

    grad = jax.jit(jax.grad(loss))(bias)
    components = 3
    for index in (0, 1, 3 * components + 2):  # feature 0's logits, feature 1's third
        step = jnp.zeros_like(bias).at[index].set(1e-2)
        numeric = (loss(bias + step) - loss(bias - step)) / 2e-2
        np.testing.assert_allclose(float(grad[index]), float(numeric), rtol=2e-2, atol=2e-4)
    assert float(jnp.abs(grad[:components]).max()) > 1e-3  # the weights do get gradients
