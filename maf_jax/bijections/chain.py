"""Composition of bijections of one structure, applied with ``jax.lax.scan``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from maf_jax.core import _pytree

__all__ = ["Chain"]

# ``Chain.unroll`` defaults to 10: training through straight-line code compiles and
# runs faster than through the loop and its transpose, which stack every residual
# (D=64, 5 transforms, one process: 0.8 vs 1.3 s to compile, 11.3 vs 13.1 ms per
# step; 10 transforms: 1.9 vs 2.6 s, 24.1 vs 25.7 ms); at 40 transforms the unrolled
# step ran 1.6x slower. Evaluation keeps the loop: unrolled, XLA on CPU gave every
# transform's output buffer its own memory (log_prob at D=256, 4096 rows: 44 vs 18
# MB of temporaries).
# The inverse (sampling) is never unrolled; how it is differentiated is the
# bijections' business (maf_jax.inverses.implicit: only each step's output is kept).

# Unrolled, XLA fuses the elementwise backward of every later bijection into each
# bijection's backward kernels, recomputing it there; for rows of few features it
# does so freely, and LLVM then spends most of the compile on those kernels (at 5
# features, five kernels of 100-200 ms each). Below BARRIER_BELOW features, the
# tangent into every bijection goes through a product with the identity, which
# XLA does not fuse through: 11.2 -> 7.5 billion instructions to compile the train
# step at 5 features, 8.5 -> 7.5 at 16 (benchmarks/compile_instructions.py), the
# step as fast. From 64 features XLA fuses less and the product would cost time.
BARRIER_BELOW = 64


@_pytree.dataclass
class Chain:
    """The composition ``t_n(...(t_1(x)))`` of bijections stacked on a leading axis.

    A ``lax.scan`` over the stack traces one bijection whatever ``n`` is. Evaluated,
    the forward is a loop; differentiated (training), it is unrolled for chains of at
    most ``unroll`` bijections. The inverse is a loop.

    Attributes:
        stacked: A bijection pytree whose array leaves have a leading axis ``n``;
            slice ``i`` is ``t_{i+1}``.
        batch_shape: Batch shape the bijections broadcast their inputs against
            (the context batch shape), so that the scan carry keeps one shape.
        unroll: Longest chain whose forward is unrolled when differentiated.
    """

    stacked: Any
    batch_shape: tuple[int, ...] = _pytree.static(default=())
    unroll: int = _pytree.static(default=10)

    @classmethod
    def stack(cls, bijections: Sequence[Any], batch_shape=(), unroll: int = 10) -> Chain:
        """Stacks bijections that share one tree structure, first applied first."""
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *bijections)
        return cls(stacked, tuple(batch_shape), unroll)

    def __len__(self) -> int:
        return jax.tree.leaves(self.stacked)[0].shape[0]

    def __getitem__(self, i: int):
        """The ``i``-th bijection of the chain."""
        return jax.tree.map(lambda leaf: leaf[i], self.stacked)

    def _broadcast(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim == 0:
            raise ValueError(f"expected an input of shape (*, features), got shape {x.shape}")
        try:
            lead = np.broadcast_shapes(x.shape[:-1], self.batch_shape)
        except ValueError:
            raise ValueError(
                f"input batch shape {x.shape[:-1]} does not broadcast with the "
                f"batch shape {self.batch_shape}"
            ) from None
        return jnp.broadcast_to(x, (*lead, x.shape[-1]))

    def _scan(
        self,
        method: str,
        x: jax.Array,
        reverse: bool,
        unroll: int | bool = 1,
        barrier: bool = False,
    ):
        x = self._broadcast(x)

        def step(carry, bijection):
            x, ladj = carry
            x, step_ladj = getattr(bijection, method)(_fusion_barrier(x) if barrier else x)
            return (x, ladj + step_ladj), None

        init = (x, jnp.zeros_like(x[..., 0]))  # varying like x inside shard_map
        (x, ladj), _ = jax.lax.scan(step, init, self.stacked, reverse=reverse, unroll=unroll)
        return x, ladj

    def forward_and_log_det(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Applies ``t_1`` then ... ``t_n``; returns ``y`` and ``log|det dy/dx|``."""
        if len(self) > self.unroll:
            return self._scan("forward_and_log_det", x, reverse=False)
        return _forward_unrolled_when_differentiated(self, x)

    def inverse_and_log_det(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Inverts ``t_n`` then ... ``t_1``; returns ``x`` and ``log|det dx/dy|``."""
        return self._scan("inverse_and_log_det", y, reverse=True)

    def forward(self, x: jax.Array) -> jax.Array:
        """Applies the chain; see ``forward_and_log_det``."""
        return self.forward_and_log_det(x)[0]

    def inverse(self, y: jax.Array) -> jax.Array:
        """Inverts the chain; see ``inverse_and_log_det``."""
        return self.inverse_and_log_det(y)[0]


@jax.custom_jvp
def _forward_unrolled_when_differentiated(chain: Chain, x: jax.Array):
    """``chain``'s forward as a loop, whose derivatives unroll it (``Chain.unroll``)."""
    return chain._scan("forward_and_log_det", x, reverse=False)


@_forward_unrolled_when_differentiated.defjvp
def _forward_jvp(primals, tangents):
    def unrolled(chain, x):
        barrier = x.shape[-1] < BARRIER_BELOW
        return chain._scan("forward_and_log_det", x, reverse=False, unroll=True, barrier=barrier)

    return jax.jvp(unrolled, primals, tangents)


@jax.custom_jvp
def _fusion_barrier(x: jax.Array) -> jax.Array:
    """The identity, whose tangent (and cotangent) is a product with the identity.

    Exact for finite values (each entry is itself times one plus zeros); an infinite
    or NaN entry makes its row NaN, as it would make the loss.
    """
    return x


@_fusion_barrier.defjvp
def _fusion_barrier_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    eye = jnp.eye(x.shape[-1], dtype=t.dtype)
    return x, jnp.matmul(t, eye, precision=jax.lax.Precision.HIGHEST)
