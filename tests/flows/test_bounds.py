"""Flows on a bounded support: samples inside, exact densities, gradients at the bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import link_reference, scramble, set_shares
from flax import nnx

from maf_jax import MAF, NSF, MAFMoG, fit
from maf_jax.flows.standardized import Standardized

BOX = [(-1.0, 1.0), (0.0, 2.0)]
# per feature: both bounds, a lower one, an upper one, none
MIXED = [(-1.0, 2.0), (0.5, None), (None, 3.0), (None, None)]


# per link, a box against which the flows below are wide: their mass presses against
# the bounds. The linear link is the identity inside its box, and a flow whose mass
# spills beyond a tail by more than a few of its scales puts it on the bound (the
# float's resolution, Support's docstring): its box is wider.
# The learned link's tails are set to 0.1 and 0.3 of the width (below).
WIDE = [(-5.0, 5.0), (-4.0, 6.0)]
BOXES = {"linear": WIDE, "probit": BOX, "logit": BOX, "learned": WIDE}
SHARES = {"learned": [0.1, 0.3]}


@pytest.fixture(scope="module", params=list(BOXES))
def box_flow(request):
    flow = MAF(2, transforms=2, hidden_features=(16, 16), bounds=BOXES[request.param],
               link=request.param, rngs=nnx.Rngs(0))  # fmt: skip
    if request.param in SHARES:
        set_shares(flow, SHARES[request.param])
    return scramble(flow)


def shares(support):
    """Per feature, the share of its width that each of ``support``'s tails takes."""
    return [0.02] * support.features if support.share is None else np.asarray(support.share)


def in_box(flow, shares):
    """Points at ``shares`` of the width of each feature of ``flow``'s box, float32."""
    lower, upper = np.array(flow.support.lower), np.array(flow.support.upper)
    return jnp.asarray(lower + np.asarray(shares) * (upper - lower), jnp.float32)


def test_density_integrates_to_one_over_the_box(box_flow):
    # midpoints of cells that shrink geometrically toward each bound, to 1e-6 of the
    # width: the probit's density may grow without bound at a bound
    edge = np.geomspace(1e-6, 0.02, 120)
    share = np.concatenate([[0.0], edge, np.linspace(0.02, 0.98, 700)[1:-1], 1 - edge[::-1], [1]])
    mid, size = (share[1:] + share[:-1]) / 2, np.diff(share)
    grid = in_box(box_flow, np.stack(np.meshgrid(mid, mid), -1).reshape(-1, 2))
    density = np.exp(np.asarray(jax.jit(lambda x: box_flow().log_prob(x))(grid), np.float64))
    width = np.subtract(box_flow.support.upper, box_flow.support.lower)
    mass = density @ np.outer(width[0] * size, width[1] * size).reshape(-1)
    assert abs(mass - 1) < 2e-3, mass


def test_log_prob_is_the_unconstrained_flows_plus_the_maps_log_det(box_flow):
    x = np.asarray(in_box(box_flow, [[0.65, 0.6], [5e-4, 5e-4], [0.995, 0.9995]]), np.float64)
    # the maps and log|du/dx|, written out with scipy
    support = box_flow.support
    (u0, ladj0), (u1, ladj1) = (
        link_reference(support.link, x[:, i], a, b, share)
        for i, (a, b, share) in enumerate(zip(support.lower, support.upper, shares(support)))
    )
    if support.link in SHARES:
        np.testing.assert_allclose(shares(support), SHARES[support.link], rtol=1e-6)
    u, ladj = np.stack([u0, u1], 1), ladj0 + ladj1
    mapped = box_flow.support.forward(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(mapped, u, rtol=1e-6, atol=1e-6)
    # the unconstrained density at the support's own u: a wide flow's log density
    # is too steep for u rounded apart from it
    expected = box_flow.unconstrained().log_prob(mapped) + ladj
    log_prob = box_flow().log_prob(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5)


def test_log_prob_outside_is_minus_infinity_never_nan(box_flow):
    x = in_box(box_flow, [[1.0, 0.5], [-0.25, 0.5], [0.5, 0.0], [0.5, 3.5], [0.5, -np.inf]])
    log_prob = box_flow().log_prob(x)
    assert log_prob.tolist() == [-math.inf] * 5


@pytest.mark.parametrize(
    "cls,kwargs",
    [(MAF, {}), (NSF, {"bins": 4}), (MAF, {"passes": 2}), (MAFMoG, {"components": 3})],
)
def test_samples_lie_inside_on_every_feature(cls, kwargs):
    flow = scramble(cls(4, context=2, transforms=2, bounds=MIXED, rngs=nnx.Rngs(1), **kwargs))
    c = jax.random.normal(jax.random.key(0), (3, 2))
    x, log_prob = flow(c).sample_and_log_prob(jax.random.key(1), (20_000,))
    lower, upper = np.array(flow.support.lower), np.array(flow.support.upper)
    assert (np.asarray(x) > lower).all() and (np.asarray(x) < upper).all()
    # finite: in float32 the density of a sample within a few ulps of a bound is only
    # as exact as the sample's distance to it (tests/test_float64.py compares them)
    assert bool(jnp.isfinite(log_prob).all()) and bool(jnp.isfinite(flow(c).log_prob(x)).all())


def test_gradients_are_finite_next_to_the_bounds(box_flow):
    graphdef, params, rest = nnx.split(box_flow, nnx.Param, ...)
    x = in_box(box_flow, [[5e-7, 5e-7], [1 - 5e-7, 1 - 5e-7], [0.5, 0.5]])

    def nll(params, x):
        return -nnx.merge(graphdef, params, rest)().log_prob(x).mean()

    grads, x_grad = jax.grad(nll, argnums=(0, 1))(params, x)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
    assert bool(jnp.isfinite(x_grad).all())

    def sampled(params):  # through the sampler, out to the bounds
        return nnx.merge(graphdef, params, rest)().rsample(jax.random.key(0), (512,)).sum()

    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(jax.grad(sampled)(params)))


@pytest.mark.parametrize("link", ["linear", "probit"])
def test_standardized_standardises_on_the_real_line_and_keeps_samples_inside(link):
    flow = MAF(2, transforms=2, hidden_features=(8,), bounds=[(0.0, 1.0), (0.0, None)],
               link=link, rngs=nnx.Rngs(2))  # fmt: skip
    rng = np.random.default_rng(0)
    data = np.stack([rng.beta(0.5, 0.5, 2000), rng.exponential(3.0, 2000)], 1)
    model = Standardized.from_data(flow, data)
    # the data's mean and standard deviation through the maps linearised at the mean:
    # the link's u(m) and s |du/dx|(m) (the linear link: m and s, m being inside);
    # log(expm1(m)) and s / (1 - e^-m)
    m, s = data.mean(0), data.std(0)
    u_mean, log_slope = link_reference(link, m[0], 0.0, 1.0)
    mean = [u_mean, math.log(math.expm1(m[1]))]
    std = [s[0] * np.exp(log_slope), s[1] / -math.expm1(-m[1])]
    np.testing.assert_allclose(model.mean[...], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.std[...], std, rtol=1e-5)
    x = np.asarray(model().sample(jax.random.key(0), (20_000,)))
    assert (x > 0).all() and (x[:, 0] < 1).all()
    # one standardised step: log p(x) = log p_flow((u - mean) / std) - sum log std + log|du/dx|
    point = jnp.array([[0.25, 2.0]])
    u_point, log_slope = link_reference(link, 0.25, 0.0, 1.0)
    u = jnp.array([[u_point, math.log(math.expm1(2.0))]])
    ladj = log_slope - math.log(-math.expm1(-2.0))
    inner = flow.unconstrained().log_prob((u - model.mean[...]) / model.std[...])
    expected = inner - jnp.log(model.std[...]).sum() + ladj
    np.testing.assert_allclose(model().log_prob(point), expected, rtol=1e-5)


def test_fit_widens_a_uniform_features_tails_and_leaves_a_thin_ones_at_their_start():
    rng = np.random.default_rng(0)
    # uniform on the box: a flat density up to the bounds; a thin normal in its middle
    data = np.stack([rng.uniform(-1, 1, 4000), rng.normal(0, 0.05, 4000)], 1)
    flow = MAF(2, transforms=2, hidden_features=(16, 16), bounds=BOX[0], link="learned",
               rngs=nnx.Rngs(0))  # fmt: skip
    model, _ = fit(
        flow, data, key=jax.random.key(0), epochs=15, optimizer=optax.adam(1e-2), progress=False
    )
    uniform, thin = np.asarray(model.flow.support.share)
    assert uniform > 0.15, uniform
    # no row of the thin feature reaches its tails: nothing moves them
    assert thin == pytest.approx(0.02, rel=1e-6)


def test_from_data_refuses_rows_on_a_bound():
    flow = MAF(2, transforms=1, bounds=(0.0, 1.0), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="feature 1 on or beyond its upper bound 1.0"):
        Standardized.from_data(flow, np.array([[0.5, 0.5], [0.5, 1.0]]))


@pytest.mark.parametrize(
    "bounds,match",
    [
        ([(0, 1)] * 3, r"one pair per feature \(shape \(2, 2\)\)"),
        ([(0, 1), (2, 2)], "feature 1's lower bound 2.0 must be below its upper bound 2.0"),
    ],
)
def test_bad_bounds_are_refused_at_construction(bounds, match):
    with pytest.raises(ValueError, match=match):
        MAF(2, bounds=bounds, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("bounds", [None, (0, 1)])
def test_another_link_is_refused_with_or_without_bounds(bounds):
    expected = r"link: expected one of \('learned', 'probit', 'linear', 'logit'\), got 'tanh'"
    with pytest.raises(ValueError, match=expected):
        MAF(2, bounds=bounds, link="tanh", rngs=nnx.Rngs(0))
