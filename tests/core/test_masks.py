"""Degrees and masks of the MADE network."""

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from maf_jax.core.masks import MadeLayout, autoregressive_adjacency, check_order, ranks
from maf_jax.core.network import Wiring
from maf_jax.core.schedule import schedule


def mask_product(masks):
    """Boolean reachability through a chain of (in, out) masks."""
    reach = masks[0].astype(int)
    for m in masks[1:]:
        reach = (reach @ m.astype(int)) > 0
    return reach.astype(bool)


def sorted_to_original(reach, order, features, context, total):
    """Maps reachability in the rank-sorted space to adjacency (out, in) of features."""
    cols = [order * total + q for q in range(total)]
    rows = np.concatenate([order, features + np.arange(context)])
    return np.all([reach[rows][:, c].T for c in cols], axis=0)


LAYOUTS = [
    # features, context, passes, hidden, total
    (5, 0, 5, (8, 8), 2),
    (5, 3, 5, (7, 11), 2),
    (6, 0, 2, (4,), 2),
    (7, 2, 3, (5, 5, 5), 3),
    (1, 0, 1, (4,), 2),
    (1, 2, 1, (3, 3), 1),
    (4, 0, 1, (2,), 2),
    (9, 1, 4, (), 2),
]


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("features,context,passes,hidden,total", LAYOUTS)
def test_mask_product_is_the_autoregressive_adjacency(
    features, context, passes, hidden, total, residual
):
    layout = MadeLayout(features, context, passes, hidden, total, residual=residual)
    order = np.random.default_rng(0).permutation(features)
    reach = mask_product(layout.masks)
    adjacency = sorted_to_original(reach, order, features, context, total)
    np.testing.assert_array_equal(adjacency, autoregressive_adjacency(order, passes, context))


# hidden sizes: (activated, skips, sizes) of zuko's MaskedMLP(..., residual=True), by hand
RESIDUAL = {
    (): ((), (), ()),
    (8,): ((False, True, False), (None, None, 0), (0, 0, 0)),
    # equal sizes: no linear layer between the two blocks
    (8, 8): ((False, True, False, True, False), (None, None, 0, None, 2), (0, 0, 0, 1, 1)),
    (8, 8, 6): (
        (False, True, False, True, False, False, True, False),
        (None, None, 0, None, 2, None, None, 5),
        (0, 0, 0, 1, 1, 2, 2, 2),
    ),
}


@pytest.mark.parametrize("hidden", RESIDUAL)
def test_residual_wiring_by_hand(hidden):
    activated, skips, sources = RESIDUAL[hidden]
    assert Wiring.residual(hidden) == (Wiring(activated, skips), sources)


def test_transposed_wiring_by_hand():
    # layer j >= 1 of the transposed network is layer 8 - j: the skip 0 -> 2 becomes
    # 6 -> 8, 2 -> 4 becomes 4 -> 6, 5 -> 7 becomes 1 -> 3
    wiring, _ = Wiring.residual((8, 8, 6))
    assert wiring.transposed() == Wiring(
        (True, False, True, False, False, True, False, True, False),
        (None, None, None, 1, None, None, 4, None, 6),
    )
    assert Wiring.plain(2).transposed() == Wiring.plain(3)


def test_a_residual_layout_repeats_the_degrees_of_each_size():
    plain = MadeLayout(5, 0, 5, (8, 6), 2)
    residual = MadeLayout(5, 0, 5, (8, 6), 2, residual=True)
    expected = [plain.hidden_degrees[i] for i in (0, 0, 0, 1, 1, 1)]
    assert len(residual.hidden_degrees) == 6 and len(residual.masks) == 7
    for got, want in zip(residual.hidden_degrees, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    # inside a block a unit sees the units of its degree and below
    d = plain.hidden_degrees[0]
    np.testing.assert_array_equal(residual.masks[1], d[:, None] <= d[None, :])


def test_adjacency_by_hand():
    # order [2, 0, 1], passes 3: feature 1 first, then 2, then 0.
    expected = np.array([[0, 1, 1, 1], [0, 0, 0, 1], [0, 1, 0, 1]], dtype=bool)
    np.testing.assert_array_equal(autoregressive_adjacency([2, 0, 1], 3, context=1), expected)


def test_ranks_follow_zuko():
    np.testing.assert_array_equal(ranks(np.arange(7), 3), [0, 0, 0, 1, 1, 1, 2])
    np.testing.assert_array_equal(ranks(np.arange(4)[::-1], 2), [1, 1, 0, 0])


def test_hidden_degrees_spread_evenly_and_sorted():
    layout = MadeLayout(5, 0, 5, (9, 3), 2)
    first, second = layout.hidden_degrees
    np.testing.assert_array_equal(first, [0, 0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(second, [0, 1, 2])
    # a layer smaller than the number of degrees keeps the lowest one
    narrow = MadeLayout(64, 0, 64, (4,), 2).hidden_degrees[0]
    assert narrow[0] == 0 and len(set(narrow)) == 4


def test_narrow_network_leaves_no_output_without_inputs():
    layout = MadeLayout(40, 0, 40, (3, 2), 2)
    reach = mask_product(layout.masks)  # (inputs, outputs)
    rank_of_output = layout.output_ranks
    assert reach[:, rank_of_output > 0].any(axis=0).all()
    # nothing is reached that the order forbids
    allowed = layout.input_degrees[:, None] < rank_of_output[None, :]
    assert not (reach & ~allowed).any()


# The transposed solve's layout (maf_jax.inverses.implicit) reversed: the remainder
# units at the top degree, every window as wide as it
TOP_WIDER = (0,) * 4 + tuple(d for d in range(1, 7) for _ in range(2)) + (7,) * 4


@pytest.mark.parametrize(
    "features,context,passes,hidden,blocks,groups,degrees",
    [
        (10, 2, 10, (23, 17), None, 4, None),
        (64, 0, 64, (128, 128), None, 4, None),
        (64, 0, 64, (128, 128), 7, 2, None),  # blocks of 9 steps, the last one padded
        (40, 0, 40, (8,), 5, 1, None),
        (7, 0, 3, (5, 6), None, 4, None),
        (9, 1, 9, (), 3, 2, None),
        (9, 0, 9, (len(TOP_WIDER),), 3, 1, (TOP_WIDER,)),
    ],
)
def test_schedule_covers_every_step_and_unit(
    features, context, passes, hidden, blocks, groups, degrees
):
    layout = MadeLayout(features, context, passes, hidden, 2, degrees=degrees)
    plan = schedule(layout, blocks, groups)
    assert len(plan) <= 3  # head, peeled step, then one group of the regular blocks
    steps = np.concatenate([g.steps.ravel() for g in plan])
    lowest = layout.hidden_degrees[0][0] + 1 if layout.hidden_features else None
    # each step in order; the last one repeated to fill the last block, and the
    # lowest degree's where it holds more windows of units than one
    np.testing.assert_array_equal(np.unique(steps), np.arange(layout.steps))
    assert (np.diff(steps) >= 0).all()
    assert set(steps[:-1][np.diff(steps) == 0]) <= {steps[-1], lowest}
    for g in plan:
        repeated = g.hidden and (g.steps == lowest).sum() > 1
        for degrees, work in zip(layout.hidden_degrees, g.layers):
            assert (work.lo >= 0).all() and (work.lo + work.span <= len(degrees)).all()
            for b in range(len(g.steps)):
                lo, (first, last) = work.lo[b], work.inside[b]
                assert first <= last
                # the part's wide product reads every input final before the block
                assert work.befores[g.parts[b]] >= first
                for step, start in zip(g.steps[b], work.starts[b]):
                    window = np.arange(start, start + work.width)
                    assert lo <= start and start + work.width <= lo + work.span
                    if repeated and step == lowest:
                        continue  # below: its windows together
                    if g.hidden:
                        # the window holds every unit that becomes final now, and
                        # nothing whose inputs are not final yet ...
                        assert set(np.flatnonzero(degrees == step - 1)) <= set(window)
                        if step - 1 >= degrees[0]:
                            assert (degrees[window] <= step - 1).all()
                        else:  # ... but before the lowest degree: its units, which
                            # the step of that degree recomputes in the block
                            assert (degrees[window] == degrees[0]).all()
                            assert degrees[0] + 1 in g.steps[b]
            if repeated:
                # the lowest degree's units in windows of its own, all of them
                starts = work.starts[g.steps == lowest]
                windows = starts[:, None] + np.arange(work.width)
                assert (degrees[windows] == degrees[0]).all()
                np.testing.assert_array_equal(
                    np.unique(windows), np.flatnonzero(degrees == degrees[0])
                )
        ranks = g.steps.copy()
        if repeated:  # outputs of the rank below, until the last time
            ranks[g.steps == lowest] = [lowest - 1] * ((g.steps == lowest).sum() - 1) + [lowest]
        features_done = np.minimum(g.feature_starts + layout.block, features)
        np.testing.assert_array_equal(
            features_done, np.minimum((ranks + 1) * layout.block, features)
        )


@pytest.mark.parametrize(
    "features,hidden,groups,blocks",
    [(10, 50, 3, 1), (64, 128, 1, 11), (256, 128, 1, 8), (1024, 128, 1, 8)],
)
def test_groups_do_not_grow_with_features(features, hidden, groups, blocks):
    plan = schedule(MadeLayout(features, 0, features, (hidden, hidden), 2))
    # At 64 features degree 0 holds 4 units, the others 2: its step comes 3 times
    # (66 steps: 11 blocks of 6, none padded); at 10, hidden 50, twice more would
    # be 20% more steps: the head and the step of degree 0 are groups of their
    # own. From 256 every degree holds one unit at most, and all steps are one group.
    assert len(plan) == groups
    assert len(plan[-1].steps) == blocks


@pytest.mark.parametrize("groups,exact", [(8, True), (2, False)])
def test_parts_size_each_blocks_product(groups, exact):
    """One part per block reads exactly the inputs final before it; fewer parts
    read those before their last block."""
    layout = MadeLayout(64, 0, 64, (128, 128), 2)
    regular = schedule(layout, 8, groups)[-1]
    np.testing.assert_array_equal(regular.parts, np.arange(8) // (8 // min(groups, 8)))
    for work in regular.works:
        before = work.inside[:, 0]
        sizes = np.asarray(work.befores)[regular.parts]
        assert (sizes >= before).all()
        assert (sizes == before).all() == exact


def test_uniform_degrees_give_uniform_windows():
    layout = MadeLayout(64, 0, 64, (128, 128), 2)
    counts = np.bincount(layout.hidden_degrees[0])
    assert counts[0] == 4 and (counts[1:] == 2).all()  # the remainder goes to degree 0
    regular = schedule(layout)[2:]
    assert all(work.width == 2 for b in regular for work in b.layers)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(features=0), "features must be a positive integer"),
        (dict(passes=0), "passes must be a positive integer"),
        (dict(context=-1), "context must be a non-negative integer"),
        (dict(hidden_features=(8, 0)), "hidden_features must be a sequence of positive"),
        (dict(total=0), "total must be a positive integer"),
        (dict(degrees=((0,) * 7,)), "degrees must be .* of sizes \\(8,\\)"),
        (dict(degrees=((0,) * 7 + (2,),)), "in \\[-1, 1\\]"),
        (dict(degrees=((1, 0) * 4,)), "ascending"),
        (dict(degrees=((-2,) * 8,)), "in \\[-1, 1\\]"),
        (dict(degrees=((0.5,) * 8,)), "one ascending sequence of integers"),
        (dict(residual=1), "residual must be True or False, got 1"),
        (
            dict(hidden_features=(2, 2), degrees=((0, 0), (0, 1)), residual=True),
            "consecutive hidden layers of one size have the same degrees",
        ),
    ],
)
def test_layout_errors(kwargs, match):
    args = dict(features=3, context=0, passes=3, hidden_features=(8,), total=2) | kwargs
    with pytest.raises(ValueError, match=match):
        MadeLayout(**args)


@pytest.mark.parametrize(
    "order,match",
    [
        ([0, 1, 1], "permutation of range\\(3\\)"),
        ([0, 1], "shape \\(2,\\)"),
        ([0.0, 1.0, 2.0], "integer"),
    ],
)
def test_order_errors(order, match):
    with pytest.raises(ValueError, match=match):
        check_order(order, 3)


@settings(max_examples=60, deadline=None)
@given(
    features=st.integers(1, 12),
    context=st.integers(0, 3),
    passes=st.integers(1, 12),
    hidden=st.lists(st.integers(12, 20), max_size=3),
    seed=st.integers(0, 2**16),
)
def test_mask_product_property(features, context, passes, hidden, seed):
    layout = MadeLayout(features, context, passes, tuple(hidden), 2)
    order = np.random.default_rng(seed).permutation(features)
    reach = mask_product(layout.masks)
    adjacency = sorted_to_original(reach, order, features, context, 2)
    np.testing.assert_array_equal(adjacency, autoregressive_adjacency(order, passes, context))
