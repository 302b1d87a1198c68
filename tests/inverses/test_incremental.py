"""The incremental inverse equals the full-pass reference on any structure (hypothesis)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scramble, structures
from flax import nnx
from hypothesis import given

from maf_jax import Incremental, MaskedAutoregressiveTransform
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.core.schedule import schedule, with_null_units


@jax.jit
def both_inverses(bijection, y):
    return bijection.inverse_and_log_det(y), full_pass_inverse(bijection, y)


@given(structures())
def test_incremental_inverse_equals_the_full_pass(s):
    kwargs = s["kwargs"]
    t = MaskedAutoregressiveTransform(**kwargs, rngs=nnx.Rngs(s["seed"]))
    key_c, key_y = jax.random.split(jax.random.key(s["seed"]))
    c = jax.random.normal(key_c, (kwargs["context"],)) if kwargs["context"] else None
    bijection = scramble(t, seed=s["seed"])(c)
    y = jax.random.normal(key_y, (s["rows"], kwargs["features"]))
    (x, ladj), (x_full, ladj_full) = both_inverses(bijection, y)
    # the same sequential solve with other sums: float32 rounding, amplified by the
    # features solved before (tests/test_float64.py holds such solves to 1e-12)
    np.testing.assert_allclose(x, x_full, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ladj, ladj_full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "features,hidden,inverse,groups",
    [
        (4, (6,), Incremental(), 1),  # 2 units per degree: one group over all steps
        (20, (8, 8), Incremental(), 1),  # one unit per degree at most
        # Blocks of one step: the first step's windows, which hold units not final
        # yet, would end the first block as they are, and the next block's product
        # (its part's, as wide as a later block's) would read them: three groups.
        (4, (6,), Incremental(blocks=4, groups=1), 3),
    ],
)
def test_one_group_over_all_steps(features, hidden, inverse, groups):
    t = MaskedAutoregressiveTransform(
        features=features, hidden_features=hidden, inverse=inverse, rngs=nnx.Rngs(0)
    )
    layout = with_null_units(t.layout)[0]
    assert len(schedule(layout, inverse.blocks, inverse.groups)) == groups
    bijection = scramble(t, seed=0)()
    y = jax.random.normal(jax.random.key(1), (7, features))
    (x, ladj), (x_full, ladj_full) = both_inverses(bijection, y)
    np.testing.assert_allclose(x, x_full, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ladj, ladj_full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "features,hidden,times",
    [
        (32, (128, 128), 3),  # degree 0 fills 2 windows in each layer
        (64, (131, 64), 5),  # 4 windows (width 2), then 2 (width 1)
    ],
)
def test_the_lowest_step_repeated_equals_the_full_pass(features, hidden, times):
    """Where the lowest degree holds more units than the others, its step comes again
    for each more window of them, every layer once the layer below is final."""
    t = MaskedAutoregressiveTransform(features=features, hidden_features=hidden, rngs=nnx.Rngs(0))
    (group,) = schedule(with_null_units(t.layout)[0])
    lowest = int(t.layout.hidden_degrees[0][0]) + 1
    assert (group.steps == lowest).sum() == times
    bijection = scramble(t, seed=0)()
    y = jax.random.normal(jax.random.key(1), (7, features))
    (x, ladj), (x_full, ladj_full) = both_inverses(bijection, y)
    np.testing.assert_allclose(x, x_full, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ladj, ladj_full, rtol=1e-4, atol=1e-4)


def test_reverse_mode_through_the_inverse_equals_the_implicit_derivative():
    """The deprecated ``derivative="autodiff"`` differentiates through the inverse's
    operations, the scan over blocks and the parts' ``lax.switch`` included."""
    kwargs = dict(features=24, hidden_features=(50, 31), inverse=Incremental(blocks=5))
    with pytest.warns(DeprecationWarning, match="autodiff"):
        through = MaskedAutoregressiveTransform(**kwargs, derivative="autodiff", rngs=nnx.Rngs(3))
    implicit = MaskedAutoregressiveTransform(**kwargs, rngs=nnx.Rngs(3))
    y = jax.random.normal(jax.random.key(1), (6, 24))

    def grads(t):
        bijection = scramble(t, seed=3)()

        def loss(weights, y):
            b = dataclasses.replace(bijection, weights=weights)
            return jnp.sum(jnp.sin(b.inverse_and_log_det(y)[0]))

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(bijection.weights, y)

    (weights, gy), (want_weights, want_gy) = grads(through), grads(implicit)
    np.testing.assert_allclose(gy, want_gy, rtol=1e-3, atol=1e-4)
    # the kernels' entries that the masks zero get no gradient through the inverse's
    # slices; the mask's product, which the parameters go through, zeroes them too
    masks = [np.asarray(m) for m in implicit.layout.masks]
    for (w, b), (want_w, want_b), mask in zip(weights, want_weights, masks, strict=True):
        np.testing.assert_allclose(w * mask, want_w * mask, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(b, want_b, rtol=1e-3, atol=1e-4)
    assert float(jnp.abs(gy).max()) > 0.1  # not zero by accident
