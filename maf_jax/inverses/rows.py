"""Functions of rows whose ``jax.vmap`` joins the mapped axis to the rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["rowwise"]


def rowwise(fn: Callable) -> Callable:
    """``fn(t, *rows)`` that ``jax.vmap`` batches as one call on more rows.

    ``fn`` treats rows independently: every array of ``rows``, the ``context`` of the
    bijection ``t`` (if not ``None``) and every output has one leading row per row.
    The incremental inverse keeps its buffers unit-major, ``(units, rows)``; batched
    as usual, the mapped axis would sit in front of the units and XLA would move it
    inside every product and back (``benchmarks/vmap_contexts.py``). Where
    ``jax.vmap`` maps only rows and context (over contexts, keys or noise), ``(b, n,
    ...)`` is reshaped to ``(b * n, ...)`` instead, an unmapped one broadcast first,
    and ``fn`` runs once, as in the batched call ``flow(C)``; where it maps the
    weights or the order (an ensemble), ``fn`` is batched as usual. Reverse-mode
    derivatives recompute ``fn`` under ``jax.vjp`` (``custom_vmap`` has none).

    Args:
        fn: ``fn(t, *rows)``, ``t`` a bijection dataclass with a ``context`` field,
            returning a pytree of arrays with one leading row per row.

    Returns:
        ``fn`` with that batching rule.
    """
    # Traced once per shape of its arguments: differentiated, JAX traces ``joined`` for
    # the custom VJP's primal and again for its forward (at 64 features, the gradient
    # through sampling traced in 0.32-0.46 s instead of 0.41-0.51).
    fn = jax.jit(fn)

    @jax.custom_vjp
    @jax.custom_batching.custom_vmap
    def joined(t, *rows):
        return fn(t, *rows)

    @joined.def_vmap
    def join_rows(size: int, in_batched, t, *rows):
        t_batched, *rows_batched = in_batched
        if any(jax.tree.leaves(dataclasses.replace(t_batched, context=None))):
            axes = jax.tree.map(lambda b: 0 if b else None, (t_batched, *rows_batched))
            out = jax.vmap(fn, in_axes=axes)(t, *rows)
            return out, jax.tree.map(lambda _: True, out)
        n = rows[0].shape[1] if rows_batched[0] else rows[0].shape[0]

        def join(a: jax.Array, batched: bool) -> jax.Array:
            a = a if batched else jnp.broadcast_to(a, (size, *a.shape))
            return a.reshape(size * n, *a.shape[2:])

        if t.context is not None:
            t = dataclasses.replace(t, context=join(t.context, t_batched.context))
        out = joined(t, *map(join, rows, rows_batched))  # itself: an outer vmap joins too
        out = jax.tree.map(lambda a: a.reshape(size, n, *a.shape[1:]), out)
        return out, jax.tree.map(lambda _: True, out)

    def forward(t, *rows):
        return joined(t, *rows), (t, *rows)

    def backward(args, cotangents):
        return jax.vjp(fn, *args)[1](cotangents)

    joined.defvjp(forward, backward)
    return joined
