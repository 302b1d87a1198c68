"""Masked layers' initialisation: JAX's own draws, from a few compiled programs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maf_jax import MAF
from maf_jax.nn.layers import SMALLEST_DRAW, MaskedLinear

# (in, out): a single unit, a draw below SMALLEST_DRAW, one above it, one past a
# power of two, and no input at all
SHAPES = [(1, 1), (7, 11), (64, 80), (65, 129), (0, 3)]


def reference(seed: int, mask: np.ndarray, dtype=jnp.float32, impl=None):
    """The layer's values drawn as ``jax.random.uniform`` of the layer's shapes."""
    rngs = nnx.Rngs(jax.random.key(seed, impl=impl))
    bound = 1.0 / np.sqrt(max(mask.shape[0], 1))
    kernel = jax.random.uniform(rngs.params(), mask.shape, dtype, -bound, bound)
    bias = jax.random.uniform(rngs.params(), mask.shape[1:], dtype, -bound, bound)
    return jnp.where(mask, kernel, 0), bias


def masked(shape, seed=0):
    return np.random.default_rng(seed).random(shape) < 0.5


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("impl", [None, "rbg"], ids=["threefry", "rbg"])
def test_a_layer_starts_from_jax_own_draws(shape, impl):
    mask = masked(shape)
    layer = MaskedLinear(mask, rngs=nnx.Rngs(jax.random.key(3, impl=impl)))
    kernel, bias = reference(3, mask, impl=impl)
    np.testing.assert_array_equal(layer.kernel[...], kernel)
    np.testing.assert_array_equal(layer.bias[...], bias)
    assert layer.kernel[...].dtype == jnp.float32 and isinstance(layer.kernel[...], jax.Array)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=str)
def test_other_dtypes_start_from_the_same_draws(dtype):
    mask = masked((5, 6))
    layer = MaskedLinear(mask, rngs=nnx.Rngs(1), param_dtype=dtype)
    kernel, bias = reference(1, mask, dtype)
    assert layer.kernel[...].dtype == dtype
    np.testing.assert_array_equal(layer.kernel[...], kernel)
    np.testing.assert_array_equal(layer.bias[...], bias)


def test_traced_construction_gives_the_same_values():
    mask = masked((9, 4))

    def build():
        return nnx.state(MaskedLinear(mask, rngs=nnx.Rngs(2)))

    eager = build()
    abstract = nnx.eval_shape(lambda: MaskedLinear(mask, rngs=nnx.Rngs(2)))
    traced = jax.jit(build)()
    assert [a.shape for a in jax.tree.leaves(nnx.state(abstract))] == [(4,), (9, 4)]
    # the traced build draws in one program, the scaling to [-bound, bound) fused:
    # XLA may round that differently in the last place of the bound (it does with the
    # tests' older emitters, tests/xla_flags.py)
    atol = np.finfo(np.float32).eps / np.sqrt(9)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(traced), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_a_flow_of_new_shapes_is_built_without_compiling():
    """After one flow, one of other sizes (all draws under SMALLEST_DRAW values)
    compiles no program: not one per layer shape, nor one to stack them."""
    MAF(3, 2, transforms=2, hidden_features=(16, 16), rngs=nnx.Rngs(0))
    compiles = []

    def count(event, duration, **_):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(count)
    try:
        flow = MAF(6, 1, transforms=3, hidden_features=(21, 13), rngs=nnx.Rngs(1))
    finally:
        jax.monitoring.unregister_event_duration_listener(count)
    assert 21 * 13 < SMALLEST_DRAW
    assert compiles == []
    assert flow.transforms.stacked.hyper.layers[1].kernel[...].shape == (3, 21, 13)


def test_the_older_threefry_layout_draws_jax_own_values_too():
    mask = masked((33, 17))
    previous = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", False)
    try:
        layer = MaskedLinear(mask, rngs=nnx.Rngs(4))
        kernel, bias = reference(4, mask)
    finally:
        jax.config.update("jax_threefry_partitionable", previous)
    np.testing.assert_array_equal(layer.kernel[...], kernel)
    np.testing.assert_array_equal(layer.bias[...], bias)
