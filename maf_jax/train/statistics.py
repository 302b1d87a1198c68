"""The paper's batch-norm statistics: those of every training row, set after training.

One normalisation after the other, each gets the mean and variance of its input
over every training row of every shard and process, the earlier ones normalising
with the statistics just set (Papamakarios et al. 2017, section 3.4, the choice
after training). Rows go through in chunks of one size, so that memory does not
grow with the data; each chunk's sums are taken about the normalisation's running
mean (no cancellation when the mean is large against the spread), added in
float64 on the host and over the processes.

References:
    Papamakarios et al., Masked Autoregressive Flow for Density Estimation, 2017,
    https://arxiv.org/abs/1705.07057
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from maf_jax.flows.standardized import unwrapped
from maf_jax.train.batches import Shards
from maf_jax.train.distributed import allgather

__all__ = ["STATISTICS", "set_training_statistics"]

# fit's batch_norm_statistics: the averages moved at every step, or the paper's
STATISTICS = ("running", "data")
CHUNK = 4096


def set_training_statistics(model: nnx.Module, shards: Shards, chunk: int = CHUNK) -> None:
    """Sets each batch normalisation of ``model`` to the statistics of the training rows.

    Args:
        model: A flow with ``batch_norm=True`` or a ``Standardized`` one, in
            evaluation mode; its statistics are set in place.
        shards: The training rows (``Shard.x_train``, ``c_train``) of this process.
        chunk: Rows per compiled call.
    """
    norms, total = unwrapped(model).norms.stacked, sum(shards.train)
    graphdef = nnx.graphdef(model)
    for i in range(norms.mean.shape[0]):
        shift = np.asarray(norms.mean[...][i])
        sums = np.zeros((2, norms.mean.shape[1]))
        state = nnx.state(model)
        for shard in shards.local:
            for x, c, weights in _chunks(shard.x_train, shard.c_train, chunk):
                moments = _moments(graphdef, i, state, x, c, weights, shift)
                sums = sums + np.asarray(moments, np.float64)
        first, second = allgather(sums).sum(0) / total  # (2, features) each process
        mean, var = shift + first, np.maximum(second - first**2, 0.0)
        dtype = norms.mean[...].dtype
        norms.mean[...] = norms.mean[...].at[i].set(jnp.asarray(mean, dtype))
        norms.var[...] = norms.var[...].at[i].set(jnp.asarray(var, dtype))


def _chunks(x: np.ndarray, c: np.ndarray | None, chunk: int):
    """``(x, c, weights)`` of ``chunk`` rows each, the last one padded with weight 0."""
    for start in range(0, len(x), chunk):
        pad = max(start + chunk - len(x), 0)
        weights = np.concatenate([np.ones(chunk - pad), np.zeros(pad)]).astype(x.dtype)
        yield tuple(
            None if a is None else np.pad(a[start : start + chunk], ((0, pad), (0, 0)))
            for a in (x, c)
        ) + (weights,)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _moments(graphdef, i: int, state, x, c, weights, shift):
    """Weighted sums of ``y - shift`` and of its square, ``(2, features)``.

    ``y`` holds the rows ``x`` at the input of normalisation ``i``.
    """
    model = nnx.merge(graphdef, state)
    u, c = model._flow_inputs(x, c)
    steps = unwrapped(model)._normalized_steps(c)
    u = steps._broadcast(u)
    for j in range(i):  # the normalisations before i, with the statistics set
        u = steps[j].forward(u)
    y = steps[i].first.forward(u) - shift
    return jnp.stack([weights @ y, weights @ y**2])
