import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from maf_jax import MAF, MaskedAutoregressiveTransform
from maf_jax.nn.stack import Stack


class Bias(nnx.Module):
    def __init__(self, value):
        self.value = nnx.Param(value)


def linears(*shapes):
    return [nnx.Linear(a, b, rngs=nnx.Rngs(i)) for i, (a, b) in enumerate(shapes)]


def test_a_call_is_every_module_called_and_stacked():
    modules = linears((3, 2), (3, 2), (3, 2))
    stack = Stack(modules)
    x = jnp.arange(3.0)
    np.testing.assert_allclose(stack(x), jnp.stack([m(x) for m in modules]), rtol=1e-6)
    assert len(stack) == 3 and stack.stacked.kernel.shape == (3, 3, 2)


def test_unstack_gives_copies_of_the_modules():
    modules = linears((3, 2), (3, 2))
    copies = Stack(modules).unstack()
    for copy, module in zip(copies, modules, strict=True):
        np.testing.assert_array_equal(copy.kernel[...], module.kernel[...])
    stack = Stack(modules)
    stack.unstack()[0].kernel[...] = jnp.zeros((3, 2))  # a copy: the stack keeps its values
    np.testing.assert_array_equal(stack.stacked.kernel[0], modules[0].kernel[...])


def test_a_stack_closed_over_in_jit_is_called_like_one_passed_in():
    stack = Stack(linears((3, 2), (3, 2)))
    x = jnp.ones(3)
    graphdef, state = nnx.split(stack)
    np.testing.assert_allclose(jax.jit(lambda x: stack(x))(x), stack(x), rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x), stack(x), rtol=1e-6
    )


@pytest.mark.parametrize(
    "modules,match",
    [
        ([], "at least one module"),
        ([Bias(jnp.ones(3)), Bias(jnp.ones(4))], "differ in shape or dtype"),
        ([Bias(jnp.ones(3)), Bias(jnp.ones(3, jnp.bfloat16))], "differ in shape or dtype"),
        (linears((3, 2), (4, 2)), "structures"),
        ([nnx.Linear(3, 2, rngs=nnx.Rngs(0)), nnx.LayerNorm(3, rngs=nnx.Rngs(0))], "structures"),
        (
            [
                MaskedAutoregressiveTransform(3, hidden_features=(4,), rngs=nnx.Rngs(0)),
                MaskedAutoregressiveTransform(3, hidden_features=(4,), passes=2, rngs=nnx.Rngs(0)),
            ],
            "structures",
        ),
    ],
    ids=["empty", "shapes", "dtypes", "sizes", "modules", "settings"],
)
def test_modules_that_cannot_stack_are_refused(modules, match):
    with pytest.raises(ValueError, match=match):
        Stack(modules)


@pytest.mark.parametrize("transforms", [1, 3, 7])
def test_a_flow_holds_one_array_per_kind_of_weight(transforms):
    flow = MAF(4, context=2, transforms=transforms, hidden_features=(8, 8), rngs=nnx.Rngs(0))
    params = jax.tree.leaves(nnx.state(flow, nnx.Param))
    assert len(params) == 6  # a kernel and a bias per layer, whatever the transforms
    assert all(p.shape[0] == transforms for p in params)


def test_a_flow_stacks_the_transforms_it_would_build_one_by_one():
    """Same draws as transforms built in turn: a seed gives the flow it gave before."""
    flow = MAF(4, context=2, transforms=3, hidden_features=(8, 8), rngs=nnx.Rngs(5))
    rngs, orders = nnx.Rngs(5), [np.arange(4), np.arange(4)[::-1], np.arange(4)]
    built = [
        MaskedAutoregressiveTransform(4, 2, order=o, hidden_features=(8, 8), rngs=rngs)
        for o in orders
    ]
    for got, want in zip(flow.transforms.unstack(), built, strict=True):
        for a, b in zip(jax.tree.leaves(nnx.state(got)), jax.tree.leaves(nnx.state(want))):
            np.testing.assert_array_equal(a, b)


class WithKeys(nnx.Module):
    def __init__(self, seed):
        self.linear = nnx.Linear(2, 3, rngs=nnx.Rngs(seed))
        self.dropout = nnx.Dropout(0.5, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize(
    "build",
    [
        lambda i: Bias(jnp.full(3, i, jnp.int32)),
        lambda i: Bias(jnp.ones(2, jnp.bfloat16) * i),
        WithKeys,
    ],
    ids=["int32", "bfloat16", "keys"],
)
def test_stacked_variables_are_each_modules_own_uncommitted(build):
    modules = [build(i) for i in range(3)]
    stack = Stack(modules)
    states = [jax.tree.leaves(nnx.state(m)) for m in modules]
    for i, leaf in enumerate(jax.tree.leaves(nnx.state(stack))):
        assert isinstance(leaf, jax.Array) and not leaf.committed
        want = jnp.stack([s[i] for s in states])
        assert leaf.dtype == want.dtype and leaf.shape == want.shape
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf, want = jax.random.key_data(leaf), jax.random.key_data(want)
        np.testing.assert_array_equal(leaf, want)


def test_a_stack_is_built_abstractly():
    stack = nnx.eval_shape(lambda: Stack(linears((3, 2), (3, 2))))
    assert [a.shape for a in jax.tree.leaves(nnx.state(stack))] == [(2, 2), (2, 3, 2)]


def test_modules_placed_on_a_device_stay_there():
    device = jax.devices()[-1]
    modules = [Bias(jax.device_put(jnp.ones(3) * i, device)) for i in range(2)]
    leaf = Stack(modules).stacked.value[...]
    assert leaf.committed and leaf.devices() == {device}
    np.testing.assert_array_equal(leaf, [[0.0] * 3, [1.0] * 3])
