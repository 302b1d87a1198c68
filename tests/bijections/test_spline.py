"""The rational-quadratic spline: by hand, at its edges, inverse and log-derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from maf_jax import MonotonicRQSTransform, RationalQuadraticSpline

B = 5.0
ULP = float(np.spacing(np.float32(B)))  # rounding of values near the bound


def draw(bins, scale, n, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    return (
        scale * jax.random.normal(k[0], (n, bins)),
        scale * jax.random.normal(k[1], (n, bins)),
        scale * jax.random.normal(k[2], (n, bins - 1)),
    )


def spline_by_hand(widths, heights, derivatives, x, bound=B, slope=1e-3):
    """Durkan et al.'s spline in float64 NumPy, for one feature, written from the paper."""
    widths, heights, derivatives = (
        np.asarray(a, np.float64) for a in (widths, heights, derivatives)
    )
    limit = -np.log(slope)

    def knots(raw):
        raw = raw / (1 + np.abs(raw) / (limit / 2))
        fractions = np.exp(raw) / np.exp(raw).sum()
        return bound * (2 * np.concatenate([[0.0], np.cumsum(fractions)]) - 1)

    xs, ys = knots(widths), knots(heights)
    ds = np.concatenate([[1.0], np.exp(derivatives / (1 + np.abs(derivatives) / limit)), [1.0]])
    if not -bound < x < bound:
        return x, 0.0
    k = np.searchsorted(xs, x, side="right") - 1
    s = (ys[k + 1] - ys[k]) / (xs[k + 1] - xs[k])
    z = (x - xs[k]) / (xs[k + 1] - xs[k])
    denominator = s + (ds[k] + ds[k + 1] - 2 * s) * z * (1 - z)
    y = ys[k] + (ys[k + 1] - ys[k]) * (s * z**2 + ds[k] * z * (1 - z)) / denominator
    slope_at_x = s**2 * (ds[k + 1] * z**2 + 2 * s * z * (1 - z) + ds[k] * (1 - z) ** 2)
    return y, np.log(slope_at_x / denominator**2)


@jax.jit
def evaluate(widths, heights, derivatives, x):
    t = MonotonicRQSTransform(widths, heights, derivatives)
    y, ladj = t.forward_and_log_det(x)
    x_back, inverse_ladj = t.inverse_and_log_det(y)
    slope = jax.vmap(jax.grad(lambda x, *p: MonotonicRQSTransform(*p).forward(x)))(
        x, widths, heights, derivatives
    )
    return y, ladj, x_back, inverse_ladj, slope, t.forward(x_back)


def test_equal_bins_and_unit_slopes_are_the_identity():
    x = jnp.linspace(-7, 7, 29)
    t = MonotonicRQSTransform(jnp.zeros((29, 6)), jnp.zeros((29, 6)), jnp.zeros((29, 5)))
    y, ladj = t.forward_and_log_det(x)
    np.testing.assert_allclose(y, x, atol=2 * ULP)
    np.testing.assert_allclose(ladj, 0, atol=1e-6)


@pytest.mark.parametrize("bins", [2, 3, 8])
def test_matches_the_paper_by_hand(bins):
    widths, heights, derivatives = draw(bins, 1.5, 64, seed=bins)
    x = jnp.linspace(-5.5, 5.5, 64)
    y, ladj = MonotonicRQSTransform(widths, heights, derivatives).forward_and_log_det(x)
    want = np.array(
        [spline_by_hand(*p, float(v)) for *p, v in zip(widths, heights, derivatives, x)]
    )
    np.testing.assert_allclose(y, want[:, 0], atol=8 * ULP)
    np.testing.assert_allclose(ladj, want[:, 1], atol=2e-5)
    assert np.abs(np.asarray(y) - np.asarray(x)).max() > 0.1  # not the identity


# name: (bins, parameter scale, points)
EDGES = {
    "inside": (8, 1.0, np.linspace(-4.9, 4.9, 97)),
    "near_zero": (8, 1.0, np.array([0.0, 1e-30, -1e-30, 1e-7, -1e-7, 1e-3])),
    "near_the_bound": (
        8,
        1.0,
        np.array([B - ULP, -B + ULP, B - 1e-3, -B + 1e-3, np.nextafter(B, 0, dtype=np.float32)]),
    ),
    "at_and_beyond_the_bound": (8, 1.0, np.array([B, -B, B + ULP, -B - ULP, 7.0, -1e30, 1e30])),
    "two_bins": (2, 2.0, np.linspace(-5.5, 5.5, 45)),
    "many_bins": (64, 1.0, np.linspace(-5.5, 5.5, 45)),
    # soft bounds saturate: bins down to 1 / 1000 of the others, slopes 1e-3 to 1e3
    "tiny_bins_steep_knots": (8, 10.0, np.linspace(-5.2, 5.2, 193)),
}


@pytest.mark.parametrize("name", EDGES)
def test_inverse_and_log_derivatives_at_the_edges(name):
    bins, scale, points = EDGES[name]
    n = len(points)
    x = jnp.asarray(points, jnp.float32)
    y, ladj, x_back, inverse_ladj, slope, y_again = evaluate(*draw(bins, scale, n), x)
    for a in (y, ladj, x_back, inverse_ladj):
        assert np.isfinite(a).all()
    # the inverse maps y to a point that maps back to y up to a few roundings of
    # values near B, in y and in x (the latter amplified by the slope)
    tolerance = ULP * (8 + 4 * np.asarray(slope))
    assert (np.abs(np.asarray(y_again) - np.asarray(y)) <= tolerance).all()
    np.testing.assert_allclose(ladj, np.log(slope), atol=2e-5, rtol=1e-4)
    well_conditioned = np.asarray(slope) > 1e-2
    np.testing.assert_allclose(
        np.asarray(inverse_ladj)[well_conditioned], -np.asarray(ladj)[well_conditioned], atol=1e-3
    )
    outside = np.abs(points) >= B
    np.testing.assert_array_equal(np.asarray(y)[outside], np.asarray(x)[outside])
    np.testing.assert_array_equal(np.asarray(ladj)[outside], 0.0)
    np.testing.assert_array_equal(np.asarray(x_back)[outside], np.asarray(x)[outside])


def test_the_inverse_is_accurate_where_one_end_of_a_bin_is_steep():
    """The closed form in one shape only loses most digits near a steep knot."""
    widths, heights, derivatives = draw(2, 10.0, 20000, seed=1)
    x = jax.random.uniform(jax.random.key(2), (20000,), minval=-B, maxval=B)
    y, _, _, _, slope, y_again = evaluate(widths, heights, derivatives, x)
    # Durkan's form alone, solved from the lower end, was up to 29,511 ulps off
    assert (np.abs(y_again - y) <= ULP * (8 + 4 * np.asarray(slope))).all()


def test_is_differentiable_in_its_parameters_inside_and_outside():
    widths, heights, derivatives = draw(4, 1.0, 6)
    x = jnp.array([-7.0, -2.0, 0.0, 1.0, 4.9, 7.0])

    def loss(params, x):
        t = MonotonicRQSTransform(*params)
        y, ladj = t.forward_and_log_det(x)
        x_back, _ = t.inverse_and_log_det(y + 0.01)
        return (y**2 + ladj + x_back).sum()

    grads = jax.grad(loss)((widths, heights, derivatives), x)
    for g in grads:
        assert np.isfinite(g).all()
    assert np.abs(grads[0][1:-1]).max() > 1e-3  # inside points move with the knots
    np.testing.assert_array_equal(np.asarray(grads[0])[[0, -1]], 0.0)  # outside points do not


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bins=1), "bins must be an integer >= 2"),
        (dict(bins=2.0), "bins must be an integer >= 2"),
        (dict(bound=0.0), "bound must be a positive finite number"),
        (dict(bound=float("inf")), "bound must be a positive finite number"),
        (dict(slope=1.0), "slope must be a number in \\(0, 1\\)"),
        (dict(slope=0), "slope must be a number in \\(0, 1\\)"),
    ],
)
def test_bad_settings_say_what_is_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RationalQuadraticSpline(**kwargs)


def test_settings_are_values_so_equal_splines_share_programs():
    assert RationalQuadraticSpline(8, 5, 1e-3) == RationalQuadraticSpline()
    assert hash(RationalQuadraticSpline(bins=4)) == hash(RationalQuadraticSpline(bins=4))
    assert RationalQuadraticSpline(bins=4) != RationalQuadraticSpline(bins=5)
