"""The rows of every training step: the data in shards, each shuffled every epoch.

The data is read as ``S`` shards: one per process under ``jax.distributed`` (each
process holds only its own rows), or ``S`` contiguous blocks of the rows in one
process. Each shard holds out its own validation rows and shuffles its training
rows every epoch with a key derived from the epoch alone; the global batch of a
step takes ``batch / S`` rows from every shard, in shard order. The batches, and so
the result of training, depend on ``S``, the key and the batch size, not on how many
devices or processes run it, and any step's batch can be rebuilt after a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib

import jax
import numpy as np

from maf_jax.bijections.standardize import nonzero_std
from maf_jax.data.loaders import DataError, split
from maf_jax.train.distributed import allgather, process_rows

__all__ = ["Shard", "Shards", "make_shards"]


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard's rows in the model's dtype: training and validation data and contexts."""

    x_train: np.ndarray
    c_train: np.ndarray | None
    x_val: np.ndarray
    c_val: np.ndarray | None


def _every_shard(local: np.ndarray, count: int) -> np.ndarray:
    """Per-shard values of every process, ``(count, ...)``, from this process's ``local``."""
    return allgather(local).reshape(count, *local.shape[1:])


@dataclasses.dataclass(frozen=True)
class Shards:
    """The shards this process holds, and the sizes and digests of every shard.

    Attributes:
        local: This process's shards, in order.
        first: Index of the first of them.
        train: Training rows of every shard.
        val: Validation rows of every shard.
        digests: SHA-256 of every shard's rows and contexts, hexadecimal.
    """

    local: tuple[Shard, ...]
    first: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    digests: tuple[str, ...]

    @property
    def count(self) -> int:
        """The number of shards."""
        return len(self.train)

    def steps_per_epoch(self, per_shard: int) -> int:
        """Steps of ``per_shard`` rows from each shard before a shard runs out."""
        return min(self.train) // per_shard

    def permutations(self, key: jax.Array) -> list[np.ndarray]:
        """This process's shards' training rows in the order of the epoch of ``key``."""
        keys = [jax.random.fold_in(key, self.first + i) for i in range(len(self.local))]
        return [
            np.asarray(jax.random.permutation(k, len(s.x_train))) for k, s in zip(keys, self.local)
        ]

    def batch(self, orders, position: int, per_shard: int):
        """This process's part of step ``position``'s batch: ``(x, c)``, ``c`` may be ``None``."""
        rows = [order[position * per_shard : (position + 1) * per_shard] for order in orders]
        x = np.concatenate([s.x_train[r] for s, r in zip(self.local, rows)])
        if self.local[0].c_train is None:
            return x, None
        return x, np.concatenate([s.c_train[r] for s, r in zip(self.local, rows)])

    def validation(self, devices: int):
        """This process's part of the validation rows, each shard padded to one length.

        Returns ``(x, c, weights, rows)``: weights are 1 for rows and 0 for padding;
        ``rows``, the global row count, is a multiple of ``devices``.
        """
        length = max(self.val)
        while (self.count * length) % devices:
            length += 1

        def pad(a):
            return np.concatenate([a, np.zeros((length - len(a), a.shape[1]), a.dtype)])

        x = np.concatenate([pad(s.x_val) for s in self.local])
        c = None
        if self.local[0].c_val is not None:
            c = np.concatenate([pad(s.c_val) for s in self.local])
        weights = np.concatenate(
            [(np.arange(length) < len(s.x_val)).astype(s.x_val.dtype) for s in self.local]
        )
        return x, c, weights, self.count * length

    def statistics(self, context: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of every shard's training rows (``std = 1`` if constant)."""
        rows = [s.c_train if context else s.x_train for s in self.local]
        rows = [r.astype(np.float64) for r in rows]
        total = sum(self.train)
        mean = _every_shard(np.stack([r.sum(0) for r in rows]), self.count).sum(0) / total
        squares = np.stack([((r - mean) ** 2).sum(0) for r in rows])
        std = np.sqrt(_every_shard(squares, self.count).sum(0) / total)
        return mean, nonzero_std(std)


def _digest(x: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    digest = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    if c is not None:
        digest.update(np.ascontiguousarray(c).tobytes())
    return np.frombuffer(digest.digest(), np.uint8)


def _pick(a, rows, dtype):
    return None if a is None else np.asarray(a[rows], dtype)


def make_shards(
    data,
    context,
    key: jax.Array,
    validation: float,
    count: int,
    first: int = 0,
    dtype=np.float32,
):
    """Splits this process's rows into shards of training and validation rows.

    Args:
        data: This process's rows ``(n, features)``: every row in one process, the
            rows of shard ``first`` under ``jax.distributed``.
        context: Matching contexts ``(n, context)``, or ``None``.
        key: Key of the splits: shard ``i`` uses ``fold_in(key, i)``.
        validation: Fraction of each shard's rows held out.
        count: Shards in all.
        first: Index of this process's shard when it holds one; 0 when it holds all.
        dtype: The dtype the model computes in (float64 for a float64 flow): the
            shards hold their rows in it.

    Raises:
        DataError: If a shard has too few rows to split.
    """
    blocks = (
        [slice(None)]
        if jax.process_count() > 1
        else [process_rows(len(data), i, count) for i in range(count)]
    )
    local, sizes, digests = [], [], []
    for i, block in enumerate(blocks):
        x, c = data[block], None if context is None else context[block]
        if len(x) == 0:
            raise DataError(f"{len(data)} rows are too few for {count} shards")
        train, val = split(len(x), (1 - validation, validation), jax.random.fold_in(key, first + i))
        local.append(
            Shard(
                _pick(x, train, dtype),
                _pick(c, train, dtype),
                _pick(x, val, dtype),
                _pick(c, val, dtype),
            )
        )
        sizes.append([len(train), len(val)])
        digests.append(_digest(x, c))
    sizes = _every_shard(np.array(sizes), count)
    digests = _every_shard(np.stack(digests), count)
    return Shards(
        tuple(local),
        first,
        tuple(int(n) for n in sizes[:, 0]),
        tuple(int(n) for n in sizes[:, 1]),
        tuple(bytes(d).hex() for d in digests),
    )
