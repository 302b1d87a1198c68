"""Table-driven tests of every bijection: round trip, log-determinants, structure."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import iter_eqns, scramble
from flax import nnx
from transform_configs import CONFIGS, CONTEXT, FEATURES

import maf_jax
from maf_jax import MAF, FullPass, Incremental, MaskedAutoregressiveTransform
from maf_jax.bijections import autoregressive, chain
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.bijections.chain import Chain
from maf_jax.core.masks import autoregressive_adjacency
from maf_jax.inverses import incremental
from maf_jax.inverses.incremental import incremental_inverse


def build(name):
    kind, kwargs = CONFIGS[name]
    rngs = nnx.Rngs(int.from_bytes(name.encode()[:4], "little"))
    context = kwargs.get("context", 0)
    c = jax.random.normal(jax.random.key(7), (context,)) if context else None
    if kind == "transform":
        t = scramble(MaskedAutoregressiveTransform(FEATURES, **kwargs, rngs=rngs))
        return t(c)
    return scramble(MAF(FEATURES, **kwargs, rngs=rngs))(c).transform


@pytest.fixture(scope="module")
def x():
    return 1.5 * jax.random.normal(jax.random.key(0), (4, FEATURES))


@jax.jit
def roundtrip(bijection, x):
    y, ladj = bijection.forward_and_log_det(x)
    x_back, inverse_ladj = bijection.inverse_and_log_det(y)
    jacobian = jax.vmap(jax.jacfwd(bijection.forward))(x)
    return y, ladj, x_back, inverse_ladj, jacobian


@pytest.mark.parametrize("name", CONFIGS)
def test_bijection(name, x):
    y, ladj, x_back, inverse_ladj, jacobian = roundtrip(build(name), x)
    assert y.shape == x.shape and ladj.shape == x.shape[:1]
    # float32: sequential inversion amplifies rounding by up to exp(max log-scale);
    # tests/test_float64.py holds the same table to 1e-9.
    np.testing.assert_allclose(x_back, x, rtol=1e-3, atol=1e-4)
    sign, logdet = jnp.linalg.slogdet(jacobian)
    np.testing.assert_array_equal(sign, 1.0)  # monotonic transforms keep orientation
    np.testing.assert_allclose(ladj, logdet, atol=1e-4)
    np.testing.assert_allclose(inverse_ladj, -ladj, atol=1e-4)
    assert not np.allclose(y, x, atol=1e-2)  # not the identity by accident


@pytest.mark.parametrize(
    "features,kwargs,blocks,groups",
    [
        (24, dict(hidden_features=(50, 31)), 5, 2),  # 2 and 3 blocks per scan
        (24, dict(hidden_features=(50, 31)), 3, 1),  # padded: 22 steps in 3 blocks
        (13, dict(hidden_features=(9,), context=CONTEXT, activation=jax.nn.elu), 4, 1),
        (24, dict(hidden_features=(40, 40), passes=8, context=CONTEXT), 2, 1),
        (24, dict(hidden_features=(), passes=12), 4, 2),
        (24, dict(hidden_features=(40, 40, 31), residual=True, context=CONTEXT), 5, 2),
    ],
)
def test_incremental_inverse_with_scanned_blocks(features, kwargs, blocks, groups):
    """Groups of several blocks run one scan with offsets as data (the table above
    is too small to form them)."""
    context = kwargs.get("context", 0)
    c = jax.random.normal(jax.random.key(7), (context,)) if context else None
    bijection = scramble(MaskedAutoregressiveTransform(features, **kwargs, rngs=nnx.Rngs(3)))(c)
    x = jax.random.normal(jax.random.key(1), (6, features))
    y = bijection.forward(x)
    fast, fast_ladj = jax.jit(incremental_inverse, static_argnums=(2, 3, 4))(
        bijection, y, None, blocks, groups
    )
    full, full_ladj = jax.jit(full_pass_inverse)(bijection, y)
    # float32 rounding, amplified along 24 sequential steps; float64_checks.py
    # holds the first configuration to 1e-12.
    np.testing.assert_allclose(fast, full, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(fast_ladj, full_ladj, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast, x, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("chunk", [None, 3])
@pytest.mark.parametrize("name", [n for n, (kind, _) in CONFIGS.items() if kind == "transform"])
def test_incremental_inverse_matches_full_pass(name, chunk):
    bijection = build(name)
    x = jax.random.normal(jax.random.key(1), (10, FEATURES))  # 10 rows: chunks of 3 need padding
    y = bijection.forward(x)
    fast, fast_ladj = jax.jit(incremental_inverse, static_argnums=2)(bijection, y, chunk)
    full, full_ladj = jax.jit(full_pass_inverse)(bijection, y)
    np.testing.assert_allclose(fast, full, atol=1e-5)
    np.testing.assert_allclose(fast_ladj, full_ladj, atol=1e-5)


@pytest.mark.parametrize(
    "inverse,expected",
    [
        ("incremental", "incremental"),
        ("full_pass", "full_pass"),
        (Incremental(blocks=2), "incremental"),
        (FullPass(), "full_pass"),
    ],
)
def test_the_inverse_option_picks_the_inverse(monkeypatch, inverse, expected):
    calls = []
    for module, name in (
        (incremental, "incremental_inverse"),
        (autoregressive, "full_pass_inverse"),
    ):
        original = getattr(module, name)

        def spy(t, y, *args, original=original, name=name):
            calls.append(name.removesuffix("_inverse"))
            return original(t, y, *args)

        monkeypatch.setattr(module, name, spy)
    t = MaskedAutoregressiveTransform(
        FEATURES, passes=3, context=CONTEXT, inverse=inverse, rngs=nnx.Rngs(1)
    )
    bijection = scramble(t)(jnp.linspace(-1.0, 1.0, CONTEXT))
    y = jax.random.normal(jax.random.key(2), (3, FEATURES))
    jax.clear_caches()  # the row-wise inverse is jitted: a trace cached by another case
    x, ladj = jax.jit(lambda b, y: b.inverse_and_log_det(y))(bijection, y)
    assert calls == [expected]  # traced once
    y_back, forward_ladj = bijection.forward_and_log_det(x)
    np.testing.assert_allclose(y_back, y, atol=1e-4)
    np.testing.assert_allclose(ladj, -forward_ladj, atol=1e-4)


@pytest.mark.parametrize("option,value", [("chunk", 4), ("blocks", 2), ("groups", 1)])
def test_incremental_options_reach_the_program(option, value):
    """``Incremental(option=value)`` traces what the function's argument does."""

    def program(inverse, fn):
        t = MaskedAutoregressiveTransform(
            24, hidden_features=(50, 31), inverse=inverse, rngs=nnx.Rngs(3)
        )
        return str(jax.make_jaxpr(fn)(t(), jnp.zeros((10, 24))))

    set_ = program(Incremental(**{option: value}), lambda b, y: b.inverter(b, y))
    by_argument = program("incremental", lambda b, y: incremental_inverse(b, y, **{option: value}))
    default = program("incremental", lambda b, y: b.inverter(b, y))
    assert set_ == by_argument != default


@pytest.mark.parametrize(
    "inverse,match",
    [
        ("fast", r"one of \['full_pass', 'incremental', 'pallas_full_pass'\], got 'fast'"),
        (Incremental, "hashable callable"),
        ([1], "hashable callable"),
        (lambda: Incremental(blocks=0), "blocks must be a positive integer"),
        (lambda: Incremental(groups=1.5), "groups must be a positive integer"),
    ],
)
def test_a_bad_inverse_option_says_what_is_expected(inverse, match):
    with pytest.raises(ValueError, match=match):
        if callable(inverse) and not isinstance(inverse, type):
            inverse = inverse()
        MaskedAutoregressiveTransform(FEATURES, inverse=inverse, rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "order,passes,context",
    [(None, None, 0), ([3, 0, 4, 2, 1], None, 2), ([1, 4, 0, 2, 3], 3, 0), (None, 2, 1)],
)
def test_jacobian_is_zero_where_the_order_forbids(order, passes, context):
    t = scramble(
        MaskedAutoregressiveTransform(
            FEATURES,
            context,
            passes,
            order,
            hidden_features=(24, 24),
            activation=jax.nn.elu,
            rngs=nnx.Rngs(3),
        )
    )
    c = jnp.ones(context) if context else None
    jacobian = jax.jacfwd(t(c).forward)(jnp.linspace(-1.0, 1.0, FEATURES))
    order = np.arange(FEATURES) if order is None else np.asarray(order)
    allowed = autoregressive_adjacency(order, passes or FEATURES)[:, :FEATURES]
    allowed |= np.eye(FEATURES, dtype=bool)
    np.testing.assert_array_equal(jacobian[~allowed], 0.0)  # exactly zero
    assert np.all(jacobian[allowed] != 0.0)  # elu: every allowed path carries signal


def test_two_passes_give_a_coupling_jacobian():
    t = scramble(
        MaskedAutoregressiveTransform(6, passes=2, rngs=nnx.Rngs(4), activation=jax.nn.elu)
    )
    jacobian = np.asarray(jax.jacfwd(t().forward)(jnp.linspace(-1.0, 1.0, 6)))
    first, second = slice(0, 3), slice(3, 6)
    for block in (jacobian[first, first], jacobian[second, second]):
        np.testing.assert_array_equal(block, np.diag(np.diag(block)))  # elementwise
    np.testing.assert_array_equal(jacobian[first, second], 0.0)
    assert np.all(jacobian[second, first] != 0.0)  # conditioned on the first half


@pytest.mark.parametrize("hidden", [(8,), ()])
@pytest.mark.parametrize("shapes", [((), ()), ((3,), (3,), (2,))])
def test_gathers_and_one_hot_products_order_the_weights_alike(hidden, shapes):
    """One-hot products (below ``GATHER_FROM`` features) and gathers (from it): same
    values and gradients, in a shuffled order, with and without hidden layers."""
    order = np.roll(np.arange(FEATURES), 2)  # a cycle: not its own inverse
    t = MaskedAutoregressiveTransform(
        FEATURES, CONTEXT, order=order, shapes=shapes, hidden_features=hidden, rngs=nnx.Rngs(4)
    )
    graphdef, params, rest = nnx.split(scramble(t), nnx.Param, ...)
    c = jax.random.normal(jax.random.key(8), (CONTEXT,))

    def value_and_grad(gather):
        def loss(params):
            weights = nnx.merge(graphdef, params, rest)(c)._original_weights(gather)
            return sum(jnp.sum(jnp.sin(w)) for w in jax.tree.leaves(weights)), weights

        return jax.value_and_grad(loss, has_aux=True)(params)

    (_, products), grads = value_and_grad(False)
    (_, gathers), gathered_grads = value_and_grad(True)
    assert FEATURES < autoregressive.GATHER_FROM  # the flows of every other test: products
    (_, default), _ = value_and_grad(None)
    for a, b in zip(jax.tree.leaves(products), jax.tree.leaves(default), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves((products, grads)), jax.tree.leaves((gathers, gathered_grads))):
        np.testing.assert_array_equal(a, b)
    # against NumPy's indexing: rows of the first kernel, outputs of the last layer
    weights = nnx.merge(graphdef, params, rest)(c).weights
    expected = [[np.array(a) for a in layer] for layer in weights]
    expected[0][0][:FEATURES] = expected[0][0][:FEATURES][order]
    total = sum(int(np.prod(shape)) for shape in shapes)
    w, b = expected[-1]
    expected[-1] = [
        w.reshape(len(w), FEATURES, total)[:, order].transpose(0, 2, 1).reshape(len(w), -1),
        b.reshape(FEATURES, total)[order].T.reshape(-1),
    ]
    for layer, want in zip(products, expected, strict=True):
        for a, b in zip(layer, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_chain_matches_transforms_applied_in_turn(x):
    flow = scramble(MAF(FEATURES, transforms=3, context=CONTEXT, rngs=nnx.Rngs(5)))
    c = jnp.arange(CONTEXT, dtype=jnp.float32)
    z, total = x, 0.0
    for t in flow.transforms.unstack():
        z, ladj = t(c).forward_and_log_det(z)
        total = total + ladj
    chain_z, chain_ladj = flow(c).transform.forward_and_log_det(x)
    np.testing.assert_allclose(chain_z, z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(chain_ladj, total, atol=1e-5)
    assert len(flow(c).transform) == 3
    second = flow.transforms.unstack()[1]
    np.testing.assert_allclose(flow(c).transform[1].forward(x), second(c).forward(x))
    stacked = Chain.stack([t(c) for t in flow.transforms.unstack()])
    np.testing.assert_allclose(stacked.forward(x), z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stacked.inverse(z), x, rtol=1e-5, atol=1e-5)


def _scan_unrolls(fn, *args):
    return sorted(
        e.params["unroll"]
        for e in iter_eqns(jax.make_jaxpr(fn)(*args).jaxpr)
        if e.primitive.name == "scan"
    )


@pytest.mark.parametrize(
    "transforms,differentiated,unrolled",
    [(3, False, False), (3, True, True), (11, True, False)],  # unroll=10 by default
)
def test_the_forward_chain_unrolls_only_when_differentiated(
    x, transforms, differentiated, unrolled
):
    """Evaluation keeps the loop (its memory); training unrolls short chains."""
    flow = MAF(FEATURES, transforms=transforms, hidden_features=(8,), rngs=nnx.Rngs(6))

    def log_prob(x):
        return flow().log_prob(x).sum()

    unrolls = _scan_unrolls(jax.grad(log_prob) if differentiated else log_prob, x)
    assert unrolls and all((u == transforms) == unrolled for u in unrolls), unrolls


@pytest.mark.parametrize("derivative", ["grad", "jacfwd"])
def test_unrolled_derivatives_match_the_loop(x, derivative):
    """The same flow built with ``unroll=0`` keeps the loop: equal derivatives."""

    def derivatives(unroll):
        flow = MAF(FEATURES, transforms=3, context=CONTEXT, unroll=unroll, rngs=nnx.Rngs(7))
        graphdef, params, rest = nnx.split(scramble(flow), nnx.Param, ...)
        c = jnp.arange(CONTEXT, dtype=jnp.float32)

        def log_prob(params, x):
            return nnx.merge(graphdef, params, rest)(c).log_prob(x).sum()

        differentiate = getattr(jax, derivative)(log_prob, 0 if derivative == "grad" else 1)
        return _scan_unrolls(differentiate, params, x), differentiate(params, x)

    unrolls, unrolled = derivatives(10)
    loop_unrolls, looped = derivatives(0)
    assert 3 in unrolls and set(loop_unrolls) == {1}
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(looped), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "features,differentiated,barrier",
    [(3, True, True), (3, False, False), (chain.BARRIER_BELOW, True, False)],
)
def test_the_unrolled_chain_keeps_xla_from_fusing_across_transforms(
    monkeypatch, features, differentiated, barrier
):
    """Below ``BARRIER_BELOW`` features, the step of the chain (traced once, unrolled)
    puts its input through the barrier, only where the chain is unrolled."""
    calls = []

    def counted(x):
        calls.append(x.shape)
        return x

    monkeypatch.setattr(chain, "_fusion_barrier", counted)
    flow = MAF(features, transforms=3, hidden_features=(8,), rngs=nnx.Rngs(6))

    def log_prob(x):
        return flow().log_prob(x).sum()

    jax.make_jaxpr(jax.grad(log_prob) if differentiated else log_prob)(jnp.ones((2, features)))
    assert calls == [(2, features)] * barrier


@pytest.mark.parametrize(
    "derivative", [jax.grad, jax.jacfwd, jax.jacrev, jax.hessian], ids=lambda d: d.__name__
)
def test_the_fusion_barrier_changes_no_derivative(derivative):
    """The identity, and its derivatives those of the identity to the last bit."""
    x = jnp.array([[0.3, -1.2, 2.5], [1e-30, -0.0, 7e20]])
    w = jnp.array([1.5, -0.25, 3.0])

    def f(barrier):
        return lambda x: jnp.sum(jnp.sin(barrier(x)) * w)

    with_barrier = derivative(f(chain._fusion_barrier))(x)
    np.testing.assert_array_equal(with_barrier, derivative(f(lambda x: x))(x))
    np.testing.assert_array_equal(chain._fusion_barrier(x), x)


@pytest.mark.parametrize(
    "derivative,primitive", [("implicit", "custom_vjp_call"), ("autodiff", "remat")]
)
def test_the_inverse_chain_is_differentiated_as_the_transforms_say(x, derivative, primitive):
    """Implicit: a custom VJP per transform; autodiff: each transform recomputed in
    the backward pass. Either way, the derivatives of the transforms inverted in turn."""
    deprecated = derivative == "autodiff"
    with pytest.warns(DeprecationWarning) if deprecated else contextlib.nullcontext():
        flow = MAF(
            FEATURES,
            transforms=2,
            context=CONTEXT,
            hidden_features=(8,),
            derivative=derivative,
            rngs=nnx.Rngs(8),
        )
    flow = scramble(flow)
    c = jnp.linspace(-1.0, 1.0, CONTEXT)
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def chained(params, y):
        x, ladj = nnx.merge(graphdef, params, rest)(c).transform.inverse_and_log_det(y)
        return (x**2).sum() + ladj.sum()

    def in_turn(params, y):
        ladj = 0.0
        for t in reversed(nnx.merge(graphdef, params, rest).transforms.unstack()):
            y, step_ladj = full_pass_inverse(t(c), y)
            ladj = ladj + step_ladj
        return (y**2).sum() + ladj.sum()

    names = {e.primitive.name for e in iter_eqns(jax.make_jaxpr(chained)(params, x).jaxpr)}
    assert any(name.startswith(primitive) for name in names), names
    got = jax.jit(jax.grad(chained, argnums=(0, 1)))(params, x)
    want = jax.jit(jax.grad(in_turn, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert max(float(np.abs(a).max()) for a in jax.tree.leaves(got)) > 1e-2  # not all zero


def test_affine_univariate_by_hand():
    t = maf_jax.MonotonicAffineTransform(jnp.array([0.5, -1.0]), jnp.array([0.0, 100.0]))
    y, ladj = t.forward_and_log_det(jnp.array([2.0, 1.0]))
    bound = -np.log(1e-3)
    log_scale = 100.0 / (1 + 100.0 / bound)  # soft bound below -log(slope)
    np.testing.assert_allclose(y, [2.5, np.exp(log_scale) - 1.0], rtol=1e-6)
    np.testing.assert_allclose(ladj, [0.0, log_scale], rtol=1e-6)
    assert log_scale < bound
