"""The map of a bounded support onto the real line: values, log-determinants, ends, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import link_reference

from maf_jax.bijections import Support
from maf_jax.bijections.support import LINKS

# per feature: both bounds, a lower one, an upper one, none
MIXED = [(-1.0, 2.0), (0.5, None), (None, 3.0), (None, None)]
SUPPORT = Support.of(MIXED, features=4)
# the learned link with tails of 0.3 of the width (0.02 as "linear" without a share)
SHARES = {"learned": 0.3}


def learned(link):
    """``SHARES[link]`` for every feature, ``None`` for the links without a share."""
    return jnp.full(4, SHARES[link]) if link in SHARES else None


SUPPORTS = [Support.of(MIXED, 4, link, share=learned(link)) for link in LINKS]
INSIDE = jnp.array(
    [
        [0.3, 0.6, -5.0, 7.0],
        [1.999, 50.0, 2.9999, -3.0],
        [-0.99999, 0.5 + 1e-6, -100.0, 0.0],
        [1e-3, 80.0, 3.0 - 1e-3, 1e3],
    ]
)


@pytest.mark.parametrize("link", LINKS)
def test_values_are_the_documented_maps(link):
    u = Support.of(MIXED, 4, link, share=learned(link)).forward(INSIDE)
    x = np.asarray(INSIDE, np.float64)
    # written out independently, in float64
    expected = np.stack(
        [
            link_reference(link, x[:, 0], -1.0, 2.0, SHARES.get(link, 0.02))[0],
            np.log(np.expm1(x[:, 1] - 0.5)),
            -np.log(np.expm1(3.0 - x[:, 2])),
            x[:, 3],
        ],
        axis=1,
    )
    np.testing.assert_allclose(u, expected, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("support", SUPPORTS)
def test_inverse_undoes_forward_and_log_dets_cancel(support):
    u, forward = support.forward_and_log_det(INSIDE)
    x, inverse = support.inverse_and_log_det(u)
    np.testing.assert_allclose(x, INSIDE, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(forward + inverse, 0.0, atol=2e-5)


@pytest.mark.parametrize("support", SUPPORTS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_log_det_is_the_jacobians(support, direction):
    points = INSIDE if direction == "forward" else support.forward(INSIDE)
    function = getattr(support, direction)
    jacobian = jax.vmap(jax.jacfwd(function))(points)
    _, ladj = getattr(support, f"{direction}_and_log_det")(points)
    np.testing.assert_allclose(ladj, jnp.linalg.slogdet(jacobian)[1], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "row,expected",
    [
        ([2.0, 1.0, 0.0, 0.0], -math.inf),  # on an upper bound
        ([-1.0, 1.0, 0.0, 0.0], -math.inf),  # on a lower bound
        ([0.0, 0.4, 0.0, 0.0], -math.inf),  # below a lower bound
        ([0.0, 1.0, 3.5, 0.0], -math.inf),  # beyond an upper bound
        ([0.0, 1.0, 0.0, math.inf], -math.inf),  # at infinity
        ([0.0, 1.0, 0.0, math.nan], math.nan),  # NaN stays NaN
    ],
)
@pytest.mark.parametrize("support", SUPPORTS)
def test_log_det_outside_is_minus_infinity_and_u_stays_finite(support, row, expected):
    u, ladj = support.forward_and_log_det(jnp.array(row))
    if math.isnan(expected):
        assert math.isnan(float(ladj))
    else:
        assert float(ladj) == expected
        assert bool(jnp.isfinite(u).all())


@pytest.mark.parametrize("link", LINKS)
def test_samples_stay_strictly_inside_at_the_ends(link):
    dtype = jnp.float32
    bounds = [(-1.0, 2.0), (0.0, None), (None, 0.0), (1e4, 1e4 + 1)]
    support = Support.of(bounds, 4, link, share=learned(link))
    u = jnp.array([[-1e4, -1e4, 1e4, -1e4], [1e4, 1e4, -1e4, 1e4], [-90, -90, 90, 90]], dtype)
    x, ladj = support.inverse_and_log_det(u)
    assert x.dtype == dtype
    lower, upper = np.array(support.lower), np.array(support.upper)
    x = np.asarray(x, np.float64)
    assert (x > lower).all() and (x < upper).all(), x
    assert bool(jnp.isfinite(ladj).all())


@pytest.mark.parametrize("support", SUPPORTS)
def test_gradients_are_finite_next_to_the_bounds(support):
    near = jnp.array([[-1.0 + 1e-6, 0.5 + 1e-7, 3.0 - 1e-6, 0.0], [2.0 - 2e-7, 1e-3, 2.9, 5.0]])
    grads = jax.grad(lambda x: jnp.sum(support.forward_and_log_det(x)[1]))(near)
    assert bool(jnp.isfinite(grads).all()), grads
    far = jnp.array([[-80.0, -90.0, 90.0, 1e3], [80.0, 90.0, -90.0, -1e3]])
    for output in (0, 1):
        grads = jax.grad(lambda u, i=output: jnp.sum(support.inverse_and_log_det(u)[i]))(far)
        assert bool(jnp.isfinite(grads).all()), grads


def test_a_support_is_static_and_jit_folds_it():
    assert jax.tree.leaves(SUPPORT) == []
    jaxpr = jax.make_jaxpr(SUPPORT.forward)(INSIDE)
    assert not jaxpr.jaxpr.invars[1:]  # the bounds are constants, not inputs


def test_the_learned_links_share_is_its_one_leaf_and_jit_takes_it_as_an_input():
    traces = []

    @jax.jit
    def forward(support, x):
        traces.append(None)
        return support.forward(x)

    for share in (0.1, 0.4):
        support = Support.of(MIXED, 4, "learned", share=jnp.full(4, share))
        assert len(jax.tree.leaves(support)) == 1
        expected = link_reference("learned", INSIDE[:, 0], -1.0, 2.0, share)[0]
        np.testing.assert_allclose(forward(support, INSIDE)[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert len(traces) == 1


def test_the_learned_link_at_share_one_half_is_the_probit_of_an_affine_map():
    # d = w / 2, s = w phi(0): x = a + w Phi((u - (a + b) / 2) / (w phi(0)))
    a, b = -1.0, 2.0
    u = jnp.linspace(-8.0, 9.0, 35)[:, None]
    x = Support.of((a, b), 1, "learned", share=jnp.array([0.5])).inverse(u)
    scale = (b - a) / math.sqrt(2 * math.pi)
    probit = Support.of((a, b), 1, "probit").inverse((u - (a + b) / 2) / scale)
    np.testing.assert_allclose(x, probit, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "link,share,match",
    [
        ("learned", [0.1, 0.2], r"share: expected shape \(4,\), got \(2,\)"),
        ("learned", [0.1, 0.0, 0.2, 0.2], r"shares in \(0, 1/2\]"),
        ("learned", [0.1, 0.6, 0.2, 0.2], r"shares in \(0, 1/2\]"),
        ("linear", [0.1] * 4, "only link='learned' has learned tails, got link='linear'"),
    ],
)
def test_a_bad_share_is_refused_by_name(link, share, match):
    with pytest.raises(ValueError, match=match):
        Support.of(MIXED, 4, link, share=share)


@pytest.mark.parametrize(
    "bounds,features,expected",
    [
        ((0, 1), 3, ((0.0,) * 3, (1.0,) * 3)),
        ([(0, None), (None, 2)], 2, ((0.0, -math.inf), (math.inf, 2.0))),
        (np.array([[0.0, 1.0], [-np.inf, np.inf]]), 2, ((0.0, -math.inf), (1.0, math.inf))),
        (np.array([[0.0, 1.0]]), 3, ((0.0,) * 3, (1.0,) * 3)),
        ([[None, 1.0]], 1, ((-math.inf,), (1.0,))),
    ],
)
def test_bounds_are_read_per_feature_or_for_all(bounds, features, expected):
    support = Support.of(bounds, features)
    assert (support.lower, support.upper) == expected
    pairs = support.pairs()
    assert Support.of(pairs, features) == support
    assert all(v is None or math.isfinite(v) for pair in pairs for v in pair)


@pytest.mark.parametrize(
    "bounds,match",
    [
        ([(1, 0), (0, 1)], "feature 0's lower bound 1.0 must be below its upper bound 0.0"),
        ([(0, 1), (1, 1)], "feature 1's lower bound 1.0 must be below"),
        ([(math.nan, 1), (0, 1)], "NaN is not a bound"),
        ([(math.inf, None), (0, 1)], "feature 0's lower bound inf"),
        ([("a", 1), (0, 1)], "feature 0's lower bound must be a number, inf or None, got 'a'"),
        ([(0, 1), (0, 1), (0, 1)], r"one pair per feature \(shape \(2, 2\)\)"),
        ([(0, 1, 2), (0, 1, 2)], "one pair per feature"),
        (5, "one pair per feature"),
    ],
)
def test_bad_bounds_are_refused_by_name(bounds, match):
    with pytest.raises(ValueError, match=match):
        Support.of(bounds, 2)


def test_another_link_is_refused_naming_the_links():
    expected = r"link: expected one of \('learned', 'probit', 'linear', 'logit'\), got 'tanh'"
    with pytest.raises(ValueError, match=expected):
        Support.of((0, 1), 2, link="tanh")


@pytest.mark.parametrize("link", LINKS)
def test_float32_is_exact_at_both_ends(link):
    # distances to a bound that float32 holds exactly, near each end of (0, 1)
    near = np.array([2.0**-20, 2.0**-10, 0.25, 0.5 - 2.0**-10])
    x = jnp.asarray(np.concatenate([near, 1 - near]), jnp.float32)[:, None]
    share = SHARES.get(link, 0.02)
    support = Support.of((0, 1), 1, link, share=[share] if link in SHARES else None)
    u, ladj = support.forward_and_log_det(x)
    expected, slope = link_reference(link, np.concatenate([near, 1 - near]), 0.0, 1.0, share)
    np.testing.assert_allclose(u[:, 0], expected, rtol=2e-6)
    np.testing.assert_allclose(ladj, slope, rtol=2e-6, atol=1e-30)


def test_data_on_or_beyond_a_bound_is_refused_naming_the_feature_and_bound():
    support = Support.of([(None, None), (0.0, 1.0)], features=2)
    support.check(np.array([[5.0, 0.5], [-5.0, 1e-6]]))
    with pytest.raises(ValueError, match=r"2 row\(s\) have feature 1 on or beyond its upper "):
        support.check(np.array([[0.0, 1.0], [0.0, 0.5], [0.0, 3.0]]))
    with pytest.raises(ValueError, match=r"feature 1 on or beyond its lower bound 0.0 \(rows 1,"):
        support.check(np.array([[0.0, 0.5], [0.0, 0.0]]))
    # 1 - 1e-9 rounds to 1 in float32: on the bound as the flow computes
    with pytest.raises(ValueError, match="upper bound 1.0"):
        support.check(np.array([[0.0, 1 - 1e-9]]), dtype=np.float32)
    support.check(np.array([[0.0, 1 - 1e-9]]), dtype=np.float64)


def test_linearized_statistics_are_the_map_and_its_slope_at_the_mean():
    mean, std = jnp.array([0.5, 2.0, -1.0, 4.0]), jnp.array([0.3, 1.0, 2.0, 0.5])
    u, scale = SUPPORT.linearized(mean, std)
    np.testing.assert_allclose(u, SUPPORT.forward(mean), rtol=1e-6)
    slopes = jnp.diag(jax.jacfwd(SUPPORT.forward)(mean))
    np.testing.assert_allclose(scale, std * slopes, rtol=1e-5)
    assert float(scale[3]) == 0.5  # no bound: the identity
