"""Transforms over a DAG of features (``adjacency``): dependencies, inverse, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import graphs, scramble
from flax import nnx
from hypothesis import given

from maf_jax import MAF, MaskedAutoregressiveTransform
from maf_jax.bijections.autoregressive import full_pass_inverse
from maf_jax.core.graph import generations


def dag(edges, features):
    a = np.eye(features, dtype=bool)
    for i, j in edges:
        a[i, j] = True
    return a


# name: (adjacency, context, hidden)
GRAPHS = {
    "chain": (dag([(1, 0), (2, 1), (3, 2)], 4), 0, (12, 12)),
    "fork_and_collider": (dag([(2, 0), (2, 1), (3, 1), (4, 2)], 5), 2, (16, 8)),
    "independent": (dag([], 3), 1, (6,)),
    "complete_reversed": (dag([(i, j) for i in range(4) for j in range(i + 1, 4)], 4), 0, (9,)),
    "context_columns": (
        np.concatenate([dag([(2, 0), (1, 0)], 3), [[1, 0], [0, 0], [1, 1]]], 1).astype(bool),
        2,
        (10, 10),
    ),
    "linear": (dag([(1, 0), (2, 0)], 3), 1, ()),
}


def reach(layout) -> np.ndarray:
    """Which inputs reach each feature's outputs through the masks, in original order."""
    paths = layout.masks[0].astype(int)
    for mask in layout.masks[1:]:
        paths = paths @ mask.astype(int)
    features, total = layout.features, layout.total
    sorted_reach = paths.T.reshape(features, total, -1).any(1)  # (sorted feature, input)
    order = layout.graph_order
    inputs = np.concatenate([order, features + np.arange(layout.context)])
    return sorted_reach[order][:, inputs]


@jax.jit
def inverses(b, y):
    return b.inverse_and_log_det(y), full_pass_inverse(b, y)


@jax.jit
def jacobian(b, y):
    return jax.vmap(jax.jacfwd(b.forward))(y)


def check(adjacency, context, hidden, seed=0, rows=3, numeric=True, residual=False):
    features = len(adjacency)
    t = MaskedAutoregressiveTransform(
        features,
        context,
        adjacency=adjacency,
        hidden_features=hidden,
        residual=residual,
        rngs=nnx.Rngs(seed),
    )
    full = np.concatenate([adjacency, np.ones((features, context), bool)], 1)
    full = full[:, : features + context] if adjacency.shape[1] == features else adjacency
    want = full & ~np.eye(features, features + context, dtype=bool)
    # no input outside its row reaches an output; with a layer narrower than the
    # number of distinct rows, some rows lose inputs (as in zuko), else none does
    reached = reach(t.layout)
    assert not (reached & ~want).any()
    if all(h >= features for h in hidden):
        np.testing.assert_array_equal(reached, want)
    c = jax.random.normal(jax.random.key(seed), (context,)) if context else None
    b = scramble(t, seed=seed)(c)
    y = jax.random.normal(jax.random.key(seed + 1), (rows, features))
    if numeric:  # float32 rounding grows along chains: tests/test_float64.py, any DAG
        (x, ladj), (x_full, ladj_full) = inverses(b, y)
        np.testing.assert_allclose(x, x_full, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ladj, ladj_full, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(b.forward(x), y, rtol=1e-4, atol=1e-4)
    forbidden = ~(want[:, :features] | np.eye(features, dtype=bool))
    assert not np.abs(np.asarray(jacobian(b, y)))[:, forbidden].any()


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("name", GRAPHS)
def test_each_feature_depends_on_exactly_its_row(name, residual):
    check(*GRAPHS[name], residual=residual)


@given(graphs())
def test_any_dag(graph):
    """Structure in float32; the values of the inverse in tests/test_float64.py."""
    adjacency, context, hidden, residual, seed = graph
    try:
        check(adjacency, context, hidden, seed, numeric=False, residual=residual)
    except ValueError as error:  # zuko refuses these too: an output or layer sees nothing
        assert "no input" in str(error) or "without input" in str(error)


def test_a_maf_over_a_graph_gives_every_transform_the_graph_order():
    a, context, hidden = GRAPHS["fork_and_collider"]
    flow = MAF(5, context, transforms=3, adjacency=a, hidden_features=hidden, rngs=nnx.Rngs(0))
    orders = {tuple(np.asarray(t.order[...])) for t in flow.transforms.unstack()}
    assert len(orders) == 1
    assert (generations(a & ~np.eye(5, dtype=bool))[np.argsort(next(iter(orders)))] >= 0).all()
    x = flow(jnp.ones(2)).sample(jax.random.key(0), (4,))
    assert x.shape == (4, 5) and np.isfinite(flow(jnp.ones(2)).log_prob(x)).all()


def test_generations_by_hand():
    a = dag([(2, 0), (2, 1), (3, 2), (4, 1)], 5) & ~np.eye(5, dtype=bool)
    np.testing.assert_array_equal(generations(a), [0, 0, 1, 2, 1])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(adjacency=dag([(0, 1), (1, 0)], 3)), "cycle: features \\[0, 1\\]"),
        (dict(adjacency=dag([(0, 2), (2, 1), (1, 0)], 3)), "cycle"),
        (dict(adjacency=np.zeros((3, 3), bool)), "ones on its diagonal"),
        (dict(adjacency=np.eye(3)), "boolean matrix of shape"),
        (
            dict(adjacency=np.eye(4, dtype=bool)),
            "boolean matrix of shape \\[\\(3, 3\\), \\(3, 4\\)\\]",
        ),
        (dict(adjacency=np.eye(3, dtype=bool), order=[0, 1, 2]), "give neither"),
        (dict(adjacency=np.eye(3, dtype=bool), passes=2), "give neither"),
    ],
)
def test_bad_graphs_say_what_is_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskedAutoregressiveTransform(3, 1, rngs=nnx.Rngs(0), **kwargs)


def test_a_graph_and_random_orders_exclude_each_other():
    with pytest.raises(ValueError, match="adjacency sets the orders"):
        MAF(3, randperm=True, adjacency=np.eye(3, dtype=bool), rngs=nnx.Rngs(0))
