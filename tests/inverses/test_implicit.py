"""Derivatives of the inverse by the implicit function theorem, against autodiff."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import iter_eqns, scramble
from flax import nnx
from transform_configs import CONFIGS, CONTEXT, MixedScaleAffine

from maf_jax import FullPass, Incremental, MaskedAutoregressiveTransform
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.inverses.implicit import transposed_solve

TRANSFORMS = {name: kwargs for name, (kind, kwargs) in CONFIGS.items() if kind == "transform"}
TRANSFORMS |= {
    "uneven_ranks": dict(passes=2, context=CONTEXT),  # 5 features in ranks of 3 and 2
    "full_pass_inverter": dict(inverse=FullPass(), context=CONTEXT),
    "scanned_blocks": dict(inverse=Incremental(blocks=3, groups=2), hidden_features=(30, 17)),
}
FEATURES = {"scanned_blocks": 13}


def cotangent_loss(graphdef, rest, reference: bool):
    """A scalar of the inverse with random cotangents for ``x`` and the log-det."""

    def loss(params, y, c, gx, gl):
        bijection = nnx.merge(graphdef, params, rest)(c)
        x, ladj = full_pass_inverse(bijection, y) if reference else bijection.inverse_and_log_det(y)
        return (x * gx).sum() + (ladj * gl).sum()

    return loss


def derivatives(name, dtype=jnp.float32, rows=4):
    kwargs = dict(TRANSFORMS[name])
    features = FEATURES.get(name, 5)
    t = MaskedAutoregressiveTransform(features, **kwargs, rngs=nnx.Rngs(1), param_dtype=dtype)
    graphdef, params, rest = nnx.split(scramble(t), nnx.Param, ...)
    keys = jax.random.split(jax.random.key(2), 4)
    context = kwargs.get("context", 0)
    c = jax.random.normal(keys[0], (context,), dtype) if context else None
    y = jax.random.normal(keys[1], (rows, features), dtype)
    gx = jax.random.normal(keys[2], (rows, features), dtype)
    gl = jax.random.normal(keys[3], (rows,), dtype)
    argnums = (0, 1, 2) if context else (0, 1)
    got, want = (
        jax.jit(jax.grad(cotangent_loss(graphdef, rest, reference), argnums))(params, y, c, gx, gl)
        for reference in (False, True)
    )
    return got, want


@pytest.mark.parametrize("name", TRANSFORMS)
def test_implicit_derivatives_equal_autodiff_through_the_reference(name):
    got, want = derivatives(name)
    scale = max(float(jnp.abs(w).max()) for w in jax.tree.leaves(want))
    assert scale > 1e-2  # not all zero
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_the_derivative_keeps_only_the_samples():
    """The inverse is one custom-VJP call whose residuals are the bijection's arrays
    and the samples: nothing that grows with the steps of the inverse."""
    t = scramble(MaskedAutoregressiveTransform(12, context=2, rngs=nnx.Rngs(0)))
    b = t(jnp.ones((40, 2)))
    y = jnp.ones((40, 12))
    names = [e.primitive.name for e in iter_eqns(jax.make_jaxpr(b.inverse_and_log_det)(y).jaxpr)]
    assert any(n.startswith("custom_vjp_call") for n in names), set(names)
    _, vjp = jax.vjp(lambda y: b.inverse_and_log_det(y)[0], y)
    kept = sum(leaf.size for leaf in jax.tree.leaves(vjp))
    bijection = sum(leaf.size for leaf in jax.tree.leaves(b))
    assert kept <= bijection + y.size  # weights, order, broadcast context, x


def test_second_order_reverse_works_and_forward_mode_says_why_not():
    t = scramble(MaskedAutoregressiveTransform(4, context=2, passes=2, rngs=nnx.Rngs(0)))
    b = t(jnp.ones(2))
    y = jax.random.normal(jax.random.key(1), (3, 4))

    def cubic(inverse):
        def f(y):
            x, ladj = inverse(y)
            return (x**3).sum() + ladj.sum()

        return f

    # compiled: op by op, the nested transforms take several times as long
    got = jax.jit(jax.jacrev(jax.grad(cubic(b.inverse_and_log_det))))(y)
    want = jax.jit(jax.jacrev(jax.grad(cubic(lambda y: full_pass_inverse(b, y)))))(y)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jacfwd(cubic(b.inverse_and_log_det))(y)
    with pytest.warns(DeprecationWarning, match='derivative="autodiff" is deprecated'):
        autodiff = scramble(
            MaskedAutoregressiveTransform(
                4, context=2, passes=2, derivative="autodiff", rngs=nnx.Rngs(0)
            )
        )(jnp.ones(2))
    forward = jax.jit(jax.jacfwd(cubic(autodiff.inverse_and_log_det)))(y)  # the documented way
    reverse = jax.jit(jax.grad(cubic(b.inverse_and_log_det)))(y)
    np.testing.assert_allclose(forward, reverse, rtol=1e-4)


def test_a_custom_univariate_with_vector_parameters_is_differentiated():
    assert TRANSFORMS["vector_parameter"]["univariate"] is MixedScaleAffine
    got, want = derivatives("vector_parameter", rows=2)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hidden", [(1,), (3,), (2, 5), (13, 1), (4, 4, 4)])
@pytest.mark.parametrize("features,passes,context", [(7, 7, 0), (7, 3, 2), (9, 4, 1), (1, 1, 0)])
def test_the_transposed_sweep_solves_against_the_dense_jacobian(hidden, features, passes, context):
    """Narrow layers reverse into degree patterns the forward layout never has (their
    lowest degree above 0, with the fewest units): every schedule must still solve."""
    t = MaskedAutoregressiveTransform(
        features, context, passes, hidden_features=hidden, activation=jax.nn.elu, rngs=nnx.Rngs(0)
    )
    c = jnp.linspace(-1.0, 1.0, context) if context else None
    b = scramble(t)(c)
    x = jax.random.normal(jax.random.key(1), (3, features))
    a = jax.random.normal(jax.random.key(2), (3, features))
    rows = b if c is None else dataclasses.replace(b, context=jnp.broadcast_to(c, (3, context)))
    jacobian = jax.jit(lambda b, x: jax.vmap(jax.jacfwd(b.forward))(x))(b, x)
    want = jnp.linalg.solve(jnp.swapaxes(jacobian, 1, 2), a[..., None])[..., 0]
    for blocks, groups in [(None, 1), (None, 4), (2, 1), (6, 2)]:
        u = jax.jit(transposed_solve, static_argnums=(3, 4))(rows, x, a, blocks, groups)
        np.testing.assert_allclose(u, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))
