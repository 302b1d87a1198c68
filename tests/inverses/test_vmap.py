"""``jax.vmap`` over contexts: the batched call's results, one program on all the rows."""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import iter_eqns, scramble
from flax import nnx

from maf_jax import MAF, Incremental

FEATURES, CONTEXT, CONTEXTS, SAMPLES = 5, 2, 3, 4
CONFIGS = {
    "default": dict(),
    "coupling": dict(passes=2),
    "chunked_scanned_blocks": dict(inverse=Incremental(chunk=5, blocks=2, groups=1)),
    "full_pass": dict(inverse="full_pass"),
    "autodiff_derivative": dict(derivative="autodiff"),
}
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def flow(name: str, seed: int = 0):
    """A generic two-transform flow of ``CONFIGS[name]``, split functionally."""
    deprecated = CONFIGS[name].get("derivative") == "autodiff"
    with pytest.warns(DeprecationWarning) if deprecated else contextlib.nullcontext():
        maf = MAF(FEATURES, CONTEXT, transforms=2, rngs=nnx.Rngs(seed), **CONFIGS[name])
    return nnx.split(scramble(maf, seed), nnx.Param, ...)


def dist(name: str, params, c):
    graphdef, _, rest = flow(name)
    return nnx.merge(graphdef, params, rest)(c)


def inputs():
    keys = jax.random.split(jax.random.key(1), CONTEXTS + 2)
    c = jax.random.normal(keys[-1], (CONTEXTS, CONTEXT))
    z = jax.random.normal(keys[-2], (CONTEXTS, SAMPLES, FEATURES))
    return c, keys[:CONTEXTS], z


def assert_trees_close(got, want, **tolerance):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, **(TOLERANCE | tolerance))


def per_context(fn, *args):
    """``fn`` called once per context (its jitted program compiled once), stacked."""
    return jax.tree.map(lambda *a: jnp.stack(a), *(fn(*row) for row in zip(*args)))


@pytest.mark.parametrize("name", CONFIGS)
def test_vmapped_sampling_equals_one_call_per_context(name):
    _, params, _ = flow(name)
    c, keys, _ = inputs()

    def draw(method):
        return lambda c, k: getattr(dist(name, params, c), method)(k, (SAMPLES,))

    for method in ("sample", "rsample", "sample_and_log_prob"):
        got = jax.jit(jax.vmap(draw(method)))(c, keys)
        assert_trees_close(got, per_context(jax.jit(draw(method)), c, keys))
    x, log_p = got
    assert x.shape == (CONTEXTS, SAMPLES, FEATURES)
    # the batched distribution of batch shape (CONTEXTS, 1) reads the vmapped layout
    np.testing.assert_allclose(dist(name, params, c[:, None]).log_prob(x), log_p, **TOLERANCE)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("mapped", ["both", "context", "noise", "noise_on_axis_1"])
def test_vmapped_inverse_and_log_prob_equal_the_batched_call(name, mapped):
    """The same noise through ``jax.vmap`` and through ``flow(C)``, whose layout is
    ``(sample, context, features)``; contexts or noise may be shared."""
    _, params, _ = flow(name)
    c, _, z = inputs()
    shared_c, shared_z = c[0], z[0]
    in_axes, args, batched = {
        "both": ((0, 0), (c, z), (c, jnp.swapaxes(z, 0, 1))),
        "context": ((0, None), (c, shared_z), (c, shared_z[:, None])),
        "noise": ((None, 0), (shared_c, z), (shared_c, jnp.swapaxes(z, 0, 1))),
        "noise_on_axis_1": ((0, 1), (c, jnp.swapaxes(z, 0, 1)), (c, jnp.swapaxes(z, 0, 1))),
    }[mapped]

    def inverse(c, z):
        x, ladj = dist(name, params, c).transform.inverse_and_log_det(z)
        return x, ladj, dist(name, params, c).log_prob(x)

    got = jax.jit(jax.vmap(inverse, in_axes))(*args)
    want = jax.jit(inverse)(*batched)
    assert_trees_close(got, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), want))


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_through_rsample_under_vmap_equal_one_call_per_context(name):
    """Summed over the contexts (``vmap`` inside ``grad``) and per context (``grad``
    inside ``vmap``), for the parameters and the contexts."""
    _, params, _ = flow(name)
    c, keys, _ = inputs()

    def loss(params, c, key):
        x = dist(name, params, c).rsample(key, (SAMPLES,))
        return jnp.sum(jnp.sin(x) * jnp.arange(1, FEATURES + 1))

    grad = jax.grad(loss, argnums=(0, 1))
    want = per_context(jax.jit(grad), [params] * CONTEXTS, c, keys)
    assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(want)) > 1e-2
    per_row = jax.jit(jax.vmap(grad, in_axes=(None, 0, 0)))(params, c, keys)
    assert_trees_close(per_row, want, atol=1e-4)
    summed = jax.jit(jax.grad(lambda p, c: jax.vmap(loss, (None, 0, 0))(p, c, keys).sum(), (0, 1)))
    assert_trees_close(summed(params, c), (jax.tree.map(lambda a: a.sum(0), want[0]), want[1]))


def test_nested_vmaps_and_vmaps_over_parameters_equal_one_call_each():
    """Contexts ``(2, 3)`` under two vmaps; two parameter sets (an ensemble) under one."""
    _, params, _ = flow("default")
    _, other, _ = flow("default", seed=1)
    c = jax.random.normal(jax.random.key(3), (2, CONTEXTS, CONTEXT))
    keys = jax.random.split(jax.random.key(4), 2 * CONTEXTS).reshape(2, CONTEXTS)

    def draw(params, c, k):
        return dist("default", params, c).sample_and_log_prob(k, (SAMPLES,))

    one = jax.jit(draw)
    nested = jax.jit(jax.vmap(jax.vmap(draw, (None, 0, 0)), (None, 0, 0)))(params, c, keys)
    assert_trees_close(
        nested, per_context(lambda *a: per_context(one, *a), [[params] * 3] * 2, c, keys)
    )
    ensemble = jax.tree.map(lambda a, b: jnp.stack([a, b]), params, other)
    got = jax.jit(jax.vmap(draw))(ensemble, c[:, 0], keys[:, 0])
    assert_trees_close(got, per_context(one, [params, other], c[:, 0], keys[:, 0]))


def row_counts(fn, *args) -> list[tuple[int, ...]]:
    """The rows of each row-wise call (the inverse; the solve of its derivative, which
    takes the cotangent, the univariate derivatives ``d`` and ``df/dphi`` and the
    activations' slopes of both hidden layers: 5 arrays), as traced."""
    counts = []
    for eqn in iter_eqns(jax.make_jaxpr(fn)(*args).jaxpr):
        if eqn.primitive.name == "custom_vmap_call":
            _, (_, *arrays) = jax.tree.unflatten(eqn.params["in_tree"], eqn.invars)
            counts.append(tuple(v.aval.shape[0] for v in arrays))
    return counts


ROWS, JOINED = (SAMPLES,), (CONTEXTS * SAMPLES,)


@pytest.mark.parametrize(
    "case,counts",
    [
        ("vmap", [JOINED]),
        ("vmap_of_grad", [JOINED, JOINED * 5]),
        ("nested_vmap", [(2 * CONTEXTS * SAMPLES,)]),
        ("vmap_over_parameters", []),  # weights mapped: batched as usual, no call
        ("no_vmap", [ROWS, ROWS * 5]),
    ],
)
def test_vmap_joins_the_mapped_axis_to_the_rows(case, counts):
    """Under ``jax.vmap`` over contexts the inverse (and the solve of its derivative)
    run once on every row, as in the batched call, not once per context."""
    _, params, _ = flow("default")
    c, keys, _ = inputs()

    def loss(params, c, key):
        return dist("default", params, c).rsample(key, (SAMPLES,)).sum()

    grad = jax.grad(loss)
    fn, args = {
        "vmap": (jax.vmap(loss, (None, 0, 0)), (params, c, keys)),
        "vmap_of_grad": (jax.vmap(grad, (None, 0, 0)), (params, c, keys)),
        "nested_vmap": (
            jax.vmap(jax.vmap(loss, (None, 0, 0)), (None, 0, 0)),
            (params, jnp.stack([c, c]), jnp.stack([keys, keys])),
        ),
        "vmap_over_parameters": (
            jax.vmap(grad, (0, None, None)),
            (jax.tree.map(lambda a: jnp.stack([a, a]), params), c[0], keys[0]),
        ),
        "no_vmap": (grad, (params, c[0], keys[0])),
    }[case]
    assert row_counts(fn, *args) == counts
