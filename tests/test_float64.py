"""float64 checks, in a pytest process of their own with ``JAX_ENABLE_X64=1``.

x64 is a process-wide flag: ``tests/test_own_process.py`` runs this file in its own
process with the flag set; run directly without it, the tests skip and say why.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import graphs, scramble, structures
from flax import nnx
from hypothesis import given
from jax.test_util import check_grads

from maf_jax import MAF, MAFMoG, MaskedAutoregressiveTransform, RationalQuadraticSpline
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.inverses.incremental import incremental_inverse

pytestmark = pytest.mark.skipif(
    not jax.config.jax_enable_x64,
    reason="float64: run JAX_ENABLE_X64=1 python -m pytest tests/test_float64.py",
)

F64 = jnp.float64
TRANSFORMS = {
    "default": dict(),
    "passes1_context": dict(passes=1, context=2),
    "passes2": dict(passes=2),
    "passes3_context": dict(passes=3, context=2),
    "order_elu": dict(order=[3, 0, 4, 1, 2], activation=jax.nn.elu, hidden_features=(7, 11)),
    "residual_passes3_context": dict(
        residual=True, hidden_features=(8, 8, 6), activation=jnp.tanh, passes=3, context=2
    ),
    "spline_residual": dict(
        univariate=RationalQuadraticSpline(bins=4, bound=3.0),
        shapes=RationalQuadraticSpline(bins=4).shapes,
        residual=True,
        hidden_features=(16, 16),
    ),
    "spline_context": dict(
        univariate=RationalQuadraticSpline(bins=5, bound=2.0),
        shapes=RationalQuadraticSpline(bins=5).shapes,
        passes=3,
        context=2,
    ),
}


@pytest.mark.parametrize("kwargs", TRANSFORMS.values(), ids=TRANSFORMS)
def test_transform(kwargs):
    t = scramble(MaskedAutoregressiveTransform(5, **kwargs, rngs=nnx.Rngs(0), param_dtype=F64))
    c = jnp.linspace(-1, 1, kwargs["context"]) if kwargs.get("context") else None
    b = t(c)
    x = jax.random.normal(jax.random.key(1), (4, 5), F64)
    y, ladj = jax.jit(lambda b, x: b.forward_and_log_det(x))(b, x)
    x_back, inverse_ladj = jax.jit(lambda b, y: b.inverse_and_log_det(y))(b, y)
    x_full, _ = jax.jit(full_pass_inverse)(b, y)
    jacobian = jax.jit(lambda b, x: jax.vmap(jax.jacfwd(b.forward))(x))(b, x)
    assert y.dtype == ladj.dtype == x_back.dtype == F64
    np.testing.assert_allclose(x_back, x, rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(x_full, x_back, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ladj, jnp.linalg.slogdet(jacobian)[1], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(inverse_ladj, -ladj, rtol=1e-12, atol=1e-12)


def test_scanned_blocks():
    """Groups of several blocks, whose offsets are int32 data under x64."""
    t = MaskedAutoregressiveTransform(
        24, context=2, hidden_features=(50, 31), rngs=nnx.Rngs(3), param_dtype=F64
    )
    b = scramble(t)(jnp.array([0.5, -1.0]))
    x = jax.random.normal(jax.random.key(1), (6, 24), F64)
    y = b.forward(x)
    fast, fast_ladj = jax.jit(incremental_inverse, static_argnums=(2, 3, 4))(b, y, None, 5, 2)
    full, full_ladj = jax.jit(full_pass_inverse)(b, y)
    np.testing.assert_allclose(fast, full, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast_ladj, full_ladj, rtol=1e-12, atol=1e-12)


def test_check_grads():
    flow = scramble(
        MAF(
            3,
            context=2,
            transforms=2,
            hidden_features=(8, 8),
            activation=jax.nn.elu,
            rngs=nnx.Rngs(0),
            param_dtype=F64,
        )
    )
    graphdef, params, rest = nnx.split(flow, nnx.Param, ...)
    c = jnp.array([0.5, -0.3])
    x = jax.random.normal(jax.random.key(2), (3, 3), F64)

    def log_prob(params, x):
        return nnx.merge(graphdef, params, rest)(c).log_prob(x).sum()

    # jitted: check_grads evaluates the function and its derivatives many times
    check_grads(jax.jit(log_prob), (params, x), order=2, modes=("fwd", "rev"))

    def sample(params):
        return nnx.merge(graphdef, params, rest)(c).rsample(jax.random.key(3), (2,)).sum()

    check_grads(jax.jit(sample), (params,), order=1, modes=("rev",))


def test_dtype():
    flow = MAF(2, transforms=1, rngs=nnx.Rngs(0), param_dtype=F64)
    assert flow().sample(jax.random.key(0), (3,)).dtype == F64
    assert flow().log_prob(jnp.zeros((3, 2))).dtype == F64


def assert_implicit_derivatives_match(t, seed: int, context: int):
    """The custom VJP of ``t``'s inverse against autodiff through the full-pass
    inverse, for the parameters, the noise and the context, to 1e-10."""
    graphdef, params, rest = nnx.split(scramble(t, seed=seed), nnx.Param, ...)
    keys = jax.random.split(jax.random.key(seed), 4)
    c = jax.random.normal(keys[0], (context,), F64) if context else None
    y = jax.random.normal(keys[1], (3, t.layout.features), F64)
    gx, gl = jax.random.normal(keys[2], y.shape, F64), jax.random.normal(keys[3], (3,), F64)

    def loss(params, y, c, reference):
        b = nnx.merge(graphdef, params, rest)(c)
        x, ladj = full_pass_inverse(b, y) if reference else b.inverse_and_log_det(y)
        return (x * gx).sum() + (ladj * gl).sum()

    argnums = (0, 1, 2) if context else (0, 1)
    # one compiled program each: faster than op by op through the scans
    grad = jax.jit(jax.grad(loss, argnums), static_argnums=3)
    got, want = (grad(params, y, c, r) for r in (False, True))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("features,hidden", [(20, (40, 40)), (64, (128, 128))])
def test_implicit_derivative_where_the_top_reversed_degree_holds_the_remainder(features, hidden):
    """The lowest degree holds the remainder units (4 against 2 at 20 features, hidden
    40); reversed, for the transposed solve, they are the top degree's, whose width
    every window takes: a window must not reach past its degree into units not final,
    which a later block's product would read (the default, hidden 128 at 64 features,
    is such a network)."""
    t = MaskedAutoregressiveTransform(
        features, hidden_features=hidden, rngs=nnx.Rngs(0), param_dtype=F64
    )
    assert_implicit_derivatives_match(t, seed=1, context=0)


@given(structures(features=7, context=2, hidden=13))
def test_implicit_derivatives_equal_autodiff_through_the_reference(s):
    """The custom VJP of the inverse on any structure (``assert_implicit_derivatives_match``)."""
    kwargs = s["kwargs"]
    t = MaskedAutoregressiveTransform(**kwargs, rngs=nnx.Rngs(s["seed"]), param_dtype=F64)
    assert_implicit_derivatives_match(t, s["seed"], kwargs["context"])


@given(graphs())
def test_any_dag_inverts_exactly(graph):
    adjacency, context, hidden, residual, seed = graph
    features = len(adjacency)
    try:
        t = MaskedAutoregressiveTransform(
            features, context, adjacency=adjacency, hidden_features=hidden,
            residual=residual, rngs=nnx.Rngs(seed), param_dtype=F64,
        )  # fmt: skip
    except ValueError as error:  # zuko refuses these too: an output or layer sees nothing
        assert "no input" in str(error) or "without input" in str(error)
        return
    c = jax.random.normal(jax.random.key(seed), (context,), F64) if context else None
    b = scramble(t, seed=seed)(c)
    y = jax.random.normal(jax.random.key(seed + 1), (3, features), F64)
    (x, ladj), (x_full, ladj_full) = jax.jit(
        lambda b, y: (b.inverse_and_log_det(y), full_pass_inverse(b, y))
    )(b, y)
    np.testing.assert_allclose(x, x_full, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ladj, ladj_full, rtol=1e-10, atol=1e-10)
    # y is computed from every x of its row: rounding grows with their scale (a
    # scrambled row reaches |x| ~ 4e6, its round trip off by 1.7e-10)
    scale = 1 + np.abs(np.asarray(x)).max(-1, keepdims=True)
    np.testing.assert_array_less(np.abs(b.forward(x) - y) / scale, 1e-10)


# per link, the box of the first feature and the share of samples whose distance to
# the bounds float64 resolves (below): the linear link is the identity inside, so its
# box is wider against the flow (Support's docstring)
BOUNDED = [
    ("linear", (-6.0, 6.0), 0.9),
    ("learned", (-6.0, 6.0), 0.9),  # its tails a float64 parameter, at their start
    ("probit", (-1.0, 2.0), 0.8),
    ("logit", (-1.0, 2.0), 0.99),
]


@pytest.mark.parametrize("link,box,share", BOUNDED)
def test_a_bounded_flow_samples_inside_and_its_densities_agree_in_float64(link, box, share):
    """Samples strictly inside at float64's ends, and the sampler's log-density is
    ``log_prob`` of the sample, to float64 rounding, wherever float64 resolves the
    sample's distance to its bounds."""
    bounds = [box, (0.5, None), (None, 3.0), (None, None)]
    flow = MAF(4, context=2, transforms=2, bounds=bounds, link=link, rngs=nnx.Rngs(1),
               param_dtype=F64)  # fmt: skip
    flow = scramble(flow)
    c = jax.random.normal(jax.random.key(0), (3, 2), F64)
    x, log_prob = jax.jit(lambda c: flow(c).sample_and_log_prob(jax.random.key(1), (5000,)))(c)
    assert x.dtype == F64
    lower, upper = np.array(flow.support.lower), np.array(flow.support.upper)
    assert (np.asarray(x) > lower).all() and (np.asarray(x) < upper).all()
    # this wide flow draws u far out: the probit puts u < -8.3 within 1e-16 of the
    # bound at -1, where float64 keeps no digit of the distance (the logit only past
    # u = -37, the linear link past 0.11 of the width beyond the bound); compare where
    # the distance keeps 10 digits or more
    distance = np.minimum(np.asarray(x) - lower, upper - np.asarray(x))
    resolved = (distance > 1e-6).all(-1)
    assert resolved.mean() > share, resolved.mean()
    recomputed = flow(c).log_prob(x)
    np.testing.assert_allclose(recomputed[resolved], log_prob[resolved], rtol=1e-9, atol=1e-9)
    assert bool(jnp.isfinite(recomputed).all())
    ends = flow.support.inverse(
        jnp.array([[-800.0, -800.0, 800.0, 0.0], [800.0, 40.0, -40.0, 0.0]], F64)
    )
    assert (np.asarray(ends) > lower).all() and (np.asarray(ends) < upper).all()


@pytest.mark.parametrize(
    "build",
    [
        lambda: MAFMoG(3, context=2, components=3, rngs=nnx.Rngs(0), param_dtype=F64),
        lambda: MAF(3, context=2, batch_norm=True, rngs=nnx.Rngs(0), param_dtype=F64),
    ],
    ids=["mog", "batch_norm"],
)
def test_mog_and_batch_norm_flows_compute_in_float64(build):
    flow = scramble(build())
    flow.eval()
    c = jax.random.normal(jax.random.key(0), (4, 2), F64)
    x, log_prob = flow(c).sample_and_log_prob(jax.random.key(1), (50,))
    assert x.dtype == log_prob.dtype == F64
    np.testing.assert_allclose(flow(c).log_prob(x), log_prob, rtol=1e-10, atol=1e-10)


def test_fit_trains_a_float64_flow_in_float64():
    """Data, statistics, parameters and losses in float64: the first epoch's loss is
    the float64 NLL of the initial flow on every row (one batch of all of them)."""
    from maf_jax.bijections.standardize import statistics
    from maf_jax.flows.standardized import Standardized
    from maf_jax.train.fitting import fit

    rows = np.random.default_rng(0).normal(size=(64, 2)) * [1.0, 3.0] + [0.5, -2.0]
    flow = MAF(2, transforms=2, hidden_features=(8,), rngs=nnx.Rngs(0), param_dtype=F64)
    initial = Standardized(nnx.clone(flow), *statistics(rows))
    want = float(-initial().log_prob(jnp.asarray(rows)).mean())
    model, history = fit(
        flow, rows, key=jax.random.key(1), batch_size=64, validation=0.0, epochs=5,
        optimizer=optax.adam(1e-2), progress=False,
    )  # fmt: skip
    dtypes = {a.dtype for a in jax.tree.leaves(nnx.state(model))} - {jnp.dtype(jnp.int32)}
    assert dtypes == {jnp.dtype(F64)}
    assert model.mean[...].dtype == model.std[...].dtype == F64
    np.testing.assert_allclose(history.train_loss[0], want, rtol=1e-13)
    assert history.train_loss[-1] < history.train_loss[0]
    final = float(-model().log_prob(jnp.asarray(rows)).mean())
    assert final < want


def test_fit_keeps_a_float32_flow_in_float32():
    from maf_jax.train.fitting import fit

    rows = np.random.default_rng(0).normal(size=(64, 2))
    flow = MAF(2, transforms=1, hidden_features=(8,), rngs=nnx.Rngs(0))
    model, _ = fit(flow, rows, key=jax.random.key(1), batch_size=32, steps=3, progress=False)
    floats = {a.dtype for a in jax.tree.leaves(nnx.state(model)) if a.dtype.kind == "f"}
    assert floats == {jnp.dtype(jnp.float32)}


def test_a_float64_checkpoint_with_float32_statistics_loads(tmp_path):
    """Statistics were float32 beside float64 parameters before they took the flow's dtype."""
    from maf_jax.checkpoint import load, save
    from maf_jax.flows.standardized import Standardization, Standardized

    model = Standardized(MAF(2, transforms=1, rngs=nnx.Rngs(0), param_dtype=F64), [1, 2], [3, 4])
    for name in ("mean", "std", "context_mean", "context_std"):
        setattr(model, name, Standardization(getattr(model, name)[...].astype(jnp.float32)))
    save(tmp_path / "old.npz", model)
    loaded = load(tmp_path / "old.npz")
    assert loaded.mean[...].dtype == loaded.std[...].dtype == F64
    np.testing.assert_array_equal(loaded.std[...], [3, 4])
