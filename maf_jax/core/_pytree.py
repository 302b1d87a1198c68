"""Frozen dataclasses registered as JAX pytrees, without Flax."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

__all__ = ["dataclass", "float_dtype", "static"]


def dataclass(cls):
    """A frozen dataclass whose fields are pytree children unless marked ``static``.

    Static fields are part of the tree structure: ``jax.jit`` traces again when
    one of them changes, so they must be hashable.
    """
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


def static(**kwargs):
    """A dataclass field that is tree structure, not a child."""
    return dataclasses.field(metadata=dict(static=True), **kwargs)


def float_dtype(tree) -> jnp.dtype:
    """The dtype that ``tree``'s floating leaves compute in, float32 at the least.

    A float64 model gives float64; float32, bfloat16 and float16 ones, or a tree
    without floating leaves, give float32. Leaves need only a ``dtype``: arrays,
    tracers or ``jax.ShapeDtypeStruct``.
    """
    dtypes = [
        leaf.dtype
        for leaf in jax.tree.leaves(tree)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    return jnp.dtype(jnp.result_type(jnp.float32, *dtypes))
