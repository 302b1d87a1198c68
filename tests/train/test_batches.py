"""The data as shards: each shard's own rows, split and shuffled with keys of its own."""

import jax
import numpy as np
import pytest

from maf_jax.data.loaders import DataError
from maf_jax.train.batches import make_shards

ROWS = np.arange(20.0)[:, None] * [1.0, -1.0]  # row i holds (i, -i)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_shard_holds_a_block_of_rows_and_the_batch_takes_from_each(count):
    shards = make_shards(ROWS, None, jax.random.key(0), 0.2, count)
    blocks = np.array_split(np.arange(20), count)
    assert len(shards.local) == shards.count == count
    for shard, block in zip(shards.local, blocks, strict=True):
        rows = np.concatenate([shard.x_train[:, 0], shard.x_val[:, 0]])
        assert sorted(rows.astype(int)) == block.tolist()  # a split of its own block
        assert len(shard.x_val) == round(0.2 * len(block))
    orders = shards.permutations(jax.random.key(1))
    x, c = shards.batch(orders, 1, 2)
    assert c is None and x.shape == (2 * count, 2)
    for i, block in enumerate(blocks):  # rows 2..3 of each shard's order, in shard order
        expected = shards.local[i].x_train[orders[i][2:4]]
        np.testing.assert_array_equal(x[2 * i : 2 * i + 2], expected)
        assert set(x[2 * i : 2 * i + 2, 0].astype(int)) <= set(block.tolist())
    assert shards.steps_per_epoch(2) == min(shards.train) // 2


def test_orders_depend_on_the_key_and_the_shard_only():
    shards = make_shards(ROWS, None, jax.random.key(0), 0.2, 2)
    again = make_shards(ROWS, None, jax.random.key(0), 0.2, 2)
    a, b = shards.permutations(jax.random.key(5)), again.permutations(jax.random.key(5))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], shards.permutations(jax.random.key(6))[0])
    assert shards.digests == again.digests and len(set(shards.digests)) == 2


def test_validation_rows_are_padded_to_whole_devices_and_weighted():
    shards = make_shards(ROWS, ROWS[:, :1], jax.random.key(0), 0.3, 2)  # 3 rows a shard
    x, c, weights, rows = shards.validation(devices=4)
    assert rows == 8 and x.shape == (8, 2) and c.shape == (8, 1)
    np.testing.assert_array_equal(weights, [1, 1, 1, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(x[[3, 7]], 0)


def test_statistics_are_those_of_every_training_row():
    shards = make_shards(ROWS, None, jax.random.key(0), 0.2, 3)
    train = np.concatenate([s.x_train for s in shards.local]).astype(np.float64)
    mean, std = shards.statistics()
    np.testing.assert_allclose(mean, train.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, train.std(0), rtol=1e-12)


def test_too_few_rows_for_the_shards():
    with pytest.raises(DataError, match="3 rows are too few for 4 shards"):
        make_shards(ROWS[:3], None, jax.random.key(0), 0.0, 4)
