"""The incremental inverse equals the full-pass reference on any structure (hypothesis)."""

import jax
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
