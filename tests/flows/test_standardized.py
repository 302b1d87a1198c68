"""Standardized: statistics given in any combination, refused with a reason otherwise."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maf_jax import MAF
from maf_jax.flows.standardized import Standardized


def conditional():
    return MAF(2, context=3, transforms=1, hidden_features=(4,), rngs=nnx.Rngs(0))


def stats(model):
    names = ("mean", "std", "context_mean", "context_std")
    return [np.asarray(getattr(model, name)[...]) for name in names]


def test_context_std_alone_is_kept_its_mean_zeros():
    model = Standardized(conditional(), [1, 2], [3, 4], context_std=[2, 5, 7])
    np.testing.assert_array_equal(stats(model)[2:], [[0, 0, 0], [2, 5, 7]])


def test_context_mean_alone_is_kept_its_std_ones():
    model = Standardized(conditional(), [1, 2], [3, 4], context_mean=[1, -1, 0.5])
    np.testing.assert_array_equal(stats(model)[2:], [[1, -1, 0.5], [1, 1, 1]])


def test_context_std_is_used():
    c, x = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, -0.5])
    scale = np.array([2.0, 5.0, 7.0])
    flow = conditional()
    scaled = Standardized(flow, [0, 0], [1, 1], context_std=scale)(c).log_prob(x)
    np.testing.assert_allclose(scaled, flow(c / scale).log_prob(x), rtol=1e-6)


def test_every_statistic_may_be_missing():
    mean, std, context_mean, context_std = stats(Standardized(conditional()))
    np.testing.assert_array_equal(mean, [0, 0])
    np.testing.assert_array_equal(std, [1, 1])
    np.testing.assert_array_equal(context_mean, [0, 0, 0])
    np.testing.assert_array_equal(context_std, [1, 1, 1])
    assert std.dtype == context_std.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mean=[1, 2, 3]), r"mean: expected shape \(2,\) \(the flow's features=2\)"),
        (dict(std=[[1, 2]]), r"std: expected shape \(2,\)"),
        (dict(context_mean=[1, 2]), r"context_mean: expected shape \(3,\) .*context=3"),
        (dict(context_std=[1, 0, 1]), "context_std: standard deviations must be positive"),
        (dict(std=[1, -1]), "std: standard deviations must be positive"),
    ],
)
def test_wrong_statistics_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Standardized(conditional(), **kwargs)


def test_context_statistics_of_an_unconditional_flow_are_refused():
    flow = MAF(2, transforms=1, hidden_features=(4,), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"unconditional \(context=0\): give no context_std"):
        Standardized(flow, [0, 0], [1, 1], context_std=[2.0])
    assert Standardized(flow, [0, 0], [1, 1]).context_mean[...].shape == (0,)
