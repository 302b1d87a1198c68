"""The MAF module and its distribution: the seed examples, shapes, errors, idioms."""

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import iter_eqns, scramble
from flax import nnx

import maf_jax.core.network
from maf_jax import (
    MAF,
    FullPass,
    Incremental,
    MaskedAutoregressiveTransform,
    MonotonicAffineTransform,
)

# The examples of the zuko MAF documentation, translated to JAX.


def test_seed_unconditional_example():
    flow = MAF(features=3, transforms=3, hidden_features=[64, 64], rngs=nnx.Rngs(0))
    dist = flow()
    samples = dist.sample(jax.random.key(1), (1000,))
    assert samples.shape == (1000, 3)
    log_prob = dist.log_prob(samples)
    assert log_prob.shape == (1000,)
    assert np.all(np.isfinite(log_prob))


def test_seed_conditional_example():
    flow = MAF(features=3, context=4, transforms=3, rngs=nnx.Rngs(0))
    c = jax.random.normal(jax.random.key(1), (4,))
    x = flow(c).sample(jax.random.key(2))
    log_p = flow(c).log_prob(x)
    assert x.shape == (3,)
    assert log_p.shape == ()


def test_seed_training_example():
    flow = MAF(features=10, transforms=5, hidden_features=[128, 128], rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(flow, optax.adam(1e-3), wrt=nnx.Param)
    dataloader = 0.5 * jax.random.normal(jax.random.key(1), (8, 64, 10)) + 1.0

    @nnx.jit
    def step(flow, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda f: -f().log_prob(x).mean())(flow)
        optimizer.update(flow, grads)
        return loss

    losses = [float(step(flow, optimizer, x)) for _ in range(3) for x in dataloader]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.5


def test_seed_coupling_example():
    flow = MAF(features=100, transforms=3, passes=2, rngs=nnx.Rngs(0))
    assert all(t.layout.steps == 2 for t in flow.transforms.unstack())
    x = flow().sample(jax.random.key(1), (8,))
    assert x.shape == (8, 100) and flow().log_prob(x).shape == (8,)


def test_seed_custom_univariate_example():
    flow = MAF(features=5, univariate=MonotonicAffineTransform, shapes=[(), ()], rngs=nnx.Rngs(0))
    assert flow().log_prob(jnp.zeros((2, 5))).shape == (2,)


def test_seed_custom_masking_example():
    order = jnp.array([2, 0, 1, 3, 4])
    flow = MAF(features=5, transforms=3, order=order, rngs=nnx.Rngs(0))
    orders = [t.order[...].tolist() for t in flow.transforms.unstack()]
    assert orders == [[2, 0, 1, 3, 4], [2, 4, 3, 1, 0], [2, 0, 1, 3, 4]]


def test_default_and_random_orders():
    flow = MAF(4, transforms=3, rngs=nnx.Rngs(0))
    assert [t.order[...].tolist() for t in flow.transforms.unstack()] == [
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [0, 1, 2, 3],
    ]
    orders = [
        t.order[...].tolist()
        for t in MAF(6, transforms=4, randperm=True, rngs=nnx.Rngs(0)).transforms.unstack()
    ]
    assert all(sorted(o) == list(range(6)) for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    again = [
        t.order[...].tolist()
        for t in MAF(6, transforms=4, randperm=True, rngs=nnx.Rngs(0)).transforms.unstack()
    ]
    assert again == orders  # drawn from rngs, so reproducible


# Shapes: context (*batch, C) gives batch shape *batch.

SHAPES = [
    # context batch, sample shape, log_prob input lead shape, expected log_prob shape
    ((), (), (), ()),
    ((), (7,), (7,), (7,)),
    ((2,), (), (2,), (2,)),
    ((2,), (5,), (5, 2), (5, 2)),
    ((3, 2), (4,), (1, 2), (3, 2)),
]


@pytest.fixture(scope="module")
def conditional():
    return MAF(3, context=4, transforms=2, hidden_features=(16,), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("batch,sample_shape,x_lead,lp_shape", SHAPES)
def test_shapes(conditional, batch, sample_shape, x_lead, lp_shape):
    c = jnp.ones((*batch, 4))
    dist = conditional(c)
    assert dist.batch_shape == batch and dist.event_shape == (3,)
    x = dist.sample(jax.random.key(0), sample_shape)
    assert x.shape == (*sample_shape, *batch, 3)
    assert dist.log_prob(jnp.zeros((*x_lead, 3))).shape == lp_shape
    samples, log_probs = dist.sample_and_log_prob(jax.random.key(0), sample_shape)
    np.testing.assert_allclose(samples, x)
    np.testing.assert_allclose(log_probs, dist.log_prob(x), atol=1e-4)


def test_unconditional_sample_shape_accepts_int():
    flow = MAF(2, transforms=1, rngs=nnx.Rngs(0))
    assert flow().sample(jax.random.key(0), 6).shape == (6, 2)


def test_a_new_flow_starts_near_its_base():
    flow = MAF(4, transforms=5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (256, 4))
    gap = flow().log_prob(x) - standard_normal_log_prob(x)
    assert 0 < float(jnp.abs(gap).mean()) < 0.05  # the random init of the old version: ~5 nats


# Densities.


def standard_normal_log_prob(z):
    return -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)


def test_log_prob_is_base_plus_log_det():
    flow = scramble(MAF(4, context=2, transforms=3, rngs=nnx.Rngs(1)))
    c = jnp.array([0.3, -1.0])
    x = jax.random.normal(jax.random.key(2), (6, 4))
    z, ladj = x, 0.0
    for t in flow.transforms.unstack():
        z, step = t(c).forward_and_log_det(z)
        ladj = ladj + step
    np.testing.assert_allclose(flow(c).log_prob(x), standard_normal_log_prob(z) + ladj, rtol=1e-6)


def test_density_integrates_to_one():
    flow = scramble(
        MAF(2, transforms=3, hidden_features=(32, 32), activation=jax.nn.elu, rngs=nnx.Rngs(3))
    )
    grid = jnp.linspace(-12.0, 12.0, 1601)
    cell = (grid[1] - grid[0]) ** 2
    xy = jnp.stack(jnp.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    density = jnp.exp(jax.jit(lambda x: flow().log_prob(x))(xy))
    mass = float(density.sum() * cell)
    assert abs(mass - 1.0) < 1e-3, mass
    assert float(density.max()) > 3 * (1 / (2 * math.pi))  # far from a standard normal


def test_sample_and_log_prob_consistent_with_log_prob():
    flow = MAF(3, transforms=3, rngs=nnx.Rngs(2))
    x, log_prob = flow().sample_and_log_prob(jax.random.key(0), (50,))
    np.testing.assert_allclose(log_prob, flow().log_prob(x), atol=1e-4)


def test_samples_follow_the_density():
    # a flow is a distribution: the mean of log p over its own samples is minus
    # its entropy, which a Monte Carlo estimate under a wider proposal must match
    flow = scramble(MAF(1, transforms=2, rngs=nnx.Rngs(5)))
    x = flow().sample(jax.random.key(0), (20000,))
    grid = jnp.linspace(-15.0, 15.0, 30001)[:, None]
    density = jnp.exp(flow().log_prob(grid))
    cdf = jnp.cumsum(density) * (grid[1, 0] - grid[0, 0])
    empirical = jnp.searchsorted(jnp.sort(x[:, 0]), grid[:, 0]) / x.shape[0]
    assert float(jnp.abs(cdf - empirical).max()) < 0.015  # Kolmogorov-Smirnov at n=20000


# The functional idiom: split, merge inside jit, grad over params, vmap over contexts.


def test_functional_idiom():
    flow = MAF(3, context=2, transforms=2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    cs = jax.random.normal(jax.random.key(1), (5, 2))
    xs = jax.random.normal(jax.random.key(2), (5, 3))

    @jax.jit
    def log_prob(params, c, x):
        return nnx.merge(graphdef, params, rest)(c).log_prob(x)

    batched = jax.vmap(log_prob, in_axes=(None, 0, 0))(params, cs, xs)
    np.testing.assert_allclose(batched, flow(cs).log_prob(xs), atol=1e-5)

    grads = jax.grad(lambda p: -log_prob(p, cs, xs).mean())(params)
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    kernel_grad = grads["transforms"]["stacked"]["hyper"]["layers"][0]["kernel"][...]
    assert kernel_grad.shape == (2, 5, 64)  # (transforms, features + context, hidden)
    mask = flow.transforms.stacked.hyper.layers[0].mask[...]
    for grad in kernel_grad:
        np.testing.assert_array_equal(grad[~mask], 0.0)  # masked weights get no gradient
        assert np.any(grad[mask] != 0.0)

    sampled = jax.jit(lambda p, c, k: nnx.merge(graphdef, p, rest)(c).sample(k, (4,)))(
        params, cs, jax.random.key(3)
    )
    assert sampled.shape == (4, 5, 3)


def test_distribution_crosses_jit():
    flow = MAF(3, transforms=2, rngs=nnx.Rngs(0))
    dist = jax.jit(lambda: flow())()
    x = jnp.ones((2, 3))
    np.testing.assert_allclose(
        jax.jit(lambda d, x: d.log_prob(x))(dist, x), flow().log_prob(x), rtol=1e-6
    )


def test_rsample_is_differentiable_and_sample_is_not():
    flow = MAF(2, transforms=2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)

    def mean_sample(params, method):
        dist = nnx.merge(graphdef, params, rest)()
        return getattr(dist, method)(jax.random.key(0), (16,)).mean()

    rgrads = jax.grad(mean_sample)(params, "rsample")
    sgrads = jax.grad(mean_sample)(params, "sample")
    assert any(np.any(g != 0) for g in jax.tree.leaves(rgrads))
    assert all(np.all(g == 0) for g in jax.tree.leaves(sgrads))


# Bad input.


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: MAF(0, rngs=nnx.Rngs(0)), "features must be a positive integer"),
        (lambda: MAF(3, transforms=0, rngs=nnx.Rngs(0)), "transforms must be a positive integer"),
        (lambda: MAF(3, passes=0, rngs=nnx.Rngs(0)), "passes must be a positive integer"),
        (lambda: MAF(3, context=-2, rngs=nnx.Rngs(0)), "context must be a non-negative integer"),
        (lambda: MAF(3, order=[0, 0, 1], rngs=nnx.Rngs(0)), "permutation of range\\(3\\)"),
        (lambda: MAF(3, order=[0, 1], rngs=nnx.Rngs(0)), "permutation of range\\(3\\)"),
        (lambda: MAF(3, order=[0, 2, 1], randperm=True, rngs=nnx.Rngs(0)), "not both"),
        (lambda: MAF(3, hidden_features=(8, 0), rngs=nnx.Rngs(0)), "at least one unit"),
        (lambda: MAF(3, shapes=(), rngs=nnx.Rngs(0)), "non-empty sequence of shapes"),
        (
            lambda: MaskedAutoregressiveTransform(2.5, rngs=nnx.Rngs(0)),
            "features must be a positive integer",
        ),
    ],
)
def test_construction_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.fixture(scope="module")
def small():
    return MAF(3, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda f, g: f().log_prob(jnp.zeros((2, 4))), "expected x of shape \\(\\*, 3\\)"),
        (lambda f, g: f().log_prob(jnp.zeros(())), "expected x of shape"),
        (lambda f, g: f(jnp.zeros(2)), "unconditional \\(context=0\\)"),
        (lambda f, g: g(), "conditional: call it with a context c of shape \\(\\*, 2\\)"),
        (lambda f, g: g(jnp.zeros((4, 3))), "expected context c of shape \\(\\*, 2\\)"),
        (lambda f, g: g(jnp.zeros((4, 2))).log_prob(jnp.zeros((3, 3))), "does not broadcast"),
        (lambda f, g: f().sample(jax.random.key(0), "a"), TypeError),
        (lambda f, g: f().sample(jax.random.key(0), (2.5,)), TypeError),
        (lambda f, g: f().sample(jax.random.key(0), 2.0), TypeError),
        (lambda f, g: f().sample(jax.random.key(0), (True,)), TypeError),
        (lambda f, g: f().rsample(jax.random.key(0), (3, -1)), "non-negative sizes"),
    ],
)
def test_call_errors(small, call, match):
    conditional = MAF(3, context=2, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0))
    if match is TypeError:
        with pytest.raises(TypeError, match="shape must be an int or a tuple of ints"):
            call(small, conditional)
    else:
        with pytest.raises(ValueError, match=match):
            call(small, conditional)


@pytest.mark.parametrize("context_batch,sample_shape", [((), (0,)), ((0,), (3,)), ((2,), (0, 4))])
def test_empty_batches_give_empty_results(context_batch, sample_shape):
    flow = MAF(3, context=2, transforms=2, hidden_features=(8,), rngs=nnx.Rngs(0))
    dist = flow(jnp.ones((*context_batch, 2)))
    x, log_p = dist.sample_and_log_prob(jax.random.key(0), sample_shape)
    assert x.shape == (*sample_shape, *context_batch, 3)
    assert log_p.shape == (*sample_shape, *context_batch)
    assert dist.log_prob(x).shape == log_p.shape
    grad = jax.grad(lambda x: dist.log_prob(x).sum())(x)
    assert grad.shape == x.shape


LOG_PROB = lambda f: f().log_prob(jnp.zeros((4, 3)))  # noqa: E731
SAMPLE = lambda f: f().sample(jax.random.key(0), (4,))  # noqa: E731
GRAD = lambda f: jax.grad(lambda x: f().log_prob(x).sum())(jnp.zeros((4, 3)))  # noqa: E731
CONDITIONAL_SAMPLE = lambda f: f(jnp.ones(2)).sample(jax.random.key(0), (4,))  # noqa: E731


def products(call, flow):
    """The precision of every matrix product that ``call(flow)`` traces."""
    jaxpr = jax.make_jaxpr(lambda: call(flow))().jaxpr
    return [e.params["precision"] for e in iter_eqns(jaxpr) if e.primitive.name == "dot_general"]


@pytest.mark.parametrize(
    "kwargs,call,precision",
    [
        ({}, LOG_PROB, "highest"),
        ({}, SAMPLE, "highest"),
        ({}, GRAD, "highest"),
        (dict(context=2, passes=2), CONDITIONAL_SAMPLE, "highest"),
        (dict(precision="default"), SAMPLE, "default"),
        (dict(precision="default"), GRAD, "default"),
        (dict(precision=jax.lax.Precision.HIGH, context=2), CONDITIONAL_SAMPLE, "high"),
        (dict(precision=None), LOG_PROB, "default"),
    ],
)
def test_every_product_runs_at_the_set_precision(kwargs, call, precision):
    """Backends whose default is below float32 (TF32 GPUs, TPUs) must not make the
    sequential inverse and the forward round differently, unless asked to."""
    flow = MAF(3, transforms=2, hidden_features=(8,), **kwargs, rngs=nnx.Rngs(0))
    expected = (maf_jax.core.network.PRECISIONS[precision],) * 2
    highest = (jax.lax.Precision.HIGHEST,) * 2
    found = products(call, flow)
    # the one-hot products that apply the order stay exact whatever the setting
    network = found if precision == "highest" else [p for p in found if p != highest]
    assert len(network) >= 2  # one transform of the scan is traced: its two layers
    assert all(p == expected for p in network), set(found)


TRACED = []


@dataclasses.dataclass(frozen=True)
class Traced:
    """An inverse option that records which inverse was traced."""

    inverse: object

    def __call__(self, t, y):
        TRACED.append(self.inverse.name)
        return self.inverse(t, y)


def test_two_flows_with_different_settings_each_behave_as_built():
    """Settings are static structure: in one process, without clearing JAX's
    caches, each flow's jitted methods trace its own settings, in either order."""
    settings = {
        "a": dict(precision="highest", inverse=Traced(Incremental()), unroll=10),
        "b": dict(precision="default", inverse=Traced(FullPass()), unroll=0),
    }
    flows = {
        name: MAF(3, transforms=2, hidden_features=(8,), **kwargs, rngs=nnx.Rngs(0))
        for name, kwargs in settings.items()
    }
    x = jax.random.normal(jax.random.key(1), (4, 3))
    samples, traced = {}, []
    for name in ["a", "b", "a", "b"]:
        flow, kwargs = flows[name], settings[name]
        TRACED.clear()
        samples[name] = flow().sample(jax.random.key(2), (5,))
        traced.append(list(TRACED))
        expected = (maf_jax.core.network.PRECISIONS[kwargs["precision"]],) * 2
        assert expected in products(lambda f: f().log_prob(x), flow)
        unrolls = {
            e.params["unroll"]
            for e in iter_eqns(jax.make_jaxpr(jax.grad(lambda x, f=flow: f().log_prob(x).sum()))(x))
            if e.primitive.name == "scan"
        }
        assert (2 in unrolls) == (kwargs["unroll"] >= 2), unrolls
    # each traced its own inverse once, then ran from the cache
    assert traced == [["incremental"], ["full_pass"], [], []]
    # same weights, same noise: the two inverses agree
    np.testing.assert_allclose(samples["a"], samples["b"], atol=1e-5)


AUTODIFF_DEPRECATED = r'derivative="autodiff" is deprecated'


@pytest.mark.parametrize(
    "build",
    [
        lambda: MaskedAutoregressiveTransform(3, derivative="autodiff", rngs=nnx.Rngs(0)),
        lambda: MAF(3, transforms=2, derivative="autodiff", rngs=nnx.Rngs(0)),
        lambda: maf_jax.NSF(3, transforms=1, derivative="autodiff", rngs=nnx.Rngs(0)),
    ],
    ids=["transform", "maf", "nsf"],
)
def test_the_autodiff_derivative_warns_at_the_users_call(build):
    with pytest.warns(DeprecationWarning, match=AUTODIFF_DEPRECATED) as record:
        build()
    assert {w.filename for w in record} == {__file__}  # the user's line, not ours


def test_the_implicit_derivative_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        MAF(3, transforms=2, derivative="implicit", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cls,kwargs", [(MAF, {}), (maf_jax.NSF, {"bins": 4})])
def test_identity_init_starts_every_flow_as_the_identity(cls, kwargs):
    c = jnp.linspace(-1.0, 1.0, 2)
    x = 2.0 * jax.random.normal(jax.random.key(0), (6, 3))
    noise = jax.random.normal(jax.random.key(1), (6, 3))
    standard = jax.scipy.stats.norm.logpdf(x).sum(-1)
    flow = cls(3, 2, identity_init=True, rngs=nnx.Rngs(0), **kwargs)
    np.testing.assert_allclose(flow(c).log_prob(x), standard, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(flow(c).transform.inverse(noise), noise, rtol=1e-6, atol=1e-6)
    default = cls(3, 2, rngs=nnx.Rngs(0), **kwargs)
    assert np.abs(default(c).log_prob(x) - standard).max() > 1e-4  # near, not at, the identity
    with pytest.raises(ValueError, match="identity_init must be True or False"):
        cls(3, identity_init=1, rngs=nnx.Rngs(0), **kwargs)
