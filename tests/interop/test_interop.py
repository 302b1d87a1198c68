"""zuko <-> maf_jax: the same densities and samples, parameters carried exactly."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import scramble
from flax import nnx

import maf_jax
from maf_jax.interop import from_zuko, to_zuko

torch = pytest.importorskip("torch", reason="interop tests need: pip install -e '.[interop]'")
zuko = pytest.importorskip("zuko", reason="interop tests need: pip install -e '.[interop]'")
nn = torch.nn

ADJACENCY = np.eye(5, dtype=bool)
ADJACENCY[[2, 2, 4, 3], [0, 1, 2, 1]] = True  # 2 <- 0, 1; 4 <- 2; 3 <- 1
CONTEXT_COLUMNS = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], bool)

# name: (zuko constructor, features, context, kwargs)
CONFIGS = {
    "maf": (zuko.flows.MAF, 3, 0, dict()),
    "maf_context_randperm_elu": (
        zuko.flows.MAF,
        5,
        2,
        dict(transforms=3, randperm=True, hidden_features=(16, 7), activation=nn.ELU),
    ),
    "maf_passes2": (zuko.flows.MAF, 4, 1, dict(transforms=2, passes=2, hidden_features=(9,))),
    "maf_fewer_units_than_ranks_tanh": (
        zuko.flows.MAF,
        7,
        0,
        dict(passes=3, hidden_features=(2, 5), activation=nn.Tanh),
    ),
    "maf_linear": (zuko.flows.MAF, 4, 2, dict(transforms=2, hidden_features=())),
    # zuko gives the lowest degrees to narrow layers, maf_jax spreads them
    "maf_narrow": (zuko.flows.MAF, 6, 0, dict(transforms=2, hidden_features=(3, 4))),
    "maf_silu": (zuko.flows.MAF, 3, 1, dict(activation=nn.SiLU)),
    "maf_leaky_relu": (zuko.flows.MAF, 3, 0, dict(activation=nn.LeakyReLU)),
    "maf_gelu": (zuko.flows.MAF, 3, 2, dict(activation=nn.GELU)),
    "nsf": (zuko.flows.NSF, 3, 0, dict(bins=4)),
    "maf_adjacency": (
        zuko.flows.MAF,
        5,
        0,
        dict(adjacency=torch.from_numpy(ADJACENCY), hidden_features=(16, 8)),
    ),
    "nsf_adjacency_context_columns": (
        zuko.flows.NSF,
        5,
        2,
        dict(
            adjacency=torch.from_numpy(np.concatenate([ADJACENCY, CONTEXT_COLUMNS], 1)),
            bins=4,
            transforms=2,
        ),
    ),
    "nsf_context_randperm": (
        zuko.flows.NSF,
        4,
        3,
        dict(bins=6, transforms=2, randperm=True, passes=2, hidden_features=(12, 12)),
    ),
    # residual blocks: a linear layer into each new size, none between equal ones
    "maf_residual_context_passes2": (
        zuko.flows.MAF,
        5,
        2,
        dict(transforms=2, passes=2, residual=True, hidden_features=(16, 8, 8)),
    ),
    "nsf_residual_elu": (
        zuko.flows.NSF,
        4,
        0,
        dict(bins=4, residual=True, hidden_features=(12, 12), activation=nn.ELU),
    ),
    "maf_residual_narrow": (
        zuko.flows.MAF,
        6,
        1,
        dict(transforms=2, residual=True, hidden_features=(3, 4)),
    ),
    "maf_residual_adjacency": (
        zuko.flows.MAF,
        5,
        0,
        dict(adjacency=torch.from_numpy(ADJACENCY), residual=True, hidden_features=(16, 8)),
    ),
}


def zuko_flow(name):
    cls, features, context, kwargs = CONFIGS[name]
    torch.manual_seed(len(name))
    flow = cls(features, context, **kwargs)
    with torch.no_grad():  # away from the identity the splines start near
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


def inputs(features, context, rows=16):
    g = torch.Generator().manual_seed(features + 10 * context)
    x = 1.5 * torch.randn(rows, features, generator=g)
    c = torch.randn(rows, context, generator=g) if context else None
    noise = torch.randn(rows, features, generator=g)
    return x, c, noise


def as_jax(t):
    return None if t is None else jnp.asarray(t.numpy())


def compare(zuko_model, ours, features, context):
    """log_prob and the inverse of both on the same inputs and noise."""
    x, c, noise = inputs(features, context)
    with torch.no_grad():
        log_prob = zuko_model(c).log_prob(x).numpy()
        samples = zuko_model(c).transform.inv(noise).numpy()
    ours_log_prob = ours(as_jax(c)).log_prob(as_jax(x))
    ours_samples = ours(as_jax(c)).transform.inverse(as_jax(noise))
    np.testing.assert_allclose(ours_log_prob, log_prob, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_samples, samples, rtol=1e-5, atol=1e-5)
    assert np.ptp(log_prob) > 0.5  # a flow whose log_prob depends on x


@pytest.mark.parametrize("name", CONFIGS)
def test_from_zuko_gives_the_same_density_and_samples(name):
    cls, features, context, kwargs = CONFIGS[name]
    flow = zuko_flow(name)
    ours = from_zuko(flow)
    assert type(ours) is (maf_jax.NSF if cls is zuko.flows.NSF else maf_jax.MAF)
    layout = ours.transforms.unstack()[0].layout
    if "adjacency" in kwargs:  # one step per feature here, one per generation in zuko
        assert layout.adjacency is not None and layout.passes == features
    else:
        assert layout.passes == flow.transform.transforms[0].passes
    compare(flow, ours, features, context)


@pytest.mark.parametrize("name", CONFIGS)
def test_back_to_zuko_restores_every_tensor(name):
    flow = zuko_flow(name)
    back = to_zuko(from_zuko(flow))
    want, got = flow.state_dict(), back.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert want[key].dtype == got[key].dtype, key
        if key.endswith("weight"):  # masked-out weights never act and come back as 0
            mask = want[key.replace("weight", "mask")]
            assert torch.equal(want[key] * mask, got[key]), key
        else:
            assert torch.equal(want[key], got[key]), key


# name: (maf_jax constructor, features, context, kwargs)
NATIVE = {
    "maf": (maf_jax.MAF, 4, 2, dict(transforms=2, hidden_features=(10, 6))),
    "maf_randperm_passes3": (
        maf_jax.MAF,
        6,
        0,
        dict(transforms=3, randperm=True, passes=3, activation=jax.nn.elu),
    ),
    "nsf_bound3": (maf_jax.NSF, 3, 1, dict(bins=5, bound=3.0, hidden_features=(8,))),
    # fewer units than degrees: maf_jax spreads them, zuko takes the lowest
    "maf_narrow": (maf_jax.MAF, 6, 0, dict(transforms=2, hidden_features=(3, 4))),
    "maf_adjacency": (
        maf_jax.MAF,
        5,
        1,
        dict(adjacency=ADJACENCY, transforms=2, hidden_features=(12, 6)),
    ),
    "maf_gelu_exact": (
        maf_jax.MAF,
        3,
        0,
        dict(activation=maf_jax.core.network.ACTIVATIONS["gelu_exact"]),
    ),
    "maf_residual": (
        maf_jax.MAF,
        5,
        1,
        dict(transforms=2, residual=True, hidden_features=(10, 10, 6)),
    ),
    "maf_residual_linear": (
        maf_jax.MAF,
        3,
        1,
        dict(transforms=2, residual=True, hidden_features=()),
    ),
    "nsf_residual_adjacency": (
        maf_jax.NSF,
        5,
        0,
        dict(bins=3, adjacency=ADJACENCY, residual=True, hidden_features=(9,)),
    ),
}


@pytest.mark.parametrize("name", NATIVE)
def test_to_zuko_of_a_maf_jax_model(name):
    cls, features, context, kwargs = NATIVE[name]
    ours = scramble(cls(features, context, **kwargs, rngs=nnx.Rngs(0)), seed=1)
    exported = to_zuko(ours)
    compare(exported, ours, features, context)
    # zuko keeps ranks, not the order within a rank: the model that comes back may
    # sort the features of a rank otherwise, which changes no output
    again = from_zuko(exported)
    assert again.transforms.unstack()[0].layout == ours.transforms.unstack()[0].layout
    compare(exported, again, features, context)


@pytest.mark.parametrize("name", ["nsf_context_randperm", "maf_narrow", "maf_residual_narrow"])
def test_an_imported_model_trains_saves_and_loads(tmp_path, name):
    _, features, context, _ = CONFIGS[name]
    ours = from_zuko(zuko_flow(name))
    loaded = maf_jax.checkpoint.load(maf_jax.checkpoint.save(tmp_path / "z.npz", ours))
    assert loaded.transforms.unstack()[0].layout == ours.transforms.unstack()[0].layout
    x, c, _ = inputs(features, context)
    np.testing.assert_array_equal(
        loaded(as_jax(c)).log_prob(as_jax(x)), ours(as_jax(c)).log_prob(as_jax(x))
    )
    grads = nnx.grad(lambda m: -m(as_jax(c)).log_prob(as_jax(x)).mean())(ours)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))
    # maf_jax spreads the units of narrow layers otherwise: the file keeps zuko's
    assert (ours.transforms.unstack()[0].layout.degrees is not None) == name.endswith("narrow")


def broken_residual_block():
    flow = zuko.flows.MAF(3, hidden_features=(8,), residual=True)
    hyper = flow.transform.transforms[0].hyper
    hyper[1] = zuko.nn.Residual(hyper[1][0])  # a block without its activation and output
    return flow


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: zuko.flows.MAF(1), "elementwise one for features=1"),
        (broken_residual_block, "blocks of \\(MaskedLinear, activation, MaskedLinear"),
        (lambda: zuko.flows.MAF(3, activation=nn.Softplus), "activation Softplus"),
        (
            lambda: zuko.flows.MAF(
                3,
                univariate=functools.partial(zuko.transforms.MonotonicAffineTransform, slope=0.1),
            ),
            "univariate .* has no maf_jax counterpart",
        ),
        (lambda: zuko.flows.NICE(3), "expected a zuko.flows.MAF or NSF, got NICE"),
    ],
)
def test_what_cannot_be_imported_is_named(build, match):
    with pytest.raises(ValueError, match=match):
        from_zuko(build())


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: maf_jax.MAF(1, rngs=nnx.Rngs(0)), "features=1"),
        (
            lambda: maf_jax.Standardized(maf_jax.MAF(2, rngs=nnx.Rngs(0)), [0, 0], [1, 1]),
            "Standardized model has no zuko counterpart",
        ),
        (
            lambda: maf_jax.MAF(2, activation=jnp.sin, rngs=nnx.Rngs(0)),
            "no zuko counterpart: activation",
        ),
        (
            lambda: maf_jax.MAF(2, bounds=(0, 1), rngs=nnx.Rngs(0)),
            "a flow with bounds has no zuko counterpart",
        ),
        (
            lambda: maf_jax.MAFMoG(2, components=2, rngs=nnx.Rngs(0)),
            "a MAF MoG has no zuko counterpart",
        ),
        (
            lambda: maf_jax.MAF(2, batch_norm=True, rngs=nnx.Rngs(0)),
            "a flow with batch normalisation has no zuko counterpart",
        ),
    ],
)
def test_what_cannot_be_exported_is_named(build, match):
    with pytest.raises(ValueError, match=match):
        to_zuko(build())
